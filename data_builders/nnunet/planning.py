"""The first pass over a dataset in nnU-Net's raw format, before anything is written: every case
found and paired with its label, every file read and checked, the splits, the slicing axis and
each channel's normalization record. A bad file is one SourceFileError here, so the TFDS build
never leaves a half-built dataset behind.

NumPy only besides `source` (no TFDS): usable without TensorFlow, like `source`.

Splits (a case's slices never straddle two): test is the cases of imagesTs that have a label in
labelsTs, else a seeded 20 % of the labelled cases (`np.random.default_rng(0)` permutation of the
sorted ids, at least 1); train / validation is fold 0 of splits_final.json where one is found
(minus any test case), else a seeded 1/8 of the rest as validation (`default_rng(1)`, at least
1).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from absl import logging

from data_builders.nnunet import source
from pejax.errors import SourceFileError

SPLITS = ('train', 'validation', 'test')
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 1 / 8
TEST_SEED, VALIDATION_SEED = 0, 1
MIN_CASES = 3


@dataclasses.dataclass(frozen=True)
class Case:
  """One labelled case: its channel files in channel order and its label file."""
  case_id: str
  image_paths: tuple[str, ...]
  label_path: str


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything the build needs, found and checked before the build writes anything."""
  description: source.Description
  cases: dict[str, Case]
  splits: dict[str, tuple[str, ...]]  # split -> sorted case ids
  split_rule: str  # where the splits came from, in words
  slicing_axis: int | None  # 0 z, 1 y, 2 x; None for 2-D images
  examples: dict[str, int]  # case id -> number of 2-D examples
  normalization: tuple[dict, ...]  # per channel, `source.channel_record`

  def summary(self) -> str:
    """e.g. 'Dataset027_ACDC: train 70 cases / 1344 slices, validation ..., test ...'."""
    unit = 'slices' if self.description.ndim == 3 else 'images'
    parts = [f'{split} {len(ids)} cases / {sum(self.examples[i] for i in ids)} {unit}'
             for split, ids in self.splits.items()]
    return f'{self.description.name}: {", ".join(parts)} ({self.split_rule})'


def survey(folder: str) -> Plan:
  """Reads and checks the whole dataset (each case once), then plans the build."""
  description = source.read_description(folder)
  training, test = find_cases(description)
  splits, rule = plan_splits(sorted(training), sorted(test), source.splits_file(folder),
                             description)
  cases = {**training, **test}
  statistics = _Statistics(description)
  shapes = {}
  for split, ids in splits.items():
    for case_id in ids:
      case = cases[case_id]
      image, _, geometry = source.read_case_image(case.image_paths, description)
      label = source.read_case_label(case.label_path, description, geometry,
                                     case.image_paths[0])
      statistics.add(image, label, geometry, training=split == 'train')
      shapes[case_id] = geometry.shape
  axis = None
  if description.ndim == 3:
    axis = source.slicing_axis(statistics.spacings, [shapes[i] for i in splits['train']])
  examples = {i: (shape[axis] if axis is not None else 1) for i, shape in shapes.items()}
  return Plan(description, {i: cases[i] for i in shapes}, splits, rule, axis, examples,
              statistics.records())


# ---------------------------------------------------------------------------------- the cases


def find_cases(description: source.Description) -> tuple[dict[str, Case], dict[str, Case]]:
  """The labelled cases of imagesTr / labelsTr and of imagesTs / labelsTs, each image paired
  with its label; numTraining checked against imagesTr as nnU-Net's integrity check does."""
  folder = description.folder
  for name in ('imagesTr', 'labelsTr'):
    if not os.path.isdir(os.path.join(folder, name)):
      raise SourceFileError(f'{os.path.join(folder, name)} does not exist: an nnU-Net raw '
                            'dataset holds its training cases in imagesTr and labelsTr.')
  training = _paired_cases(description, 'imagesTr', 'labelsTr', unlabelled_ok=False)
  if not training:
    raise SourceFileError(
        f'{os.path.join(folder, "imagesTr")} holds no <case>_0000{description.file_ending} '
        "file: put the training images there, named as nnU-Net's dataset_format.md says.")
  if len(training) != description.num_training:
    raise SourceFileError(
        f'{os.path.join(folder, source.DATASET_JSON)}: numTraining is '
        f'{description.num_training} but imagesTr holds {len(training)} cases: fix numTraining '
        f'(set "numTraining": {len(training)}), or add the missing cases.')
  test = {}
  if os.path.isdir(os.path.join(folder, 'labelsTs')):
    test = _paired_cases(description, 'imagesTs', 'labelsTs', unlabelled_ok=True)
  elif source.list_folder(os.path.join(folder, 'imagesTs')):
    logging.info('%s: imagesTs has no labelsTs beside it, so its cases are not used; the test '
                 'split is drawn from imagesTr.', description.name)
  both = sorted(set(training) & set(test))
  if both:
    raise SourceFileError(f'{folder}: the case {both[0]} is in both imagesTr and imagesTs; '
                          'give each case one id.')
  return training, test


