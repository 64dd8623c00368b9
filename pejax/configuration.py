"""The settings of one run, their defaults (the paper's), their validation, and settings as JSON.

Every config in `configs/` starts from `base_config()` and changes a few fields. Validation runs
before any data is loaded or anything is written, and names the setting, its value and what is
allowed. This module imports no JAX, TensorFlow or TFDS, so that loading a config is instant.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import ml_collections
from ml_collections import config_dict

from pejax import choices
from pejax.errors import SettingError


@dataclasses.dataclass(frozen=True)
class Role:
  """What one setting is for. Every view of the settings (`result_settings`, `data_settings`,
  `group_settings`, `setting_key`, the report's axes, a sweep run's folder name, the console's
  start line) is read off `ROLES`."""
  # Changes a run's numbers: must match to continue or reuse a run, is shown in TensorBoard's
  # HParams and tells the report's settings apart. The others change how a run is watched or
  # computed, not what it computes (conv_impl only reorders float sums).
  result: bool = True
  data: bool = False                 # decides the data a run sees (runs sharing them share it)
  varies_in_program: bool = False    # may differ between runs trained together (vmapped)
  varies_in_setting: bool = False    # may differ between the runs (seeds) of one reported setting
  axis: bool = False                 # an axis of the paper's experiments; the rest is the scale
  name: str | None = None            # its prefix in a run's folder name ('': the value alone)
  shown: bool = False                # on the console's line when a run starts


ROLES = {
    # Shown on the console when a run starts, in this order.
    'dataset': Role(data=True, axis=True, name='', shown=True),
    'model': Role(axis=True, name='', shown=True),
    'use_pe': Role(axis=True, shown=True),
    'pe_scale': Role(axis=True, varies_in_program=True, shown=True),
    'pe_kind': Role(axis=True, name='', shown=True),
    'pe_layers': Role(axis=True, name='layers', shown=True),
    'padding': Role(axis=True, name='', shown=True),
    'image_size': Role(data=True, shown=True),
    'width': Role(shown=True),
    'num_epochs': Role(name='epochs', shown=True),
    'batch_size': Role(shown=True),
    'seed': Role(varies_in_program=True, varies_in_setting=True, name='seed', shown=True),
    # The others.
    'position_jitter': Role(data=True, axis=True, name='jitter'),
    'pe_bands': Role(axis=True, name='bands'),
    'num_train_examples': Role(axis=True, name='n'),
    'data_dir': Role(result=False, data=True),
    'manual_dir': Role(result=False, data=True),
    'conv_impl': Role(result=False),
    'compute_dtype': Role(),
    'learning_rate': Role(),
    'scan_epoch': Role(),
    'eval_every_epochs': Role(result=False),
    'log_every_epochs': Role(result=False),
    'checkpoint_every_epochs': Role(result=False),
    'max_checkpoints_to_keep': Role(result=False),
    'eval_batch_size': Role(result=False, data=True),
    'num_image_panels': Role(result=False),
    'run_robustness': Role(varies_in_setting=True),
    'robustness': Role(varies_in_program=True),
    # The position probe reads trained networks; it changes none of their numbers.
    'probe': Role(result=False),
}


def names_where(**role) -> tuple[str, ...]:
  """The settings whose role has these values, e.g. `names_where(result=False)`."""
  return tuple(name for name, of in ROLES.items()
               if all(getattr(of, field) == value for field, value in role.items()))


NON_RESULT_SETTINGS = names_where(result=False)
EXPERIMENT_AXES = names_where(axis=True)
SHOWN_SETTINGS = names_where(shown=True)


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
  config.pe_kind = 'linear'             # linear (the paper) | centered | radial | fourier
  config.pe_bands = 4                   # fourier: frequencies 2^k·π, k = 0 … pe_bands − 1
  config.pe_layers = 'input'            # input (the paper) | all (every 3×3 convolution)
  config.conv_impl = 'auto'             # 'auto': 'cpu' (pejax.models.cpu_conv) on CPU, 'xla' on GPU/TPU
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
  config.robustness = default_robustness_config()
  config.probe = default_probe_config()
  return config


def default_robustness_config() -> ml_collections.ConfigDict:
  """Settings of the robustness grid; corruption lists hold the parameter of severity 1..5."""
  cfg = ml_collections.ConfigDict()
  cfg.gaussian_noise = choices.GAUSSIAN_NOISE_SIGMAS   # σ on [0, 1] intensities
  cfg.shot_noise = choices.SHOT_NOISE_COUNTS           # c; smaller is more severe
  cfg.gaussian_blur = choices.GAUSSIAN_BLUR_SIGMAS     # σ in pixels
  cfg.severities = choices.SEVERITIES
  # None: the paper's −64…64 step 8 at 256 px, scaled to the image size (17 shifts).
  cfg.shifts = config_dict.placeholder(tuple)
  cfg.shift_axis = 'x'        # 'x' (width), 'y' (height) or 'xy' (both by the same k)
  cfg.shift_fill = 'zeros'    # 'zeros' (image 0, label background) or 'edge'
  # With PE: the coordinate channels shifted by each shift's k while the image stays, and
  # replaced by their mean (how much the prediction relies on the encoding).
  cfg.encoding_conditions = True
  cfg.seed = 0
  return cfg


def default_probe_config() -> ml_collections.ConfigDict:
  """Settings of the position probe (`pejax.evaluation.probe`, `--mode=probe`): a 3×3
  read-out per level, trained on the features of some inputs and measured on others."""
  cfg = ml_collections.ConfigDict()
  cfg.enabled = False         # True: every run (also of a sweep) is probed after its evaluation
  cfg.steps = 300             # Adam steps of each read-out (full batch)
  cfg.learning_rate = 0.01
  cfg.num_images = 16         # training-split images to train on, test-split images to measure
  # Content-free inputs: constant images (training and held-out intensities differ) ...
  cfg.intensities = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
  cfg.held_out_intensities = (0.1, 0.3, 0.5, 0.7, 0.9)
  cfg.noise_images = 8        # ... and as many uniform-noise images to train on as to measure
  cfg.seed = 0                # the noise images and the choice of training images
  return cfg


def quick(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Sizes a config for a 2-core CPU: 64×64 phantoms, narrower net, fewer epochs.

  The small CNN learns slower per epoch than the U-Net but its epochs are cheaper.
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
    raise SettingError(f'config variant {variant!r} is not known; use one of '
                     f'{", ".join(repr(v) for v in VARIANTS)}.')
  return VARIANTS[variant](config)


# The largest λ accepted: coordinates up to 1e6 keep float32's first layer far from overflow.
MAX_PE_SCALE = 1e6


def _error(name: str, value, allowed: str) -> SettingError:
  return SettingError(f'config.{name}={value!r} is not allowed: {allowed}.')


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises SettingError for the first setting that cannot work, before any compute."""
  if choices.is_nnunet(config.dataset):
    if not config.dataset[len(choices.NNUNET_PREFIX):].strip():
      raise _error('dataset', config.dataset, f'name the dataset folder after '
                   f'{choices.NNUNET_PREFIX}, e.g. {choices.NNUNET_PREFIX}Dataset027_ACDC')
  elif config.dataset not in choices.DATASETS:
    raise _error('dataset', config.dataset, f'use one of {", ".join(choices.DATASETS)}, or '
                 f'{choices.NNUNET_PREFIX}<a dataset folder in nnU-Net\'s raw format>')
  _check_choice(config, 'model', choices.MODELS)
  _check_choice(config, 'padding', choices.PADDING_MODES)
  if config.model == 'unet' and config.padding == 'valid':
    raise _error('padding', config.padding, "the U-Net's skip connections need padded convolutions; "
                 "'valid' works with model='cnn4'")
  _check_choice(config, 'conv_impl', choices.CONV_IMPLS)
  _check_choice(config, 'compute_dtype', choices.COMPUTE_DTYPES)
  _check_choice(config, 'pe_kind', choices.PE_KINDS)
  _check_choice(config, 'pe_layers', choices.PE_LAYERS)
  if not _is_int(config.pe_bands) or not 1 <= config.pe_bands <= choices.MAX_PE_BANDS:
    raise _error('pe_bands', config.pe_bands,
                 f'use an integer from 1 to {choices.MAX_PE_BANDS} (frequencies 2^k·π, k < pe_bands)')
  if not 0 <= config.pe_scale <= MAX_PE_SCALE:
    raise _error('pe_scale', config.pe_scale,
                 f'λ must be a number from 0 to {MAX_PE_SCALE:g} (the paper goes to 256; larger '
                 'coordinates overflow float32 activations); set config.use_pe=False for no PE')
  multiple = choices.UNET_SIZE_MULTIPLE if config.model == 'unet' else 1
  if config.image_size < 8 or config.image_size % multiple:
    raise _error('image_size', config.image_size,
                 f'the U-Net halves the image {choices.UNET_DEPTH} times, so the size must be a '
                 f'positive multiple of {multiple}' if multiple > 1 else 'use a size ≥ 8')
  for name in ('width', 'num_epochs', 'batch_size', 'eval_batch_size', 'eval_every_epochs',
               'checkpoint_every_epochs', 'max_checkpoints_to_keep', 'log_every_epochs'):
    if int(config[name]) < 1:
      raise _error(name, config[name], 'it must be ≥ 1')
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
    if not 0 <= config.position_jitter <= choices.MAX_POSITION_JITTER:
      raise _error('position_jitter', config.position_jitter,
                   f'it is a fraction of the image side, from 0 to {choices.MAX_POSITION_JITTER}')
  validate_robustness_config(config.robustness)
  validate_probe_config(config.probe)


