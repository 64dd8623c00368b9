"""The paper's experiments as sweeps (lists of run overrides), for `configs/paper/*.py`.

Each function returns the runs of one experiment; `paper_scale` gives the paper's base settings
(JSRT / ACDC, 256×256, width 64, 100 epochs) and `cpu_scale` the CPU-sized one (64×64, width
16) of the laptop and phantom reproductions, whose schedules are set per run in optimizer steps
(`CPU_STEPS`). Runs shared by several experiments (e.g. the no-PE U-Net of Table 1 and Table 2)
have the same settings, hence the same folder, and are trained once.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from pejax import configuration
from pejax.sweep import pe_settings, product, union

# Seeds of every sweep (seeds 0 .. NUM_SEEDS − 1), the replicates its verdicts rest on. At 3 the
# verdict's interval (pejax.reporting.paired_statistics) finds with 80% power an effect of 3.3
# times the spread of one run's mean difference; the phantom claims at 800 steps measured 2.8 to
# 5.4 such spreads, so 3 seeds decide them with 70–99% power. 5 seeds lower it to 1.7 spreads
# (runs and time × 5/3: docs/statistics.md, "Seeds").
NUM_SEEDS = 3
SEEDS = tuple(range(NUM_SEEDS))
PAPER_DATASETS = ('jsrt', 'acdc')
TABLE1_PE = (None, 1.0, 10.0, 256.0)
# Position jitter of the phantom anatomy, as a fraction of the image size (beyond the paper).
JITTERS = (0.0, 0.1, 0.2)
# Runs whose robustness grid no figure uses skip it on the CPU-sized reproductions.
NO_GRID = {'run_robustness': False}
# The CPU-sized reproductions' schedules in optimizer steps, per model and dataset (the phantoms
# are their real dataset's stand-ins), and for Table 2's 5- and 10-image subsets (one step an
# epoch). From the schedule study on the chest phantom (benchmarks/schedule_study.py; README,
# "Training schedule"): every U-Net setting converged from 400 steps on (λ = 256 not at 160),
# JSRT keeps the paper's 800 as a margin (the phantom learns faster than JSRT); the small CNN
# without PE still improves at 800 and settled from 2,400 on; the subsets converged at 400;
# on the cardiac phantom λ = 256 settled from 2,040 steps (30 epochs) on. The paper trains 100
# epochs: JSRT 800 steps, ACDC about 6,700, subsets 100.
CPU_STEPS = {
    'unet': {'jsrt': 800, 'acdc': 2040},
    'cnn4': {'jsrt': 2400, 'acdc': 2400},
}
CPU_SUBSET_STEPS = 400
STAND_IN = {'phantom_chest': 'jsrt', 'phantom_cardiac': 'acdc'}


# Training-split sizes (the phantoms have their real dataset's), to count a schedule in steps.
TRAIN_EXAMPLES = {'jsrt': 156, 'acdc': 1344, 'phantom_chest': 156, 'phantom_cardiac': 1344}


def epochs_for_steps(steps: int, dataset: str, num_train_examples: int | None = None,
                     batch_size: int = 20) -> int:
  """The epochs of a schedule of (at least) `steps` optimizer steps: an epoch is
  ceil(examples / batch) steps, and a training subset smaller than a batch is one step."""
  per_epoch = configuration.steps_per_epoch(num_train_examples or TRAIN_EXAMPLES[dataset],
                                            batch_size)
  return -(-steps // per_epoch)


def table1_fig2(datasets, seeds=SEEDS, **settings):
  """Table 1 / Figure 2 (and Figure 5: its shift grid): U-Net, zero padding, no PE and λ=1/10/256."""
  return product(dataset=datasets, model=['unet'], padding=['zeros'],
                 pe=pe_settings(TABLE1_PE), seed=seeds, settings=[settings])


def fig3_small_cnn(datasets, seeds=SEEDS, **settings):
  """Figure 3 / Sec. 3.2: the small CNN without PE and with λ = 256."""
  return product(dataset=datasets, model=['cnn4'], padding=['zeros'],
                 pe=pe_settings((None, 256.0)), seed=seeds, settings=[settings])


def table2_data_size(dataset, sizes=(None, 10, 5), seeds=SEEDS, **settings):
  """Table 2: U-Net trained on all / 10 / 5 random training images, no PE and λ = 256.

  'All' leaves `num_train_examples` unset, so without `settings` those runs are Table 1's runs
  (trained once); `settings` apply to every size, so the table stays one scale.
  """
  size_settings = [{} if size is None else {'num_train_examples': size} for size in sizes]
  return product(dataset=[dataset], model=['unet'], padding=['zeros'], size=size_settings,
                 pe=pe_settings((None, 256.0)), seed=seeds, settings=[settings])


def fig4_padding(datasets, seeds=SEEDS, **settings):
  """Figure 4: zero vs reflection padding, without PE and with λ = 256."""
  return product(dataset=datasets, model=['unet'], padding=['zeros', 'reflect'],
                 pe=pe_settings((None, 256.0)), seed=seeds, settings=[settings])


def jitter_benefit(dataset='phantom_chest', jitters=JITTERS, seeds=SEEDS, cnn4_settings=None,
                   unet_settings=None, **settings):
  """Beyond the paper: the benefit of PE as a function of the anatomy's position jitter."""
  models = [{'model': 'cnn4', **(cnn4_settings or {})}, {'model': 'unet', **(unet_settings or {})}]
  return product(dataset=[dataset], model=models, padding=['zeros'], position_jitter=jitters,
                 pe=pe_settings((None, 256.0)), seed=seeds, settings=[settings])


