"""Table 2: U-Net on all / 10 / 5 training images, no PE vs λ = 256, chest phantom at the CPU
scale (64×64, width 16; all images 800 steps, the subsets 400), three seeds; 18 runs.

  python main.py --config=configs/paper/phantom_table2_data_size.py --workdir=runs/phantom_paper
Writes runs/phantom_paper/report.md. About 30 minutes on a 2-core CPU (estimated,
BENCHMARKS.md); results: README, "Training schedule" (the claim does not hold on the phantom).
"""

from pejax.configs.paper import common


def get_config(datasets: str = ''):
  chosen = common.chosen_datasets(datasets, ('phantom_chest',))
  return common.sweep_config(
      common.cpu_scale(),
      common.cpu_table2(chosen[0], sizes=(None, 10, 5)))