def _check_choice(config, name: str, allowed) -> None:
  if config[name] not in allowed:
    raise _error(name, config[name], f'use one of {", ".join(allowed)}')


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return (isinstance(value, (int, float))
          and not isinstance(value, bool) and math.isfinite(float(value)))


def _invalid(name: str, value, allowed: str) -> SettingError:
  return SettingError(f'robustness config: {name}={value!r} is not allowed; {allowed}')


def validate_robustness_config(cfg) -> None:
  """Raises SettingError naming the first setting of the robustness grid that cannot work."""
  for name in default_robustness_config():
    if name not in cfg:
      raise SettingError(f'robustness config: setting {name!r} is missing')
  severities = cfg.severities
  if (not isinstance(severities, (tuple, list))
      or not all(_is_int(s) and 1 <= s <= 5 for s in severities)
      or len(set(severities)) != len(severities)):
    raise _invalid('severities', severities, 'allowed: distinct integers in 1..5')
  for name in choices.CORRUPTIONS:
    values = cfg[name]
    if (not isinstance(values, (tuple, list)) or len(values) != 5
        or not all(_is_number(v) for v in values)):
      raise _invalid(name, values, 'allowed: 5 finite numbers, the parameter of severity 1..5')
    if name == 'shot_noise':
      if not all(v > 0 for v in values):
        raise _invalid(name, values, 'allowed: photon counts c > 0')
    elif not all(v >= 0 for v in values):
      raise _invalid(name, values, 'allowed: standard deviations σ >= 0')
  shifts = cfg.shifts
  if shifts is not None and (
      not isinstance(shifts, (tuple, list))
      or not all(_is_number(k) and float(k) == int(k) for k in shifts)):
    raise _invalid('shifts', shifts, 'allowed: None (the default) or a list of integer pixels')
  if cfg.shift_axis not in choices.SHIFT_AXES:
    raise _invalid('shift_axis', cfg.shift_axis, f'allowed: {choices.SHIFT_AXES}')
  if cfg.shift_fill not in choices.SHIFT_FILLS:
    raise _invalid('shift_fill', cfg.shift_fill, f'allowed: {choices.SHIFT_FILLS}')
  if not isinstance(cfg.encoding_conditions, bool):
    raise _invalid('encoding_conditions', cfg.encoding_conditions, 'allowed: True or False')
  if not _is_int(cfg.seed) or not 0 <= cfg.seed < 2**32:
    raise _invalid('seed', cfg.seed, 'allowed: an integer in [0, 2**32)')


