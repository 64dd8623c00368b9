"""conv_impl='cpu' (`pejax.models.cpu_conv`) equals `lax.conv_general_dilated`: values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax import lax

from pejax.models import cpu_conv, networks, steps
from pejax.models.layers import CONV_IMPLEMENTATIONS, PaddedConv, conv_primitive

NHWC = ('NHWC', 'HWIO', 'NHWC')


def reference_conv(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), 'VALID', dimension_numbers=NHWC)


def fast(x, w):
  return cpu_conv.conv_general_dilated(x, w, (1, 1), 'VALID', dimension_numbers=NHWC)


def value_and_gradients(conv, x, w, cotangent):
  """(output, ∂/∂x, ∂/∂w) of <conv(x, w), cotangent>, under jit."""

  @jax.jit
  def run(x, w):
    output, pullback = jax.vjp(conv, x, w)
    return (output,) + pullback(cotangent)

  return run(x, w)


def assert_close(actual, expected, rtol):
  """Largest deviation relative to the largest magnitude (robust to entries near zero)."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape
  assert np.max(np.abs(actual - expected)) <= rtol * np.max(np.abs(expected))


def normal(rng, shape, dtype=jnp.float32):
  # NumPy's generator: jax.random would compile a kernel per shape, seconds each on a small CPU.
  return jnp.asarray(rng.standard_normal(shape, np.float32), dtype)


def output_shape(x_shape, w_shape):
  return x_shape[:-3] + (x_shape[-3] - w_shape[-4] + 1, x_shape[-2] - w_shape[-3] + 1, w_shape[-1])


def random_arrays(seed, x_shape, w_shape, dtype=jnp.float32, cotangent_shape=None):
  rng = np.random.default_rng(seed)
  cotangent_shape = cotangent_shape or output_shape(x_shape, w_shape)
  return normal(rng, x_shape, dtype), normal(rng, w_shape, dtype), normal(rng, cotangent_shape, dtype)


SHAPES = [  # (x: N, H, W, Cin), (w: kh, kw, Cin, Cout)
    ((2, 10, 10, 16), (3, 3, 16, 16)),   # square, Cin = Cout
    ((3, 9, 13, 12), (3, 3, 12, 20)),    # non-square image, Cin ≠ Cout
    ((2, 8, 12, 3), (3, 3, 3, 16)),      # few input channels, as the first layer with PE
    ((2, 6, 5, 16), (1, 1, 16, 4)),      # 1×1, as the score layer (a matrix product)
    ((2, 12, 10, 10), (5, 3, 10, 6)),    # non-square kernel
]


@pytest.mark.parametrize('x_shape,w_shape', SHAPES)
def test_equals_lax_in_float32(x_shape, w_shape):
  x, w, cotangent = random_arrays(0, x_shape, w_shape)
  expected = value_and_gradients(reference_conv, x, w, cotangent)
  actual = value_and_gradients(fast, x, w, cotangent)
  for a, e in zip(actual, expected):
    assert a.dtype == e.dtype
    assert_close(a, e, rtol=2e-5)


@pytest.mark.parametrize('in_axes', [(0, 0), (0, None), (None, 0)],
                         ids=['stacked models', 'shared kernel', 'shared images'])
def test_equals_lax_under_vmap(in_axes):
  models_count, (x_shape, w_shape) = 3, SHAPES[1]
  stacked = lambda shape, axis: shape if axis is None else (models_count,) + shape
  x, w, cotangent = random_arrays(1, stacked(x_shape, in_axes[0]), stacked(w_shape, in_axes[1]),
                                  cotangent_shape=(models_count,) + output_shape(x_shape, w_shape))
  expected = value_and_gradients(jax.vmap(reference_conv, in_axes), x, w, cotangent)
  actual = value_and_gradients(jax.vmap(fast, in_axes), x, w, cotangent)
  for a, e in zip(actual, expected):
    assert_close(a, e, rtol=2e-5)


