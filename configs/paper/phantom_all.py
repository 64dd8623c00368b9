"""Every experiment of the paper on the phantoms (Tables 1–2, Figures 2–5) plus the
position-jitter experiment, CPU-sized (64×64, width 8), three seeds: 102 runs.

  python main.py --config=configs/paper/phantom_all.py --workdir=runs/phantom_paper
Writes runs/phantom_paper/report.md.

Expected result (measured on a 2-core CPU, 2026-11-24; README, "Reproducing the paper"): 36
minutes in all. Chest phantom: five of the paper's six claims hold (noise drop at severity 5:
0.320 without PE, −0.002 with λ = 256; small CNN 0.322 → 0.834 with PE); the small-data claim
of Table 2 does not (λ = 256 is worse with 5 or 10 images). Cardiac phantom: not learnt at
this scale, so its claims are reported as not assessed.
"""

from pejax import experiments


def get_config():
  return experiments.sweep_config(experiments.phantom_scale(), experiments.phantom_experiments())