# ------------------------------------------------------------------------ position probe

MAX_PROBE_STEPS = 100_000  # a read-out converges in hundreds; more is a typo


def _invalid_probe(name: str, value, allowed: str) -> SettingError:
  return SettingError(f'config.probe.{name}={value!r} is not allowed; {allowed}.')


def validate_probe_config(cfg) -> None:
  """Raises SettingError naming the first setting of the position probe that cannot work."""
  for name in default_probe_config():
    if name not in cfg:
      raise SettingError(f'probe config: setting {name!r} is missing')
  if not isinstance(cfg.enabled, bool):
    raise _invalid_probe('enabled', cfg.enabled, 'allowed: True or False')
  if not _is_int(cfg.steps) or not 1 <= cfg.steps <= MAX_PROBE_STEPS:
    raise _invalid_probe('steps', cfg.steps, f'allowed: an integer from 1 to {MAX_PROBE_STEPS}')
  if not _is_number(cfg.learning_rate) or not cfg.learning_rate > 0:
    raise _invalid_probe('learning_rate', cfg.learning_rate, 'allowed: a finite number > 0')
  if not _is_int(cfg.num_images) or cfg.num_images < 1:
    raise _invalid_probe('num_images', cfg.num_images, 'allowed: an integer >= 1')
  if not _is_int(cfg.noise_images) or cfg.noise_images < 0:
    raise _invalid_probe('noise_images', cfg.noise_images, 'allowed: an integer >= 0')
  for name in ('intensities', 'held_out_intensities'):
    values = cfg[name]
    if (not isinstance(values, (tuple, list))
        or not all(_is_number(v) and 0 <= v <= 1 for v in values)):
      raise _invalid_probe(name, values, 'allowed: a list of intensities in [0, 1]')
  shared = set(map(float, cfg.intensities)) & set(map(float, cfg.held_out_intensities))
  if shared:
    raise _invalid_probe('held_out_intensities', cfg.held_out_intensities,
                         f'allowed: intensities the read-out is not trained on (these share '
                         f'{sorted(shared)} with config.probe.intensities)')
  if not (cfg.intensities or cfg.noise_images) or not (cfg.held_out_intensities or cfg.noise_images):
    raise _invalid_probe('noise_images', cfg.noise_images,
                         'allowed: >= 1 where config.probe.intensities or held_out_intensities '
                         'is empty (the content-free read-out needs inputs to train and measure on)')
  if not _is_int(cfg.seed) or not 0 <= cfg.seed < 2**32:
    raise _invalid_probe('seed', cfg.seed, 'allowed: an integer in [0, 2**32)')


