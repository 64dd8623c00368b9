"""Beyond the paper: PE benefit vs the anatomy's position jitter (chest phantom, small CNN and
U-Net); on the phantoms, CPU-sized (64×64, width 8), three seeds.

  python main.py --config=configs/paper/phantom_jitter.py --workdir=runs/phantom_paper
Writes runs/phantom_paper/report.md. Measured time and results: README, "Reproducing the paper".
"""

from pejax import experiments


def get_config():
  return experiments.sweep_config(
      experiments.cpu_scale(),
      experiments.phantom_jitter())
