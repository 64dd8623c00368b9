"""U-Net (paper Table 3) and the small CNN (Table 4), in Flax NNX.

Both take NHWC inputs (the image's channels, plus the encoding's where it enters at the input)
and return per-pixel logits. With `coord_channels` > 0 every 3×3 convolution also takes that
many coordinate channels at its own resolution (CoordConv), made by the `coords` function of
the call: (height, width) -> (H, W, coord_channels). `width` scales every channel count (64 =
the paper); `padding` is used by every 3×3 convolution. Convolutions followed by BatchNorm
carry no bias (BatchNorm's own shift makes it redundant); the final 1×1 score convolution has
one. Call with `train=True` to normalize with
batch statistics and update the running averages, `train=False` to use the running averages.
`mask` (broadcastable to the input, e.g. (N, 1, 1, 1) bool) picks the examples whose batch
statistics count in training; the others are normalized with them but do not change them.
`features(...)` returns the intermediate feature maps the logits are computed from (the
U-Net's encoder levels and bottleneck, the small CNN's layers), through the same code as the
call (`pejax.evaluation.probe` reads position off them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pejax.choices import UNET_DEPTH
from pejax.models import fused
from pejax.models.layers import PaddedConv, check_padding_mode, conv_primitive

# PyTorch's BatchNorm2d defaults (momentum 0.1 there is 0.9 here), as the paper used PyTorch.
BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5


class ConvBNReLU(nnx.Module):

  def __init__(self, in_features, out_features, *, padding, conv_impl='auto', dtype=None,
               coord_channels: int = 0, rngs: nnx.Rngs):
    self.coord_channels = coord_channels
    self.conv = PaddedConv(in_features + coord_channels, out_features, 3, padding=padding,
                           use_bias=False, conv_impl=conv_impl, dtype=dtype, rngs=rngs)
    self.norm = nnx.BatchNorm(out_features, momentum=BATCH_NORM_MOMENTUM,
                              epsilon=BATCH_NORM_EPSILON, dtype=dtype, rngs=rngs)

  def __call__(self, x, train: bool, mask=None, coords=None):
    if self.coord_channels:
      x = with_coordinates(x, coords)
    x = self.conv(x)
    if train and x.dtype == jnp.float32:
      return self._batch_norm_relu(x, mask)
    return jax.nn.relu(self.norm(x, use_running_average=not train, mask=mask))

  def _batch_norm_relu(self, x, mask):
    """What `relu(self.norm(x, use_running_average=False, mask=mask))` computes, running
    averages included, with the fewer passes of `fused.batch_norm_relu`."""
    norm = self.norm
    y, mean, variance = fused.batch_norm_relu(x, norm.scale[...], norm.bias[...], mask, norm.epsilon)
    norm.mean[...] = jax.lax.stop_gradient(norm.momentum * norm.mean[...] + (1 - norm.momentum) * mean)
    norm.var[...] = jax.lax.stop_gradient(norm.momentum * norm.var[...] + (1 - norm.momentum) * variance)
    return y


def with_coordinates(x, coords):
  """NHWC `x` with the coordinate channels of its resolution appended."""
  if coords is None:
    raise ValueError('this model takes coordinate channels at every layer: call it with coords=.')
  batch, height, width, _ = x.shape
  channels = coords(height, width).astype(x.dtype)
  return jnp.concatenate([x, jnp.broadcast_to(channels[None], (batch,) + channels.shape)], -1)


class DoubleConv(nnx.Module):
  """Two ConvBNReLU layers: one U-Net level (e.g. conv1_1 + conv1_2 of Table 3)."""

  def __init__(self, in_features, out_features, *, padding, conv_impl='auto', dtype=None,
               coord_channels: int = 0, rngs: nnx.Rngs):
    kwargs = dict(padding=padding, conv_impl=conv_impl, dtype=dtype,
                  coord_channels=coord_channels, rngs=rngs)
    self.first = ConvBNReLU(in_features, out_features, **kwargs)
    self.second = ConvBNReLU(out_features, out_features, **kwargs)

  def __call__(self, x, train: bool, mask=None, coords=None):
    return self.second(self.first(x, train, mask, coords), train, mask, coords)


def score_conv(in_features, num_classes, *, conv_impl, dtype, rngs):
  """The final 1×1 convolution (with bias), through the same convolution implementation."""
  return nnx.Conv(in_features, num_classes, (1, 1), padding='VALID', dtype=dtype,
                  conv_general_dilated=conv_primitive(conv_impl), rngs=rngs)


def upsample_bilinear_2x(x):
  """×2 bilinear upsampling with half-pixel centres (PyTorch `align_corners=False`).

  For a factor of 2 each output pixel is 3/4 of its source pixel plus 1/4 of the neighbour on
  its side (edges clamped); written out so XLA fuses it, equal to `jax.image.resize(...,
  'bilinear')`.
  """

  def along(axis, x):
    previous = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis),
                                jax.lax.slice_in_dim(x, 0, x.shape[axis] - 1, axis=axis)], axis)
    following = jnp.concatenate([jax.lax.slice_in_dim(x, 1, x.shape[axis], axis=axis),
                                 jax.lax.slice_in_dim(x, x.shape[axis] - 1, x.shape[axis], axis=axis)], axis)
    even = 0.75 * x + 0.25 * previous
    odd = 0.75 * x + 0.25 * following
    interleaved = jnp.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] *= 2
    return interleaved.reshape(shape)

  return along(2, along(1, x))


class UNet(nnx.Module):
  """Paper Table 3: 4 levels (w, 2w, 4w, 8w), bottleneck 8w, decoder 4w, 2w, w, w, 1×1 score."""

  def __init__(self, in_channels: int = 1, num_classes: int = 4, *, width: int = 64,
               padding: str = 'zeros', conv_impl: str = 'auto', dtype=None,
               coord_channels: int = 0, rngs: nnx.Rngs):
    check_padding_mode(padding)
    if padding == 'valid':
      raise ValueError("padding='valid' is not available for the U-Net: its skip connections "
                       'need equal sizes; use it with the small CNN, or pick another padding mode.')
    kwargs = dict(padding=padding, conv_impl=conv_impl, dtype=dtype,
                  coord_channels=coord_channels, rngs=rngs)
    w = width
    self.encoder = nnx.List([DoubleConv(in_channels, w, **kwargs), DoubleConv(w, 2 * w, **kwargs),
                             DoubleConv(2 * w, 4 * w, **kwargs), DoubleConv(4 * w, 8 * w, **kwargs)])
    self.bottleneck = DoubleConv(8 * w, 8 * w, **kwargs)
    # Decoder input = upsampled features + skip features (concatenated).
    self.decoder = nnx.List([DoubleConv(8 * w + 8 * w, 4 * w, **kwargs),
                             DoubleConv(4 * w + 4 * w, 2 * w, **kwargs),
                             DoubleConv(2 * w + 2 * w, w, **kwargs),
                             DoubleConv(w + w, w, **kwargs)])
    self.score = score_conv(w, num_classes, conv_impl=conv_impl, dtype=dtype, rngs=rngs)

  def features(self, x, train: bool = False, mask=None, coords=None) -> list:
    """The encoder's outputs, one per level before its pooling, then the bottleneck's: the
    skip features the decoder takes and its input (NHWC, finest first)."""
    _, height, width, _ = x.shape
    multiple = 2**UNET_DEPTH
    if height % multiple or width % multiple:
      raise ValueError(f'U-Net input of {height}×{width}: both sides must be divisible by '
                       f'{multiple} (it halves the image {UNET_DEPTH} times).')
    levels = []
    for level in self.encoder:
      x = level(x, train, mask, coords)
      levels.append(x)
      x = fused.max_pool_2x2(x)
    return levels + [self.bottleneck(x, train, mask, coords)]

  def __call__(self, x, train: bool = False, mask=None, coords=None):
    *skips, x = self.features(x, train, mask, coords)
    for level, skip in zip(self.decoder, reversed(skips)):
      x = level(jnp.concatenate([upsample_bilinear_2x(x), skip], axis=-1), train, mask, coords)
    return self.score(x)


class SmallCNN(nnx.Module):
  """Paper Table 4: `depth` 3×3 ConvBNReLU layers of `width` channels, then a 1×1 score conv.

  Its receptive field is only (2·depth+1) pixels wide, so without positional encoding it can
  tell structures apart only by local appearance (or near the border, through the padding).
  With padding='valid' the output is 2·depth pixels smaller on each axis than the input.
  """

  def __init__(self, in_channels: int = 1, num_classes: int = 4, *, width: int = 64,
               depth: int = 3, padding: str = 'zeros', conv_impl: str = 'auto', dtype=None,
               coord_channels: int = 0, rngs: nnx.Rngs):
    kwargs = dict(padding=padding, conv_impl=conv_impl, dtype=dtype,
                  coord_channels=coord_channels, rngs=rngs)
    channels = [in_channels] + [width] * depth
    self.layers = nnx.List([ConvBNReLU(a, b, **kwargs) for a, b in zip(channels[:-1], channels[1:])])
    self.score = score_conv(width, num_classes, conv_impl=conv_impl, dtype=dtype, rngs=rngs)

  def features(self, x, train: bool = False, mask=None, coords=None) -> list:
    """The output of every 3×3 layer (NHWC, first layer first); the last one is scored."""
    levels = []
    for layer in self.layers:
      x = layer(x, train, mask, coords)
      levels.append(x)
    return levels

  def __call__(self, x, train: bool = False, mask=None, coords=None):
    return self.score(self.features(x, train, mask, coords)[-1])


MODELS = {'unet': UNet, 'cnn4': SmallCNN}


def create_model(name: str, *, in_channels: int, num_classes: int = 4, width: int = 64,
                 padding: str = 'zeros', conv_impl: str = 'auto', dtype=None,
                 coord_channels: int = 0, seed: int = 0):
  if name not in MODELS:
    raise ValueError(f'model={name!r} is not a model; use one of {", ".join(MODELS)}.')
  return MODELS[name](in_channels, num_classes, width=width, padding=padding,
                      conv_impl=conv_impl, dtype=dtype, coord_channels=coord_channels,
                      rngs=nnx.Rngs(seed))
