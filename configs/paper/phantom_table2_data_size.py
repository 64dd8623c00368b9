"""Table 2: U-Net on all / 10 / 5 training images, no PE vs λ = 256 (chest phantom); on the
phantoms, CPU-sized (64×64, width 8), three seeds.

  python main.py --config=configs/paper/phantom_table2_data_size.py --workdir=runs/phantom_paper
Writes runs/phantom_paper/report.md. Measured time and results: README, "Reproducing the paper".
"""

from pejax import experiments


def get_config():
  return experiments.sweep_config(
      experiments.cpu_scale(),
      experiments.cpu_table2('phantom_chest', sizes=(None, 10, 5)))