def test_pointwise_padding_same_equals_lax():
  # nnx.Conv's default padding is 'SAME', which adds nothing to a 1×1 kernel.
  x, w, cotangent = random_arrays(11, *SHAPES[3])
  options = dict(window_strides=(1, 1), padding='SAME', dimension_numbers=NHWC)
  expected = value_and_gradients(lambda x, w: lax.conv_general_dilated(x, w, **options), x, w, cotangent)
  actual = value_and_gradients(lambda x, w: cpu_conv.conv_general_dilated(x, w, **options), x, w,
                               cotangent)
  for a, e in zip(actual, expected):
    assert_close(a, e, rtol=2e-5)


def test_vmap_runs_one_ordinary_convolution_per_model():
  x, w, cotangent = random_arrays(2, (3,) + SHAPES[1][0], (3,) + SHAPES[1][1])
  compiled = jax.jit(lambda x, w: value_and_gradients(jax.vmap(fast), x, w, cotangent))
  text = compiled.lower(x, w).compile().as_text()  # optimized HLO names group counts above 1
  assert 'convolution(' in text
  assert 'feature_group_count=' not in text and 'batch_group_count=' not in text


def test_nested_vmap():
  x, w, _ = random_arrays(3, (2, 3) + SHAPES[0][0], (2, 3) + SHAPES[0][1])
  assert_close(jax.jit(jax.vmap(jax.vmap(fast)))(x, w), jax.vmap(jax.vmap(reference_conv))(x, w),
               rtol=2e-5)


def test_bfloat16_close_to_float32_reference():
  x, w, cotangent = random_arrays(4, *SHAPES[1], dtype=jnp.bfloat16)
  as_float32 = [a.astype(jnp.float32) for a in (x, w, cotangent)]
  expected = value_and_gradients(reference_conv, *as_float32[:2], as_float32[2])
  actual = value_and_gradients(fast, x, w, cotangent)
  for a, e in zip(actual, expected):
    assert a.dtype == jnp.bfloat16
    assert_close(a, e, rtol=2e-2)  # one bfloat16 rounding (2⁻⁸) of sums of ~100 products


def test_preferred_element_type_sets_output_dtype():
  x, w, _ = random_arrays(5, *SHAPES[1], dtype=jnp.bfloat16)
  options = dict(dimension_numbers=NHWC, preferred_element_type=jnp.float32)
  actual = cpu_conv.conv_general_dilated(x, w, (1, 1), 'VALID', **options)
  expected = lax.conv_general_dilated(x, w, (1, 1), 'VALID', **options)
  assert actual.dtype == expected.dtype == jnp.float32
  assert_close(actual, expected, rtol=1e-5)


@pytest.mark.parametrize('padding', ['SAME', ((1, 1), (1, 1)), ((0, 2), (1, 0))],
                         ids=['same', 'symmetric', 'asymmetric'])
def test_zero_padding_equals_lax(padding):
  x, w, _ = random_arrays(6, (2, 9, 8, 4), (3, 3, 4, 6))
  options = dict(dimension_numbers=NHWC, window_strides=(1, 1), padding=padding)
  reference = lambda x, w: lax.conv_general_dilated(x, w, **options)
  cotangent = normal(np.random.default_rng(7), jax.eval_shape(reference, x, w).shape)
  expected = value_and_gradients(reference, x, w, cotangent)
  actual = value_and_gradients(lambda x, w: cpu_conv.conv_general_dilated(x, w, **options), x, w,
                               cotangent)
  for a, e in zip(actual, expected):
    assert_close(a, e, rtol=2e-5)


@pytest.mark.parametrize('options', [
    dict(window_strides=(2, 2), padding='VALID'),
    dict(window_strides=(1, 1), padding=((3, 3), (0, 0))),
    dict(window_strides=(1, 1), padding='VALID', rhs_dilation=(2, 2)),
], ids=['stride', 'padding wider than the kernel', 'dilation'])
def test_other_convolutions_fall_back_to_lax(options):
  x, w, _ = random_arrays(6, (2, 9, 9, 4), (3, 3, 4, 6))
  actual = cpu_conv.conv_general_dilated(x, w, dimension_numbers=NHWC, **options)
  expected = lax.conv_general_dilated(x, w, dimension_numbers=NHWC, **options)
  np.testing.assert_array_equal(actual, expected)


