"""Figure 4: zero vs reflection padding, no PE vs λ = 256; on the phantoms, CPU-sized (64×64; chest
width 8 and 15 epochs, cardiac width 16 and 5), three seeds.

  python main.py --config=configs/paper/phantom_fig4_padding.py --workdir=runs/phantom_paper
Writes runs/phantom_paper/report.md. Measured time and results: README, "Reproducing the paper".
"""

from pejax import experiments


def get_config():
  return experiments.sweep_config(
      experiments.cpu_scale(),
      experiments.cpu_experiment(experiments.fig4_padding, experiments.PHANTOMS))
