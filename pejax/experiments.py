"""The paper's experiments as sweeps (lists of run overrides), for `configs/paper/*.py`.

Each function returns the runs of one experiment; `paper_scale` and `phantom_scale` give the
base settings: the paper's (JSRT / ACDC, 256×256, width 64, 100 epochs) or a CPU-sized version
on the phantoms. Runs shared by several experiments (e.g. the no-PE U-Net of Table 1 and
Table 2) have the same settings, hence the same folder, and are trained once.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from pejax import configuration
from pejax.sweep import pe_settings, product, union

SEEDS = (0, 1, 2)
PAPER_DATASETS = ('jsrt', 'acdc')
TABLE1_PE = (None, 1.0, 10.0, 256.0)
# Position jitter of the phantom anatomy, as a fraction of the image size (beyond the paper).
JITTERS = (0.0, 0.1, 0.2)
# The small CNN needs more epochs than the U-Net to converge on the CPU-sized phantoms.
PHANTOM_CNN4_SETTINGS = {'num_epochs': 30}
# Runs whose robustness grid no figure uses skip it on the CPU-sized phantoms.
NO_GRID = {'run_robustness': False}
# Table 2 on the phantoms trains the paper's 100 epochs, all three data sizes alike: with 5 or
# 10 images an epoch is one step, and at the phantom scale's 15 epochs those runs would stop
# after 15 steps, untrained (the paper's had 100).
PHANTOM_TABLE2_SETTINGS = {'num_epochs': 100, **NO_GRID}
# The cardiac phantom has ACDC's 1,344 training slices (8.6× the chest phantom's 156): at width 8
# the U-Net finds only the left ventricle even after 15 epochs (Dice 0 / 0 / 0.92); at width 16
# it finds all three structures within 5 epochs (340 steps; the chest phantom's 15 epochs are
# 120), for the U-Net and the small CNN alike (README, "Reproducing the paper").
PHANTOM_CARDIAC_SETTINGS = {'width': 16, 'num_epochs': 5}


# Training-split sizes (the phantoms have their real dataset's), to count a schedule in steps.
TRAIN_EXAMPLES = {'jsrt': 156, 'acdc': 1344, 'phantom_chest': 156, 'phantom_cardiac': 1344}


def epochs_for_steps(steps: int, dataset: str, num_train_examples: int | None = None,
                     batch_size: int = 20) -> int:
  """The epochs of a schedule of (at least) `steps` optimizer steps: an epoch is
  ceil(examples / batch) steps, and a training subset smaller than a batch is one step."""
  examples = num_train_examples or TRAIN_EXAMPLES[dataset]
  steps_per_epoch = -(-examples // batch_size)
  return -(-steps // steps_per_epoch)


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
                   **settings):
  """Beyond the paper: the benefit of PE as a function of the anatomy's position jitter."""
  models = [{'model': 'cnn4', **(cnn4_settings or {})}, {'model': 'unet'}]
  return product(dataset=[dataset], model=models, padding=['zeros'], position_jitter=jitters,
                 pe=pe_settings((None, 256.0)), seed=seeds, settings=[settings])


def paper_scale() -> ml_collections.ConfigDict:
  """The paper's settings (configuration.base_config defaults), 256×256, for JSRT / ACDC."""
  config = configuration.base_config()
  config.eval_every_epochs = 10
  return config


def phantom_scale() -> ml_collections.ConfigDict:
  """CPU-sized settings for the phantom reproductions (see README for the measured time)."""
  config = configuration.base_config()
  config.image_size = 64
  config.width = 8
  config.num_epochs = 15
  config.eval_every_epochs = 15
  config.num_image_panels = 2
  # A checkpoint costs more than a 1-step epoch of Table 2's 5-image runs (BENCHMARKS.md).
  config.checkpoint_every_epochs = 5
  return config


def laptop_scale() -> ml_collections.ConfigDict:
  """JSRT / ACDC at a laptop's scale: the quick configs' 64×64, width 16 and 20 epochs (30 for
  the small CNN), at which the U-Net learns every structure of both real datasets."""
  config = configuration.quick(configuration.base_config())
  config.num_image_panels = 2
  return config


# At the laptop scale, as for the phantoms: the small CNN needs more epochs, Table 2's subsets
# train the paper's 100 epochs (an epoch of 5 or 10 images is one step).
LAPTOP_CNN4_SETTINGS = {'num_epochs': 30}
LAPTOP_TABLE2_SETTINGS = {'num_epochs': 100}


def laptop_experiments():
  """Every experiment on JSRT and ACDC at the laptop scale (configs/paper/laptop_all.py)."""
  return union(
      table1_fig2(PAPER_DATASETS),
      fig3_small_cnn(PAPER_DATASETS, **LAPTOP_CNN4_SETTINGS),
      table2_data_size('jsrt', sizes=(10, 5), **LAPTOP_TABLE2_SETTINGS),
      fig4_padding(PAPER_DATASETS))


def _on_both_phantoms(experiment, **chest_settings):
  """An experiment on the chest phantom (with `chest_settings`) and on the cardiac phantom at
  its own scale."""
  return union(experiment(['phantom_chest'], **chest_settings),
               experiment(['phantom_cardiac'], **PHANTOM_CARDIAC_SETTINGS))


def phantom_table1_fig2():
  return _on_both_phantoms(table1_fig2)


def phantom_fig3_small_cnn():
  return _on_both_phantoms(fig3_small_cnn, **PHANTOM_CNN4_SETTINGS)


def phantom_fig4_padding():
  return _on_both_phantoms(fig4_padding)


def phantom_experiments():
  """Every experiment on the phantoms at CPU scale (configs/paper/phantom_all.py)."""
  return union(
      phantom_table1_fig2(),
      phantom_fig3_small_cnn(),
      table2_data_size('phantom_chest', **PHANTOM_TABLE2_SETTINGS),
      phantom_fig4_padding(),
      jitter_benefit(cnn4_settings=PHANTOM_CNN4_SETTINGS, **NO_GRID))


def sweep_config(base: ml_collections.ConfigDict, runs) -> ml_collections.ConfigDict:
  base.sweep = runs
  # Runs trained together at most; None: the device's default (`train.train_sweep`). A field,
  # so that the command line can set it (--config.max_models_per_program=1).
  base.max_models_per_program = config_dict.placeholder(int)
  return base


def all_experiments(datasets, table2_dataset):
  return union(table1_fig2(datasets), fig3_small_cnn(datasets), table2_data_size(table2_dataset),
               fig4_padding(datasets))
