"""Paper Figure 4 on JSRT and ACDC: U-Net with zero vs reflection padding, no PE vs λ = 256.

  python main.py --config=configs/paper/fig4_padding.py --workdir=runs/paper
Expected (paper): on JSRT, reflection padding without PE is less robust to noise than zero
padding; with PE the gap closes.
"""

from pejax import experiments


def get_config():
  return experiments.sweep_config(experiments.paper_scale(),
                                  experiments.fig4_padding(experiments.PAPER_DATASETS))
