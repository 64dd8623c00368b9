"""ACDC cardiac cine-MRI, end-diastole and end-systole short-axis slices (manual download).

The data may not be redistributed, so this builder only reads what the user downloaded
and unzipped below the TFDS manual folder (found recursively, unused files ignored).

Sources, per subject, in this order of preference:
  1. the official NIfTI files `patientNNN/patientNNN_frameFF.nii[.gz]` and
     `..._gt.nii[.gz]` of the ED and ES frames named in `patientNNN/Info.cfg`
     (`patientNNN_4d.nii.gz` is not used);
  2. HDF5 copies in circulation: volumes `patientNNN_frameFF.h5` or slices
     `patientNNN_frameFF_slice_K.h5`, each with datasets `image` and `label` (or
     `mask`) of shape (Z, H, W) or (H, W). ED and ES come from `Info.cfg` when one is found for the
     subject; otherwise the subject must have exactly two frames, and the lower frame
     number is ED (ACDC's frame01 is the ED frame), the higher ES.

Orientation: a NIfTI volume is an (x, y, z) array; slice z is stored as `data[:, :, z].T`,
rows along y and columns along x, with no flip and the affine ignored. This is
SimpleITK's `GetArrayFromImage(volume)[z]`, the view of the usual ACDC figures and the
layout of the HDF5 copies, whose (H, W) slices are stored as they are.

Stored per example (one short-axis slice of the ED or ES volume):
  image: float32 (S, S, 1) in [0, 1]: the volume is clipped at its 0.5 and 99.5
    percentiles, then min-max scaled; each slice is resized directly to S x S (no padding
    to a square first: padding would add artificial borders, themselves a position cue)
    with PIL's bilinear filter, antialiased when shrinking.
  label: uint8 (S, S): 0 background, 1 right-ventricle cavity, 2 myocardium,
    3 left-ventricle cavity; resized per class (area fraction, argmax; ties go to the
    lower class), so no label appears where the ground truth did not have it.
  id: "patient001_ED_slice03"; subject: "patient001"; phase: "ED" or "ES";
  slice_index: index along the volume's third (NIfTI) or first (HDF5) axis, from 0.
  spacing: float32 (3,), millimetres: (slice distance, row spacing, column spacing) of the
    stored S x S slice (`data_builders.conventions.acdc_spacing` of the NIfTI header's voxel
    size, after the resize); NaN for the HDF5 copies, which carry no voxel size.
"""

import dataclasses
import gzip
import io
import re

from absl import logging
import h5py
import nibabel
import numpy as np
import tensorflow_datasets as tfds

# A damaged or wrong file is the user's to replace: pejax's commands say so in one line.
from pejax.errors import SourceFileError
from data_builders.conventions import acdc_spacing, resize_image, resize_label, scale_intensities

NUM_CLASSES = 4
CLASS_NAMES = ('background', 'right_ventricle', 'myocardium', 'left_ventricle')
PHASES = ('ED', 'ES')
ALL_SUBJECTS = tuple(f'patient{i:03d}' for i in range(1, 101))

_NIFTI_PATTERN = re.compile(r'^(patient\d{3})_frame(\d+)(_gt)?\.nii(\.gz)?$', re.IGNORECASE)
_H5_VOLUME_PATTERN = re.compile(r'^(patient\d{3})_frame(\d+)\.h5$', re.IGNORECASE)
_H5_SLICE_PATTERN = re.compile(r'^(patient\d{3})_frame(\d+)_slice_(\d+)\.h5$', re.IGNORECASE)
_SUBJECT_FOLDER_PATTERN = re.compile(r'^patient\d{3}$', re.IGNORECASE)

# The official training set lists its five groups (DCM, HCM, MINF, NOR, RV) as blocks of
# 20 consecutive subjects: the split takes 14/2/4 subjects of each block, so every split
# holds all groups in the same proportions. Generated once by `split_recipe()`
# (numpy 2.4) and kept as literals so that it never changes.
SPLIT_SEED = 0
SPLIT_SIZES_PER_GROUP = (('train', 14), ('validation', 2), ('test', 4))
GROUP_SIZE = 20


def split_recipe(seed=SPLIT_SEED):
  """For each block of 20 subjects, a permutation from one seeded generator, cut 14/2/4."""
  rng = np.random.default_rng(seed)
  splits = {name: [] for name, _ in SPLIT_SIZES_PER_GROUP}
  for first in range(0, len(ALL_SUBJECTS), GROUP_SIZE):
    group = ALL_SUBJECTS[first:first + GROUP_SIZE]
    order = rng.permutation(len(group))
    start = 0
    for name, size in SPLIT_SIZES_PER_GROUP:
      splits[name] += [group[i] for i in order[start:start + size]]
      start += size
  return {name: tuple(sorted(subjects)) for name, subjects in splits.items()}


