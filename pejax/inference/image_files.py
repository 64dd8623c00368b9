"""Scans in, for prediction on one's own images: PNG, JPEG, BMP and TIFF (8- and
16-bit, through Pillow), raw JSRT `.IMG`, NIfTI (2-D images and 3-D volumes, read slice by slice)
and DICOM (pydicom). A model trained on a dataset in nnU-Net's format reads its inputs with that
dataset's reader instead (`pejax.inference.nnunet_cases`); this module finds them and checks
their size. The masks and overlays predicted from them are written by `mask_files`.

Orientation. A NIfTI array is (x, y[, z]); slice z is shown and predicted as `data[:, :, z].T`
(rows along y, columns along x), as the ACDC builder stores its slices. DICOM frames are
(rows, columns) as stored. The affine and header (NIfTI) and the geometry tags (DICOM) are
carried to the output unchanged.

Intensities reach the model in [0, 1] as the training data saw them (`intensities01`):
  'jsrt_raw'    raw JSRT `.IMG`: `1 - v / 4095` (the JSRT builder's reader);
  'displayed'   PNG / JPEG / BMP / TIFF: as displayed, `v / 255` (8-bit) or `v / 65535` (16-bit); colour is
                converted to gray; no inversion (the JSRT builder's rule for PNG copies); a
                TIFF of floating-point values takes 'percentile';
  'percentile'  NIfTI / DICOM: each volume (each file) clipped at its 0.5 and 99.5 percentiles
                and scaled to [0, 1] (`data_builders.conventions.scale_intensities`, as
                the ACDC builder); DICOM values after the modality LUT (rescale slope /
                intercept), MONOCHROME1 inverted;
  'as_is'       (only when asked for) the stored values, which must lie in [0, 1].
`intensity='auto'` takes the first rule that fits the format; 'percentile' or 'as_is' apply to
any format.

What predict refuses, file by file, before decoding the pixels where the header tells the size
(`InputFileError` naming the file): more than `MAX_PIXELS` pixels (all slices together; for
PNG and JPEG through PIL's decompression-bomb check set to that limit), more than `MAX_SLICES`
slices, a side under `MIN_SIDE` pixels or no slice, a NIfTI of more than three dimensions or
of complex or colour values, a TIFF of several pages, and (once decoded) any NaN or infinite
value.

A folder given as input is searched through links to folders too, each real folder once: a link
that leads back into a folder already searched (a cycle) is passed over and logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import math
import os
import warnings
from typing import Any

import numpy as np
from etils import epath
from absl import logging
from PIL import Image

from data_builders import conventions
from pejax import storage

from pejax.errors import InputFileError

INTENSITY_MODES = ('auto', 'percentile', 'as_is')
_SUFFIX_KINDS = {'.png': 'png', '.jpg': 'jpeg', '.jpeg': 'jpeg', '.bmp': 'bmp', '.tif': 'tiff',
                 '.tiff': 'tiff', '.img': 'jsrt_raw', '.nii': 'nifti', '.nii.gz': 'nifti',
                 '.dcm': 'dicom', '.dicom': 'dicom'}
PICTURE_KINDS = ('png', 'jpeg', 'bmp', 'tiff')  # read through Pillow
_AUTO_INTENSITY = {**{kind: 'displayed' for kind in PICTURE_KINDS}, 'jsrt_raw': 'jsrt_raw',
                   'nifti': 'percentile', 'dicom': 'percentile'}
# The most pixels decoded from one file, all slices together: 2**28 = 268,435,456, a 512 x 512
# CT of 1024 slices or a 16384 x 16384 image (JSRT's radiographs have 4 Mi, an ACDC volume
# about 1 Mi). Predicting takes about 54 bytes of memory per input pixel (measured on a
# 512 x 512 x 64 NIfTI: float32 values, the float64 percentile scaling, class probabilities at
# the input's size), so ~14 GiB at the limit; a damaged header or a bomb asks for far more.
MAX_PIXELS = 2 ** 28
# Every slice is also held at the model's size (up to 256², ~1.5 MiB with its probabilities):
# 2048 slices, the longest CT series at 0.5 mm, need ~3 GiB of those.
MAX_SLICES = 2048
# pejax's smallest model is 8 x 8 (configuration refuses less): a thinner image is a line, a
# thumbnail or an icon, with nothing to segment that stretching it to the model would not invent.
MIN_SIDE = 8
# The names pejax gives its outputs: files so named are not inputs where a folder is searched.
OUTPUT_SUFFIXES = ('_labels.png', '_labels.nii.gz', '_labels.dcm', '_overlay.png')


@dataclasses.dataclass
class Scan:
  """One input file, read."""
  path: epath.Path
  kind: str                  # 'png', 'jpeg', 'bmp', 'tiff', 'jsrt_raw', 'nifti' or 'dicom'
  values: np.ndarray         # (Z, H, W) float32 as stored (2-D images: Z = 1)
  is_volume: bool            # a 3-D NIfTI or a multi-frame DICOM
  spacing: tuple[float, float, float] | None  # mm (slice, row, column), slice NaN for 2-D
  source: Any = None         # the nibabel image or pydicom dataset, for writing the mask
  # `values` times this are the stored integers of a picture (65535 or 255); 1 otherwise.
  stored_scale: float = 1.0
  # A picture of floating-point values (a TIFF): no display range, scaled as a volume's.
  floating: bool = False

  @property
  def stem(self) -> str:
    name = self.path.name
    suffix = _suffix(name)
    return name[:-len(suffix)] if suffix else name


def _suffix(name: str) -> str:
  lower = name.lower()
  return next((s for s in sorted(_SUFFIX_KINDS, key=len, reverse=True) if lower.endswith(s)), '')


def kind_of(path: epath.Path) -> str | None:
  """The format of a file from its name, or 'dicom' for an unnamed file with DICOM's preamble."""
  kind = _SUFFIX_KINDS.get(_suffix(path.name))
  if kind is None and path.is_file():
    with path.open('rb') as f:
      kind = 'dicom' if f.read(132)[128:] == b'DICM' else None
  return kind


