"""Every experiment of the paper on JSRT and ACDC at a laptop's scale (64×64, width 16), three
seeds, on schedules in optimizer steps (pejax.configs.paper.common.CPU_STEPS): U-Net 800 steps on JSRT
(100 epochs) and 2,040 on ACDC (30), small CNN 2,400 (300 / 36 epochs), Table 2's 5- and
10-image subsets 400; 60 runs.

  python main.py --config=configs/paper/laptop_all.py --workdir=runs/laptop
Writes runs/laptop/report.md with every table, figure and verdict. Needs the JSRT and ACDC
downloads (README). Expected wall time on a 2-core CPU, estimated from the per-epoch times of
phantom runs of the same shapes and data sizes (2026-12-02; BENCHMARKS.md, "Training schedule"),
not measured on the real data: about 4.7 hours (a JSRT U-Net run 2.5 minutes, an ACDC one 10).
"""

from pejax.configs.paper import common


def get_config(datasets: str = ''):
  chosen = common.chosen_datasets(datasets, common.PAPER_DATASETS)
  return common.sweep_config(
      common.cpu_scale(),
      common.all_cpu_experiments(chosen, chosen[0]))
