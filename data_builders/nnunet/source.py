"""Reading and checking a dataset in nnU-Net's raw format (v2), and making pejax's 2-D examples of
its cases: the TFDS builder (`nnunet_dataset_builder`) and prediction on a user's new case share
these functions, so that a model sees a new file as it saw its training data.

NumPy, Pillow, nibabel and json only (no TFDS, no TensorFlow): prediction imports it without
TensorFlow. One file's reading is in `files`, the first pass over a whole dataset (splits,
normalization) in `planning`.

Layout (nnU-Net's documentation/dataset_format.md): `DatasetXXX_Name/dataset.json`,
`imagesTr/<case>_<XXXX><file_ending>` (one file per channel, a 4-digit channel number),
`labelsTr/<case><file_ending>`, optional `imagesTs/` and `labelsTs/`. Arrays follow nnU-Net's
readers: a NIfTI volume in SimpleITK's order (z, y, x), i.e. nibabel's data transposed (2, 1, 0)
with the voxel size reversed likewise; a 2-D image as (rows, columns), a colour one as 3 channels.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence

import numpy as np

from data_builders.conventions import resize_image, resize_label
from data_builders.nnunet.files import Geometry, check_same_geometry, read_file
from pejax.errors import InputFileError, SettingError, SourceFileError

NATURAL_IMAGE_ENDINGS = ('.png', '.bmp', '.tif')  # nnU-Net's NaturalImage2DIO
NIFTI_ENDINGS = ('.nii.gz', '.nii')
NIFTI_READERS = ('NibabelIO', 'SimpleITKIO', 'NibabelIOWithReorient')
READERS = ('NaturalImage2DIO',) + NIFTI_READERS
# Formats nnU-Net reads through SimpleITK or tifffile, which pejax does not depend on.
_OTHER_FORMATS = {'.mha': 'MetaImage', '.mhd': 'MetaImage', '.nrrd': 'NRRD', '.nhdr': 'NRRD',
                  '.tiff': "3-D TIFF (nnU-Net's Tiff3DIO)", '.gipl': 'GIPL', '.dcm': 'DICOM'}
SPLITS_FILE = 'splits_final.json'
DATASET_JSON = 'dataset.json'
SOURCE_FOLDERS = ('imagesTr', 'labelsTr', 'imagesTs', 'labelsTs')
MIN_IMAGE_SIZE = 8
# nnU-Net's channel names that choose a normalization (matched case-insensitively, as
# nnunetv2/preprocessing/normalization/map_channel_name_to_normalization.py does); any other
# name is z-scored.
SCHEMES = {'ct': 'CT', 'nonorm': 'noNorm', 'zscore': 'zscore',
           'rescale_to_0_1': 'rescale_to_0_1', 'rgb_to_0_1': 'rgb_to_0_1'}
CHANNEL_FILE_STEM = re.compile(r'^(?P<case>.+)_(?P<channel>\d{4})$')


@dataclasses.dataclass(frozen=True)
class Description:
  """What dataset.json says, checked."""
  folder: str  # absolute path of DatasetXXX_Name
  name: str  # the folder's basename
  channel_names: tuple[str, ...]  # in channel order 0, 1, ...
  class_names: tuple[str, ...]  # by label value 0 .. K-1, background first
  file_ending: str  # e.g. '.nii.gz', '.png'
  num_training: int
  ndim: int  # 2 (.png/.bmp/.tif natural images) or 3 (.nii/.nii.gz)
  reader: str = 'NibabelIO'  # the nnU-Net reader whose arrays pejax reproduces (READERS)


@dataclasses.dataclass(frozen=True)
class Slice:
  """One 2-D example of a case, resized to S x S."""
  index: int  # position along the slicing axis; 0 for a 2-D image
  image: np.ndarray  # (S, S, C) float32 in [0, 1]
  label: np.ndarray | None  # (S, S) uint8
  spacing: tuple[float, float, float] | None  # mm: slice distance, rows, columns after resizing
  shape: tuple[int, int]  # (rows, columns) before resizing


# ------------------------------------------------------------------------- the dataset folder


def resolve_folder(argument: str) -> str:
  """The absolute path of a dataset folder given as a path or as a name in $nnUNet_raw.

  A path contains a separator or starts with '.' or '~'; anything else ('Dataset027_ACDC', or
  its number '27') is looked up in $nnUNet_raw, as nnU-Net's commands do.
  """
  text = os.fspath(argument)
  if not text.strip():
    raise SettingError('an nnU-Net dataset is named by its folder: give DatasetXXX_Name (a '
                       'folder of $nnUNet_raw) or the folder\'s path.')
  if os.sep in text or '/' in text or text.startswith(('.', '~')):
    folder = os.path.abspath(os.path.expanduser(text))
    if os.path.isfile(folder):
      raise SettingError(f'{folder} is a file: name the dataset by its folder, the '
                         f'DatasetXXX_Name folder that holds dataset.json ({os.path.dirname(folder)}'
                         ' if it is that one).')
    if not os.path.isdir(folder):
      raise SettingError(f'the nnU-Net dataset folder {folder} does not exist: give the path of '
                         'a DatasetXXX_Name folder that holds dataset.json.')
    return folder
  raw = os.environ.get('nnUNet_raw')
  if not raw:
    raise SettingError(
        f'{text!r} is looked up in $nnUNet_raw, which is not set: set nnUNet_raw=/path/to/'
        f'nnUNet_raw (the folder that holds {text}) or give the folder\'s path, e.g. ./{text}.')
  folder = os.path.abspath(os.path.join(os.path.expanduser(raw), text))
  if text.isdigit():  # a dataset number, as `nnUNetv2_train 27 ...` takes it
    prefix = f'Dataset{int(text):03d}_'
    found = sorted(name for name in list_folder(os.path.dirname(folder)) if name.startswith(prefix))
    if len(found) > 1:
      raise SettingError(
          f'the dataset number {text} matches {len(found)} folders of nnUNet_raw={raw}: '
          f'{", ".join(found)}; give the full name (e.g. nnunet:{found[0]}) or the folder\'s path.')
    if not found:
      raise SettingError(
          f'no folder {prefix}* in nnUNet_raw={raw} for the dataset number {text}: set '
          'nnUNet_raw=... to the folder that holds it, or give the folder\'s name or path.')
    folder = os.path.join(os.path.dirname(folder), found[0])
  if not os.path.isdir(folder):
    raise SettingError(
        f'{folder} does not exist (nnUNet_raw={raw}): set nnUNet_raw=... to the folder that '
        f'holds {text}, or give the folder\'s path.')
  return folder


def read_description(folder: str) -> Description:
  """dataset.json of a dataset folder, checked: channels, classes, file ending and reader."""
  folder = os.path.abspath(folder)
  path = os.path.join(folder, DATASET_JSON)
  if not os.path.isfile(path):
    raise SourceFileError(
        f'{path} does not exist: an nnU-Net raw dataset folder holds dataset.json beside '
        'imagesTr and labelsTr (nnU-Net\'s documentation/dataset_format.md). Give the '
        'DatasetXXX_Name folder itself, or write its dataset.json.')
  try:
    with open(path, encoding='utf-8') as file:
      data = json.load(file)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise SourceFileError(f'{path} is not valid JSON ({error}): fix it, e.g. with nnU-Net\'s '
                          'generate_dataset_json.') from error
  if not isinstance(data, dict):
    raise SourceFileError(f'{path} holds a {type(data).__name__}; dataset.json is one JSON '
                          'object with channel_names, labels, numTraining and file_ending.')
  missing = [key for key in ('channel_names', 'labels', 'numTraining', 'file_ending')
             if key not in data]
  if missing:
    hint = (' ("modality" is nnU-Net v1\'s name: rename it to "channel_names")'
            if 'modality' in data and 'channel_names' in missing else '')
    raise SourceFileError(f'{path} has no {", ".join(missing)}{hint}: add them as nnU-Net v2 '
                          'describes them (documentation/dataset_format.md).')
  file_ending = data['file_ending']
  if not isinstance(file_ending, str) or not file_ending.startswith('.'):
    raise SourceFileError(f'{path}: file_ending is {file_ending!r}; it is the files\' ending '
                          'with its dot, e.g. ".nii.gz" or ".png".')
  num_training = data['numTraining']
  if isinstance(num_training, bool) or not isinstance(num_training, int) or num_training < 0:
    raise SourceFileError(f'{path}: numTraining is {num_training!r}; it is the number of cases '
                          'in imagesTr.')
  reader, ndim = _reader(data.get('overwrite_image_reader_writer'), file_ending, path)
  return Description(
      folder=folder, name=os.path.basename(folder),
      channel_names=_channel_names(data['channel_names'], path),
      class_names=_class_names(data['labels'], path), file_ending=file_ending,
      num_training=num_training, ndim=ndim, reader=reader)


def _channel_names(value, path) -> tuple[str, ...]:
  keys = sorted(value, key=lambda k: int(k) if str(k).isdigit() else -1) if isinstance(
      value, dict) else []
  if not keys or [str(k) for k in keys] != [str(i) for i in range(len(keys))] or not all(
      isinstance(value[k], str) for k in keys):
    raise SourceFileError(
        f'{path}: channel_names is {value!r}; it maps the channel numbers "0", "1", ... (all of '
        'them, from 0) to names, e.g. {"0": "CT"} or {"0": "T2", "1": "ADC"}.')
  return tuple(value[k] for k in keys)


def _class_names(labels, path) -> tuple[str, ...]:
  """Label names by value; pejax's classes are exactly nnU-Net's integer labels 0 .. K-1."""
  if not isinstance(labels, dict) or not labels:
    raise SourceFileError(f'{path}: labels is {labels!r}; it maps names to values, e.g. '
                          '{"background": 0, "liver": 1}.')
  if any(str(name).casefold() == 'ignore' for name in labels):
    raise SourceFileError(
        f'{path} has an "ignore" label: pejax scores every pixel and does not support '
        "nnU-Net's ignore label; remove it from labels, or relabel those pixels as a class.")
  if all(str(key).isdigit() and isinstance(value, str) for key, value in labels.items()):
    raise SourceFileError(f'{path}: labels is {labels!r}, nnU-Net v1\'s layout (value -> name); '
                          'v2 maps names to values: swap them, e.g. {"background": 0, ...}.')
  values = {}
  for name, value in labels.items():
    if isinstance(value, list | tuple):
      raise SourceFileError(f'{path}: the label {name!r} is {value!r}: region-based labels are '
                            'not supported; give each class one integer value.')
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
      raise SourceFileError(f'{path}: the label {name!r} has the value {value!r}; each class '
                            'has one integer value.')
    values[name] = int(value)
  ordered = sorted(values, key=values.get)
  if [values[name] for name in ordered] != list(range(len(ordered))) or len(ordered) < 2:
    raise SourceFileError(
        f'{path}: the label values are {sorted(values.values())}; they must be 0 (background), '
        '1, 2, ... without gaps or repeats, and at least one class besides the background.')
  if len(ordered) > 256:
    raise SourceFileError(f'{path} has {len(ordered)} labels; pejax stores labels as uint8 '
                          '(at most 256).')
  return tuple(ordered)


def _reader(override, file_ending: str, path) -> tuple[str, int]:
  """The nnU-Net reader pejax imitates for these files, and 2 or 3 dimensions."""
  natural = file_ending in NATURAL_IMAGE_ENDINGS
  nifti = file_ending in NIFTI_ENDINGS
  if override is not None and override not in READERS:
    raise SourceFileError(
        f'{path}: overwrite_image_reader_writer is {override!r}; pejax reads the files of '
        f'{", ".join(READERS)} only: convert the images and labels to .nii.gz (3-D) or .png '
        '(2-D) and remove overwrite_image_reader_writer.')
  if natural and override in (None, 'NaturalImage2DIO'):
    return 'NaturalImage2DIO', 2
  if nifti and override in (None,) + NIFTI_READERS:
    return override or 'NibabelIO', 3
  if natural or nifti:
    raise SourceFileError(f'{path}: overwrite_image_reader_writer {override} does not read '
                          f'{file_ending} files: remove it, or convert the files.')
  kind = _OTHER_FORMATS.get(file_ending.lower(), f'{file_ending} files')
  raise SourceFileError(
      f'{path}: file_ending {file_ending!r}: pejax does not read {kind} (it does not depend on '
      'SimpleITK); it reads .nii.gz / .nii volumes and .png / .bmp / .tif 2-D images. Convert '
      'the images and labels to .nii.gz (e.g. SimpleITK.WriteImage(SimpleITK.ReadImage(f), '
      "'case.nii.gz')) and set file_ending to \".nii.gz\".")


def splits_file(folder: str) -> str | None:
  """nnU-Net's splits_final.json of the dataset: beside dataset.json, else in
  $nnUNet_preprocessed/<DatasetName>/ (where nnU-Net writes it); None where neither exists."""
  for path in _splits_locations(folder):
    if os.path.isfile(path):
      return path
  return None


def _splits_locations(folder: str) -> list[str]:
  locations = [os.path.join(folder, SPLITS_FILE)]
  preprocessed = os.environ.get('nnUNet_preprocessed')
  if preprocessed:
    locations.append(os.path.join(os.path.expanduser(preprocessed),
                                  os.path.basename(os.path.abspath(folder)), SPLITS_FILE))
  return locations


def source_files(folder: str) -> list[tuple[str, str]]:
  """(key, path) of every source file of a dataset folder, sorted by key: dataset.json, the
  splits_final.json the build reads (`splits_file`; the one in $nnUNet_preprocessed keyed
  '$nnUNet_preprocessed/splits_final.json'), and everything under imagesTr, labelsTr, imagesTs
  and labelsTs keyed by its path relative to the folder, '/'-separated."""
  folder = os.path.abspath(folder)
  if not os.path.isfile(os.path.join(folder, DATASET_JSON)):
    read_description(folder)  # says what is missing
  files = [(DATASET_JSON, os.path.join(folder, DATASET_JSON))]
  splits = splits_file(folder)
  if splits is not None:
    beside = splits == os.path.join(folder, SPLITS_FILE)
    files.append((SPLITS_FILE if beside else f'$nnUNet_preprocessed/{SPLITS_FILE}', splits))
  for name in SOURCE_FOLDERS:
    for root, _, names in os.walk(os.path.join(folder, name)):
      for file_name in names:
        path = os.path.join(root, file_name)
        files.append((os.path.relpath(path, folder).replace(os.sep, '/'), path))
  return sorted(files)


@functools.lru_cache(maxsize=65536)
def _content_hash(path: str, *state) -> str:
  """SHA-256 of a file; cached by its `state` (size, inode, modification and change times) so
  that one process hashes a file once. The change time moves with every write, also one whose
  modification time was set back."""
  del state  # the cache key: a changed file is hashed again
  digest = hashlib.sha256()
  with open(path, 'rb') as file:
    for block in iter(lambda: file.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def file_hashes(folder: str) -> dict[str, list]:
  """{key: [size, sha256]} of every source file of a dataset folder (`source_files`)."""
  files = {}
  for key, path in source_files(folder):
    try:
      status = os.stat(path)
      files[key] = [status.st_size, _content_hash(path, status.st_size, status.st_ino,
                                                  status.st_mtime_ns, status.st_ctime_ns)]
    except OSError as error:
      raise SourceFileError(f'{path} cannot be read ({error.strerror}; a broken link, or a file '
                            'without read permission): remove it, or fix the link or its '
                            'permissions.') from None
  return files


def fingerprint_of(files: dict[str, list]) -> str:
  """Hex SHA-256 of a `file_hashes` listing."""
  return hashlib.sha256(json.dumps(sorted((k, *v) for k, v in files.items())).encode()).hexdigest()


def fingerprint(folder: str) -> str:
  """Hex SHA-256 of every source file's key, size and contents (`file_hashes`): a changed,
  added or removed file gives another fingerprint, so the dataset is built again, and a copy of
  the folder elsewhere (other file times) gives the same one."""
  return fingerprint_of(file_hashes(folder))


def list_folder(folder) -> list[str]:
  try:
    return sorted(os.listdir(folder))
  except FileNotFoundError:
    return []


# ------------------------------------------------------------------------------- the files


def channel_files(images_folder: str, case: str, description: Description) -> list[str]:
  """The channel files of a case, in channel order: `<case>_0000<ending>`, `_0001`, ...

  3-D: one file per channel name. 2-D: the files from _0000 on that exist (a colour file holds 3
  channels, so `read_case_image` checks the count). A missing file is a SourceFileError.
  """
  ending = description.file_ending
  paths = [os.path.join(images_folder, f'{case}_{c:04d}{ending}')
           for c in range(len(description.channel_names))]
  if description.ndim == 2:
    present = [os.path.isfile(path) for path in paths] + [False]
    paths = paths[:present.index(False)]
  missing = next((path for path in paths if not os.path.isfile(path)), None)
  if missing or not paths:
    raise SourceFileError(
        f'{missing or os.path.join(images_folder, f"{case}_0000{ending}")} is missing: each '
        f'case has one file per channel, <case>_0000{ending} ... (dataset.json lists '
        f'{len(description.channel_names)} channels). Add it, or remove the case.')
  return paths


def read_case_image(paths: Sequence[str], description: Description,
                    remedy: str = 'add the missing channel files, or fix channel_names'):
  """A case's channels: (array (C, *spatial) float64, spacing, Geometry).

  spacing: mm per spatial axis in (z, y, x) order for volumes, None for 2-D images. The channel
  files must agree in shape and geometry, and hold len(channel_names) channels together
  (SourceFileError ending in `remedy` where they do not).
  """
  if not paths:
    raise SourceFileError('a case needs at least one channel file (<case>_0000 ...).')
  arrays, geometry, first = [], None, None
  channel_paths = []
  for path in paths:
    data, file_geometry = read_file(path, description.ndim, _reorients(description))
    if geometry is None:
      geometry, first = file_geometry, path
    else:
      check_same_geometry(first, geometry, path, file_geometry)
    arrays.append(data)
    channel_paths += [path] * len(data)
  image = np.concatenate(arrays)
  expected = len(description.channel_names)
  if len(image) != expected:
    name = os.path.basename(paths[0])
    nxt = os.path.join(os.path.dirname(paths[0]),
                       re.sub(r'_\d{4}(?=\.)', f'_{len(paths):04d}', name, count=1))
    # A file not named <case>_0000<ending> has no next channel file to name.
    missing = f' ({nxt} is missing)' if len(image) < expected and nxt != paths[0] else ''
    raise SourceFileError(
        f'{", ".join(paths)} hold {len(image)} channels but dataset.json lists {expected} '
        f'(channel_names){missing}: {remedy}.')
  geometry = dataclasses.replace(geometry, channel_paths=tuple(channel_paths))
  return image, geometry.spacing, geometry


def read_case_label(path: str, description: Description, geometry: Geometry | None = None,
                    image_path: str | None = None) -> np.ndarray:
  """A case's label map (*spatial) uint8, checked: one channel, integral values that are labels
  of dataset.json, and (given the image's Geometry) the image's shape and geometry."""
  data, label_geometry = read_file(path, description.ndim, _reorients(description), label=True)
  if len(data) != 1:
    raise SourceFileError(f'{path} has {len(data)} colour channels; a label file holds one '
                          'integer class per pixel (a gray or palette image).')
  if geometry is not None:
    check_same_geometry(image_path or 'the image', geometry, path, label_geometry)
  label = data[0]
  if not np.array_equal(label, np.round(label)):
    raise SourceFileError(f'{path} holds values that are not integers; a label file holds the '
                          'integer class values of dataset.json\'s labels.')
  # Compared in the file's own type: a cast to int64 first would turn 1e30 into -2**63.
  values = np.unique(label)
  stray = values[(values < 0) | (values >= len(description.class_names))]
  if len(stray):
    # As the file holds them: 3 for 3.0, and a float32 file's 1e30 as 1e+30 (read as float64).
    exact = [str(v) if values.dtype.kind in 'iu' else str(int(v)) if abs(v) < 2**53
             else str(np.float32(v) if np.float32(v) == v else v) for v in stray[:8]]
    shown = ', '.join(exact) + (' ...' if len(stray) > 8 else '')
    raise SourceFileError(
        f'{path} holds the values {shown}, which are not labels of dataset.json (0 .. '
        f'{len(description.class_names) - 1}: {", ".join(description.class_names)}): fix the '
        'file, or add the classes to labels.')
  return label.astype(np.uint8)


def _reorients(description: Description) -> bool:
  return description.reader == 'NibabelIOWithReorient'


# ------------------------------------------------------------------------ intensities to [0, 1]


def scheme_of(channel_name: str) -> str:
  """nnU-Net's normalization of a channel name: 'CT', 'noNorm', 'rescale_to_0_1', 'rgb_to_0_1'
  or 'zscore' (any other name)."""
  return SCHEMES.get(channel_name.casefold(), 'zscore')


def channel_record(scheme: str, *, low=None, high=None, mean=None, std=None) -> dict:
  """How one channel's raw intensities became [0, 1] ('window') and how the model's input is
  made from those ('kind' 'fixed': (x - mean) / std; 'per_image': each 2-D image z-scored).

  CT: window 'dataset' (low, high: the training foreground's 0.5 / 99.5 percentiles, clipped),
  mean and std those of the foreground in window units; noNorm: window 'dataset' over every
  case, mean and std that give back the raw values; rescale_to_0_1: window 'case' (the case's
  min / max), fixed 0 / 1; rgb_to_0_1: window 'rgb' (x / 255), fixed 0 / 1; zscore: window
  'case', kind 'per_image'.
  """
  record = {'scheme': scheme, 'window': 'case', 'low': None, 'high': None, 'kind': 'fixed',
            'mean': 0.0, 'std': 1.0}
  if scheme in ('CT', 'noNorm'):
    low, high = float(low), float(high)
    record.update(window='dataset', low=low, high=high)
    if scheme == 'CT' and high > low:
      record.update(mean=(float(mean) - low) / (high - low), std=float(std) / (high - low))
    elif scheme == 'noNorm':  # the model sees the raw values: x = low + stored * (high - low)
      width = high - low if high > low else 1.0
      record.update(mean=-low / width, std=1.0 / width)
  elif scheme == 'rgb_to_0_1':
    record.update(window='rgb', low=0.0, high=255.0)
  elif scheme != 'rescale_to_0_1':
    record['kind'] = 'per_image'
  return record


def unit_range(channels, records: Sequence[dict]) -> np.ndarray:
  """Raw intensities (..., C), channels last, to float32 (..., C) in [0, 1] by each channel's
  record (`channel_record`): window 'dataset' clips to the recorded low / high; 'case' takes the
  min / max of the whole array given (give a whole case); 'rgb' divides by 255. A constant
  channel maps to 0."""
  values = np.asarray(channels, np.float64)
  if values.ndim < 2 or values.shape[-1] != len(records):
    raise InputFileError(f'the image has shape {values.shape}; expected its {len(records)} '
                         'channels last.')
  result = np.empty(values.shape, np.float32)
  for c, record in enumerate(records):
    x = values[..., c]
    if record['window'] == 'rgb':
      result[..., c] = np.clip(x / 255.0, 0.0, 1.0)
      continue
    if record['window'] == 'dataset':
      low, high = float(record['low']), float(record['high'])
    else:
      low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    result[..., c] = (np.clip(x, low, high) - low) / (high - low) if high > low else 0.0
  return result


# -------------------------------------------------------------------------------- the slices


def slicing_axis(spacings: Sequence[Sequence[float]],
                 shapes: Sequence[Sequence[int]] = ()) -> int:
  """nnU-Net's 2-D choice for volumes: the axis (0 z, 1 y, 2 x) of the largest median spacing;
  ties go to the first. An axis one voxel thick in every case (2-D data saved as NIfTI) is
  taken whatever its spacing: slicing across another would give 1-pixel-wide images."""
  thin = [axis for axis in range(3) if shapes and all(shape[axis] == 1 for shape in shapes)]
  if thin:
    return thin[0]
  return int(np.argmax(np.median(np.asarray(spacings, np.float64), axis=0)))


def slices_of(image01: np.ndarray, size: int, *, axis: int | None = None,
              spacing: Sequence[float] | None = None, label: np.ndarray | None = None,
              num_classes: int | None = None) -> Iterator[Slice]:
  """The 2-D examples of a case, each resized directly to size x size (stretched, not padded:
  padding would add a border, itself a position cue).

  Args:
    image01: (*spatial, C) in [0, 1] (`unit_range`): (rows, columns, C) for a 2-D image, one
      Slice; (z, y, x, C) for a volume, one Slice per index along `axis`, whose rows and columns
      are the other two axes in order (axis 0: slice k is nibabel's `data[:, :, k].T`).
    size: S, at least MIN_IMAGE_SIZE.
    axis: the slicing axis of volumes (`slicing_axis`).
    spacing: the volume's voxel size in mm, (z, y, x); gives each Slice's spacing.
    label: (*spatial) uint8, resized per class (area fraction, argmax) to `num_classes` classes.
  """
  if size < MIN_IMAGE_SIZE:
    raise SettingError(f'image_size={size} is not allowed: at least {MIN_IMAGE_SIZE}.')
  image01 = np.asarray(image01, np.float32)
  if image01.ndim == 3:
    yield _resized(0, image01, label, size, num_classes, None)
    return
  if axis is None:
    raise ValueError('a volume needs its slicing axis')
  rest = [a for a in range(3) if a != axis]
  slice_spacing = None
  if spacing is not None:
    slice_spacing = (float(spacing[axis]),) + tuple(
        float(spacing[a]) * image01.shape[a] / size for a in rest)
  for index in range(image01.shape[axis]):
    plane = np.take(image01, index, axis=axis)
    plane_label = None if label is None else np.take(label, index, axis=axis)
    yield _resized(index, plane, plane_label, size, num_classes, slice_spacing)


def _resized(index, image, label, size, num_classes, spacing) -> Slice:
  channels = [np.clip(resize_image(image[..., c], size), 0.0, 1.0) for c in range(image.shape[-1])]
  if label is not None:
    label = resize_label(label, size, num_classes or int(label.max()) + 1)
  return Slice(index=index, image=np.stack(channels, axis=-1).astype(np.float32), label=label,
               spacing=spacing, shape=tuple(image.shape[:2]))
