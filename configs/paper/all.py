"""Every experiment of the paper on JSRT and ACDC (Tables 1–2, Figures 2–5), three seeds.

  python main.py --config=configs/paper/all.py --workdir=runs/paper
Writes runs/paper/report.md with every table and figure beside the paper's values.
"""

from pejax import experiments


def get_config():
  return experiments.sweep_config(
      experiments.paper_scale(), experiments.all_experiments(experiments.PAPER_DATASETS, 'jsrt'))
