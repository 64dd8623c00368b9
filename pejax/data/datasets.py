"""The one loader of pejax: TFDS builders -> numpy arrays, sorted by example id.

Datasets: the built-in phantoms ('phantom_chest', 'phantom_cardiac'; generated on first use),
the real data of the paper ('jsrt', 'acdc'; manual download, see their builders' instructions)
and any dataset in nnU-Net's raw format ('nnunet:Dataset027_ACDC', a folder of $nnUNet_raw, or
'nnunet:/path/to/DatasetXXX_Name'; built on first use and again when its files change).
Every split comes back whole as `SplitArrays` (the datasets are small), with images float32 in
[0, 1]; normalization is left to the input pipeline (`DatasetSpec.normalization` says which).

Command line: build datasets and draw a few examples with their masks, for example

  python -m pejax.data --dataset=phantoms --image_size=128 --picture=docs/phantoms.png

A wrong option, a missing or damaged download ends it with one line, as `main.py` (pejax.errors).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import math
import os
import shutil
import tempfile
import textwrap
import time
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from data_builders import conventions
from data_builders.nnunet import nnunet_dataset_builder
from data_builders.nnunet import source as nnunet_source
from data_builders.phantoms import phantoms_dataset_builder
from pejax import choices, errors, storage

SPLITS = ('train', 'validation', 'test')
# Where a dataset read from a bucket is copied to (ArrayRecord reads local files only); the
# environment variable PEJAX_DATA_CACHE overrides it.
DEFAULT_DATA_CACHE = os.path.join('~', '.cache', 'pejax', 'datasets')


@dataclasses.dataclass(frozen=True)
class SplitArrays:
  images: np.ndarray  # (N, S, S, C) float32 in [0, 1]; C = 1 but for nnU-Net-format datasets
  labels: np.ndarray  # (N, S, S) uint8, 0 .. num_classes - 1
  ids: np.ndarray  # (N,) str, sorted
  # Where the dataset has them (ACDC, 3-D nnU-Net cases): each slice's volume and position in it.
  subjects: np.ndarray | None = None  # (N,) str
  phases: np.ndarray | None = None  # (N,) str, 'ED' / 'ES'; ALL_PHASES for nnU-Net cases
  slice_indices: np.ndarray | None = None  # (N,) int
  # (N, 3) mm: slice distance, row and column spacing of the stored images; NaN where unknown
  # (2-D data have no slice distance); None: no spacing known (phantoms), distances in pixels.
  spacings: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the training code needs to know of a dataset; class names and prepared sizes are
  read from its builder."""
  name: str
  class_names: tuple[str, ...]  # foreground classes, in label order 1, 2, 3, ...
  num_classes: int  # including background
  # 'dataset' (train-split mean/std), 'per_image' (each image's own) or 'channels' (per
  # channel, as the built dataset records: `nnunet_inputs`)
  normalization: str
  image_sizes: tuple[int, ...] | None  # sizes with predefined builder configs; None: any
  manual_download: bool
  image_channels: int = 1
  source: str | None = None  # the source folder of an nnU-Net-format dataset


_PHANTOM_KINDS = {'phantom_chest': 'chest', 'phantom_cardiac': 'cardiac'}
_MANUAL_BUILDER_MODULES = {
    'jsrt': 'data_builders.jsrt.jsrt_dataset_builder',
    'acdc': 'data_builders.acdc.acdc_dataset_builder',
}
# Normalization as in the paper (Sec. 2.2): chest data with the training split's statistics,
# cardiac data per image.
_NORMALIZATION = {'phantom_chest': 'dataset', 'jsrt': 'dataset',
                  'phantom_cardiac': 'per_image', 'acdc': 'per_image'}
DATASETS = choices.DATASETS


# The phase of every slice of an nnU-Net case: one volume per case (ACDC's cases are its phases).
ALL_PHASES = 'all'


def dataset_spec(name: str) -> DatasetSpec:
  if choices.is_nnunet(name):
    # Resolved each time: a relative path or a name in $nnUNet_raw names the folder it names
    # now, never one an earlier call in this process resolved from another current folder.
    return _nnunet_spec(name, nnunet_source.resolve_folder(name[len(choices.NNUNET_PREFIX):]))
  return _named_spec(name)


