"""Every experiment of the paper on the phantoms (Tables 1–2, Figures 2–5) plus the
position-jitter experiment, CPU-sized (64×64, width 8), three seeds.

  python main.py --config=configs/paper/phantom_all.py --workdir=runs/phantom_paper
Writes runs/phantom_paper/report.md. Measured time and results: README, "Reproducing the paper".
"""

from pejax import experiments


def get_config():
  return experiments.sweep_config(experiments.phantom_scale(), experiments.phantom_experiments())
