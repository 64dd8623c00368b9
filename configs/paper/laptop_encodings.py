"""Beyond the paper on the real data at laptop scale: the encodings and the padding-leak probe
of `phantom_encodings.py` on JSRT and ACDC (64×64, width 16, the CPU-sized schedules: 800
steps JSRT, 2,040 ACDC), three seeds; 60 runs.

  python main.py --config=configs/paper/laptop_encodings.py --workdir=runs/laptop_encodings
Writes runs/laptop_encodings/report.md. Needs the JSRT and ACDC downloads (README). Expected
wall time on a 2-core CPU, estimated as for configs/paper/laptop_all.py (a JSRT U-Net run 2.5
minutes, an ACDC one 10), not measured on the real data: about 6.5 hours.
"""

from pejax.configs.paper import common


def get_config(datasets: str = ''):
  chosen = common.chosen_datasets(datasets, common.PAPER_DATASETS)
  return common.sweep_config(common.probed(common.cpu_scale()),
                             common.encoding_experiments(chosen))
