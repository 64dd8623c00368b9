"""Table 1 and Figure 2 (and Figure 5): U-Net, zero padding, no PE and λ = 1, 10, 256; on the
phantoms, CPU-sized (64×64; chest width 8 and 15 epochs, cardiac width 16 and 5), three seeds.

  python main.py --config=configs/paper/phantom_table1_fig2.py --workdir=runs/phantom_paper
Writes runs/phantom_paper/report.md. Measured time and results: README, "Reproducing the paper".
"""

from pejax import experiments


def get_config():
  return experiments.sweep_config(
      experiments.cpu_scale(),
      experiments.cpu_experiment(experiments.table1_fig2, experiments.PHANTOMS))