def is_output_name(name: str) -> bool:
  """Whether `name` is one pejax gives its outputs (`<name>_labels.*`, `<name>_overlay.png`)."""
  return name.lower().endswith(OUTPUT_SUFFIXES)


def _folder_key(path) -> str:
  """A folder's path as two spellings of one folder compare equal."""
  return str(path).rstrip('/') if storage.is_remote(path) else os.path.realpath(path)


def find_inputs(arguments, output=None) -> list[epath.Path]:
  """Files named by `arguments` (paths, comma lists, folders searched recursively for files of
  a known format), in the order given, without repeats.

  So that predicting again into the same `output` folder does not predict pejax's own outputs,
  a folder search passes over the folder `output` (where it lies inside the searched folder)
  and files named as pejax names its outputs (`is_output_name`). A file named on its own is
  always an input.
  """
  skipped = _folder_key(output) if output is not None else None
  found: list[epath.Path] = []
  for argument in arguments:
    for item in (part.strip() for part in str(argument).split(',')):
      if not item:
        continue
      storage.check_location(item, '--input')
      path = epath.Path(item)
      if path.is_dir():
        found.extend(_files_in(path, skipped))
      else:
        found.append(path)  # checked when read: a missing file is reported with the others
  return list(dict.fromkeys(found))


def _files_in(folder: epath.Path, skipped: str | None) -> list[epath.Path]:
  files = []
  # storage.walk, not a recursive glob (thousands of requests on a bucket); top-down, so that
  # the output folder is pruned, not searched. Locally, links to folders are followed (users
  # gather cases from several places by linking them), each real folder once.
  remote = storage.is_remote(str(folder))
  walk = storage.walk(str(folder)) if remote else os.walk(str(folder), followlinks=True)
  searched = {_folder_key(folder)}
  for parent, subfolders, names in walk:
    kept = []
    for name in sorted(subfolders):
      key = _folder_key(storage.join(parent, name))
      if key == skipped:
        continue
      if key in searched:
        logging.info('%s: passed over, it leads to %s, which is searched already (a link).',
                     storage.join(parent, name), key)
        continue
      searched.add(key)
      kept.append(name)
    subfolders[:] = kept
    files.extend(epath.Path(parent) / name for name in names if not is_output_name(name))
  return [path for path in sorted(files) if kind_of(path) is not None]


