"""Positional encoding of Murase et al., eq. (1a)/(1b): two coordinate channels in [0, λ]."""

from __future__ import annotations

import jax.numpy as jnp


def coordinate_channels(height: int, width: int, scale: float, dtype=jnp.float32):
  """(H, W, 2): channel 0 = λ·i/(W−1) along x (width), channel 1 = λ·j/(H−1) along y (height)."""
  # `scale` may be a traced array, so that models with different λ can be vmapped together.
  x = scale * (jnp.arange(width, dtype=dtype) / max(width - 1, 1))
  y = scale * (jnp.arange(height, dtype=dtype) / max(height - 1, 1))
  x_channel = jnp.broadcast_to(x[None, :], (height, width))
  y_channel = jnp.broadcast_to(y[:, None], (height, width))
  return jnp.stack([x_channel, y_channel], axis=-1)


def add_coordinate_channels(images, scale: float | None):
  """Appends the two coordinate channels to NHWC `images`; `scale=None` means no PE."""
  if scale is None:
    return images
  batch, height, width, _ = images.shape
  coords = coordinate_channels(height, width, scale, images.dtype).astype(images.dtype)
  coords = jnp.broadcast_to(coords[None], (batch, height, width, 2))
  return jnp.concatenate([images, coords], axis=-1)


def input_channels(scale: float | None, image_channels: int = 1) -> int:
  """Channels a model sees: the image's, plus two with PE."""
  return image_channels + (0 if scale is None else 2)
