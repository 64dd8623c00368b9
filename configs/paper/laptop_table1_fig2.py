"""Paper Table 1, Figure 2 and Figure 5 on JSRT and ACDC at a laptop's scale (64×64, width 16,
20 epochs): U-Net, zero padding, no PE and PE λ = 1, 10, 256, three seeds; 24 runs.

  python main.py --config=configs/paper/laptop_table1_fig2.py --workdir=runs/laptop
Writes runs/laptop/report.md. Needs the JSRT and ACDC downloads (README). Expected wall time
on a 2-core CPU, estimated from the phantom runs of the same shapes and data sizes measured on
2026-12-02 (not measured on the real data): about 1.6 hours (JSRT runs ~1 minute each; ACDC
runs ~7 minutes: 20 epochs of 17.6 s, the robustness grid over 384 slices 42 s, per-case files
17 s).
"""

from pejax import experiments


def get_config():
  return experiments.sweep_config(
      experiments.cpu_scale(),
      experiments.cpu_experiment(experiments.table1_fig2, experiments.PAPER_DATASETS))