TRAIN_SUBJECTS = (
    'patient001', 'patient003', 'patient004', 'patient005', 'patient006', 'patient007',
    'patient008', 'patient009', 'patient011', 'patient012', 'patient013', 'patient014',
    'patient017', 'patient020', 'patient022', 'patient023', 'patient024', 'patient025',
    'patient026', 'patient027', 'patient028', 'patient030', 'patient031', 'patient032',
    'patient035', 'patient037', 'patient039', 'patient040', 'patient043', 'patient045',
    'patient046', 'patient048', 'patient049', 'patient050', 'patient051', 'patient052',
    'patient053', 'patient054', 'patient055', 'patient057', 'patient059', 'patient060',
    'patient062', 'patient063', 'patient064', 'patient066', 'patient067', 'patient068',
    'patient069', 'patient071', 'patient072', 'patient073', 'patient074', 'patient075',
    'patient077', 'patient079', 'patient082', 'patient084', 'patient086', 'patient087',
    'patient088', 'patient089', 'patient093', 'patient094', 'patient095', 'patient096',
    'patient097', 'patient098', 'patient099', 'patient100',
)

VALIDATION_SUBJECTS = (
    'patient018', 'patient019', 'patient029', 'patient034', 'patient044', 'patient047',
    'patient065', 'patient070', 'patient085', 'patient090',
)

TEST_SUBJECTS = (
    'patient002', 'patient010', 'patient015', 'patient016', 'patient021', 'patient033',
    'patient036', 'patient038', 'patient041', 'patient042', 'patient056', 'patient058',
    'patient061', 'patient076', 'patient078', 'patient080', 'patient081', 'patient083',
    'patient091', 'patient092',
)

SPLIT_SUBJECTS = {
    'train': TRAIN_SUBJECTS, 'validation': VALIDATION_SUBJECTS, 'test': TEST_SUBJECTS}

_DOWNLOAD_HINT = (
    'Download the ACDC training set (100 subjects, patient001 ... patient100) from the '
    'challenge site (https://www.creatis.insa-lyon.fr/Challenge/acdc/, registration '
    'required) and unzip it anywhere below the manual folder.')


@dataclasses.dataclass
class AcdcConfig(tfds.core.BuilderConfig):
  """Output size; `allow_missing_subjects` builds from the subjects found (off by default).

  A partial dataset gets its own config name, so it never passes for the full one, e.g.
  `AcdcConfig(name='size_64_partial', image_size=64, allow_missing_subjects=True)`.
  """
  image_size: int = 256
  allow_missing_subjects: bool = False


@dataclasses.dataclass(frozen=True)
class _Volume:
  """Where one ED or ES volume of a subject comes from."""
  subject: str
  phase: str
  frame: int
  image_path: object = None  # NIfTI image
  label_path: object = None  # NIfTI ground truth
  h5_paths: tuple = ()  # one HDF5 volume, or the HDF5 slices in slice order


