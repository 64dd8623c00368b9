"""Test-time image corruptions and shifts (paper Sec. 2.3 and Fig. 5), pure JAX.

All functions take NHWC image batches with intensities in [0, 1] (before normalization) and
return results clipped to [0, 1]. The corruption's parameter (σ, c, shift k) may be a traced
value, so one compiled function serves every severity and every shift; randomness comes only
from the explicit PRNG key.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pejax.choices import SHIFT_FILLS

# scipy.ndimage / skimage default: the kernel extends to truncate·σ on each side.
BLUR_TRUNCATE = 4.0


@jax.jit
def gaussian_noise(images, sigma, key):
  """`images + N(0, σ²)` per pixel, clipped to [0, 1]; σ may be traced."""
  noise = jax.random.normal(key, images.shape, images.dtype)
  return jnp.clip(images + jnp.asarray(sigma, images.dtype) * noise, 0.0, 1.0)


@jax.jit
def shot_noise(images, count, key):
  """`Poisson(images · c) / c`, clipped to [0, 1]; smaller c is more severe; c may be traced."""
  count = jnp.asarray(count, jnp.float32)
  rate = jnp.maximum(images.astype(jnp.float32), 0.0) * count
  photons = jax.random.poisson(key, rate, images.shape)
  return jnp.clip(photons.astype(jnp.float32) / count, 0.0, 1.0).astype(images.dtype)


def blur_radius(sigma: float, truncate: float = BLUR_TRUNCATE) -> int:
  """Kernel radius scipy.ndimage uses for a Gaussian of width `sigma` (a Python number)."""
  return int(truncate * float(sigma) + 0.5)


def gaussian_kernel_1d(sigma, max_radius: int, truncate: float = BLUR_TRUNCATE):
  """Normalized taps at offsets −max_radius..max_radius for a possibly traced σ.

  Taps beyond σ's own radius `int(truncate·σ + 0.5)` are zero, so the result equals
  scipy's kernel for σ zero-padded to the fixed length; σ = 0 gives the identity.
  """
  sigma = jnp.asarray(sigma, jnp.float32)
  offsets = jnp.arange(-max_radius, max_radius + 1, dtype=jnp.float32)
  radius = jnp.floor(truncate * sigma + 0.5)
  safe_sigma = jnp.where(sigma > 0, sigma, 1.0)
  weights = jnp.exp(-0.5 * jnp.square(offsets / safe_sigma))
  weights = jnp.where(jnp.abs(offsets) <= radius, weights, 0.0)
  identity = (offsets == 0).astype(jnp.float32)
  weights = jnp.where(sigma > 0, weights, identity)
  return weights / jnp.sum(weights)


def gaussian_blur(images, sigma, *, max_radius: int | None = None,
                  truncate: float = BLUR_TRUNCATE):
  """Separable Gaussian blur of NHWC `images` with edge-replicate borders, clipped to [0, 1].

  Matches `skimage.filters.gaussian(x, sigma, mode='nearest', truncate=truncate,
  preserve_range=True)` per 2-D channel. `max_radius` fixes the kernel length so that a traced
  σ works; it must be at least `blur_radius(σ)` for every σ used. Without it, σ must be a
  Python number.
  """
  if max_radius is None:
    max_radius = blur_radius(sigma, truncate)
  return _gaussian_blur(images, sigma, max_radius=max_radius, truncate=truncate)


@functools.partial(jax.jit, static_argnames=('max_radius', 'truncate'))
def _gaussian_blur(images, sigma, *, max_radius: int, truncate: float):
  weights = gaussian_kernel_1d(sigma, max_radius, truncate)
  x = images.astype(jnp.float32)

  def filter_axis(x, axis):
    # Edge padding = mode='nearest'; static slices of the padded array are the taps.
    length = x.shape[axis]
    pad_widths = [(0, 0)] * x.ndim
    pad_widths[axis] = (max_radius, max_radius)
    padded = jnp.pad(x, pad_widths, mode='edge')
    result = jnp.zeros_like(x)
    for tap in range(2 * max_radius + 1):
      window = jax.lax.slice_in_dim(padded, tap, tap + length, axis=axis)
      result = result + weights[tap] * window
    return result

  x = filter_axis(filter_axis(x, 1), 2)
  return jnp.clip(x, 0.0, 1.0).astype(images.dtype)


def shift_source_indices(length: int, shift, fill: str):
  """Source index of every output position for a shift by `shift` (traced), and its validity."""
  source = jnp.arange(length) - jnp.asarray(shift, jnp.int32)
  inside = (source >= 0) & (source < length)
  if fill == 'edge':
    inside = jnp.ones_like(inside)
  return jnp.clip(source, 0, length - 1), inside


@functools.partial(jax.jit, static_argnames=('axis', 'fill'))
def shift_array(array, shift, axis: int, fill: str = 'zeros'):
  """Moves the content of `array` by `shift` positions along `axis` (positive = towards
  higher indices); the exposed border is 0 (`'zeros'`) or a copy of the edge (`'edge'`)."""
  if fill not in SHIFT_FILLS:
    raise ValueError(f'shift fill {fill!r} unknown; allowed: {SHIFT_FILLS}')
  length = array.shape[axis]
  source, inside = shift_source_indices(length, shift, fill)
  moved = jnp.take(array, source, axis=axis)
  mask_shape = [1] * array.ndim
  mask_shape[axis] = length
  return jnp.where(inside.reshape(mask_shape), moved, jnp.zeros((), array.dtype))


def shift_images_and_labels(images, labels, shift_x=0, shift_y=0, fill: str = 'zeros'):
  """Shifts NHWC `images` and NHW `labels` by `shift_x` pixels along the width (x) and
  `shift_y` along the height (y); positive moves content right / down. With `'zeros'` the
  exposed border is image 0 and label 0 (background); with `'edge'` it replicates the edge
  column / row of both. Shifts may be traced."""
  images = shift_array(shift_array(images, shift_x, 2, fill), shift_y, 1, fill)
  labels = shift_array(shift_array(labels, shift_x, 2, fill), shift_y, 1, fill)
  return images, labels


def default_shifts(size: int) -> tuple[int, ...]:
  """The paper's −64…64 step 8 at 256 px, scaled to `size`: 17 shifts, step ≥ 1 pixel."""
  step = max(1, round(8 * size / 256))
  return tuple(step * k for k in range(-8, 9))