def read_scan(path) -> Scan:
  """Reads one file; raises InputFileError naming the file and what to do."""
  path = epath.Path(path)
  if not path.exists():
    raise InputFileError(f'{path}: no such file.')
  kind = kind_of(path)
  if kind is None:
    raise InputFileError(
        f'{path}: unsupported format; give PNG, JPEG, BMP, TIFF, raw JSRT .IMG, NIfTI (.nii, '
        '.nii.gz) or DICOM files.')
  readers = {**{picture: _read_picture for picture in PICTURE_KINDS}, 'jsrt_raw': _read_jsrt_raw,
             'nifti': _read_nifti, 'dicom': _read_dicom}
  try:
    scan = readers[kind](path)
  except InputFileError:
    raise
  except Exception as error:  # each library raises its own types for damaged files
    raise InputFileError(f'{path}: cannot be read as {kind} ({type(error).__name__}: '
                         f'{error}).') from error
  _check_finite(scan)
  return scan


def _check_finite(scan: Scan) -> None:
  """Refuses NaN and infinite values: no rule of intensities01 scales them, and which value
  they stand for (background, air, a detector gap) is the file's business, not pejax's."""
  finite = np.isfinite(scan.values)
  if not finite.all():
    count = finite.size - int(np.count_nonzero(finite))
    raise InputFileError(
        f'{scan.path}: {count:,} of {finite.size:,} values are not finite (NaN or infinite); '
        'pejax does not guess values for them: replace them in the file (e.g. with the '
        'background value) or crop them away, and predict it again.')


def _size_text(width: int, height: int, slices: int | None) -> str:
  text = f'{width} x {height} pixels'
  return text if slices is None else f'{text} x {slices} slice{"" if slices == 1 else "s"}'


def _too_many_pixels(path, size: str) -> InputFileError:
  return InputFileError(
      f'{path}: {size}, more than the {MAX_PIXELS:,} pixels pejax decodes from one file '
      '(pejax.inference.image_files.MAX_PIXELS): a damaged header or a decompression bomb, or an image far '
      'larger than pejax models see (at most 256 x 256 per slice). Downsample or crop it (or, '
      'for a genuine image and enough memory, raise pejax.inference.image_files.MAX_PIXELS in Python).')


def _check_size(path, width: int, height: int, slices: int | None = None) -> None:
  """Refuses, from the header where the format has one (before the pixels are decoded), a size
  predict cannot take. `slices` None: a 2-D image."""
  size = _size_text(width, height, slices)
  if slices is not None and slices < 1:
    raise InputFileError(f'{path}: {size}; the file holds no image.')
  if min(width, height) < MIN_SIDE:
    raise InputFileError(
        f'{path}: {size}; pejax predicts images of at least {MIN_SIDE} x {MIN_SIDE} pixels '
        '(pejax.inference.image_files.MIN_SIDE): a thinner one has nothing to segment.')
  if slices is not None and slices > MAX_SLICES:
    raise InputFileError(
        f'{path}: {size}, more than the {MAX_SLICES} slices pejax predicts in one file '
        f'(pejax.inference.image_files.MAX_SLICES); split it into parts of at most {MAX_SLICES} slices.')
  if width * height * (slices or 1) > MAX_PIXELS:
    raise _too_many_pixels(path, size)


