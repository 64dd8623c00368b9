"""Use a trained model: `pejax.load(path)` gives a `Segmenter` that predicts label maps and class
probabilities for images in [0, 1] of any size.

    import pejax
    model = pejax.load('runs/unet_pe_quick')     # a run folder, its checkpoints/ or one step
    result = model(images01)                     # (N, H, W) or (N, H, W, C), or one (H, W)
    result.labels, result.probabilities          # (N, H, W) uint8, (N, H, W, classes) float32

Everything the model needs comes from the checkpoint itself (its Orbax custom metadata,
`provenance.model_description`): the settings that build the model, the normalization
statistics of its training data and the class names. A checkpoint copied alone (the step
folder, the checkpoints/ folder or the run folder) loads anywhere; so do paths `etils.epath`
opens (gs://...).

Images of another size than the model's are resized to it as the dataset's builder resized
its images (area averaging for chest X-rays, bilinear for cardiac MRI and the phantoms); the
class probabilities are resized back to the input's size (bilinear) and the labels are their
argmax. At the model's own size the labels are exactly those of the evaluation.

A model trained on a dataset in nnU-Net's format reads each input case with that dataset's own
reader (`data_builders.nnunet.source.read_case_image`: NibabelIOWithReorient's turn to the
closest canonical orientation, a colour picture's channels in one file, .png / .bmp / .tif through
Pillow), and its mask is turned back to the file's own orientation, so that it overlays the input
voxel for voxel. The reader is recorded with the checkpoint; one written before it was is read as
its dataset's dataset.json says, where that folder is still found, and refused otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from PIL import Image

from absl import logging

from data_builders import conventions
from pejax import configuration, storage
from pejax.inference import image_files, mask_files, nnunet_cases
from pejax.models import predictor as predictor_lib
from pejax.models import spec as spec_lib
from pejax.models import steps
from pejax.runs import checkpoints
from pejax.errors import CheckpointError, InputFileError, RunNotFoundError

STATE_ITEM = 'default'  # the item name CheckpointManager gives a single saved state
STEP_METADATA = '_CHECKPOINT_METADATA'  # the file Orbax writes the step's metadata to
# How each dataset's builder brought its images to the stored size.
_TO_MODEL_RESAMPLE = {'jsrt': Image.Resampling.BOX, 'phantom_chest': Image.Resampling.BOX,
                      'acdc': Image.Resampling.BILINEAR,
                      'phantom_cardiac': Image.Resampling.BILINEAR}


@dataclasses.dataclass(frozen=True)
class Prediction:
  labels: np.ndarray         # (N, H, W) uint8, 0 = background
  probabilities: np.ndarray  # (N, H, W, num_classes) float32, summing to 1 per pixel


def checkpoint_step(path) -> epath.Path:
  """The step folder of a run folder, of its checkpoints/ folder (the latest step), or itself;
  absolute, since Orbax refuses relative paths."""
  path = epath.Path(checkpoints.orbax_path(path))
  if (path / STATE_ITEM).is_dir() or (path / STEP_METADATA).exists():
    return path
  if (path / checkpoints.CHECKPOINT_FOLDER).is_dir():
    path = path / checkpoints.CHECKPOINT_FOLDER
  # Orbax writes into a temporary name and renames to the bare step number when complete: the
  # latest numbered folder is the checkpoint asked for, and one that lacks files is damaged
  # (`load` says so rather than quietly loading an older epoch).
  steps_found = ([p for p in path.iterdir() if p.name.isdigit() and p.is_dir()]
                 if path.is_dir() else [])
  if not steps_found:
    raise RunNotFoundError(
        f'{path}: no pejax checkpoint there. Give a run folder (with checkpoints/), its '
        'checkpoints/ folder, or one step folder of it (holding "default/").')
  return max(steps_found, key=lambda p: int(p.name))


def _damaged(step_folder: epath.Path, problem: str) -> CheckpointError:
  return CheckpointError(
      f'{step_folder}: the checkpoint {problem}. Restore it from a copy, or load an earlier '
      'step (another numbered folder of its checkpoints/).')


def _custom_metadata(step_folder: epath.Path) -> dict[str, Any]:
  """The custom metadata Orbax saved with the step, through Orbax's step metadata alone (a
  CompositeCheckpointHandler's metadata warns twice that it has no handler for the state)."""
  metadata_file = step_folder / STEP_METADATA
  if not metadata_file.exists():
    raise _damaged(step_folder, f'is incomplete (its {STEP_METADATA} is missing)')
  try:
    # Parsed here first: Orbax logs a damaged file whole and then reports it as missing.
    json.loads(metadata_file.read_text())
  except ValueError as error:
    raise _damaged(step_folder, f'cannot be restored: its {STEP_METADATA} is not JSON '
                   f'({checkpoints.root_cause(error)})') from error
  try:
    return dict(ocp.metadata.get_step_metadata(step_folder).custom_metadata or {})
  except Exception as error:  # Orbax's own checks of the fields raise several types
    raise _damaged(step_folder, f'cannot be restored: its {STEP_METADATA} cannot be read '
                   f'({checkpoints.root_cause(error)})') from error