# Beyond the paper: encodings compared at λ = 1 (the paper's best clean λ on ACDC), and linear
# at λ = 2, whose span [0, 2] equals centered λ = 1's [−1, 1]; Fourier with K = 4 bands.
LINEAR = {'use_pe': True, 'pe_scale': 1.0}
ENCODINGS = (
    {'use_pe': False},
    LINEAR,
    {'use_pe': True, 'pe_scale': 2.0},
    {'use_pe': True, 'pe_scale': 1.0, 'pe_kind': 'centered'},
    {'use_pe': True, 'pe_scale': 1.0, 'pe_kind': 'radial'},
    {'use_pe': True, 'pe_scale': 1.0, 'pe_kind': 'fourier', 'pe_bands': 4},
    {'use_pe': True, 'pe_scale': 1.0, 'pe_layers': 'all'},
)
# The padding modes whose position leak the probe measures without PE.
LEAK_PADDINGS = ('zeros', 'reflect', 'replicate', 'circular')


def encodings(datasets, seeds=SEEDS, **settings):
  """Beyond the paper: the encoding family and where coordinates enter (U-Net, zero padding,
  all data), with robustness grids (their encoding conditions included)."""
  return product(dataset=datasets, model=['unet'], padding=['zeros'], pe=list(ENCODINGS),
                 seed=seeds, settings=[settings])


def padding_leak(datasets, seeds=SEEDS, **settings):
  """Beyond the paper: the U-Net without PE under each padding mode, for the position probe
  (no grid: the probe reads the trained network); zero padding is `encodings`' no-PE run."""
  return product(dataset=datasets, model=['unet'], padding=list(LEAK_PADDINGS[1:]),
                 pe=[{'use_pe': False}], seed=seeds, settings=[dict(settings, **NO_GRID)])


def encoding_experiments(datasets, epochs: dict | None = None):
  """`encodings` and `padding_leak` on each dataset, at `epochs` ({'num_epochs': n}) or the
  dataset's CPU-sized schedule."""
  return union(*(union(encodings([dataset], **(epochs or cpu_schedule(dataset))),
                       padding_leak([dataset], **(epochs or cpu_schedule(dataset))))
                 for dataset in datasets))