@contextlib.contextmanager
def _pillow_pixel_limit():
  """PIL's decompression-bomb check at MAX_PIXELS, its warning (above the limit; PIL's error
  comes only above twice the limit) raised as an error too."""
  previous = Image.MAX_IMAGE_PIXELS
  Image.MAX_IMAGE_PIXELS = MAX_PIXELS
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('error', Image.DecompressionBombWarning)
      yield
  finally:
    Image.MAX_IMAGE_PIXELS = previous


def check_size(path) -> None:
  """Refuses, from its header alone, a local picture or NIfTI file too large or too small to
  predict (`_check_size`): for readers that decode the whole file at once."""
  path = epath.Path(path)
  kind = kind_of(path)
  try:
    if kind == 'nifti':
      import nibabel
      _check_nifti_header(path, nibabel.load(str(path)).header)
    elif kind in PICTURE_KINDS:
      with path.open('rb') as f:
        _open_picture(path, f)
  except InputFileError:
    raise
  except Exception as error:  # each library raises its own types for damaged files
    raise InputFileError(f'{path}: cannot be read as {kind} ({type(error).__name__}: '
                         f'{error}).') from error


def _open_picture(path: epath.Path, f) -> Image.Image:
  """The picture of the open file `f`, its header read and its size checked, one frame."""
  try:
    with _pillow_pixel_limit():
      image = Image.open(f)  # reads the header only; the check is PIL's, here
  except (Image.DecompressionBombWarning, Image.DecompressionBombError):
    f.seek(0)
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
      width, height = Image.open(f).size  # the header again, for the message
    finally:
      Image.MAX_IMAGE_PIXELS = previous
    raise _too_many_pixels(path, _size_text(width, height, None)) from None
  _check_size(path, *image.size)
  frames = getattr(image, 'n_frames', 1)
  if frames > 1:  # reading the first alone would silently drop the others
    raise InputFileError(f'{path}: {frames} pages (frames); pejax predicts one 2-D image per '
                         'picture file: save each page as its own file, or a volume as NIfTI.')
  return image


def _read_picture(path: epath.Path) -> Scan:
  with path.open('rb') as f:
    image = _open_picture(path, f)
    image.load()
  if image.mode == 'F':
    return Scan(path, _SUFFIX_KINDS[_suffix(path.name)], np.asarray(image, np.float32)[None],
                False, None, floating=True)
  values = conventions.displayed_intensities(image)
  return Scan(path, _SUFFIX_KINDS[_suffix(path.name)], values[None], False, None,
              stored_scale=conventions.stored_maximum(image))


def _read_jsrt_raw(path: epath.Path) -> Scan:
  values = conventions.read_raw_image(path)
  spacing = (math.nan, *conventions.jsrt_pixel_spacing(values.shape[0]))
  return Scan(path, 'jsrt_raw', values[None], False, spacing)


def _read_nifti(path: epath.Path) -> Scan:
  import nibabel
  with path.open('rb') as stored:
    # The header first, and then no more bytes than it describes: its size is checked before
    # a voxel is decompressed (a gzip of zeros grows a thousandfold).
    stream = gzip.GzipFile(fileobj=stored) if path.name.lower().endswith('.gz') else stored
    head = stream.read(348)
    header = nibabel.Nifti1Header(head)
    _check_nifti_header(path, header)
    voxel_bytes = math.prod(header.get_data_shape()) * header.get_data_dtype().itemsize
    end = max(int(header.get_data_offset()), 352) + voxel_bytes
    data = head + stream.read(end - len(head))
  image = nibabel.Nifti1Image.from_bytes(data)
  values = np.asarray(image.dataobj, np.float32)
  while values.ndim > 3 and values.shape[-1] == 1:
    values = values[..., 0]
  if values.ndim == 2:
    values = values[..., None]
  zooms = [float(z) for z in image.header.get_zooms()[:3]] + [math.nan] * 3
  is_volume = image.ndim >= 3 and values.shape[2] > 1
  spacing = (zooms[2] if is_volume else math.nan, zooms[1], zooms[0])
  return Scan(path, 'nifti', np.transpose(values, (2, 1, 0)), is_volume, spacing, image)