def test_other_layouts_fall_back_to_lax():
  rng = np.random.default_rng(7)
  x, w = normal(rng, (2, 4, 9, 9)), normal(rng, (6, 4, 3, 3))
  dimension_numbers = ('NCHW', 'OIHW', 'NCHW')
  actual = cpu_conv.conv_general_dilated(x, w, (1, 1), 'VALID', dimension_numbers=dimension_numbers)
  expected = lax.conv_general_dilated(x, w, (1, 1), 'VALID', dimension_numbers=dimension_numbers)
  np.testing.assert_array_equal(actual, expected)


def test_registered_as_conv_impl():
  assert CONV_IMPLEMENTATIONS['cpu'] is cpu_conv.conv_general_dilated
  assert CONV_IMPLEMENTATIONS['xla'] is lax.conv_general_dilated
  expected_auto = 'cpu' if jax.default_backend() == 'cpu' else 'xla'
  assert conv_primitive('auto') is CONV_IMPLEMENTATIONS[expected_auto]
  with pytest.raises(ValueError, match="conv_impl='gpu' is not known; use one of auto, xla, cpu"):
    conv_primitive('gpu')


@pytest.mark.skipif(jax.default_backend() != 'cpu' or not cpu_conv.ynnpack_convolutions_are_slow(),
                    reason='XLA:CPU options, on the jaxlib releases and CPUs they are for')
def test_recommended_options_keep_convolutions_out_of_ynnpack():
  x, w, _ = random_arrays(8, *SHAPES[0])
  default = jax.jit(reference_conv).lower(x, w).compile().as_text()
  options = cpu_conv.recommended_compiler_options()
  tuned = jax.jit(reference_conv, compiler_options=options).lower(x, w).compile().as_text()
  assert 'convolution(' in tuned and '__ynn_fusion' not in tuned
  assert '__ynn_fusion' in default or 'convolution(' in default  # later jaxlibs may differ
  assert 'ynn_fusion_type=-individual_convolution' in cpu_conv.recommended_xla_flags()
  assert cpu_conv.recommended_compiler_options('gpu') == {}


@pytest.mark.parametrize('jaxlib_version, kind, slow', [
    ('0.10.2', 'x86-64 AVX-512', True),   # measured slow: both x86-64 kinds
    ('0.10.0', 'x86-64 AVX2', True),
    ('0.10.2', 'x86-64', True),           # features unread (no /proc/cpuinfo)
    ('0.10.2', 'aarch64', False),         # not measured: XLA's defaults
    ('0.11.0', 'x86-64 AVX-512', False),  # later releases keep YNNPACK convolutions to int8
    ('0.1.0', 'x86-64 AVX2', False),
])
def test_ynnpack_rule_by_jaxlib_release_and_cpu_kind(jaxlib_version, kind, slow):
  assert cpu_conv.ynnpack_convolutions_are_slow(jaxlib_version, kind) is slow


def test_cpu_kind_from_the_flags_linux_lists(tmp_path):
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor\t: 0\nmodel name\t: AMD EPYC\n'
                     'flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16\n\nprocessor\t: 1\n')
  flags = cpu_conv.cpu_flags(str(cpuinfo))
  assert {'avx2', 'avx512f', 'avx512_bf16'} <= flags
  assert cpu_conv.cpu_kind('x86_64', flags) == 'x86-64 AVX-512'
  assert cpu_conv.cpu_kind('x86_64', flags - {'avx512f'}) == 'x86-64 AVX2'
  assert cpu_conv.cpu_kind('AMD64', frozenset()) == 'x86-64'
  assert cpu_conv.cpu_kind('aarch64', flags) == 'aarch64'
  assert cpu_conv.cpu_flags(str(tmp_path / 'absent')) == frozenset()


