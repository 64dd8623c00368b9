"""One image or label file of an nnU-Net raw dataset as nnU-Net's readers lay it out: a NIfTI
volume in SimpleITK's order (z, y, x), i.e. nibabel's data transposed (2, 1, 0) with the voxel
size reversed likewise (NibabelIO; SimpleITKIO reads the same arrays; NibabelIOWithReorient first
turns the volume to the closest canonical orientation); a 2-D image through Pillow as (rows,
columns), a colour one as 3 channels without alpha (NaturalImage2DIO). And the check that the
files of one case lie on one grid.

NumPy, Pillow and nibabel only (no TFDS): `source` builds on it for prediction as for the build.
"""

from __future__ import annotations

import dataclasses
import os

import nibabel
import numpy as np
from PIL import Image

from pejax.errors import SourceFileError

GEOMETRY_TOLERANCE = 1e-3  # relative, between the files of one case


@dataclasses.dataclass(frozen=True, eq=False)
class Geometry:
  """Where a case's pixels lie: what must agree between its channels and its label."""
  shape: tuple[int, ...]  # spatial: (rows, columns), or (z, y, x) for volumes
  spacing: tuple[float, ...] | None  # mm in the order of `shape`; None for 2-D images
  affine: np.ndarray | None  # the NIfTI file's 4x4 affine (after reorientation); None in 2-D
  channel_paths: tuple[str, ...] = ()  # the file of each channel (a colour file gives 3)


def check_same_geometry(first: str, a: Geometry, second: str, b: Geometry) -> None:
  """Raises SourceFileError naming both files where shapes, spacings or affines differ (beyond
  GEOMETRY_TOLERANCE, relative)."""
  if a.shape != b.shape:
    raise SourceFileError(
        f'{first} is {_shown(a.shape)} but {second} is {_shown(b.shape)} (as stored in the '
        'files); the channels and the label of a case must have one shape. Fix or resample one.')
  for what, x, y in (('voxel size', a.spacing, b.spacing), ('affine', a.affine, b.affine)):
    if x is None or y is None:
      continue
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if np.abs(x - y).max() > GEOMETRY_TOLERANCE * max(np.abs(x).max(), 1e-12):
      shown = ((_shown(x), _shown(y)) if x.ndim == 1
               else (np.round(x, 4).tolist(), np.round(y, 4).tolist()))
      raise SourceFileError(
          f'{first} and {second} differ in {what} ({shown[0]} vs {shown[1]}); the channels and '
          'the label of a case must lie on one grid. Fix the header, or resample one onto the '
          'other.')


def _shown(values) -> tuple:
  """A shape or voxel size as the file stores it (NIfTI: x, y, z), from (z, y, x)."""
  values = tuple(float(v) if isinstance(v, float | np.floating) else int(v) for v in values)
  return values[::-1] if len(values) == 3 else values


def read_file(path: str, ndim: int, reorient: bool = False, label: bool = False):
  """(array (c, *spatial) float64, Geometry) of one file: a 2-D image (ndim 2) or a NIfTI volume
  (ndim 3, turned to the closest canonical orientation first with `reorient`)."""
  if ndim == 2:
    return _read_natural(path, label)
  return _read_nifti(path, reorient)


def _read_natural(path: str, label: bool):
  """A 2-D image through Pillow: gray (1, H, W) or colour (3, H, W), alpha dropped; a palette
  label gives its indices."""
  try:
    with Image.open(path) as image:
      if getattr(image, 'n_frames', 1) > 1:
        raise SourceFileError(
            f'{path} has {image.n_frames} frames: a {os.path.splitext(path)[1]} file of nnU-Net\'s '
            '2-D reader is one image; convert a 3-D stack to .nii.gz.')
      image.load()
      if image.mode in ('L', 'I', 'F', '1') or image.mode.startswith('I;16'):
        data = np.asarray(image)[None]
      elif label and image.mode == 'P':
        data = np.asarray(image)[None]
      elif image.mode in ('LA', 'La'):
        data = np.asarray(image.convert('L'))[None]
      else:
        data = np.moveaxis(np.asarray(image.convert('RGB')), -1, 0)
  except SourceFileError:
    raise
  except Exception as error:  # Pillow raises many types for damaged or foreign files
    raise SourceFileError(
        f'cannot read {path} as an image ({type(error).__name__}: {error}): the file is damaged '
        'or not in its format; write it again.') from error
  data = data.astype(np.float64)
  return data, Geometry(shape=data.shape[1:], spacing=None, affine=None)


def _read_nifti(path: str, reorient: bool):
  """A NIfTI volume as (1, z, y, x) (nibabel's data transposed (2, 1, 0)) and its geometry."""
  try:
    image = nibabel.load(path)
    if reorient:  # NibabelIOWithReorient: to the closest canonical (RAS) orientation
      if len(image.shape) == 2:  # a 2-D image is one slice; nibabel reorients three axes
        image = type(image)(np.asarray(image.dataobj)[..., None], image.affine, image.header)
      image = nibabel.as_closest_canonical(image)
    data = np.asarray(image.get_fdata(dtype=np.float64))
    zooms = [float(z) for z in image.header.get_zooms()]
    affine = np.asarray(image.affine, np.float64)
  except Exception as error:  # nibabel, gzip and zlib raise many types for damaged files
    raise SourceFileError(
        f'cannot read {path} as a NIfTI volume ({type(error).__name__}: {error}): the file is '
        'damaged, incomplete or not NIfTI; write it again.') from error
  if data.ndim == 4 and data.shape[3] == 1:
    data = data[..., 0]
  if data.ndim == 2:
    data = data[..., None]
  if data.ndim != 3:
    raise SourceFileError(
        f'{path} has shape {data.shape}: nnU-Net keeps one channel (and one time point) per file;'
        ' split it into <case>_0000, <case>_0001, ... files of 3 dimensions each.')
  if not np.isfinite(data).all():
    raise SourceFileError(f'{path} holds NaN or infinite values; replace them (nnU-Net refuses '
                          'them too).')
  zooms = (zooms + [1.0, 1.0, 1.0])[:3]
  spacing = tuple(zooms[::-1])
  data = np.transpose(data, (2, 1, 0))[None]
  return data, Geometry(shape=data.shape[1:], spacing=spacing, affine=affine)