def _check_nifti_header(path: epath.Path, header) -> None:
  shape = tuple(int(n) for n in header.get_data_shape())
  image_shape = list(shape)
  while len(image_shape) > 3 and image_shape[-1] == 1:
    image_shape.pop()
  if len(image_shape) > 3:
    raise InputFileError(
        f'{path}: a NIfTI of shape {shape}; expected a 2-D image or a 3-D volume. Give one time '
        'frame of a 4-D series (e.g. the end-diastolic frame) as its own file.')
  if len(image_shape) < 2:
    raise InputFileError(f'{path}: a NIfTI of shape {shape}; expected a 2-D image or a 3-D '
                         'volume.')
  dtype = header.get_data_dtype()
  if dtype.fields or dtype.kind not in 'biuf':
    values = 'colour (RGB)' if dtype.fields else str(dtype)
    raise InputFileError(f'{path}: {values} values; pejax models take one real value per pixel '
                         '(a gray image).')
  _check_size(path, image_shape[0], image_shape[1],
              image_shape[2] if len(image_shape) == 3 else None)


def _read_dicom(path: epath.Path) -> Scan:
  import pydicom
  from pydicom.pixels import apply_modality_lut
  with path.open('rb') as f:
    dataset = pydicom.dcmread(f)
  if 'PixelData' not in dataset:
    raise InputFileError(f'{path}: a DICOM file without an image (PixelData).')
  samples = int(dataset.get('SamplesPerPixel', 1))
  if samples != 1:
    raise InputFileError(
        f'{path}: a DICOM image of {samples} values per pixel '
        f'({dataset.get("PhotometricInterpretation", "colour")}); pejax models take gray images '
        '(one value per pixel).')
  frames = int(dataset.get('NumberOfFrames', 1) or 1)
  # From the header, before the pixel data are decoded (compressed data can grow a thousandfold).
  _check_size(path, int(dataset.get('Columns', 0)), int(dataset.get('Rows', 0)),
              frames if 'NumberOfFrames' in dataset else None)
  try:
    pixels = dataset.pixel_array
  except Exception as error:
    raise InputFileError(
        f'{path}: its pixel data cannot be decoded ({error}); compressed DICOM needs a decoder '
        '(e.g. pip install pylibjpeg pylibjpeg-libjpeg), or convert the file to uncompressed '
        'DICOM.') from error
  values = np.asarray(apply_modality_lut(pixels, dataset), np.float32)
  if dataset.get('PhotometricInterpretation') == 'MONOCHROME1':  # high values are dark
    values = values.max() + values.min() - values
  if frames == 1:
    values = values.reshape((1,) + values.shape[-2:])
  row_column = dataset.get('PixelSpacing') or dataset.get('ImagerPixelSpacing')
  spacing = None
  if row_column:
    slice_mm = float(dataset.get('SpacingBetweenSlices') or dataset.get('SliceThickness')
                     or math.nan) if frames > 1 else math.nan
    spacing = (slice_mm, float(row_column[0]), float(row_column[1]))
  return Scan(path, 'dicom', values, frames > 1, spacing, dataset)


def intensities01(scan: Scan, mode: str = 'auto') -> tuple[np.ndarray, str]:
  """(Z, H, W) float32 intensities in [0, 1] of a scan and the rule applied (module docstring)."""
  if mode not in INTENSITY_MODES:
    raise ValueError(f'intensity {mode!r}: use one of {INTENSITY_MODES}.')
  rule = mode
  if mode == 'auto':
    rule = 'percentile' if scan.floating else _AUTO_INTENSITY[scan.kind]
  if rule == 'percentile':
    return conventions.scale_intensities(scan.values), rule
  values = scan.values
  if rule == 'as_is' and (values.min() < 0.0 or values.max() > 1.0):
    raise InputFileError(
        f'{scan.path}: values {values.min():g}..{values.max():g} are not intensities in [0, 1]; '
        "use --intensity=auto or percentile to scale them.")
  return values.astype(np.float32), rule