def _paired_cases(description, images_name, labels_name, unlabelled_ok) -> dict[str, Case]:
  images_folder = os.path.join(description.folder, images_name)
  labels_folder = os.path.join(description.folder, labels_name)
  ending = description.file_ending
  channels = _image_files(images_folder, description)
  labels = {name[:-len(ending)]: os.path.join(labels_folder, name)
            for name in source.list_folder(labels_folder) if name.endswith(ending)}
  orphans = sorted(set(labels) - set(channels))
  if orphans:
    raise SourceFileError(
        f'{labels[orphans[0]]} has no image: expected {images_folder}/{orphans[0]}_0000{ending}.'
        ' Add the case\'s images, or remove the label.')
  unlabelled = sorted(set(channels) - set(labels))
  if unlabelled and not unlabelled_ok:
    raise SourceFileError(
        f'{images_folder}/{unlabelled[0]}_0000{ending} has no label file: expected '
        f'{labels_folder}/{unlabelled[0]}{ending}. Add it, or remove the case\'s images (and fix '
        'numTraining).')
  if unlabelled:
    logging.info('%s: %d cases of %s have no label in %s and are not used: %s',
                 description.name, len(unlabelled), images_name, labels_name,
                 ', '.join(unlabelled[:5]) + (' ...' if len(unlabelled) > 5 else ''))
  every_channel = set().union(*channels.values()) if channels else set()
  cases = {}
  for case in sorted(set(channels) & set(labels)):
    missing = sorted(every_channel - channels[case])
    if missing:
      raise SourceFileError(
          f'{images_folder}/{case}_{missing[0]:04d}{ending} is missing: other cases have channel '
          f'{missing[0]}, and every case needs the same channels. Add it, or remove the case.')
    paths = source.channel_files(images_folder, case, description)
    cases[case] = Case(case, tuple(paths), labels[case])
  return cases


def _image_files(folder, description) -> dict[str, set[int]]:
  """case -> the channel numbers of its files in `folder`; other files are passed over."""
  ending = description.file_ending
  cases, ignored = {}, []
  for name in source.list_folder(folder):
    path = os.path.join(folder, name)
    if not name.endswith(ending) or not os.path.isfile(path):
      ignored.append(name)
      continue
    match = source.CHANNEL_FILE_STEM.match(name[:-len(ending)])
    if match is None:
      raise SourceFileError(
          f'{path}: image files are named <case>_<XXXX>{ending}, XXXX the 4-digit channel '
          f'number (e.g. {name[:-len(ending)]}_0000{ending}): rename it.')
    channel = int(match['channel'])
    if channel >= len(description.channel_names):
      raise SourceFileError(
          f'{path} is channel {channel}, but dataset.json lists {len(description.channel_names)}'
          f' channels (channel_names "0" .. "{len(description.channel_names) - 1}"): remove the '
          'file, or add its channel to channel_names.')
    cases.setdefault(match['case'], set()).add(channel)
  if ignored:
    logging.info('%s: passed over %d files not named <case>_<XXXX>%s: %s', folder, len(ignored),
                 ending, ', '.join(ignored[:5]) + (' ...' if len(ignored) > 5 else ''))
  return cases


# --------------------------------------------------------------------------------- the splits


def plan_splits(training_ids, test_ids, splits_path, description):
  """({split: sorted case ids}, how they were made); see the module's docstring."""
  dataset_json = os.path.join(description.folder, source.DATASET_JSON)
  if len(training_ids) + len(test_ids) < MIN_CASES:
    raise SourceFileError(
        f'{dataset_json}: the dataset has {len(training_ids) + len(test_ids)} labelled cases; '
        f'pejax needs at least {MIN_CASES} (training, validation and test): add cases.')
  if test_ids:
    test, pool, rule = sorted(test_ids), sorted(training_ids), 'test: labelsTs'
  else:
    order = np.random.default_rng(TEST_SEED).permutation(len(training_ids))
    count = max(1, round(TEST_FRACTION * len(training_ids)))
    test = sorted(training_ids[i] for i in order[:count])
    pool = sorted(set(training_ids) - set(test))
    rule = f'test: {count} of imagesTr, seeded'
  if splits_path:
    train, validation = _fold_zero(splits_path, pool, set(test))
    rule += f'; train / validation: fold 0 of {splits_path}'
  else:
    if len(pool) < 2:
      raise SourceFileError(
          f'{dataset_json}: imagesTr holds {len(training_ids)} case(s); training and '
          'validation need at least 2 besides the test cases: add cases.')
    order = np.random.default_rng(VALIDATION_SEED).permutation(len(pool))
    count = min(len(pool) - 1, max(1, round(VALIDATION_FRACTION * len(pool))))
    validation = sorted(pool[i] for i in order[:count])
    train = sorted(set(pool) - set(validation))
    rule += f'; validation: {count} of the rest, seeded'
  return {'train': tuple(train), 'validation': tuple(validation), 'test': tuple(test)}, rule


