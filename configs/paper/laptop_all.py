"""Every experiment of the paper on JSRT and ACDC at a laptop's scale (64×64, width 16; U-Net
20 epochs, small CNN 30, Table 2's 5- and 10-image runs 100), three seeds.

  python main.py --config=configs/paper/laptop_all.py --workdir=runs/laptop
Writes runs/laptop/report.md with every table, figure and verdict. Needs the JSRT and ACDC
downloads (README). Expected wall time on a 2-core CPU, estimated from the phantom runs of the
same shapes and data sizes in the phantom reproduction of 2026-12-02 (not measured on the real
data): about 2.9 hours; Table 1 alone (configs/paper/laptop_table1_fig2.py) about 1.6 hours.
"""

from pejax import experiments


def get_config():
  return experiments.sweep_config(
      experiments.cpu_scale(),
      experiments.laptop_experiments())
