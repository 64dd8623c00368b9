"""PaddedConv against an independent NumPy/SciPy computation: np.pad + direct correlation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.signal import correlate

from pejax.models.layers import PADDING_MODES, PaddedConv

NUMPY_PAD = {'zeros': 'constant', 'reflect': 'reflect', 'replicate': 'edge',
             'circular': 'wrap', 'symmetric': 'symmetric'}


def reference_forward(x, kernel, bias, mode):
  """x (N,H,W,Cin), kernel (k,k,Cin,Cout): pad with NumPy, then correlate each channel pair."""
  k = kernel.shape[0]
  pad = (k - 1) // 2
  if mode != 'valid':
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=NUMPY_PAD[mode])
  n, h, w, cin = x.shape
  cout = kernel.shape[-1]
  out = np.zeros((n, h - k + 1, w - k + 1, cout))
  for b in range(n):
    for o in range(cout):
      for i in range(cin):
        out[b, :, :, o] += correlate(x[b, :, :, i], kernel[:, :, i, o], mode='valid')
  return out + bias


def reference_input_gradient(x, kernel, bias, mode, output_gradient):
  """Aᵀg for the linear map x ↦ conv(x) − bias, with A built column by column from the forward."""
  flat = x.reshape(-1)
  gradient = np.zeros_like(flat)
  zero = np.zeros_like(x)
  for index in range(flat.size):
    basis = zero.copy().reshape(-1)
    basis[index] = 1.0
    column = reference_forward(basis.reshape(x.shape), kernel, 0.0, mode)
    gradient[index] = np.sum(column * output_gradient)
  return gradient.reshape(x.shape)


@pytest.mark.parametrize('mode', PADDING_MODES)
@pytest.mark.parametrize('shape', [(2, 6, 6, 3), (1, 5, 8, 2)], ids=['square', 'non_square'])
def test_forward_and_input_gradient_match_numpy(mode, shape):
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape).astype(np.float32)
  layer = PaddedConv(shape[-1], 4, 3, padding=mode, rngs=nnx.Rngs(1))
  layer.conv.bias[...] = jnp.asarray(rng.normal(size=4), jnp.float32)
  kernel = np.asarray(layer.conv.kernel[...], np.float64)
  bias = np.asarray(layer.conv.bias[...], np.float64)

  out = np.asarray(layer(jnp.asarray(x)))
  expected = reference_forward(x.astype(np.float64), kernel, bias, mode)
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)

  output_gradient = rng.normal(size=expected.shape)
  grad = jax.grad(lambda v: jnp.sum(layer(v) * output_gradient))(jnp.asarray(x))
  expected_grad = reference_input_gradient(x.astype(np.float64), kernel, bias, mode, output_gradient)
  np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-4, atol=1e-4)


def test_modes_differ_only_at_the_border():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 9, 9, 1)), jnp.float32)
  outputs = {}
  for mode in ('zeros', 'reflect', 'replicate', 'circular', 'symmetric'):
    outputs[mode] = np.asarray(PaddedConv(1, 2, 3, padding=mode, rngs=nnx.Rngs(0))(x))
  for mode, out in outputs.items():
    np.testing.assert_allclose(out[:, 1:-1, 1:-1], outputs['zeros'][:, 1:-1, 1:-1], rtol=1e-5)
    if mode != 'zeros':
      assert not np.allclose(out[:, 0], outputs['zeros'][:, 0])


def test_unknown_mode_is_rejected_with_the_choices():
  with pytest.raises(ValueError, match="padding='mirror'.*zeros, reflect"):
    PaddedConv(1, 1, 3, padding='mirror', rngs=nnx.Rngs(0))
