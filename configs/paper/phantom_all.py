"""Every experiment of the paper on both phantoms (Tables 1–2, Figures 2–5) plus the
position-jitter experiment, at the CPU scale of the laptop configs (64×64, width 16; U-Net 800
steps on the chest phantom, 2,040 on the cardiac one; small CNN 2,400; Table 2's subsets 400),
three seeds: 96 runs.

  python main.py --config=configs/paper/phantom_all.py --workdir=runs/phantom_paper
Writes runs/phantom_paper/report.md.

Expected result: about 6.2 hours on a 2-core CPU, estimated from the per-epoch times of the
schedule study (2026-12-02; BENCHMARKS.md); the chest part's runs are the schedule study's at
800 steps, whose verdicts README gives ("Training schedule"): noise robustness, clean cost of
λ = 256 and Figure 4 hold, and the small CNN's (at 800 steps); the shift claim is inconclusive
(no PE − λ=1); Table 2's does not hold. The cardiac part was not yet run at these schedules.
"""

from pejax.configs.paper import common


def get_config(datasets: str = ''):
  if datasets:  # the phantom-only position-jitter experiment stays out
    chosen = common.chosen_datasets(datasets, common.PHANTOMS)
    return common.sweep_config(common.cpu_scale(),
                               common.all_cpu_experiments(chosen, chosen[0]))
  return common.sweep_config(
      common.cpu_scale(),
      common.phantom_experiments())
