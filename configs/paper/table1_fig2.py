"""Paper Table 1 and Figure 2 (and Figure 5, from the same runs' shift grid) on JSRT and ACDC.

U-Net, zero padding, no PE and PE λ = 1, 10, 256, three seeds: 24 runs at 256×256.
  python main.py --config=configs/paper/table1_fig2.py --workdir=runs/paper
Expected (paper Table 1): JSRT 0.9673 / 0.9649 / 0.9637 / 0.9599; ACDC 0.8496 / 0.8582 /
0.8557 / 0.8347 (no PE / λ=1 / 10 / 256). Needs the JSRT and ACDC downloads (README).
"""

from pejax.configs.paper import common


def get_config(datasets: str = ''):
  chosen = common.chosen_datasets(datasets, common.PAPER_DATASETS)
  return common.sweep_config(common.paper_scale(),
                             common.table1_fig2(chosen))