def read_description(step_folder: epath.Path) -> dict[str, Any]:
  """The checkpoint's description of its model (`provenance.model_description`)."""
  described = _custom_metadata(step_folder)
  if not all(key in described for key in ('config', 'class_names', 'normalization')):
    raise CheckpointError(
        f'{step_folder}: the checkpoint does not describe its model (the settings, classes and '
        f'normalization pejax\'s training writes into its {STEP_METADATA}): it was not written '
        'by pejax\'s training. Load a checkpoint of a pejax run.')
  return described


@functools.partial(jax.jit, static_argnums=0)
def _labels_and_probabilities(predictor: predictor_lib.Predictor, model_state, images01):
  """Labels (argmax of the logits, as the evaluation takes it) and softmax probabilities at
  the input's size; pixels a 'valid' model does not reach are background."""
  state, pe_scale = model_state
  logits, _ = steps.apply_model(predictor.spec, state.params, state.batch_stats,
                                predictor.normalizer(images01), pe_scale, train=False)
  height, width = images01.shape[1:3]
  labels = steps.pad_to_size(jnp.argmax(logits, axis=-1).astype(jnp.int32), height, width)
  probabilities = jax.nn.softmax(logits, axis=-1)
  rows, columns = height - logits.shape[1], width - logits.shape[2]
  if rows or columns:
    background = jax.nn.one_hot(jnp.zeros(images01.shape[:3], jnp.int32), logits.shape[-1])
    top, left = rows // 2, columns // 2
    probabilities = background.at[:, top:top + logits.shape[1],
                                  left:left + logits.shape[2]].set(probabilities)
  return labels, probabilities


