"""Paper Figure 3 / Sec. 3.2 on JSRT and ACDC at a laptop's scale (64×64, width 16, 2,400 steps):
the small CNN without PE and with λ = 256, three seeds; 12 runs.

  python main.py --config=configs/paper/laptop_fig3_small_cnn.py --workdir=runs/laptop
Needs the JSRT and ACDC downloads (README). Expected wall time on a 2-core CPU, estimated from
phantom runs of the same shapes (2026-12-02; an epoch 0.5 s on JSRT's size, 5.0 s on ACDC's):
about 40 minutes.
"""

from pejax.configs.paper import common


def get_config(datasets: str = ''):
  chosen = common.chosen_datasets(datasets, common.PAPER_DATASETS)
  return common.sweep_config(
      common.cpu_scale(),
      common.cpu_experiment(common.fig3_small_cnn, chosen, 'cnn4'))