@functools.cache
def _named_spec(name: str) -> DatasetSpec:
  if name not in _NORMALIZATION:
    raise errors.SettingError(f'Unknown dataset {name!r}; expected one of {sorted(DATASETS)} or '
                              f'{choices.NNUNET_PREFIX}<a dataset folder in nnU-Net\'s format>.')
  if is_phantom(name):
    class_names = phantoms_dataset_builder.CLASS_NAMES[_PHANTOM_KINDS[name]]
    sizes = None
  else:
    # Imported here so that the phantoms work without the real-data builders' dependencies.
    module = importlib.import_module(_MANUAL_BUILDER_MODULES[name])
    class_names = module.CLASS_NAMES
    sizes = tuple(sorted(config.image_size for config in module.Builder.BUILDER_CONFIGS))
  return DatasetSpec(name, tuple(class_names[1:]), len(class_names), _NORMALIZATION[name],
                     sizes, not is_phantom(name))


@functools.cache
def _nnunet_spec(name: str, folder: str) -> DatasetSpec:
  """The spec of an nnU-Net-format dataset, from its dataset.json (nothing is built)."""
  description = nnunet_source.read_description(folder)
  return DatasetSpec(name, tuple(description.class_names[1:]), len(description.class_names),
                     'channels', None, manual_download=False,
                     image_channels=len(description.channel_names), source=description.folder)


def check_image_size(name: str, image_size: int) -> None:
  """Raises SettingError for a size the dataset's builder does not make, before any building."""
  sizes = dataset_spec(name).image_sizes
  if sizes is not None and image_size not in sizes:
    raise errors.SettingError(
        f'config.image_size={image_size!r} is not allowed: the {name} builder is prepared at '
        f'{", ".join(map(str, sizes))}.')


def is_phantom(name: str) -> bool:
  return name in _PHANTOM_KINDS


def nnunet_inputs(builder) -> dict:
  """How a built nnU-Net-format dataset's examples were made from its files, as prediction on a
  new case repeats it: per image channel its [0, 1] window and normalization ('normalization',
  `data_builders.nnunet.source`), the channel names, the file ending, 2-D or 3-D, the axis
  3-D cases are sliced along, and the nnU-Net reader the files were read with (its orientation
  rule)."""
  metadata = nnunet_dataset_builder.read_metadata(builder)
  return {key: metadata[key] for key in
          ('normalization', 'channel_names', 'file_ending', 'ndim', 'slicing_axis', 'reader')}


def _make_builder(spec: DatasetSpec, image_size: int, position_jitter, data_dir):
  """The TFDS builder of a dataset at one image size (not yet prepared)."""
  if is_phantom(spec.name):
    # The phantom builder's own checks, as the settings they are (its ValueError would be a
    # traceback).
    if image_size < phantoms_dataset_builder.MIN_IMAGE_SIZE:
      raise errors.SettingError(
          f'image_size={image_size} is not allowed: phantom images are at least '
          f'{phantoms_dataset_builder.MIN_IMAGE_SIZE}×{phantoms_dataset_builder.MIN_IMAGE_SIZE} '
          'pixels.')
    if position_jitter is not None and not 0 <= position_jitter <= choices.MAX_POSITION_JITTER:
      raise errors.SettingError(
          f'position_jitter={position_jitter} is not allowed: it is a fraction of the image '
          f'side, from 0 to {choices.MAX_POSITION_JITTER}.')
    config = phantoms_dataset_builder.make_config(
        _PHANTOM_KINDS[spec.name], image_size, position_jitter=position_jitter)
    return phantoms_dataset_builder.Builder(config=config, data_dir=data_dir)
  if position_jitter is not None:
    raise errors.SettingError(f'position_jitter only applies to the phantom datasets '
                     f'{sorted(_PHANTOM_KINDS)}; {spec.name!r} is real data with the anatomy '
                     'where it is.')
  if spec.source is not None:
    return nnunet_dataset_builder.make_builder(spec.source, image_size, data_dir)
  if image_size not in spec.image_sizes:
    raise errors.SettingError(
        f'{spec.name!r} has no image_size {image_size}; expected one of {spec.image_sizes}.')
  module = importlib.import_module(_MANUAL_BUILDER_MODULES[spec.name])
  return module.Builder(config=f'size_{image_size}', data_dir=data_dir)


