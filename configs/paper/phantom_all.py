"""Every experiment of the paper on the phantoms (Tables 1–2, Figures 2–5) plus the
position-jitter experiment, CPU-sized (64×64; chest phantom width 8, cardiac phantom width 16
and 5 epochs), three seeds: 102 runs.

  python main.py --config=configs/paper/phantom_all.py --workdir=runs/phantom_paper
Writes runs/phantom_paper/report.md.

Expected result (measured on the idle 2-core CPU, 2026-12-02; README, "Reproducing the paper"):
90 minutes from nothing (53 of them the 24 cardiac runs), peak memory 3.5 GB. Both phantoms
assessed. Chest: noise robustness, clean cost of λ = 256 and the shift claim hold; padding and
small-CNN claims inconclusive; Table 2's small-data claim does not hold. Cardiac (U-Net clean
Dice 0.803 without PE, every class above the averaged mask): noise robustness and clean cost
hold; padding, shift and small-CNN claims inconclusive.
"""

from pejax import experiments


def get_config():
  return experiments.sweep_config(
      experiments.cpu_scale(),
      experiments.phantom_experiments())
