"""Paper Figure 3 / Sec. 3.2 on JSRT and ACDC: the small CNN, no PE vs PE λ = 256, three seeds.

  python main.py --config=configs/paper/fig3_small_cnn.py --workdir=runs/paper
Expected (paper): no PE ≈ 0.5 (JSRT), < 0.1 (ACDC); λ=256 ≈ 0.9 (JSRT), ≈ 0.55 (ACDC).
"""

from pejax.configs.paper import common


def get_config(datasets: str = ''):
  chosen = common.chosen_datasets(datasets, common.PAPER_DATASETS)
  return common.sweep_config(common.paper_scale(),
                             common.fig3_small_cnn(chosen))
