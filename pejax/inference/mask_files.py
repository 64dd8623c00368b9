"""pejax's outputs of prediction: label masks in the input's format and geometry (NIfTI labels
with the input's affine and header, uint8; DICOM labels as a derived image with the input's
geometry tags; a palette PNG whose pixel values are the class indices for PNG, JPEG, BMP, TIFF and
`.IMG` inputs, since a lossy JPEG would change labels), overlays, the outputs' names and the
folder they go to. Every file is written to a temporary name and renamed, in a local folder or
a bucket (`gs://`, one upload per file).
"""

from __future__ import annotations

import copy
import gzip
import io
import os

import numpy as np
from PIL import Image

from pejax import drawing, storage
from pejax.errors import SettingError
from pejax.inference.image_files import Scan

OVERLAY_MAX_SIDE = 1024  # a quick look, not a copy of a 2048² radiograph
OVERLAY_MAX_SLICES = 16


def _palette_png(labels: np.ndarray) -> Image.Image:
  image = Image.fromarray(labels.astype(np.uint8), mode='P')
  colors = (drawing.CLASS_COLORS * 255).round().astype(np.uint8)
  image.putpalette(colors.ravel().tolist() + [0] * (768 - colors.size))
  return image


def _write_bytes(path: str, data: bytes) -> None:
  storage.write_atomically(path, lambda f: f.write(data), mode='wb')


def _png_bytes(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format='PNG')
  return buffer.getvalue()


def write_mask(scan: Scan, labels: np.ndarray, path_without_suffix: str) -> str:
  """Writes (Z, H, W) labels in the scan's format and geometry; returns the file's path."""
  if scan.kind == 'nifti':
    path = path_without_suffix + '.nii.gz'
    _write_bytes(path, gzip.compress(_nifti_labels(scan, labels).to_bytes()))
  elif scan.kind == 'dicom':
    path = path_without_suffix + '.dcm'
    _write_bytes(path, _dicom_labels(scan, labels))
  else:
    path = path_without_suffix + '.png'
    _write_bytes(path, _png_bytes(_palette_png(labels[0])))
  return path


def _nifti_labels(scan: Scan, labels: np.ndarray):
  import nibabel
  source = scan.source
  data = np.transpose(labels.astype(np.uint8), (2, 1, 0)).reshape(source.shape[:3])
  header = source.header.copy()
  header.set_data_dtype(np.uint8)
  image = nibabel.Nifti1Image(data, source.affine, header)
  image.header.set_slope_inter(1.0, 0.0)
  image.header['cal_min'], image.header['cal_max'] = 0, int(labels.max(initial=0))
  image.header['descrip'] = b'pejax labels'
  return image


def _dicom_labels(scan: Scan, labels: np.ndarray) -> bytes:
  """The input dataset with the labels as its pixels, as a new derived series."""
  from pydicom.uid import ExplicitVRLittleEndian, generate_uid
  dataset = copy.deepcopy(scan.source)  # a shallow copy would change the input's dataset
  for keyword in ('RescaleSlope', 'RescaleIntercept', 'RescaleType', 'WindowCenter',
                  'WindowWidth', 'VOILUTSequence', 'ModalityLUTSequence'):
    if keyword in dataset:
      delattr(dataset, keyword)
  series = str(dataset.get('SeriesInstanceUID', scan.path.name))
  # Deterministic: the labels of one series stay one series, run after run.
  dataset.SeriesInstanceUID = generate_uid(entropy_srcs=[series, 'pejax labels'])
  dataset.SOPInstanceUID = generate_uid(entropy_srcs=[str(dataset.get('SOPInstanceUID', '')),
                                                      'pejax labels'])
  dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
  dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
  dataset.ImageType = ['DERIVED', 'SECONDARY']
  dataset.SeriesDescription = 'pejax labels'
  frames = labels.astype(np.uint8)
  dataset.set_pixel_data(frames if scan.is_volume else frames[0], 'MONOCHROME2', 8)
  buffer = io.BytesIO()
  dataset.save_as(buffer, enforce_file_format=True)
  return buffer.getvalue()


def write_overlay(images01: np.ndarray, labels: np.ndarray, path: str) -> str:
  """An RGB PNG of the labels over the image (up to 16 evenly spaced slices of a volume, in
  rows of 4), at most `OVERLAY_MAX_SIDE` pixels per slice side."""
  count = len(images01)
  chosen = np.unique(np.linspace(0, count - 1, min(count, OVERLAY_MAX_SLICES)).round().astype(int))
  tiles = [drawing.overlay(images01[z], labels[z]) for z in chosen]
  columns = min(4, len(tiles))
  rows = -(-len(tiles) // columns)
  height, width = tiles[0].shape[:2]
  grid = np.zeros((rows * height, columns * width, 3), np.float32)
  for k, tile in enumerate(tiles):
    r, c = divmod(k, columns)
    grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = tile
  image = Image.fromarray((grid * 255).round().astype(np.uint8))
  scale = OVERLAY_MAX_SIDE / max(height, width)
  if scale < 1:
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.Resampling.BOX)
  _write_bytes(path, _png_bytes(image))
  return path


def output_stem(scan: Scan, taken: set[str]) -> str:
  """The input's name without its format suffix, made unique among `taken` (which it joins)."""
  stem, number = scan.stem, 1
  while stem in taken:
    number += 1
    stem = f'{scan.stem}_{number}'
  taken.add(stem)
  return stem


def output_folder(path) -> str:
  """The folder `path` for predict's outputs, checked (and created, locally) before anything is
  predicted: a local folder or gs://<bucket>/<folder>. SettingError, naming it, when it cannot
  take them."""
  text = str(path)
  storage.check_location(text, '--output')
  if storage.is_remote(text):
    try:  # a missing bucket or permission shows now, not after the first prediction
      storage.probe_bucket_folder(text)
    except OSError as error:
      raise SettingError(f'--output={text} is not writable ({error}); check the bucket\'s name '
                         'and permissions.') from error
    return text.rstrip('/')
  if os.path.exists(text) and not os.path.isdir(text):
    raise SettingError(f'--output={text} is a file, not a folder: give a folder for the masks, '
                       'overlays and predictions.csv (it is created if missing).')
  try:
    os.makedirs(text, exist_ok=True)
  except OSError as error:
    raise SettingError(f'--output={text}: the folder cannot be created ({error}).') from error
  if not os.access(text, os.W_OK):
    raise SettingError(f'--output={text} is not writable: choose another folder or fix its '
                       'permissions.')
  return text
