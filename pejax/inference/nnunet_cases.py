"""Prediction for models trained on a dataset in nnU-Net's raw format: a case's files read with
the reader the model's training files were read with (`data_builders.nnunet.source`: its
orientation rule, its channels in one file or one file per channel, PNG / BMP / TIFF or NIfTI),
normalized as its training cases were, and the labels turned back to the file's own
orientation, so that a mask overlays its input voxel for voxel.

`model` is a `pejax.inference.predict.Segmenter` whose `nnunet_inputs` is set.
"""

from __future__ import annotations

import json
import math
import os
import tempfile

import numpy as np
from etils import epath

from data_builders.nnunet import source as nnunet_source
from pejax import choices, storage
from pejax.errors import CheckpointError, InputFileError, PejaxError, SourceFileError
from pejax.inference import image_files
from pejax.runs import checkpoints, run_files


def recorded_reader(model) -> str:
  """The reader the model's dataset was built with: recorded with the checkpoint; for one written
  before it was, NaturalImage2DIO in 2-D (pejax's only 2-D reader) and for volumes the reader
  dataset.json of the training folder names, where that folder is still found."""
  inputs = model.nnunet_inputs
  if inputs.get('reader'):
    return str(inputs['reader'])
  if int(inputs['ndim']) == 2:
    return 'NaturalImage2DIO'
  folders = _training_folders(model)
  for folder in folders:
    try:
      description = nnunet_source.read_description(folder)
    except PejaxError:
      continue
    # The same dataset still: another one under that name would give another orientation.
    if (description.file_ending == inputs['file_ending']
        and list(description.channel_names) == list(inputs['channel_names'])):
      return description.reader
  looked = ', '.join(os.path.join(folder, nnunet_source.DATASET_JSON) for folder in folders)
  where = (f'no dataset.json of its training data is found at {looked}' if looked
           else 'the checkpoint does not say where its training data were')
  raise CheckpointError(
      f'{model.source}: the model was trained on NIfTI volumes before pejax recorded the nnU-Net '
      'reader with its checkpoints, and the reader decides the orientation its inputs are read '
      f'in (NibabelIOWithReorient turns them to the closest canonical one); {where}. Put the '
      'dataset folder back where it was trained from, or train the model again with this '
      'version of pejax, which records the reader.')


def _training_folders(model) -> list[str]:
  """Where the model's training dataset may still be: its run's data.json and results.json (the
  run folder holding the checkpoint), and the dataset setting where it names a folder without the current
  folder's help (an absolute path, or a name in $nnUNet_raw)."""
  folders = []
  step = epath.Path(model.source)
  if step.parent.name == checkpoints.CHECKPOINT_FOLDER:
    for name, key in ((run_files.DATA_FILE, 'source'), (run_files.RESULTS_FILE, 'dataset_source')):
      recorded = step.parent.parent / name
      try:
        folders.append(str(json.loads(recorded.read_text())[key]))
      except (ValueError, KeyError, TypeError, OSError):
        pass  # missing or damaged: the next record or the setting may still say
  setting = str(model.config.get('dataset', ''))
  if choices.is_nnunet(setting):
    named = setting[len(choices.NNUNET_PREFIX):]
    if os.path.isabs(named):
      folders.append(os.path.normpath(named))
    elif not named.startswith(('.', '~')) and '/' not in named:
      try:
        folders.append(nnunet_source.resolve_folder(named))
      except PejaxError:
        pass  # $nnUNet_raw unset or without it: not found
  return list(dict.fromkeys(folders))


def _nnunet_description(model, file_ending: str) -> nnunet_source.Description:
  """The parts of the training dataset's description its reader needs."""
  inputs = model.nnunet_inputs
  return nnunet_source.Description(
      folder='', name='', channel_names=tuple(inputs['channel_names']),
      class_names=model.class_names, file_ending=file_ending, num_training=0,
      ndim=int(inputs['ndim']), reader=model.nnunet_reader)


def _file_ending(path: epath.Path, model) -> str:
  """The file's ending among those the model's reader reads; InputFileError for another."""
  ndim = int(model.nnunet_inputs['ndim'])
  endings = nnunet_source.NATURAL_IMAGE_ENDINGS if ndim == 2 else nnunet_source.NIFTI_ENDINGS
  ending = next((e for e in endings if path.name.lower().endswith(e)), None)
  if ending is None:
    raise InputFileError(
        f'{path}: the model was trained on {model.nnunet_inputs["file_ending"]} files of a dataset '
        f"in nnU-Net's format (read with nnU-Net's {model.nnunet_reader}); give its cases as "
        f'{" or ".join(endings)} files, as its training data were.')
  return path.name[len(path.name) - len(ending):]


def _case_files(path: epath.Path, model, description) -> list[str]:
  """The channel files of the case of `path`: the file alone where it holds every channel (one
  channel, a colour picture) or is not named as nnU-Net names channel files, else
  `<case>_0000<ending>`, `_0001`, ... beside it (`source.channel_files`)."""
  ending = description.file_ending
  match = nnunet_source.CHANNEL_FILE_STEM.match(path.name[:len(path.name) - len(ending)])
  if model.image_channels == 1 or match is None:
    return [str(path)]
  return nnunet_source.channel_files(str(path.parent), match.group('case'), description)


def _local_copies(paths: list[str], folder: str) -> list[str]:
  """Files of a bucket copied into `folder` (the readers open local files); local ones as given."""
  copies = []
  for path in paths:
    if storage.is_remote(path):
      copies.append(os.path.join(folder, os.path.basename(path)))
      storage.download(path, copies[-1])
    else:
      copies.append(path)
  return copies