class Segmenter:
  """A trained pejax model with its state, normalization and class names; call it on images."""

  def __init__(self, description: dict[str, Any], state, source: str):
    self.description = description
    self.config = ml_collections.ConfigDict(description['config'])
    self.class_names: tuple[str, ...] = tuple(description['class_names'])
    self.normalizer = predictor_lib.Normalizer(**description['normalization'])
    self.image_channels = int(description.get('image_channels', 1))
    # Datasets in nnU-Net's format: how a case's files become the model's examples.
    self.nnunet_inputs: dict | None = description.get('nnunet_inputs')
    self._nnunet_reader: str | None = None
    self.software: dict = description.get('software', {})
    self.source = source
    spec, _ = spec_lib.model_spec(self.config, len(self.class_names), self.image_channels)
    self._predictor = predictor_lib.Predictor(spec, self.normalizer)
    self._model_state = (state, jnp.float32(configuration.pe_scale_of(self.config)))
    self.step, self.epoch = int(state.step), int(state.epoch)

  @property
  def predictor(self) -> predictor_lib.Predictor:
    """The model's spec and normalization (what an evaluation of its state needs)."""
    return self._predictor

  @property
  def model_state(self):
    """(trained state, λ): the model's parameters and its encoding's scale."""
    return self._model_state

  @property
  def nnunet_reader(self) -> str:
    """The nnU-Net reader of the model's training files (`data_builders.nnunet.source.READERS`);
    CheckpointError where it cannot be known."""
    if self._nnunet_reader is None:
      self._nnunet_reader = nnunet_cases.recorded_reader(self)
    return self._nnunet_reader

  @property
  def image_size(self) -> int:
    return int(self.config.image_size)

  @property
  def dataset(self) -> str:
    return str(self.config.dataset)

  def __repr__(self) -> str:
    return (f'Segmenter({self.config.model}, {self.dataset}, {self.image_size}x{self.image_size}, '
            f'classes {list(self.class_names)}, epoch {self.epoch}, from {self.source})')

  def __call__(self, images01, batch_size: int = 16) -> Prediction:
    """Labels and class probabilities of images with intensities in [0, 1].

    Args:
      images01: (N, H, W, C) images of the model's C channels, or where C = 1 also (N, H, W)
        or one (H, W) image; any N and size.
      batch_size: images per model call (the last call is padded to it).
    """
    images = _channels_last(np.asarray(images01, np.float32), self.image_channels)
    finite = np.isfinite(images)
    if not finite.all():
      raise ValueError(
          f'{finite.size - np.count_nonzero(finite):,} of {finite.size:,} image values are not '
          'finite (NaN or infinite): replace them (e.g. with the background value) first.')
    low, high = float(images.min()), float(images.max())
    if low < -1e-6 or high > 1 + 1e-6:
      raise ValueError(
          f'Images must be intensities in [0, 1] (these run from {low:g} to {high:g}): scale '
          'them as the training data were (README, "Use a trained model"; '
          'pejax.inference.image_files.intensities01 does it for files).')
    height, width = images.shape[1:3]
    size = self.image_size
    if (height, width) != (size, size):
      resample = _TO_MODEL_RESAMPLE.get(self.dataset, Image.Resampling.BILINEAR)
      images = np.stack([np.stack([conventions.resize_image(image[..., c], size, resample)
                                   for c in range(image.shape[-1])], axis=-1)
                         for image in images])
    labels, probabilities = self._predict(np.clip(images, 0.0, 1.0), batch_size)
    if (height, width) != (size, size):
      probabilities = np.stack([np.stack(
          [conventions.resize_image(p[..., c], (height, width))
           for c in range(p.shape[-1])], axis=-1) for p in probabilities])
      probabilities /= probabilities.sum(axis=-1, keepdims=True)
      labels = np.argmax(probabilities, axis=-1)
    return Prediction(labels.astype(np.uint8), probabilities.astype(np.float32))

  def _predict(self, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    count = len(images)
    batch_size = max(1, min(batch_size, count))
    padded = np.zeros((-(-count // batch_size) * batch_size,) + images.shape[1:], np.float32)
    padded[:count] = images
    outputs = [jax.device_get(_labels_and_probabilities(
        self._predictor, self._model_state, padded[start:start + batch_size]))
        for start in range(0, len(padded), batch_size)]
    labels = np.concatenate([labels for labels, _ in outputs])[:count]
    probabilities = np.concatenate([probabilities for _, probabilities in outputs])[:count]
    return labels, probabilities


def _channels_last(images: np.ndarray, channels: int) -> np.ndarray:
  """(N, H, W, C) images from the shapes `Segmenter.__call__` takes."""
  if channels == 1 and images.ndim == 2:
    images = images[None]
  if channels == 1 and images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] != channels or 0 in images.shape:
    expected = ('(N, H, W), (N, H, W, 1) or (H, W)' if channels == 1
                else f'(N, H, W, {channels}) (the model takes {channels} image channels)')
    raise ValueError(f'Expected {expected} images; got {images.shape}.')
  return images


def load(path) -> Segmenter:
  """The trained model of a run folder, its checkpoints/ folder or one checkpoint step folder
  (the latest step where there are several); local paths or any path `etils.epath` opens."""
  step_folder = checkpoint_step(path)
  if not (step_folder / STATE_ITEM).is_dir():
    raise _damaged(step_folder, f'is incomplete (its folder {STATE_ITEM}/ is missing)')
  description = read_description(step_folder)
  config = ml_collections.ConfigDict(description['config'])
  _, init_state = spec_lib.model_spec(config, len(description['class_names']),
                                      int(description.get('image_channels', 1)))
  abstract = jax.eval_shape(init_state, 0)
  try:
    state = ocp.StandardCheckpointer().restore(step_folder / STATE_ITEM, abstract)
  except Exception as error:  # Orbax raises a bare Exception or TensorStore's for damaged arrays
    raise _damaged(step_folder, f'cannot be restored ({checkpoints.root_cause(error)})') from error
  return Segmenter(description, state, str(step_folder))


# ----------------------------------------------------------------------------------- files

PREDICTIONS_CSV = 'predictions.csv'


def _class_sizes(labels: np.ndarray, class_names, spacing) -> dict[str, Any]:
  """Pixels per class and, where the spacing is known, area (mm², 2-D) or volume (ml, 3-D)."""
  sizes = {f'pixels_{name}': int(np.sum(labels == c)) for c, name in enumerate(class_names)
           if c > 0}
  if spacing is None or not all(math.isfinite(s) for s in spacing[1:]):
    return sizes
  slice_mm, row_mm, column_mm = spacing
  if len(labels) == 1:
    sizes.update({f'mm2_{name}': sizes[f'pixels_{name}'] * row_mm * column_mm
                  for name in class_names[1:]})
  elif math.isfinite(slice_mm):
    sizes.update({f'ml_{name}': sizes[f'pixels_{name}'] * slice_mm * row_mm * column_mm / 1000
                  for name in class_names[1:]})
  return sizes


def predict_file(model: Segmenter, path, output: str, taken: set[str], intensity: str = 'auto',
                 batch_size: int = 16) -> dict[str, Any]:
  """Predicts one file and writes its mask and overlay into `output`; returns its CSV row."""
  if model.nnunet_inputs:
    scan, images01, labels = nnunet_cases.predict_case(model, epath.Path(path), batch_size)
    rule = 'nnunet'
  else:
    scan = image_files.read_scan(path)
    images01, rule = image_files.intensities01(scan, intensity)
    labels = model(images01, batch_size=batch_size).labels
  stem = storage.join(output, mask_files.output_stem(scan, taken))
  mask = mask_files.write_mask(scan, labels, stem + '_labels')
  overlay = mask_files.write_overlay(images01, labels, stem + '_overlay.png')
  spacing = scan.spacing
  row = {'input': str(scan.path), 'status': 'ok', 'format': scan.kind, 'intensity': rule,
         'slices': labels.shape[0], 'height': labels.shape[1], 'width': labels.shape[2],
         'spacing_mm': ' x '.join(f'{s:g}' for s in spacing) if spacing else '',
         'mask': os.path.basename(mask), 'overlay': os.path.basename(overlay)}
  row.update(_class_sizes(labels, model.class_names, spacing))
  return row


def predict_files(model: Segmenter, inputs, output: str, intensity: str = 'auto',
                  batch_size: int = 16) -> list[dict[str, Any]]:
  """Predicts every file of `inputs` (`image_files.find_inputs`) into the folder `output`, with a
  progress bar, and lists them in `output/predictions.csv` (rewritten after each file).
  `output` is a local folder or gs://<bucket>/<folder>, checked before anything is predicted;
  pejax's own outputs found in the inputs' folders are passed over (`image_files.find_inputs`).

  A file that cannot be read is listed with its error and the others are still predicted;
  InputFileError is raised at the end naming the files that failed.
  """
  from tqdm import tqdm  # a progress bar only where files are predicted
  output = mask_files.output_folder(output)
  if model.nnunet_inputs:
    model.nnunet_reader  # noqa: B018  (a reader that cannot be known stops here, not per file)
  paths = nnunet_cases.channel_zero_files(model, image_files.find_inputs(inputs, output=output))
  if not paths:
    raise InputFileError(f'no input files in {", ".join(map(str, inputs))}.')
  rows, failed, taken = [], [], set()
  for path in tqdm(paths, desc='predict', unit='file', disable=len(paths) < 2):
    try:
      rows.append(predict_file(model, path, output, taken, intensity, batch_size))
    except InputFileError as error:
      logging.error('%s', error)
      failed.append(str(error))
      rows.append({'input': str(path), 'status': 'error', 'error': str(error)})
    storage.write_csv(storage.join(output, PREDICTIONS_CSV), rows)
  if failed:
    raise InputFileError(
        f'{len(failed)} of {len(paths)} inputs could not be predicted (the others were '
        f'written to {output}, all are listed in {PREDICTIONS_CSV}): ' + ' | '.join(failed))
  return rows