def _prepare(builder, spec: DatasetSpec, manual_dir) -> None:
  """Builds the dataset once (a no-op when it is already prepared)."""
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  building = not builder.data_path.exists()  # as TFDS decides whether to generate it
  if building:
    logging.info('Building the %s dataset (TFDS %s, version %s) in %s; this may take a minute.',
                 spec.name, builder.name, builder.version, builder.data_dir)
    start = time.perf_counter()
  try:
    builder.download_and_prepare(file_format='array_record', download_config=download_config)
    if building:
      logging.info('Built the %s dataset in %.0f s.', spec.name, time.perf_counter() - start)
  except (AssertionError, FileNotFoundError, NotADirectoryError) as error:
    if not spec.manual_download:
      raise
    searched = manual_dir
    if searched is None:  # TFDS's default
      searched = builder.data_dir_root / 'downloads' / 'manual'
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    instructions = getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None) or ''
    instructions = textwrap.dedent(instructions).strip()
    raise errors.DatasetNotFoundError(
        f'The {spec.name!r} dataset is not prepared in {builder.data_dir_root} and its source '
        f'files were not found in the manual folder {searched} ({reason}).\n'
        f'Put the files there, or pass manual_dir=... (--manual_dir=...) to where they are:\n'
        f'{instructions}'
    ) from error


def check_locations(data_dir, manual_dir) -> None:
  """Refuses, before anything is built or read, data folders pejax cannot read."""
  storage.check_location(data_dir, 'config.data_dir')
  storage.check_location(manual_dir, 'config.manual_dir')
  if storage.is_remote(manual_dir):
    raise errors.SettingError(f'config.manual_dir={manual_dir!r} is not allowed: the manually '
                              'downloaded files are read from a local folder.')


