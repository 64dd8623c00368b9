"""How each dataset's files become pejax's arrays: intensity scaling, resizing and pixel
spacing, shared by the TFDS builders and by prediction on a user's own scans, so that a model
sees a user's file as it saw its training data.

NumPy and Pillow only (no TFDS): `pejax.load` and prediction import it without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from pejax.errors import SourceFileError

JSRT_PIXEL_SPACING_MM = 0.175  # at JSRT's native 2048 x 2048
JSRT_NATIVE_SIZE = 2048


def jsrt_pixel_spacing(size: int) -> tuple[float, float]:
  """(row, column) spacing in mm of a JSRT image stored at size x size pixels."""
  return (JSRT_PIXEL_SPACING_MM * JSRT_NATIVE_SIZE / size,) * 2


def acdc_spacing(zooms: Sequence[float], volume_shape: Sequence[int],
                 size: int) -> tuple[float, float, float]:
  """(slice, row, column) spacing in mm of an ACDC volume after its slices are resized.

  The ACDC builder stores slice z of a NIfTI (x, y, z) volume as `data[:, :, z].T` (rows
  along y, columns along x) resized to size x size, so a row step covers
  `zooms[1] * volume_shape[1] / size` mm and a column step `zooms[0] * volume_shape[0] / size`.

  Args:
    zooms: the NIfTI header's voxel size (x, y, z) in mm, e.g. `header.get_zooms()[:3]`; z
      is the distance between slice centres (ACDC's "slice thickness").
    volume_shape: the NIfTI data shape (x, y, z) before resizing.
    size: the stored slice side in pixels.
  """
  x, y, z = (float(v) for v in zooms[:3])
  return (z, y * volume_shape[1] / size, x * volume_shape[0] / size)


def scale_intensities(volume, low_percentile=0.5, high_percentile=99.5):
  """Clips a volume at two percentiles and maps that range to [0, 1]."""
  volume = np.asarray(volume, np.float64)
  low, high = np.percentile(volume, [low_percentile, high_percentile])
  if high <= low:  # constant volume
    return np.zeros(volume.shape, np.float32)
  return ((np.clip(volume, low, high) - low) / (high - low)).astype(np.float32)


def resize_image(image, size, resample=Image.Resampling.BILINEAR):
  """Resizes a 2-D float image to (size, size), or to (height, width) when `size` is a pair;
  PIL filters antialias when shrinking."""
  height, width = (size, size) if np.isscalar(size) else size
  resized = Image.fromarray(np.asarray(image, np.float32)).resize((width, height), resample)
  return np.asarray(resized, np.float32)


def resize_label(label, size, num_classes=4):
  """Per-class area fraction in each output pixel, then argmax: invents no label."""
  fractions = [resize_image(label == c, size, Image.Resampling.BOX)
               for c in range(num_classes)]
  return np.argmax(np.stack(fractions), axis=0).astype(np.uint8)


def read_raw_image(path, size=2048, max_value=4095):
  """A raw JSRT .IMG file (size x size big-endian 12-bit values, no header) as float32 in
  [0, 1] with lungs dark: `1 - v / max_value`."""
  n = size
  data = path.read_bytes()
  if len(data) != n * n * 2:
    raise SourceFileError(
        f'JSRT: {path} has {len(data)} bytes; a JSRT .IMG file is {n}x{n} 16-bit '
        f'big-endian pixels without header, {n * n * 2} bytes. The file is truncated '
        'or not a JSRT image: download or unzip it again.')
  values = np.frombuffer(data, dtype='>u2').reshape(n, n)
  if values.max() > max_value:
    raise SourceFileError(
        f'JSRT: {path} holds values up to {values.max()}, above the 12-bit range '
        f'0..{max_value} of JSRT images: it is not a big-endian JSRT .IMG '
        '(a byte-swapped or converted copy?). Use the file from the JSRT database.')
  # High values are dark on film; invert so that lungs are dark.
  return 1.0 - values.astype(np.float32) / max_value


def stored_maximum(image) -> float:
  """The largest value a PIL image's pixels can store: 65535 for 16-bit images ('I;16', or 'I'
  in older Pillow), 255 for the others."""
  return 65535.0 if image.mode.startswith('I') else 255.0


def displayed_intensities(image):
  """A PIL image as displayed, gray float32 in [0, 1]: 16-bit images over 65535, others (8-bit
  gray, colour) converted to 8-bit gray over 255."""
  maximum = stored_maximum(image)
  gray = image if maximum > 255 else image.convert('L')
  return np.asarray(gray, np.float32) / maximum
