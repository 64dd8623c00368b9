"""Figure 3 / Sec. 3.2: the small CNN, no PE vs λ = 256, on both phantoms at the CPU scale
(64×64, width 16, 2,400 steps), three seeds; 12 runs.

  python main.py --config=configs/paper/phantom_fig3_small_cnn.py --workdir=runs/phantom_paper
Writes runs/phantom_paper/report.md. About 40 minutes on a 2-core CPU (estimated,
BENCHMARKS.md); results: README, "Training schedule".
"""

from pejax.configs.paper import common


def get_config(datasets: str = ''):
  chosen = common.chosen_datasets(datasets, common.PHANTOMS)
  return common.sweep_config(
      common.cpu_scale(),
      common.cpu_experiment(common.fig3_small_cnn, chosen, 'cnn4'))