class Builder(tfds.core.GeneratorBasedBuilder):
  """ACDC short-axis cine-MRI slices (ED and ES) with RV, myocardium and LV labels."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: 70/10/20 subjects, ED and ES slices.',
                   '1.1.0': 'Each slice\'s spacing in mm (slice distance, rows, columns).'}
  BUILDER_CONFIGS = [
      AcdcConfig(name='size_256', image_size=256,
                 description='256x256, the size used in the paper.'),
      AcdcConfig(name='size_128', image_size=128, description='128x128.'),
      AcdcConfig(name='size_64', image_size=64, description='64x64.'),
  ]
  DEFAULT_CONFIG_NAME = 'size_256'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  ACDC may not be redistributed; download it yourself: register on the challenge site
  https://www.creatis.insa-lyon.fr/Challenge/acdc/ and download the training set
  (100 subjects, patient001 ... patient100, each folder with Info.cfg and the
  patientNNN_frameFF.nii.gz / patientNNN_frameFF_gt.nii.gz files of its ED and ES
  frames). Unzip it as it comes anywhere below the manual folder (by default
  ~/tensorflow_datasets/downloads/manual/). HDF5 copies (patientNNN_frameFF.h5 or
  patientNNN_frameFF_slice_K.h5 with datasets `image` and `label`) are accepted too.
  """

  def __init__(self, *, file_format=None, **kwargs):
    # The project reads with `as_data_source`, which needs ArrayRecord: make it the
    # default, `tfds build` included.
    super().__init__(file_format=file_format or 'array_record', **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(
                shape=(size, size, 1), dtype=np.float32,
                doc='Short-axis slice in [0, 1] (per-volume percentile scaling).'),
            'label': tfds.features.Tensor(
                shape=(size, size), dtype=np.uint8,
                doc='0 background, 1 RV cavity, 2 myocardium, 3 LV cavity.'),
            'id': tfds.features.Text(doc='e.g. patient001_ED_slice03.'),
            'subject': tfds.features.Text(doc='e.g. patient001.'),
            'phase': tfds.features.Text(doc='ED or ES.'),
            'slice_index': tfds.features.Tensor(
                shape=(), dtype=np.int32, doc='Slice index in the volume, from 0.'),
            'spacing': tfds.features.Tensor(
                shape=(3,), dtype=np.float32,
                doc='mm: slice distance, row and column spacing after the resize; NaN '
                    'where unknown (HDF5 copies).'),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://www.creatis.insa-lyon.fr/Challenge/acdc/',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError as e:
      raise FileNotFoundError(
          f'ACDC: the manual folder is missing or empty. {_DOWNLOAD_HINT}\n{e}') from e
    files = _find_files(manual_dir)
    present = [s for s in ALL_SUBJECTS if s in files['subjects']]
    missing = [s for s in ALL_SUBJECTS if s not in files['subjects']]
    if missing and (not self.builder_config.allow_missing_subjects or not present):
      raise FileNotFoundError(
          f'ACDC: found {len(present)} of the {len(ALL_SUBJECTS)} training subjects '
          f'below {manual_dir}; missing {_first_few(missing)}. {_DOWNLOAD_HINT} To '
          'build from the subjects found on purpose, use a config with '
          'allow_missing_subjects=True (see AcdcConfig).')
    if missing:
      logging.warning('ACDC: building without %d missing subjects: %s',
                      len(missing), _first_few(missing))
      for split, subjects in SPLIT_SUBJECTS.items():
        if not set(subjects) & set(present):  # TFDS cannot write an empty split
          raise FileNotFoundError(
              f'ACDC: none of the {split} subjects ({_first_few(subjects)}) was found '
              f'below {manual_dir}; even a partial build needs one subject per split.')
    # Check every file is there before the slow part starts.
    volumes = {subject: _plan_subject(subject, files) for subject in present}
    return {
        split: self._generate_examples([volumes[s] for s in subjects if s in volumes])
        for split, subjects in SPLIT_SUBJECTS.items()
    }

  def _generate_examples(self, subject_volumes):
    size = self.builder_config.image_size
    for subject_plan in subject_volumes:
      for volume in subject_plan:
        images, labels, zooms = _read_volume(volume)
        images = scale_intensities(images)
        spacing = np.full(3, np.nan, np.float32)
        if zooms is not None:  # zooms are (x, y, z); the NIfTI array is (x, y, z) = (W, H, Z)
          spacing[:] = acdc_spacing(zooms, images.shape[::-1], size)
        for index, (image, label) in enumerate(zip(images, labels)):
          example_id = f'{volume.subject}_{volume.phase}_slice{index:02d}'
          yield example_id, {
              'image': np.clip(resize_image(image, size), 0.0, 1.0)[..., None],
              'label': resize_label(label, size),
              'id': example_id,
              'subject': volume.subject,
              'phase': volume.phase,
              'slice_index': np.int32(index),
              'spacing': spacing,
          }


def _files_below(root):
  """Every file below root, sorted (epath paths have no recursive glob)."""
  return sorted(folder / name for folder, _, names in root.walk() for name in names)


def _find_files(manual_dir):
  """Collects the files of subjects patient001..patient100 below the manual folder."""
  wanted = set(ALL_SUBJECTS)
  found = {}  # (kind, subject, frame, extra) -> paths

  def add(key, path):
    if key[1] in wanted:
      found.setdefault(key, []).append(path)

  for path in _files_below(manual_dir):
    name = path.name
    if name.lower() == 'info.cfg':
      if _SUBJECT_FOLDER_PATTERN.match(path.parent.name):
        add(('info', path.parent.name.lower(), None, None), path)
    elif match := _NIFTI_PATTERN.match(name):
      kind = 'nifti_label' if match.group(3) else 'nifti_image'
      add((kind, match.group(1).lower(), int(match.group(2)), None), path)
    elif match := _H5_VOLUME_PATTERN.match(name):
      add(('h5_volume', match.group(1).lower(), int(match.group(2)), None), path)
    elif match := _H5_SLICE_PATTERN.match(name):
      add(('h5_slice', match.group(1).lower(), int(match.group(2)), int(match.group(3))),
          path)
  for key, paths in found.items():
    if len(paths) > 1:
      listed = '\n  '.join(str(p) for p in paths)
      raise SourceFileError(
          f'ACDC: {paths[0].name} of {key[1]} was found more than once:\n  {listed}\n'
          'Keep one copy below the manual folder.')
  files = {'subjects': {key[1] for key in found}}
  for (kind, subject, frame, extra), paths in found.items():
    files.setdefault(kind, {})[(subject, frame, extra)] = paths[0]
  return files


def _frames(files, kind, subject):
  return sorted({frame for (s, frame, _) in files.get(kind, {}) if s == subject})


def _plan_subject(subject, files):
  """Returns the ED and ES volumes of a subject, or says which file is missing."""
  info_path = files.get('info', {}).get((subject, None, None))
  nifti_frames = _frames(files, 'nifti_image', subject) + _frames(
      files, 'nifti_label', subject)
  h5_volume_frames = _frames(files, 'h5_volume', subject)
  h5_slice_frames = _frames(files, 'h5_slice', subject)

  if nifti_frames:
    any_file = next(p for k in ('nifti_image', 'nifti_label')
                    for (s, _, _), p in files.get(k, {}).items() if s == subject)
    folder = any_file.parent
    if info_path is None:
      raise FileNotFoundError(
          f'ACDC: {subject} has no Info.cfg: expected {folder / "Info.cfg"} (it names '
          f'the ED and ES frames; it comes with the official download next to '
          f'{any_file.name}).')
    volumes = []
    for phase, frame in zip(PHASES, _read_info(info_path)):
      image_path = files.get('nifti_image', {}).get((subject, frame, None))
      label_path = files.get('nifti_label', {}).get((subject, frame, None))
      stem = f'{subject}_frame{frame:02d}'
      if image_path is None:
        raise FileNotFoundError(
            f'ACDC: {subject} has no image for its {phase} frame {frame} named in '
            f'{info_path}: expected {folder / (stem + ".nii.gz")}.')
      if label_path is None:
        raise FileNotFoundError(
            f'ACDC: {subject} has no ground truth for its {phase} frame {frame} named '
            f'in {info_path}: expected {folder / (stem + "_gt.nii.gz")} next to '
            f'{image_path.name}.')
      volumes.append(_Volume(subject, phase, frame, image_path, label_path))
    return volumes

  frames = sorted(set(h5_volume_frames) | set(h5_slice_frames))
  if not frames:
    raise FileNotFoundError(
        f'ACDC: {subject} has an Info.cfg ({info_path}) but no image files: expected '
        f'{subject}_frameFF.nii.gz and {subject}_frameFF_gt.nii.gz next to it.')
  if info_path is not None:
    phase_frames = _read_info(info_path)
  elif len(frames) == 2:
    phase_frames = frames  # lower frame number = ED, as in ACDC (frame01 is ED)
  else:
    raise FileNotFoundError(
        f'ACDC: {subject} has HDF5 frames {frames} and no Info.cfg; without it the '
        'builder needs exactly two frames (lower = ED, higher = ES). Put the '
        f"subject's Info.cfg from the official download in a folder named {subject}.")
  volumes = []
  for phase, frame in zip(PHASES, phase_frames):
    if frame in h5_volume_frames:
      paths = (files['h5_volume'][(subject, frame, None)],)
    elif frame in h5_slice_frames:
      slices = sorted((k, p) for (s, f, k), p in files['h5_slice'].items()
                      if s == subject and f == frame)
      paths = tuple(p for _, p in slices)
    else:
      raise FileNotFoundError(
          f'ACDC: {subject} has no HDF5 file for its {phase} frame {frame}: expected '
          f'{subject}_frame{frame:02d}.h5 or {subject}_frame{frame:02d}_slice_K.h5.')
    volumes.append(_Volume(subject, phase, frame, h5_paths=paths))
  return volumes


def _read_info(path):
  """Returns the (ED, ES) frame numbers of an Info.cfg ("ED: 1", "ES: 12", ...)."""
  fields = {}
  for line in path.read_text().splitlines():
    key, separator, value = line.partition(':')
    if separator:
      fields[key.strip().upper()] = value.strip()
  try:
    return int(float(fields['ED'])), int(float(fields['ES']))
  except (KeyError, ValueError) as e:
    raise SourceFileError(
        f'ACDC: {path} does not name the ED and ES frames (expected lines like "ED: 1" '
        'and "ES: 12"). Use the Info.cfg of the official download.') from e


def _read_volume(volume):
  """Returns (images, labels, zooms) of a volume: (Z, H, W) float and uint8 arrays, and the
  NIfTI voxel size (x, y, z) in mm (None for HDF5 copies)."""
  zooms = None
  if volume.image_path is not None:
    images, zooms = _read_nifti(volume.image_path, with_zooms=True)
    labels = _read_nifti(volume.label_path)
    names = (volume.image_path, volume.label_path)
  else:
    pairs = [_read_h5(path) for path in volume.h5_paths]
    if len(pairs) == 1 and pairs[0][0].ndim == 3:
      images, labels = pairs[0]
    else:
      _check_slices(pairs, volume.h5_paths)
      images = np.stack([image for image, _ in pairs])
      labels = np.stack([label for _, label in pairs])
    names = (volume.h5_paths[0], volume.h5_paths[0])
  if images.shape != labels.shape:
    raise SourceFileError(
        f'ACDC: the image {names[0]} is {images.shape} (slices, rows, columns) but its '
        f'ground truth {names[1]} is {labels.shape}; they must match: download or unzip '
        'both again.')
  return images, _check_labels(labels, names[1]), zooms


def _read_nifti(path, with_zooms=False):
  """Reads a 3-D NIfTI volume as (z, y, x): slice z is `data[:, :, z].T`; with `with_zooms`,
  also the header's voxel size (x, y, z) in mm."""
  try:
    data = path.read_bytes()
    if path.name.lower().endswith('.gz'):
      data = gzip.decompress(data)
    nifti = nibabel.Nifti1Image.from_bytes(data)
    volume = np.asarray(nifti.dataobj)
    zooms = tuple(float(z) for z in nifti.header.get_zooms()[:3])
  except Exception as e:  # nibabel, gzip and zlib raise many types for damaged files
    raise SourceFileError(
        f'ACDC: cannot read {path} as a NIfTI volume ({type(e).__name__}: {e}). The '
        'file is damaged or incomplete: download or unzip it again.') from e
  while volume.ndim > 3 and volume.shape[-1] == 1:
    volume = volume[..., 0]
  if volume.ndim != 3:
    raise SourceFileError(
        f'ACDC: {path} has shape {volume.shape}; expected a 3-D (x, y, slice) volume '
        'of one frame: use the file of the official download.')
  volume = np.transpose(volume, (2, 1, 0))
  return (volume, zooms) if with_zooms else volume


def _read_h5(path):
  """Reads `image` and `label` of an HDF5 copy: (Z, H, W) volumes or (H, W) slices.

  The copies in circulation were written from SimpleITK arrays, (z, y, x): their slices
  are already in the orientation stored here.
  """
  try:
    with h5py.File(io.BytesIO(path.read_bytes()), 'r') as f:
      keys = set(f.keys())
      image = np.asarray(f['image']) if 'image' in keys else None
      # A few copies name the ground truth `mask`.
      label_key = next((k for k in ('label', 'mask') if k in keys), None)
      label = np.asarray(f[label_key]) if label_key else None
  except Exception as e:  # h5py raises several types for damaged files
    raise SourceFileError(
        f'ACDC: cannot read {path} as HDF5 ({type(e).__name__}: {e}): download or '
        'unzip it again.') from e
  if image is None or label is None:
    raise SourceFileError(
        f'ACDC: {path} has datasets {sorted(keys)}; expected "image" and "label" (the '
        'ground truth). Use a copy with labels, or the official NIfTI files.')
  if image.ndim not in (2, 3):
    raise SourceFileError(f'ACDC: "image" in {path} has shape {image.shape}; expected '
                          '(Z, H, W) or (H, W). Use the official NIfTI files.')
  return image, label


def _check_slices(pairs, paths):
  for (image, _), path in zip(pairs, paths):
    if image.ndim != 2 or image.shape != pairs[0][0].shape:
      raise SourceFileError(
          f'ACDC: the slice {path} has shape {image.shape}; the slices of a volume must '
          f'all be 2-D of shape {pairs[0][0].shape}: download or unzip them again.')


def _check_labels(labels, path):
  values = np.unique(labels)
  unexpected = [v for v in values.tolist() if v not in range(NUM_CLASSES)]
  if unexpected:
    raise SourceFileError(
        f'ACDC: the ground truth {path} contains values {_first_few(unexpected)}; '
        'expected 0 background, 1 right-ventricle cavity, 2 myocardium and '
        '3 left-ventricle cavity. Is it an ACDC *_gt file of the training set?')
  return labels.astype(np.uint8)


def _first_few(items, count=5):
  shown = ', '.join(str(i) for i in items[:count])
  return shown + (f' and {len(items) - count} more' if len(items) > count else '')