def predict_case(model, path: epath.Path, batch_size: int):
  """(scan to write the mask as, (Z, H, W, C) images in [0, 1], (Z, H, W) labels) of the case of
  `path`, read with the model's dataset's reader; Z, H, W in the file's own orientation."""
  if not path.exists():
    raise InputFileError(f'{path}: no such file.')
  inputs = model.nnunet_inputs
  ending = _file_ending(path, model)
  if inputs['ndim'] == 3 and inputs['slicing_axis'] != 0:
    raise InputFileError(
        f'{path}: the model was trained on slices across axis {inputs["slicing_axis"]} of '
        "its volumes (nnU-Net's axis order z, y, x); prediction on files slices across z only. "
        'Resample the case so that its largest spacing is along z.')
  description = _nnunet_description(model, ending)
  with tempfile.TemporaryDirectory(prefix='pejax-predict-') as folder:
    try:
      if storage.is_remote(str(path)):
        # Channel 0 and the files named as its other channels, where the bucket has them.
        remote = [str(path)] + [str(sibling) for c in range(1, model.image_channels)
                                if (sibling := _channel_path(path, c, ending)) and sibling.exists()]
        local = _local_copies(remote, folder)
        paths = _case_files(epath.Path(local[0]), model, description)
      else:
        paths = _case_files(path, model, description)
      for channel_path in paths:
        image_files.check_size(channel_path)
      image, _, _ = nnunet_source.read_case_image(paths, description, _channels_remedy(model))
      original = _nifti_header_image(paths[0]) if inputs['ndim'] == 3 else None
    except SourceFileError as error:
      channels = f'{model.image_channels} channel{"s" if model.image_channels > 1 else ""}'
      raise InputFileError(
          f'{path}: not a case the model can take (it takes {channels}, '
          f'{", ".join(inputs["channel_names"])}, read as its training cases were): {error}'
      ) from error
  if not np.isfinite(image).all():
    raise InputFileError(f'{path}: holds NaN or infinite values; replace them in the file (e.g. '
                         'with the background value) and predict it again.')
  images01 = nnunet_source.unit_range(np.moveaxis(image, 0, -1), inputs['normalization'])
  if inputs['ndim'] == 2:
    images01 = images01[None]
  labels = model(images01, batch_size=batch_size).labels  # (z, y, x) as the reader gave them
  if inputs['ndim'] == 2:
    kind = image_files.kind_of(path) or 'png'
    return image_files.Scan(path, kind, labels.astype(np.float32), False, None), images01, labels
  if description.reader == 'NibabelIOWithReorient':
    images01, labels = _to_file_orientation(original, images01, labels)
  zooms = [float(z) for z in original.header.get_zooms()[:3]] + [math.nan] * 3
  is_volume = labels.shape[0] > 1
  spacing = (zooms[2] if is_volume else math.nan, zooms[1], zooms[0])
  return (image_files.Scan(path, 'nifti', labels.astype(np.float32), is_volume, spacing, original),
          images01, labels)


def _channels_remedy(model) -> str:
  """What to do with a case of another channel count than the model takes."""
  names = ', '.join(model.nnunet_inputs['channel_names'])
  if model.image_channels == 1:
    return f'the model takes one channel ({names}): give it as a gray image'
  if model.image_channels == 3 and int(model.nnunet_inputs['ndim']) == 2:
    return (f'the model takes 3 channels ({names}): give one colour image, or three gray files '
            'named <case>_0000, _0001, _0002')
  return (f'the model takes {model.image_channels} channels ({names}): give the file of each, '
          'named <case>_0000, _0001, ...')


def _nifti_header_image(path: str):
  """The file's NIfTI image as stored (its header and affine; the voxels stay on disk)."""
  import nibabel
  image = nibabel.load(path)  # the header only; a temporary copy may be removed after this
  return nibabel.Nifti1Image(np.broadcast_to(np.uint8(0), image.shape[:3]), image.affine,
                             nibabel.Nifti1Header.from_header(image.header))


def _to_file_orientation(original, images01: np.ndarray, labels: np.ndarray):
  """Images (z, y, x, C) and labels (z, y, x) read in the closest canonical orientation
  (NibabelIOWithReorient) turned back to the orientation `original` stores its voxels in."""
  from nibabel import orientations
  to_file = orientations.ornt_transform(orientations.axcodes2ornt(('R', 'A', 'S')),
                                        orientations.io_orientation(original.affine))

  def turned(array):  # via nibabel's (x, y, z) order
    xyz = np.moveaxis(np.asarray(array), (0, 1, 2), (2, 1, 0))
    return np.ascontiguousarray(np.moveaxis(orientations.apply_orientation(xyz, to_file),
                                            (0, 1, 2), (2, 1, 0)))

  return turned(images01), turned(labels)


def _channel_path(path: epath.Path, channel: int, file_ending: str) -> epath.Path | None:
  """The file of `channel` of the case whose channel-0 file is `path` (nnU-Net's
  `<case>_0000<ending>`), or None when `path` is not so named."""
  if not path.name.lower().endswith(file_ending.lower()):
    return None
  match = nnunet_source.CHANNEL_FILE_STEM.match(path.name[:len(path.name) - len(file_ending)])
  if match is None:
    return None
  ending = path.name[len(path.name) - len(file_ending):]  # as the file spells it
  return path.parent / f"{match.group('case')}_{channel:04d}{ending}"


def channel_zero_files(model, paths):
  """Where the model takes several channels, the cases' channel-0 files (the others are read
  with them)."""
  if model.image_channels < 2 or not model.nnunet_inputs:
    return paths
  kept = []
  for path in paths:
    try:
      ending = _file_ending(path, model)
    except InputFileError:
      kept.append(path)  # not a case file: predicting it says why
      continue
    if (sibling := _channel_path(path, 0, ending)) is None or sibling == path:
      kept.append(path)
  return kept
