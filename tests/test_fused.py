"""The written-out gradients of `pejax.models.fused` against autodiff of the plain formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pejax.models import fused
from pejax.models.networks import BATCH_NORM_EPSILON, ConvBNReLU

MASKS = {'all examples': None, 'example 2 left out': np.array([True, True, False, True])}


def reference_batch_norm_relu(x, scale, bias, mask, epsilon):
  """relu(BatchNorm(x)) as `flax.nnx.BatchNorm` computes it, differentiated by autodiff."""
  mean = x.mean((0, 1, 2), where=mask)
  variance = jnp.maximum(0.0, (x * x).mean((0, 1, 2), where=mask) - mean * mean)
  return jax.nn.relu((x - mean) * jax.lax.rsqrt(variance + epsilon) * scale + bias), mean, variance


@pytest.fixture
def float64():
  jax.config.update('jax_enable_x64', True)
  yield
  jax.config.update('jax_enable_x64', False)


@pytest.mark.parametrize('mask', MASKS.values(), ids=MASKS.keys())
def test_batch_norm_relu_and_its_gradient_equal_autodiff_of_the_formula(float64, mask):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 5, 6, 3)) * 2 + 1)
  scale, bias = jnp.asarray(rng.normal(size=3)), jnp.asarray(rng.normal(size=3))
  mask = None if mask is None else jnp.asarray(mask).reshape(4, 1, 1, 1)
  # Cotangents for all three outputs, so that every term of the written-out gradient counts.
  cotangents = (jnp.asarray(rng.normal(size=x.shape)), jnp.asarray(rng.normal(size=3)),
                jnp.asarray(rng.normal(size=3)))
  expected, expected_vjp = jax.vjp(lambda *a: reference_batch_norm_relu(*a, mask, 1e-5), x, scale, bias)
  got, got_vjp = jax.vjp(lambda *a: fused.batch_norm_relu(*a, mask, 1e-5), x, scale, bias)
  assert x.dtype == jnp.float64
  for a, b in zip(got + got_vjp(cotangents), expected + expected_vjp(cotangents)):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('mask', MASKS.values(), ids=MASKS.keys())
def test_conv_bn_relu_training_equals_nnx_batch_norm(mask):
  """The layer's training path: output, running averages and gradients as with nnx.BatchNorm."""
  layer = ConvBNReLU(3, 8, padding='zeros', rngs=nnx.Rngs(0))
  layer.norm.scale[...] = jnp.linspace(0.5, 1.5, 8)
  layer.norm.bias[...] = jnp.linspace(-0.3, 0.3, 8)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 10, 12, 3)), jnp.float32)
  mask = None if mask is None else jnp.asarray(mask).reshape(4, 1, 1, 1)

  def fused_path(model, x):
    return model(x, train=True, mask=mask)

  def nnx_path(model, x):
    return jax.nn.relu(model.norm(model.conv(x), use_running_average=False, mask=mask))

  results = {}
  for name, path in (('fused', fused_path), ('nnx', nnx_path)):
    model = nnx.clone(layer)
    y = path(model, x)
    gradient = nnx.grad(lambda m, x, path=path: jnp.sum(path(m, x) * jnp.cos(x.sum(-1, keepdims=True))),
                        argnums=(0, 1))(nnx.clone(layer), x)
    results[name] = (y, model.norm.mean[...], model.norm.var[...],
                     jax.tree.leaves(nnx.state(gradient[0], nnx.Param)), gradient[1])
  got, expected = results['fused'], results['nnx']
  np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[2], expected[2], rtol=1e-5, atol=1e-6)
  for a, b in zip(got[3], expected[3]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got[4], expected[4], rtol=1e-4, atol=1e-4)
  assert layer.norm.epsilon == BATCH_NORM_EPSILON


def test_max_pool_gradient_equals_autodiff_without_ties():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, 8, 3)), jnp.float32)
  g = jnp.asarray(np.random.default_rng(3).normal(size=(2, 3, 4, 3)), jnp.float32)
  plain = lambda x: x.reshape(2, 3, 2, 4, 2, 3).max(axis=(2, 4))  # noqa: E731
  np.testing.assert_array_equal(fused.max_pool_2x2(x), plain(x))
  np.testing.assert_array_equal(jax.vjp(fused.max_pool_2x2, x)[1](g)[0], jax.vjp(plain, x)[1](g)[0])


def test_max_pool_gradient_goes_to_the_first_maximum_in_row_major_order():
  """As PyTorch's max_pool2d: a tie is not split (autodiff of `max` would give each half)."""
  windows = np.array([[[5., 5.], [1., 5.]],      # tie of three: the top-left one
                      [[0., 2.], [2., 2.]],      # tie of three: the top-right one
                      [[1., 1.], [3., 3.]],      # tie in the bottom row: the bottom-left one
                      [[0., 0.], [0., 9.]]])     # no tie
  x = jnp.asarray(np.concatenate(windows, axis=1)[None, :, :, None], jnp.float32)  # (1, 2, 8, 1)
  pooled, vjp = jax.vjp(fused.max_pool_2x2, x)
  np.testing.assert_array_equal(pooled[0, 0, :, 0], [5, 2, 3, 9])
  gradient = np.asarray(vjp(jnp.ones_like(pooled))[0][0, :, :, 0])
  expected = np.concatenate([[[1, 0], [0, 0]], [[0, 1], [0, 0]], [[0, 0], [1, 0]], [[0, 0], [0, 1]]],
                            axis=1)
  np.testing.assert_array_equal(gradient, expected)
