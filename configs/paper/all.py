"""Every experiment of the paper on JSRT and ACDC (Tables 1–2, Figures 2–5), three seeds.

  python main.py --config=configs/paper/all.py --workdir=runs/paper
Writes runs/paper/report.md with every table and figure beside the paper's values.
"""

from pejax.configs.paper import common


def get_config(datasets: str = ''):
  chosen = common.chosen_datasets(datasets, common.PAPER_DATASETS)
  return common.sweep_config(
      common.paper_scale(), common.all_experiments(chosen, chosen[0]))
