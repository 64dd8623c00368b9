"""The settings of one run, their defaults (the paper's), and their validation.

Every config in `configs/` starts from `base_config()` and changes a few fields. Validation runs
before any data is loaded or anything is written, and names the setting, its value and what is
allowed.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from pejax import layers, models, robustness

DATASETS = ('phantom_chest', 'phantom_cardiac', 'jsrt', 'acdc')
COMPUTE_DTYPES = ('float32', 'bfloat16')

# Settings that change how a run is watched or computed, not what it computes (conv_impl only
# reorders float sums): a finished or interrupted run may be continued with other values.
NON_RESULT_SETTINGS = ('log_every_epochs', 'eval_every_epochs', 'checkpoint_every_epochs',
                       'max_checkpoints_to_keep', 'num_image_panels', 'data_dir', 'manual_dir',
                       'eval_batch_size', 'conv_impl')


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Data.
  config.dataset = 'phantom_chest'
  config.image_size = 256
  config.position_jitter = config_dict.placeholder(float)     # phantoms only; None = builder default
  config.num_train_examples = config_dict.placeholder(int)    # random subset (Table 2); None = all
  config.data_dir = config_dict.placeholder(str)             # TFDS data dir; None = TFDS default
  config.manual_dir = config_dict.placeholder(str)           # where JSRT / ACDC files were unpacked
  # Model.
  config.model = 'unet'                 # 'unet' (Table 3) or 'cnn4' (Table 4)
  config.width = 64                     # channels of the first level; 64 = the paper
  config.padding = 'zeros'              # zeros | reflect | replicate | circular | symmetric | valid
  config.use_pe = True
  config.pe_scale = 1.0                 # λ: coordinate channels run over [0, λ]
  config.conv_impl = 'auto'             # 'auto': 'cpu' (pejax.fast_conv) on CPU, 'xla' on GPU/TPU
  config.compute_dtype = 'float32'      # 'bfloat16': mixed precision, float32 master weights
  # Training (paper Sec. 2.4).
  config.num_epochs = 100
  config.batch_size = 20                # global batch, over all devices
  config.learning_rate = 1e-3
  config.seed = 0
  config.scan_epoch = False             # True: one lax.scan per epoch (slow on XLA:CPU, see BENCHMARKS.md)
  # Evaluation, logging, checkpoints.
  config.eval_every_epochs = 5
  config.log_every_epochs = 1
  config.checkpoint_every_epochs = 1
  config.max_checkpoints_to_keep = 2
  config.eval_batch_size = 32           # at most: splits are cut into equal batches
  config.num_image_panels = 4
  config.run_robustness = True
  config.robustness = robustness.default_robustness_config()
  return config


def quick(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Sizes a config for a 2-core CPU: 64×64 phantoms, narrower net, fewer epochs.

  The small CNN learns slower per epoch than the U-Net but its epochs are ~5× cheaper.
  """
  config.image_size = 64
  config.width = 16
  config.num_epochs = 30 if config.model == 'cnn4' else 20
  config.eval_every_epochs = 5
  return config


VARIANTS = {'': lambda config: config, 'quick': quick}


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """`configs/x.py:quick` style variants; an unknown one is an error listing the known ones."""
  if variant not in VARIANTS:
    raise ValueError(f'config variant {variant!r} is not known; use one of '
                     f'{", ".join(repr(v) for v in VARIANTS)}.')
  return VARIANTS[variant](config)


def _error(name: str, value, allowed: str) -> ValueError:
  return ValueError(f'config.{name}={value!r} is not allowed: {allowed}.')