def _copy_from_bucket(spec: DatasetSpec, image_size: int, position_jitter, data_dir: str):
  """The builder of a dataset prepared in the bucket folder `data_dir`, read from a local copy.

  The prepared files (TFDS's version folder) are copied to the data cache once, and again when
  the bucket's files differ in names or sizes. Processes on one machine may copy at once: each
  copies to a folder of its own and renames it into place."""
  cache = os.path.expanduser(os.environ.get('PEJAX_DATA_CACHE') or DEFAULT_DATA_CACHE)
  local_root = os.path.join(cache, storage.SCHEME, data_dir.split('://', 1)[1].strip('/'))
  local = str(_make_builder(spec, image_size, position_jitter, local_root).data_dir)
  remote = storage.join(data_dir, os.path.relpath(local, local_root))
  files = storage.file_sizes(remote)
  if 'dataset_info.json' not in files:
    size = f'--image_size={image_size}' + (
        f' --position_jitter={position_jitter}' if position_jitter is not None else '')
    raise errors.DatasetNotFoundError(
        f'The {spec.name!r} dataset is not prepared in {data_dir} (no {remote}/dataset_info.json).'
        f' A data_dir in a bucket is read, never built: build the dataset on one machine and '
        f'copy it there, e.g.\n  python -m pejax.data --dataset={spec.name} {size} '
        f'--data_dir=/tmp/tfds\n  gcloud storage cp -r /tmp/tfds/* {data_dir.rstrip("/")}/')
  if storage.file_sizes(local) != files:
    os.makedirs(os.path.dirname(local), exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.copy.', dir=os.path.dirname(local))
    try:
      for name in files:
        storage.download(storage.join(remote, name), os.path.join(staging, name))
      if storage.file_sizes(local) != files:  # unless another process's copy just landed
        shutil.rmtree(local, ignore_errors=True)
        os.rename(staging, local)
    except OSError:
      if storage.file_sizes(local) != files:  # not another process's complete copy either
        raise
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  return _make_builder(spec, image_size, position_jitter, local_root)


def prepare(name: str, *, image_size: int = 256, position_jitter: float | None = None,
            data_dir=None, manual_dir=None):
  """The prepared TFDS builder of a dataset: built on first use in a local `data_dir`, copied
  from a bucket's `data_dir` (where it must have been built and copied before)."""
  spec = dataset_spec(name)
  check_locations(data_dir, manual_dir)
  if storage.is_remote(data_dir):
    return _copy_from_bucket(spec, image_size, position_jitter, data_dir)
  builder = _make_builder(spec, image_size, position_jitter, data_dir)
  _prepare(builder, spec, manual_dir)
  return builder


def prepare_shared(name: str, **load_kwargs) -> None:
  """On several processes: process 0 builds (or copies from a bucket) a missing dataset while
  the others wait, so that they read it instead of building it at the same time (`prepare`'s
  arguments). A process whose data_dir is its own machine's disk then finds it missing and
  builds its own.

  Every process reaches the one collective step whatever happens on process 0: an error there
  that skipped it (a bug, or a library's error) would leave the others waiting until the
  distributed timeout. Process 0 then raises its own error (a bug keeps its traceback), the
  others an OtherProcessError with process 0's message."""
  import jax
  from jax.experimental import multihost_utils
  if jax.process_count() == 1:
    return
  failure, sent = None, b''
  if jax.process_index() == 0:
    try:
      prepare(name, **load_kwargs)
    except Exception as error:  # every error, not only the user's: the others must not hang
      failure = error
      user_error = errors.translate(error)
      sent = errors.one_line(user_error if user_error is not None
                             else f'{type(error).__name__}: {error}').encode()[:_MESSAGE_BYTES]
  # The message, zero-padded to a fixed size (all processes send arrays of one shape).
  padded = np.zeros(_MESSAGE_BYTES + 1, np.uint8)
  padded[0] = failure is not None
  padded[1:1 + len(sent)] = np.frombuffer(sent, np.uint8)
  received = np.asarray(multihost_utils.broadcast_one_to_all(padded))
  if failure is not None:
    raise failure
  if received[0]:
    text = received[1:].tobytes().rstrip(b'\0').decode(errors='replace')
    raise errors.OtherProcessError(
        f'process 0 could not prepare the {name!r} dataset, so this process stops too: {text}')


_MESSAGE_BYTES = 1000


def _read_split(builder, split: str) -> SplitArrays:
  source = builder.as_data_source(split)
  records = source.__getitems__(range(len(source)))
  ids = np.array([
      r['id'].decode() if isinstance(r['id'], bytes) else str(r['id']) for r in records])
  # Records come back in a shuffled order; the id fixes it.
  order = np.argsort(ids, kind='stable')
  images = np.stack([np.asarray(records[i]['image'], np.float32) for i in order])
  labels = np.stack([np.asarray(records[i]['label'], np.uint8) for i in order])
  optional = {}
  for field, feature, dtype in (('subjects', 'subject', str), ('phases', 'phase', str),
                                ('slice_indices', 'slice_index', np.int64),
                                ('spacings', 'spacing', np.float64)):
    if records and feature in records[0]:
      values = [records[i][feature] for i in order]
      if dtype is str:
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
      optional[field] = np.asarray(values, dtype)
  if 'subjects' in optional and 'phases' not in optional:  # an nnU-Net case is one volume
    optional['phases'] = np.full(len(ids), ALL_PHASES)
  return SplitArrays(images=images, labels=labels, ids=ids[order], **optional)


def load_split(name: str, split: str, *, image_size: int = 256,
               position_jitter: float | None = None, data_dir=None,
               manual_dir=None) -> SplitArrays:
  """One split of a dataset as arrays, building the dataset on first use.

  Args:
    name: a key of `DATASETS`, or 'nnunet:<folder>' (a dataset in nnU-Net's raw format).
    split: 'train', 'validation' or 'test'.
    image_size: side of the square images; phantoms and nnU-Net datasets take any size ≥ 8,
      JSRT and ACDC one of `DatasetSpec.image_sizes`.
    position_jitter: phantoms only: std of the anatomy's translation as a fraction of the image
      side; None is the builder's default.
    data_dir: TFDS data folder; None is TFDS's default (`TFDS_DATA_DIR` or ~/tensorflow_datasets).
      In a bucket (gs://...) the dataset must be prepared there already; it is read from a
      local copy (`prepare`).
    manual_dir: where the manually downloaded files of 'jsrt' / 'acdc' are; None is TFDS's
      default (`<data_dir>/downloads/manual`).

  Raises:
    ValueError: unknown dataset or split, unsupported size, or a phantom-only setting for real
      data.
    DatasetNotFoundError: real data that are neither prepared nor in the manual folder.
  """
  if split not in SPLITS:
    raise errors.SettingError(f'Unknown split {split!r}; expected one of {SPLITS}.')
  builder = prepare(name, image_size=image_size, position_jitter=position_jitter,
                    data_dir=data_dir, manual_dir=manual_dir)
  arrays = _read_split(builder, split)
  if name == 'jsrt':  # one known pixel size, scaled to the stored size
    row_mm, column_mm = conventions.jsrt_pixel_spacing(image_size)
    arrays = dataclasses.replace(arrays, spacings=np.tile(
        [math.nan, row_mm, column_mm], (len(arrays.ids), 1)))
  return arrays


def load_splits(name: str, splits: Sequence[str] = SPLITS, **kwargs) -> dict[str, SplitArrays]:
  """Several splits of one dataset; keyword arguments as for `load_split`."""
  return {split: load_split(name, split, **kwargs) for split in splits}


def _dataset_names(argument: str) -> list[str]:
  """'phantoms' stands for both phantoms, 'all' for every dataset; otherwise a comma list."""
  if argument == 'phantoms':
    return list(_PHANTOM_KINDS)
  if argument == 'all':
    return list(DATASETS)
  names = [name.strip() for name in argument.split(',') if name.strip()]
  for name in names:
    dataset_spec(name)
  return names


def _describe(name: str, split: str, arrays: SplitArrays) -> str:
  fractions = [float((arrays.labels == c).mean()) for c in range(dataset_spec(name).num_classes)]
  return (f'{name}/{split}: {len(arrays.ids)} images {arrays.images.shape[1:]}, intensity '
          f'{arrays.images.mean():.3f} ± {arrays.images.std():.3f}, class fractions '
          + ' '.join(f'{f:.3f}' for f in fractions))


class _ArgumentParser(argparse.ArgumentParser):
  """argparse that says what is wrong in pejax's one line (it would print the usage too)."""

  def error(self, message):
    raise errors.SettingError(f'{message} (python -m pejax.data --help lists the options).')


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
  parser = _ArgumentParser(description='Build pejax datasets and draw examples of them.')
  parser.add_argument(
      '--dataset', default='phantoms',
      help="dataset name, comma-separated names, 'phantoms' (both phantoms) or 'all'")
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--position_jitter', type=float, default=None, help='phantoms only')
  parser.add_argument('--split', default='train', choices=SPLITS, help='split to draw from')
  parser.add_argument('--num_examples', type=int, default=5, help='examples drawn per dataset')
  parser.add_argument('--picture', default=None, help='PNG to write; none by default')
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--manual_dir', default=None)
  args = parser.parse_args(argv)

  rows = []
  for name in _dataset_names(args.dataset):
    options = dict(image_size=args.image_size, data_dir=args.data_dir, manual_dir=args.manual_dir)
    if is_phantom(name):
      options['position_jitter'] = args.position_jitter
    splits = load_splits(name, **options)
    for split, arrays in splits.items():
      print(_describe(name, split, arrays))
    shown = splits[args.split]
    count = min(args.num_examples, len(shown.ids))
    title = f'{name} ({args.split}, {args.image_size}×{args.image_size})'
    rows.append((title, shown.images[:count], shown.labels[:count], dataset_spec(name).class_names))

  if args.picture:
    from pejax import drawing  # matplotlib only when drawing
    fig = drawing.example_grid(rows)
    drawing.save_figure(fig, args.picture, palette_colors=256)
    print(f'Wrote {args.picture}')

