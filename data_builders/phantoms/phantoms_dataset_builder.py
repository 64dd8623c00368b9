"""TFDS builder of the procedural chest-radiograph and cardiac-MRI phantoms.

Everything is generated locally from a seed (no download). Predefined configs are named
`{kind}_{size}` (for example `chest_64`, `cardiac_256`) and use the default position jitter and
split sizes; any other combination is a `PhantomConfig`, most easily made with `make_config`:

  builder = Builder(config=make_config('chest', 64, position_jitter=0.1), data_dir=...)
  builder.download_and_prepare(file_format='array_record')
  train = builder.as_data_source('train')
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from data_builders.phantoms import phantom_generator

CHEST = phantom_generator.CHEST
CARDIAC = phantom_generator.CARDIAC
KINDS = phantom_generator.KINDS
# Names of the label values 0..3, as JSRT's and ACDC's builders name theirs.
CLASS_NAMES = {
    CHEST: ('background', 'right_lung', 'left_lung', 'heart'),
    CARDIAC: ('background', 'right_ventricle', 'myocardium', 'left_ventricle'),
}
DEFAULT_POSITION_JITTER = phantom_generator.DEFAULT_POSITION_JITTER
# Chest as JSRT's 247 images split in the paper; cardiac about as many slices as the ED and ES
# volumes of the ACDC builder's 70 / 10 / 20-subject split hold.
DEFAULT_SPLIT_SIZES = {
    CHEST: {'train': 156, 'validation': 23, 'test': 68},
    CARDIAC: {'train': 1344, 'validation': 192, 'test': 384},
}
PREDEFINED_SIZES = (64, 128, 256)
SPLITS = ('train', 'validation', 'test')
MIN_IMAGE_SIZE = 8


@dataclasses.dataclass(eq=False)  # configs compare by identity, as TFDS's own do
class PhantomConfig(tfds.core.BuilderConfig):
  """One phantom variant. Fields left as None take the kind's default (see README).

  Attributes:
    kind: 'chest' or 'cardiac'.
    image_size: side S of the square images.
    position_jitter: standard deviation of the whole-anatomy translation per axis, as a
      fraction of S (truncated at 2.5 standard deviations); 0 keeps the anatomy in place.
    train_size, validation_size, test_size: examples per split.
    seed: base seed; each split and example draws from its own stream of it.
  """

  kind: str = CHEST
  image_size: int = 256
  position_jitter: float | None = None
  train_size: int | None = None
  validation_size: int | None = None
  test_size: int | None = None
  seed: int = 0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'Unknown phantom kind {self.kind!r}; expected one of {KINDS}.')
    if self.image_size < MIN_IMAGE_SIZE:
      raise ValueError(f'image_size must be at least {MIN_IMAGE_SIZE}, got {self.image_size}.')
    if self.position_jitter is None:
      self.position_jitter = DEFAULT_POSITION_JITTER[self.kind]
    if not 0.0 <= self.position_jitter <= 0.5:
      raise ValueError('position_jitter is a fraction of the image side in [0, 0.5], '
                       f'got {self.position_jitter}.')
    for split in SPLITS:
      if getattr(self, f'{split}_size') is None:
        setattr(self, f'{split}_size', DEFAULT_SPLIT_SIZES[self.kind][split])
      if getattr(self, f'{split}_size') < 1:
        raise ValueError(f'{split}_size must be at least 1, got {getattr(self, f"{split}_size")}.')

  def split_size(self, split: str) -> int:
    return getattr(self, f'{split}_size')


def _config_name(kind, image_size, position_jitter, split_sizes, seed) -> str:
  """`{kind}_{size}`, plus a suffix for every setting that differs from the defaults."""
  name = f'{kind}_{image_size}'
  if position_jitter != DEFAULT_POSITION_JITTER[kind]:
    name += '_jitter' + f'{position_jitter:g}'.replace('.', 'p')
  if split_sizes != DEFAULT_SPLIT_SIZES[kind]:
    name += '_n' + '-'.join(str(split_sizes[split]) for split in SPLITS)
  if seed != 0:
    name += f'_seed{seed}'
  return name


def _predefined_config(kind: str, image_size: int) -> PhantomConfig:
  jitter = DEFAULT_POSITION_JITTER[kind]
  return PhantomConfig(
      name=f'{kind}_{image_size}',
      description=(f'{kind} phantom, {image_size}x{image_size}, position jitter {jitter:g} of the '
                   'image side, default split sizes.'),
      kind=kind,
      image_size=image_size,
  )


_PREDEFINED_CONFIGS = [
    _predefined_config(kind, size) for kind in KINDS for size in PREDEFINED_SIZES]


def make_config(kind: str, image_size: int, position_jitter: float | None = None,
                train_size: int | None = None, validation_size: int | None = None,
                test_size: int | None = None, seed: int = 0) -> PhantomConfig:
  """A config for any setting, named after what differs from the defaults.

  Returns the predefined config when the settings match one (TFDS refuses a new config object
  that reuses a predefined name), so the data are built and cached once per setting.
  """
  config = PhantomConfig(
      name='unnamed', kind=kind, image_size=image_size, position_jitter=position_jitter,
      train_size=train_size, validation_size=validation_size, test_size=test_size, seed=seed)
  split_sizes = {split: config.split_size(split) for split in SPLITS}
  config.name = _config_name(kind, image_size, config.position_jitter, split_sizes, seed)
  for predefined in _PREDEFINED_CONFIGS:
    if predefined.name == config.name:
      return predefined
  config.description = (
      f'{kind} phantom, {image_size}x{image_size}, position jitter {config.position_jitter:g}, '
      f'splits {split_sizes}, seed {seed}.')
  return config


class Builder(tfds.core.GeneratorBasedBuilder):
  """Chest-radiograph-like and cardiac-MRI-like segmentation phantoms with 4 classes."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Initial release.',
      '2.0.0': ('Class statistics calibrated to the real training splits at 64x64 (presence, '
                'area, centroid mean and spread, intensity). Cardiac (ACDC): the LV near the '
                'image centre, the RV a tenth of the side to its left with twice the vertical '
                'spread, cavities about half again as large, a thinner wall, slices beyond the '
                'apex and without RV, ACDC-like intensities; splits 1344 / 192 / 384 (was 300 / '
                '50 / 100). Chest (JSRT): larger lungs and heart with more size variation '
                '(inspiration depth), anatomy higher on the film.'),
  }
  BUILDER_CONFIGS = _PREDEFINED_CONFIGS
  DEFAULT_CONFIG_NAME = 'chest_256'

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(size, size, 1), dtype=np.float32),
            'label': tfds.features.Tensor(shape=(size, size), dtype=np.uint8),
            'id': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://arxiv.org/abs/2005.03463',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # generated locally
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split: str):
    config = self.builder_config
    for index in range(config.split_size(split)):
      image, label = phantom_generator.generate_example(
          config.kind, config.image_size, config.position_jitter, config.seed, split, index)
      example_id = phantom_generator.example_id(config.kind, split, index)
      yield example_id, {'image': image, 'label': label, 'id': example_id}
