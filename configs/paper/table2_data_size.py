"""Paper Table 2 on JSRT: U-Net on all / 10 / 5 training images, no PE vs λ = 256, three seeds.

  python main.py --config=configs/paper/table2_data_size.py --workdir=runs/paper
Expected (paper): 156 images 0.9673 | 0.9599; 10 images 0.8813 | 0.9020; 5 images 0.8700 | 0.8774.
"""

from pejax.configs.paper import common


def get_config(datasets: str = ''):
  chosen = common.chosen_datasets(datasets, ('jsrt',))
  return common.sweep_config(common.paper_scale(), common.table2_data_size(chosen[0]))
