"""Paper Table 1, Figure 2 and Figure 5 on JSRT and ACDC at a laptop's scale (64×64, width 16;
U-Net 800 steps on JSRT, 2,040 on ACDC): no PE and PE λ = 1, 10, 256, three seeds; 24 runs.

  python main.py --config=configs/paper/laptop_table1_fig2.py --workdir=runs/laptop
Writes runs/laptop/report.md. Needs the JSRT and ACDC downloads (README). Expected wall time on a
2-core CPU, estimated from phantom runs of the same shapes (2026-12-02; BENCHMARKS.md, "Training
schedule"), not measured on the real data: about 2.5 hours (JSRT runs 2.5 minutes each, ACDC
runs 10: 30 epochs of 17.6 s, the robustness grid over 384 slices 42 s, per-case files 17 s).
"""

from pejax.configs.paper import common


def get_config(datasets: str = ''):
  chosen = common.chosen_datasets(datasets, common.PAPER_DATASETS)
  return common.sweep_config(
      common.cpu_scale(),
      common.cpu_experiment(common.table1_fig2, chosen))