def probed(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with the position probe after every run's final evaluation (it changes no
  trained number: a run's settings stay those of the same run unprobed)."""
  config.probe.enabled = True
  return config


def paper_scale() -> ml_collections.ConfigDict:
  """The paper's settings (configuration.base_config defaults), 256×256, for JSRT / ACDC."""
  config = configuration.base_config()
  config.eval_every_epochs = 10
  return config


def cpu_scale() -> ml_collections.ConfigDict:
  """The CPU-sized reproductions' shapes, on JSRT / ACDC (laptop) and the phantoms: 64×64 and
  width 16, at which the U-Net learns every structure of both real datasets and both phantoms;
  the schedules are set per run (`CPU_STEPS`)."""
  config = configuration.quick(configuration.base_config())
  config.num_image_panels = 2
  # About ten evaluations per run for the convergence rule (an epoch of the chest data is 8
  # steps: 100 epochs; of the cardiac data 68: 20 epochs, evaluated at 16 and every 2).
  config.eval_every_epochs = 2
  # A checkpoint costs more than a 1-step epoch of Table 2's subsets (BENCHMARKS.md).
  config.checkpoint_every_epochs = 10
  return config


def cpu_schedule(dataset: str, model: str = 'unet', num_train_examples: int | None = None
                 ) -> dict:
  """{'num_epochs': ...} of the CPU-sized schedule of a run (`CPU_STEPS`); {} for a dataset
  of one's own, whose size the config does not know: the base config's epochs apply
  (--config.num_epochs sets them)."""
  if not num_train_examples and STAND_IN.get(dataset, dataset) not in CPU_STEPS[model]:
    return {}
  steps = (CPU_SUBSET_STEPS if num_train_examples else
           CPU_STEPS[model][STAND_IN.get(dataset, dataset)])
  return {'num_epochs': epochs_for_steps(steps, dataset, num_train_examples)}


def cpu_experiment(experiment, datasets, model: str = 'unet', **settings):
  """An experiment on each dataset at its CPU-sized schedule."""
  return union(*(experiment([dataset], **cpu_schedule(dataset, model), **settings)
                 for dataset in datasets))


def cpu_table2(dataset, sizes=(10, 5), **settings):
  """Table 2's subsets at the CPU-sized subset schedule, without the grid (no figure uses it);
  'all' is Table 1's run."""
  return union(*(table2_data_size(dataset, sizes=(size,), **cpu_schedule(dataset, 'unet', size),
                                  **(NO_GRID if size else {}), **settings) for size in sizes))


def all_cpu_experiments(datasets, table2_dataset):
  """Table 1 / Fig. 2 / Fig. 5, the small CNN, Table 2's subsets and Fig. 4 at CPU size."""
  return union(cpu_experiment(table1_fig2, datasets), cpu_experiment(fig3_small_cnn, datasets, 'cnn4'),
               cpu_table2(table2_dataset), cpu_experiment(fig4_padding, datasets))


PHANTOMS = ('phantom_chest', 'phantom_cardiac')


def phantom_experiments():
  """Every experiment on the phantoms at CPU size, and the position jitter on the chest phantom
  (configs/paper/phantom_all.py)."""
  return union(all_cpu_experiments(PHANTOMS, 'phantom_chest'), phantom_jitter())


def phantom_jitter():
  """The position-jitter experiment at CPU size, without grids."""
  return jitter_benefit(cnn4_settings=cpu_schedule('phantom_chest', 'cnn4'),
                        unet_settings=cpu_schedule('phantom_chest', 'unet'), **NO_GRID)


def chosen_datasets(argument: str, default) -> tuple[str, ...]:
  """The datasets of a sweep: its config's argument, a comma-separated list (e.g.
  `--config=configs/paper/laptop_table1_fig2.py:nnunet:Dataset027_ACDC`), or its default."""
  names = tuple(name.strip() for name in argument.split(',') if name.strip())
  return names or tuple(default)


def sweep_config(base: ml_collections.ConfigDict, runs) -> ml_collections.ConfigDict:
  base.sweep = runs
  # Runs trained together at most; None: the device's default (`train.train_sweep`). A field,
  # so that the command line can set it (--config.max_models_per_program=1).
  base.max_models_per_program = config_dict.placeholder(int)
  return base


def all_experiments(datasets, table2_dataset):
  return union(table1_fig2(datasets), fig3_small_cnn(datasets), table2_data_size(table2_dataset),
               fig4_padding(datasets))
