"""Positional encodings: coordinate channels appended to a network's input (the paper) or to the
input of every 3×3 convolution (CoordConv), one family chosen by `kind`.

Each axis uses its own length, so a non-square image runs the full range along both axes. With
i = 0 … W−1 the column and j = 0 … H−1 the row, x̂ = i/(W−1) and ŷ = j/(H−1) in [0, 1]:

  linear    (Murase et al., eq. 1a/1b)  x = λ·x̂, y = λ·ŷ  in [0, λ]                  2 channels
  centered  (CoordConv at λ = 1)       x = λ·(2x̂ − 1), y = λ·(2ŷ − 1)  in [−λ, λ]    2 channels
  radial    (CoordConv's `with_r`)     centered x, y and r = √(x² + y²)  in [0, √2·λ] 3 channels
  fourier   for k = 0 … K−1: λ·sin(2^k·π·x̂), λ·cos(2^k·π·x̂), λ·sin(2^k·π·ŷ), λ·cos(2^k·π·ŷ)
                                                                                   4K channels

The robustness grid asks how much a prediction relies on the encoding by changing the channels
while the image stays (`EncodingChange`): every channel evaluated k pixels further along (the
coordinates the image's content would meet after a shift of k, the formula continued past the
edge, not clamped), or every channel replaced by its mean over the image (position removed).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax.numpy as jnp

from pejax.choices import PE_KINDS


def num_coordinate_channels(kind: str = 'linear', bands: int = 4) -> int:
  """Channels an encoding adds (`bands` counts only for 'fourier')."""
  if kind not in PE_KINDS:
    raise ValueError(f'pe_kind={kind!r}: use one of {", ".join(PE_KINDS)}.')
  return {'linear': 2, 'centered': 2, 'radial': 3, 'fourier': 4 * bands}[kind]


class EncodingChange(NamedTuple):
  """Coordinate channels changed while the image stays (fields may be traced arrays).

  `offset_x`, `offset_y`: added to x̂ and ŷ, so every level of the network (pe_layers='all')
  moves by the same fraction of the image; `removed`: each channel replaced by its mean over
  the image.
  """
  offset_x: Any = 0.0
  offset_y: Any = 0.0
  removed: Any = False


def pixel_shift(shift_x, shift_y, height: int, width: int) -> EncodingChange:
  """The channels an input of H×W pixels has where its content sits `shift_x` pixels further
  right and `shift_y` further down (the maps themselves move by −shift): pairs with a real
  shift of the image by the same k."""
  return EncodingChange(shift_x / max(width - 1, 1), shift_y / max(height - 1, 1), False)


def coordinate_channels(height: int, width: int, scale: float, dtype=jnp.float32,
                        kind: str = 'linear', bands: int = 4,
                        change: EncodingChange | None = None):
  """(H, W, num_coordinate_channels(kind, bands)) channels of the module docstring's formulas,
  changed by `change` when given.

  `scale` (λ) may be a traced array, so that models with different λ can be vmapped together.
  """
  num_coordinate_channels(kind, bands)  # checks the kind
  x_unit = jnp.arange(width, dtype=dtype) / max(width - 1, 1)
  y_unit = jnp.arange(height, dtype=dtype) / max(height - 1, 1)
  if change is not None:
    x_unit = x_unit + jnp.asarray(change.offset_x, dtype)
    y_unit = y_unit + jnp.asarray(change.offset_y, dtype)
  if kind == 'linear':
    x_axis, y_axis = [scale * x_unit], [scale * y_unit]
  elif kind in ('centered', 'radial'):
    x_axis, y_axis = [scale * (2.0 * x_unit - 1.0)], [scale * (2.0 * y_unit - 1.0)]
  else:
    frequencies = [2.0**k * math.pi for k in range(bands)]
    x_axis = [scale * f(w * x_unit) for w in frequencies for f in (jnp.sin, jnp.cos)]
    y_axis = [scale * f(w * y_unit) for w in frequencies for f in (jnp.sin, jnp.cos)]
  channels = [jnp.broadcast_to(x[None, :], (height, width)) for x in x_axis]
  channels += [jnp.broadcast_to(y[:, None], (height, width)) for y in y_axis]
  if kind == 'radial':
    channels.append(jnp.sqrt(channels[0]**2 + channels[1]**2))
  channels = jnp.stack(channels, axis=-1)
  if change is not None:
    channels = jnp.where(change.removed, channels.mean(axis=(0, 1), keepdims=True), channels)
  return channels


def add_coordinate_channels(images, scale: float | None, kind: str = 'linear', bands: int = 4,
                            change: EncodingChange | None = None):
  """Appends the coordinate channels to NHWC `images`; `scale=None` means no PE."""
  if scale is None:
    return images
  batch, height, width, _ = images.shape
  coords = coordinate_channels(height, width, scale, images.dtype, kind, bands,
                               change).astype(images.dtype)
  coords = jnp.broadcast_to(coords[None], (batch, height, width, coords.shape[-1]))
  return jnp.concatenate([images, coords], axis=-1)


def input_channels(scale: float | None, image_channels: int = 1, kind: str = 'linear',
                   bands: int = 4) -> int:
  """Channels a model's input has: the image's, plus the encoding's with PE."""
  return image_channels + (0 if scale is None else num_coordinate_channels(kind, bands))
