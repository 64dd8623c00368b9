"""Convolutions with explicit padding, so that every padding mode behaves the same way.

The padding is done with `jnp.pad` and the convolution is VALID. This matches PyTorch's
`Conv2d(padding=1, padding_mode=...)` for zeros / reflect / replicate / circular, and makes the
padding the one place where a model can learn position from the image border (Sec. 3.4).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from pejax.models import cpu_conv
from pejax.choices import CONV_IMPLS, PADDING_MODES

# Padding modes: the project's names, as PyTorch calls them, mapped to `jnp.pad` modes.
JNP_PAD_MODES = {
    'zeros': 'constant',
    'reflect': 'reflect',      # mirror without repeating the edge pixel: d c b | a b c d | c b a
    'replicate': 'edge',       # clamp: a a a | a b c d | d d d
    'circular': 'wrap',        # c d | a b c d | a b
    'symmetric': 'symmetric',  # mirror repeating the edge pixel: b a | a b c d | d c
}


def check_padding_mode(padding: str) -> None:
  if padding not in PADDING_MODES:
    raise ValueError(f'padding={padding!r} is not a padding mode; use one of {", ".join(PADDING_MODES)}.')


def pad_spatial(images, pad: int, padding: str):
  """Pads the H and W axes of NHWC `images` by `pad` pixels with the given mode."""
  check_padding_mode(padding)
  if padding == 'valid' or pad == 0:
    return images
  widths = ((0, 0), (pad, pad), (pad, pad), (0, 0))
  return jnp.pad(images, widths, mode=JNP_PAD_MODES[padding])


# The convolution primitive a `PaddedConv` calls; same signature as `lax.conv_general_dilated`.
# 'xla' is the plain reference: XLA's own convolution, on every platform.
# 'cpu' (`pejax.models.cpu_conv`) computes the same convolutions with its own gradients, and
# under `jax.vmap` over stacked models runs them model by model instead of as one feature-grouped
# convolution, which XLA:CPU runs slowly. On CPU either is fast only with
# `cpu_conv.recommended_xla_flags()` (main.py sets it; see BENCHMARKS.md).
# 'auto' (the default) is 'cpu' on the CPU backend, where it is as fast or faster, and 'xla' on
# GPU/TPU.
CONV_IMPLEMENTATIONS: dict[str, Callable] = {
    'xla': jax.lax.conv_general_dilated,
    'cpu': cpu_conv.conv_general_dilated,
}


def conv_primitive(conv_impl: str) -> Callable:
  """The convolution function of a `conv_impl` name ('auto' resolved for the default backend)."""
  if conv_impl == 'auto':
    conv_impl = 'cpu' if jax.default_backend() == 'cpu' else 'xla'
  if conv_impl not in CONV_IMPLEMENTATIONS:
    raise ValueError(f'conv_impl={conv_impl!r} is not known; use one of {", ".join(CONV_IMPLS)}.')
  return CONV_IMPLEMENTATIONS[conv_impl]


class PaddedConv(nnx.Module):
  """k×k convolution, stride 1, padded by (k−1)/2 with `padding`: zeros by the convolution
  itself, every other mode explicitly (`pad_spatial`) before a VALID convolution."""

  def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, *,
               padding: str = 'zeros', use_bias: bool = True, conv_impl: str = 'auto',
               dtype=None, rngs: nnx.Rngs):
    check_padding_mode(padding)
    if kernel_size % 2 != 1:
      raise ValueError(f'kernel_size={kernel_size} must be odd so that padding is symmetric.')
    self.padding = padding
    self.pad = (kernel_size - 1) // 2
    # Zero padding is left to the convolution itself: the same numbers without a padded copy
    # of the input, and the input gradient needs no slicing back. Other modes pad explicitly.
    conv_padding = 'VALID'
    self.input_padding = padding
    if padding == 'zeros':
      conv_padding = ((self.pad, self.pad), (self.pad, self.pad))
      self.input_padding = 'valid'
    self.conv = nnx.Conv(
        in_features, out_features, (kernel_size, kernel_size), padding=conv_padding,
        use_bias=use_bias, dtype=dtype, conv_general_dilated=conv_primitive(conv_impl),
        rngs=rngs)

  def __call__(self, x):
    return self.conv(pad_spatial(x, self.pad, self.input_padding))
