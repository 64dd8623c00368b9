"""Figure 4: zero vs reflection padding, no PE vs λ = 256, on both phantoms at the CPU scale
(64×64, width 16; 800 steps chest, 2,040 cardiac), three seeds; 24 runs.

  python main.py --config=configs/paper/phantom_fig4_padding.py --workdir=runs/phantom_paper
Writes runs/phantom_paper/report.md. About 2.5 hours on a 2-core CPU (estimated,
BENCHMARKS.md); results: README, "Training schedule" (chest phantom: the claim holds at 800 steps).
"""

from pejax.configs.paper import common


def get_config(datasets: str = ''):
  chosen = common.chosen_datasets(datasets, common.PHANTOMS)
  return common.sweep_config(
      common.cpu_scale(),
      common.cpu_experiment(common.fig4_padding, chosen))