def probe_config_of(config) -> ml_collections.ConfigDict:
  """The probe settings of a config or of a run's recorded config (a dict): the defaults for
  runs made before the probe existed, with the run's own values over them."""
  cfg = default_probe_config()
  recorded = config.get('probe') if hasattr(config, 'get') else None
  if recorded is not None:
    recorded = recorded.to_dict() if hasattr(recorded, 'to_dict') else dict(recorded)
    cfg.update({name: tuple(v) if isinstance(v, list) else v for name, v in recorded.items()})
  return cfg


def validate_against_data(config: ml_collections.ConfigDict, num_train: int) -> None:
  """Checks that need the loaded data, still before any training."""
  if config.num_train_examples is not None and config.num_train_examples > num_train:
    raise _error('num_train_examples', config.num_train_examples,
                 f'the training split of {config.dataset} has {num_train} examples')


def json_safe(value):
  """Converts NumPy/JAX scalars and arrays to plain Python; NaN and ±inf to None (valid JSON)."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if hasattr(value, 'tolist') and not isinstance(value, (str, bytes)):
    return json_safe(value.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def settings_dict(config) -> dict[str, Any]:
  """A config (ConfigDict or the dict read back from config.json) as plain JSON values."""
  return json_safe(config.to_dict() if hasattr(config, 'to_dict') else dict(config))


def result_settings(config) -> dict:
  """The settings that determine a run's numbers (what must match to resume or reuse it).

  A setting a run's record lacks (its pejax had no such setting) takes its default: the
  encoding settings of runs made before there was a choice (what they used), and the grid's
  encoding conditions (which a new evaluation of such a run adds)."""
  settings = settings_dict(config)
  robustness = settings.get('robustness')
  if (any(name not in settings for name in _ADDED_SETTINGS)
      or isinstance(robustness, dict) and 'encoding_conditions' not in robustness):
    defaults = settings_dict(base_config())
    for name in _ADDED_SETTINGS:
      settings.setdefault(name, defaults[name])
    if isinstance(robustness, dict):
      settings['robustness'] = {**defaults['robustness'], **robustness}
  return {k: v for k, v in settings.items() if k not in NON_RESULT_SETTINGS}


# Settings added after runs were made (those runs used their defaults).
_ADDED_SETTINGS = ('pe_kind', 'pe_bands', 'pe_layers')


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Optimizer steps of one epoch: ceil(examples / batch); a set smaller than a batch is one."""
  return -(-num_examples // batch_size)


def pe_scale_of(config) -> float:
  """λ of a config; 0 without PE (the coordinate channels are then not added at all)."""
  return float(config.pe_scale) if config.use_pe else 0.0


def data_settings(config) -> tuple:
  """The settings that decide which data a run sees (runs sharing them share the placed data)."""
  return tuple(config[name] for name in names_where(data=True))


def group_settings(config) -> dict:
  """Settings that must agree for runs to be trained together (all but seed, λ and the grid's)."""
  varying = names_where(varies_in_program=True)
  return {k: v for k, v in result_settings(config).items() if k not in varying}


def setting_key(config) -> dict:
  """The settings that make a run's numbers, less those its seeds differ in: runs with equal
  keys are the seeds of one setting of the report. λ is None without PE (it means nothing)."""
  varying = names_where(varies_in_setting=True)
  settings = {k: v for k, v in result_settings(config).items() if k not in varying}
  if not settings.get('use_pe', False):  # the encoding's settings mean nothing without it
    settings.update(pe_scale=None, pe_kind=None, pe_bands=None, pe_layers=None)
  elif settings.get('pe_kind') != 'fourier':
    settings['pe_bands'] = None
  return settings