def _fold_zero(path, pool, test):
  """Fold 0 of splits_final.json (minus test cases), checked against the cases found."""
  try:
    with open(path, encoding='utf-8') as file:
      folds = json.load(file)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise SourceFileError(f'{path} is not valid JSON ({error}): fix or delete it.') from error
  fold = folds[0] if isinstance(folds, list) and folds else None
  if not (isinstance(fold, dict) and all(
      isinstance(fold.get(key), list) and all(isinstance(i, str) for i in fold[key])
      for key in ('train', 'val'))):
    raise SourceFileError(f'{path} is not nnU-Net\'s splits_final.json (a list of folds, each '
                          '{"train": [case ids], "val": [case ids]}): fix or delete it.')
  known = set(pool) | test
  for case in fold['train'] + fold['val']:
    if case not in known:
      raise SourceFileError(f'{path} names the case {case!r}, which is not in imagesTr: fix or '
                            'delete the file (nnU-Net writes it anew).')
  train = sorted(set(fold['train']) - test)
  validation = sorted(set(fold['val']) - test)
  if set(train) & set(validation):
    raise SourceFileError(f'{path}: fold 0 has the case {sorted(set(train) & set(validation))[0]}'
                          ' in both train and val: fix or delete the file.')
  left_out = sorted(set(pool) - set(train) - set(validation))
  if left_out:
    raise SourceFileError(f'{path}: fold 0 does not list the case {left_out[0]} of imagesTr '
                          f'({len(left_out)} in all): fix or delete the file.')
  if not train or not validation:
    raise SourceFileError(f'{path}: fold 0 leaves no {"train" if not train else "val"} case '
                          'besides the test cases: fix or delete the file.')
  return train, validation


# ------------------------------------------------------------------------------ intensities


class _Statistics:
  """What the normalization records need, gathered case by case."""

  def __init__(self, description: source.Description):
    self.description = description
    self.schemes = [source.scheme_of(name) for name in description.channel_names]
    count = len(self.schemes)
    self.low, self.high = np.full(count, np.inf), np.full(count, -np.inf)
    self.foreground = [[] for _ in range(count)]  # CT channels: training foreground values
    self.spacings = []  # of the training cases, (z, y, x)

  def add(self, image, label, geometry, training: bool) -> None:
    self.low = np.minimum(self.low, image.reshape(len(image), -1).min(axis=1))
    self.high = np.maximum(self.high, image.reshape(len(image), -1).max(axis=1))
    for c, scheme in enumerate(self.schemes):
      if scheme == 'rgb_to_0_1' and (image[c].min() < 0 or image[c].max() > 255):
        raise SourceFileError(
            f'{geometry.channel_paths[c]} holds values from {image[c].min():g} to '
            f'{image[c].max():g}, but its channel is named rgb_to_0_1, which takes 0 .. 255 '
            '(8-bit images): rename the channel (e.g. zscore) in dataset.json, or convert it.')
      if scheme == 'CT' and training:
        self.foreground[c].append(image[c][label > 0])
    if training and geometry.spacing is not None:
      self.spacings.append(geometry.spacing)

  def records(self) -> tuple[dict, ...]:
    records = []
    for c, scheme in enumerate(self.schemes):
      values = {}
      if scheme == 'noNorm':
        values = {'low': self.low[c], 'high': self.high[c]}
      elif scheme == 'CT':
        foreground = np.concatenate(self.foreground[c])
        if not foreground.size:
          raise SourceFileError(
              f'{os.path.join(self.description.folder, source.DATASET_JSON)}: channel {c} is '
              'CT, normalized with the intensities of the foreground (label > 0) of the '
              'training cases, but they have none: label the cases, or name the channel '
              'otherwise.')
        low, high = np.percentile(foreground, [0.5, 99.5])
        values = {'low': low, 'high': high, 'mean': foreground.mean(), 'std': foreground.std()}
      record = source.channel_record(scheme, **values)
      records.append({'channel': self.description.channel_names[c], **record})
    return tuple(records)
