"""Beyond the paper: PE benefit vs the anatomy's position jitter (chest phantom, small CNN 2,400
steps and U-Net 800, 64×64, width 16, no grids), three seeds; 36 runs.

  python main.py --config=configs/paper/phantom_jitter.py --workdir=runs/phantom_paper
Writes runs/phantom_paper/report.md. About 1.5 hours on a 2-core CPU (estimated, BENCHMARKS.md).
"""

from pejax.configs.paper import common


def get_config():
  return common.sweep_config(
      common.cpu_scale(),
      common.phantom_jitter())