@pytest.mark.parametrize('padding', ['zeros', 'reflect'])
def test_padded_conv_same_output_and_gradients(padding):
  x = normal(np.random.default_rng(9), (2, 10, 7, 5))

  def output_and_gradients(conv_impl):
    layer = PaddedConv(5, 8, 3, padding=padding, conv_impl=conv_impl, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(layer, nnx.Param)

    def loss(params, x):
      y = nnx.merge(graphdef, params)(x)
      return jnp.sum(jnp.sin(y)), y

    (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)
    return y, grads

  expected_y, expected_grads = output_and_gradients('xla')
  actual_y, actual_grads = output_and_gradients('cpu')
  assert_close(actual_y, expected_y, rtol=2e-5)
  for a, e in zip(jax.tree.leaves(actual_grads), jax.tree.leaves(expected_grads)):
    assert_close(a, e, rtol=2e-5)


def model_loss_and_gradients(model_name, size, stacked_models=None):
  """Loss and parameter gradients of the train step's loss for conv_impl 'xla' and 'cpu'."""
  rng = np.random.default_rng(10)
  images = normal(rng, (2, size, size, 1))
  labels = jnp.asarray(rng.integers(0, 4, size=(2, size, size)), jnp.uint8)
  weights = jnp.ones((2,), jnp.float32)
  # Built abstractly and filled from NumPy: jax.random initializers compile per shape (slow here).
  abstract = lambda conv_impl: nnx.eval_shape(
      lambda: networks.create_model(model_name, in_channels=3, width=4, conv_impl=conv_impl))
  _, abstract_params, abstract_stats = steps.split_model(abstract('xla'))
  leading = () if stacked_models is None else (stacked_models,)
  params = jax.tree.map(lambda p: 0.5 * normal(rng, leading + p.shape), abstract_params)
  batch_stats = jax.tree.map(lambda s: jnp.ones(leading + s.shape, s.dtype), abstract_stats)
  pe_scales = jnp.ones(leading, jnp.float32)

  def loss_and_gradients(conv_impl):
    spec = steps.StepSpec(graphdef=steps.split_model(abstract(conv_impl))[0],
                          optimizer=optax.adam(1e-3))

    def loss_fn(params, batch_stats, pe_scale):
      logits, _ = steps.apply_model(spec, params, batch_stats, images, pe_scale, train=True)
      return steps.cross_entropy_loss(logits, labels, weights)

    value_and_grad = jax.value_and_grad(loss_fn)
    if stacked_models is not None:
      value_and_grad = jax.vmap(value_and_grad)
    return jax.jit(value_and_grad)(params, batch_stats, pe_scales)

  return loss_and_gradients('xla'), loss_and_gradients('cpu')


def assert_same_loss_and_gradients(expected, actual):
  (expected_loss, expected_grads), (actual_loss, actual_grads) = expected, actual
  np.testing.assert_allclose(actual_loss, expected_loss, rtol=1e-5)
  for a, e in zip(jax.tree.leaves(actual_grads), jax.tree.leaves(expected_grads)):
    assert_close(a, e, rtol=1e-4)  # through BatchNorm, relative to each tensor's largest entry


def test_small_cnn_same_loss_and_gradients():
  assert_same_loss_and_gradients(*model_loss_and_gradients('cnn4', 16))


def test_stacked_small_cnns_same_loss_and_gradients():
  assert_same_loss_and_gradients(*model_loss_and_gradients('cnn4', 16, stacked_models=2))


@pytest.mark.slow  # compiling the U-Net's gradient twice takes 10–40 s on a small CPU
def test_unet_same_loss_and_gradients():
  # 32 pixels: the bottleneck keeps 2×2 pixels per image for its BatchNorm statistics.
  assert_same_loss_and_gradients(*model_loss_and_gradients('unet', 32))
