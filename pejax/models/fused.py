"""Training-time BatchNorm + ReLU and 2×2 max-pooling, each with its gradient written out.

Both compute what autodiff of the plain formulas computes, in fewer passes over the activations
(the measurements are in BENCHMARKS.md):

- `batch_norm_relu`: the batch statistics in one pass (E[x], E[x²], as `flax.nnx.BatchNorm`),
  the normalization and the ReLU in a second; the gradient in one reduction pass (Σdz, Σdz·x)
  and one elementwise pass. Autodiff of `relu(nnx.BatchNorm(x))` takes several more, and
  XLA:CPU recomputes the normalization inside the transposes of the convolution gradients.
- `max_pool_2x2`: the gradient goes to the first maximum of each window in row-major order,
  as in PyTorch's `max_pool2d`; autodiff of `max` splits it among tied maxima, which needs a
  reduction in the backward pass, and XLA:CPU then hands the convolution that produces the
  pooled gradient to YNNPACK together with that reduction, a slow path for convolutions.
  The two differ only where a window holds tied maxima.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_PIXELS = (0, 1, 2)  # NHWC: statistics over images and pixels, one per channel


def _example_weights(x, mask):
  """`mask` (N, 1, 1, 1) bool as float weights of `x`'s examples; None for all examples."""
  return None if mask is None else jnp.broadcast_to(mask, (x.shape[0], 1, 1, 1)).astype(x.dtype)


def _moments(x, weights):
  """Per-channel mean and (biased, clipped at 0) variance over the examples `weights` selects
  (all when None), and how many values they average."""
  if weights is None:
    count = jnp.asarray(x.shape[0] * x.shape[1] * x.shape[2], x.dtype)
    selected = x
  else:
    count = jnp.sum(weights) * (x.shape[1] * x.shape[2])
    selected = x * weights
  mean = jnp.sum(selected, _PIXELS) / count
  mean_of_squares = jnp.sum(selected * x, _PIXELS) / count
  return mean, jnp.maximum(0.0, mean_of_squares - mean * mean), count


def _normalize_relu(x, mean, inverse_std, scale, bias):
  factor = inverse_std * scale
  return jax.nn.relu(x * factor + (bias - mean * factor))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def batch_norm_relu(x, scale, bias, mask, epsilon):
  """relu(BatchNorm(x)) with batch statistics: (output, batch mean, batch variance).

  `x` is NHWC float32; `scale`, `bias` per channel; `mask` (N, 1, 1, 1) bool or None picks the
  examples whose statistics count (all are normalized with them), as `nnx.BatchNorm(mask=)`.
  """
  mean, variance, _ = _moments(x, _example_weights(x, mask))
  return _normalize_relu(x, mean, lax.rsqrt(variance + epsilon), scale, bias), mean, variance


def _batch_norm_relu_forward(x, scale, bias, mask, epsilon):
  weights = _example_weights(x, mask)
  mean, variance, count = _moments(x, weights)
  inverse_std = lax.rsqrt(variance + epsilon)
  y = _normalize_relu(x, mean, inverse_std, scale, bias)
  return (y, mean, variance), (x, y, mean, inverse_std, scale, weights, count)


def _batch_norm_relu_backward(epsilon, residuals, cotangents):
  del epsilon
  x, y, mean, inverse_std, scale, weights, count = residuals
  output_grad, mean_grad, variance_grad = cotangents
  dz = jnp.where(y > 0, output_grad, 0)             # through the ReLU (0 at 0, as jax.nn.relu)
  dz_sum = jnp.sum(dz, _PIXELS)
  dz_x_sum = jnp.sum(dz * x, _PIXELS)
  dz_normalized_sum = inverse_std * (dz_x_sum - mean * dz_sum)   # Σ dz·x̂, x̂ = (x − μ)/σ
  factor = scale * inverse_std
  # d/dx_j of μ is M_j/m, of σ² is 2·M_j·(x_j − μ)/m (M = mask, m = count), through x̂_i for all i:
  # dx_j = γ/σ·(dz_j − M_j/m·(Σdz + x̂_j·Σdz·x̂)) + M_j/m·(dμ + 2(x_j − μ)·dσ²).
  per_mean = mean_grad / count - factor * dz_sum / count
  per_centered = 2.0 * variance_grad / count - factor * inverse_std * dz_normalized_sum / count
  statistics_part = per_mean + (x - mean) * per_centered
  if weights is not None:
    statistics_part = statistics_part * weights
  return factor * dz + statistics_part, dz_normalized_sum, dz_sum, None


batch_norm_relu.defvjp(_batch_norm_relu_forward, _batch_norm_relu_backward)


def _windows(x):
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2(x):
  """2×2 max-pooling, stride 2, NHWC (even sides)."""
  return _windows(x).max(axis=(2, 4))


def _max_pool_forward(x):
  pooled = max_pool_2x2(x)
  return pooled, (x, pooled)


def _max_pool_backward(residuals, g):
  x, pooled = residuals
  is_max = _windows(x) == pooled[:, :, None, :, None, :]
  slots = [is_max[:, :, row, :, column] for row in (0, 1) for column in (0, 1)]
  first, earlier = [], jnp.zeros_like(slots[0])
  for slot in slots:                                  # row-major window order
    first.append(slot & ~earlier)
    earlier = earlier | slot
  chosen = jnp.stack([jnp.stack(first[:2], axis=3), jnp.stack(first[2:], axis=3)], axis=2)
  return (jnp.where(chosen, g[:, :, None, :, None, :], 0).reshape(x.shape).astype(x.dtype),)


max_pool_2x2.defvjp(_max_pool_forward, _max_pool_backward)
