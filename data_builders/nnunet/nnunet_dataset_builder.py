"""Any dataset in nnU-Net's raw format (v2) as pejax's 2-D examples (TFDS builder `nnunet`).

One config per (dataset folder, image size, state of its files): `make_builder` names it
`<dataset name>_<size>_<fingerprint[:12]>`, the fingerprint hashing every source file's path,
size and contents (`source.fingerprint`), so a changed folder is a new config and is
built again instead of silently reused; the configs of one data_dir live side by side.

  builder = make_builder('/data/nnUNet_raw/Dataset027_ACDC', 128, data_dir=...)
  builder.download_and_prepare(file_format='array_record')
  train = builder.as_data_source('train')  # records in shuffled order: sort them by 'id'
  metadata = read_metadata(builder)  # normalization, splits, class names, ...

Stored per example:
  image: float32 (S, S, C) in [0, 1]: each channel's raw intensities mapped by its window
    (`source.channel_record`, recorded in the metadata's 'normalization'), then resized directly
    to S x S with PIL's bilinear filter (stretched, not padded).
  label: uint8 (S, S): nnU-Net's label values, resized per class (area fraction, argmax).
  id: the case id (2-D images) or f'{case}_slice{k:03d}' (volumes).
  volumes only: subject (the case id), slice_index (k), spacing float64 (3,) mm (slice
    distance, row and column spacing of the stored S x S slice).

Everything (dataset.json, every case's files, shapes, geometry, labels) is read and checked in
`planning.survey` before TFDS writes anything: a bad file is one SourceFileError and no dataset.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from data_builders.nnunet import planning, source
from pejax.errors import SettingError, SourceFileError

SPLITS = planning.SPLITS
METADATA_KEYS = ('source_folder', 'fingerprint', 'dataset_name', 'channel_names', 'class_names',
                 'file_ending', 'ndim', 'slicing_axis', 'normalization', 'splits', 'split_rule',
                 'image_size', 'reader')


@dataclasses.dataclass(eq=False)  # configs compare by identity, as TFDS's own do
class NnunetConfig(tfds.core.BuilderConfig):
  """One dataset folder at one size, in one state of its files (`make_builder` fills it)."""
  folder: str = ''
  image_size: int = 64
  fingerprint: str = ''
  num_channels: int = 1
  ndim: int = 2


def config_name(dataset_name: str, image_size: int, fingerprint: str) -> str:
  """`<dataset name>_<size>_<fingerprint[:12]>` in the characters TFDS allows in a config name
  (and that every file system keeps apart: lower case)."""
  name = re.sub(r'[^0-9a-z]+', '_', dataset_name.lower()).strip('_') or 'dataset'
  return f'{name}_{image_size}_{fingerprint[:12]}'


def make_builder(folder: str, image_size: int, data_dir=None) -> Builder:
  """The builder of a dataset folder (a path, or a name in $nnUNet_raw) at image_size x
  image_size, named after the current state of its files; nothing is read but dataset.json."""
  if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer) or (
      image_size < source.MIN_IMAGE_SIZE):
    raise SettingError(f'image_size={image_size!r} is not allowed: nnU-Net-format datasets are '
                       f'stored at any size of at least {source.MIN_IMAGE_SIZE} pixels.')
  folder = source.resolve_folder(folder)
  description = source.read_description(folder)
  digest = source.fingerprint(folder)
  config = NnunetConfig(
      name=config_name(description.name, int(image_size), digest),
      description=(f'{folder} ({", ".join(description.channel_names)}; '
                   f'{len(description.class_names)} classes) at {image_size}x{image_size}.'),
      folder=folder, image_size=int(image_size), fingerprint=digest,
      num_channels=len(description.channel_names), ndim=description.ndim)
  return Builder(config=config, data_dir=data_dir)


def read_metadata(builder) -> dict:
  """The metadata a prepared builder recorded (METADATA_KEYS), as plain JSON values."""
  metadata = dict(builder.info.metadata or {})
  missing = [key for key in METADATA_KEYS if key not in metadata]
  if missing:
    raise SourceFileError(
        f'{builder.data_dir}: the dataset\'s metadata.json lacks {", ".join(missing)} (not '
        'prepared, or by another version of pejax): delete that folder and build it again.')
  return metadata


class Builder(tfds.core.GeneratorBasedBuilder):
  """2-D slices (or images) of a dataset in nnU-Net's raw format, with its label values."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.',
                   '1.1.0': "The metadata names the nnU-Net reader the files were read with "
                            "('reader'), which prediction repeats."}

  def __init__(self, *, file_format=None, **kwargs):
    # The project reads with `as_data_source`, which needs ArrayRecord: make it the default.
    super().__init__(file_format=file_format or 'array_record', **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    size = config.image_size
    features = {
        'image': tfds.features.Tensor(
            shape=(size, size, config.num_channels), dtype=np.float32,
            doc='Channels in [0, 1], each by its window (metadata "normalization").'),
        'label': tfds.features.Tensor(shape=(size, size), dtype=np.uint8,
                                      doc='Label values of dataset.json.'),
        'id': tfds.features.Text(doc='Case id, or <case>_sliceKKK for volumes.'),
    }
    if config.ndim == 3:
      features.update({
          'subject': tfds.features.Text(doc='The case id.'),
          'slice_index': tfds.features.Tensor(shape=(), dtype=np.int64,
                                              doc='Index along the slicing axis, from 0.'),
          'spacing': tfds.features.Tensor(
              shape=(3,), dtype=np.float64,
              doc='mm: slice distance, row and column spacing after the resize.'),
      })
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features),
        supervised_keys=('image', 'label'),
        homepage='https://github.com/MIC-DKFZ/nnUNet',
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # the files are local
    config = self.builder_config
    if source.fingerprint(config.folder) != config.fingerprint:
      raise SourceFileError(
          f'the files of {config.folder} changed after this builder was made: make it again '
          '(make_builder), so that the dataset is built from the files as they are now.')
    plan = planning.survey(config.folder)  # every file read and checked before any is written
    description = plan.description
    if (len(description.channel_names), description.ndim) != (config.num_channels, config.ndim):
      raise SourceFileError(f'{config.folder}: dataset.json changed while the builder was made: '
                            'make it again (make_builder).')
    self.info.metadata.update({
        'source_folder': description.folder, 'fingerprint': config.fingerprint,
        'dataset_name': description.name, 'channel_names': list(description.channel_names),
        'class_names': list(description.class_names), 'file_ending': description.file_ending,
        'ndim': description.ndim, 'slicing_axis': plan.slicing_axis,
        'normalization': [dict(record) for record in plan.normalization],
        'splits': {split: list(ids) for split, ids in plan.splits.items()},
        'split_rule': plan.split_rule, 'image_size': config.image_size,
        'reader': description.reader,
    })
    print(plan.summary())
    logging.info('%s', plan.summary())
    return {split: self._generate_examples(plan, split) for split in SPLITS}

  def _generate_examples(self, plan: planning.Plan, split: str):
    description = plan.description
    size = self.builder_config.image_size
    for case_id in plan.splits[split]:
      case = plan.cases[case_id]
      image, spacing, _ = source.read_case_image(case.image_paths, description)
      label = source.read_case_label(case.label_path, description)
      image01 = source.unit_range(np.moveaxis(image, 0, -1), plan.normalization)
      for piece in source.slices_of(image01, size, axis=plan.slicing_axis, spacing=spacing,
                                    label=label, num_classes=len(description.class_names)):
        if description.ndim == 2:
          yield case_id, {'image': piece.image, 'label': piece.label, 'id': case_id}
          continue
        example_id = f'{case_id}_slice{piece.index:03d}'
        yield example_id, {
            'image': piece.image, 'label': piece.label, 'id': example_id, 'subject': case_id,
            'slice_index': np.int64(piece.index),
            'spacing': np.asarray(piece.spacing, np.float64),
        }
