"""Paper Figure 4 on JSRT and ACDC: U-Net with zero vs reflection padding, no PE vs λ = 256.

  python main.py --config=configs/paper/fig4_padding.py --workdir=runs/paper
Expected (paper): on JSRT, reflection padding without PE is less robust to noise than zero
padding; with PE the gap closes.
"""

from pejax.configs.paper import common


def get_config(datasets: str = ''):
  chosen = common.chosen_datasets(datasets, common.PAPER_DATASETS)
  return common.sweep_config(common.paper_scale(),
                             common.fig4_padding(chosen))