def validate_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ValueError for the first setting that cannot work, before any compute."""
  if config.dataset not in DATASETS:
    raise _error('dataset', config.dataset, f'use one of {", ".join(DATASETS)}')
  if config.model not in models.MODELS:
    raise _error('model', config.model, f'use one of {", ".join(models.MODELS)}')
  if config.padding not in layers.PADDING_MODES:
    raise _error('padding', config.padding, f'use one of {", ".join(layers.PADDING_MODES)}')
  if config.model == 'unet' and config.padding == 'valid':
    raise _error('padding', config.padding, "the U-Net's skip connections need padded convolutions; "
                 "'valid' works with model='cnn4'")
  if config.conv_impl not in layers.CONV_IMPL_CHOICES:
    raise _error('conv_impl', config.conv_impl, f'use one of {", ".join(layers.CONV_IMPL_CHOICES)}')
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise _error('compute_dtype', config.compute_dtype, f'use one of {", ".join(COMPUTE_DTYPES)}')
  if not config.pe_scale >= 0:
    raise _error('pe_scale', config.pe_scale, 'λ must be ≥ 0 (set config.use_pe=False for no PE)')
  multiple = 2**models.UNET_DEPTH if config.model == 'unet' else 1
  if config.image_size < 8 or config.image_size % multiple:
    raise _error('image_size', config.image_size,
                 f'the U-Net halves the image {models.UNET_DEPTH} times, so the size must be a '
                 f'positive multiple of {multiple}' if multiple > 1 else 'use a size ≥ 8')
  _validate_dataset_image_size(config.dataset, config.image_size)
  for name in ('width', 'num_epochs', 'batch_size', 'eval_batch_size', 'eval_every_epochs',
               'checkpoint_every_epochs', 'max_checkpoints_to_keep', 'log_every_epochs'):
    if int(config[name]) < 1:
      raise _error(name, config[name], 'it must be ≥ 1')
  if config.batch_size % num_devices:
    raise _error('batch_size', config.batch_size,
                 f'the global batch must divide evenly over the {num_devices} devices; use a '
                 f'multiple of {num_devices}')
  if config.num_train_examples is not None and config.num_train_examples < 1:
    raise _error('num_train_examples', config.num_train_examples,
                 'use ≥ 1, or None for the whole training split')
  if not 0 < config.learning_rate < float('inf'):
    raise _error('learning_rate', config.learning_rate, 'it must be a finite number > 0')
  if not isinstance(config.seed, int) or config.seed < 0:
    raise _error('seed', config.seed, 'use an integer ≥ 0')
  if config.position_jitter is not None:
    if not config.dataset.startswith('phantom'):
      raise _error('position_jitter', config.position_jitter,
                   'only the phantom datasets have a position jitter; leave it None')
    if config.position_jitter < 0:
      raise _error('position_jitter', config.position_jitter, 'it must be ≥ 0')
  robustness.validate_robustness_config(config.robustness)


def _validate_dataset_image_size(dataset: str, image_size: int) -> None:
  """The sizes the dataset builders make, so that a bad size fails before any data is built."""
  from pejax import datasets  # imported here: configs stay free of TFDS
  if datasets.is_phantom(dataset):
    multiple = datasets.PHANTOM_SIZE_MULTIPLE
    if image_size % multiple:
      raise _error('image_size', image_size,
                   f'the {dataset} builder makes images whose side is a multiple of {multiple}')
  elif image_size not in datasets.dataset_spec(dataset).image_sizes:
    sizes = ', '.join(str(s) for s in datasets.dataset_spec(dataset).image_sizes)
    raise _error('image_size', image_size, f'the {dataset} builder is prepared at {sizes}')


def validate_against_data(config: ml_collections.ConfigDict, num_train: int) -> None:
  """Checks that need the loaded data, still before any training."""
  if config.num_train_examples is not None and config.num_train_examples > num_train:
    raise _error('num_train_examples', config.num_train_examples,
                 f'the training split of {config.dataset} has {num_train} examples')


def result_settings(config) -> dict:
  """The settings that determine a run's numbers (what must match to resume or reuse it)."""
  settings = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
  return {k: v for k, v in settings.items() if k not in NON_RESULT_SETTINGS}
