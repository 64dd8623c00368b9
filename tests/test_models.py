"""Shape and parameter-count tests for the fully convolutional models (as in scenic)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pejax.models.layers import PADDING_MODES
from pejax.models.networks import SmallCNN, UNet, create_model, upsample_bilinear_2x


def count_params(model):
  return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def table3_parameter_count(in_channels, num_classes=4):
  """Parameters of paper Table 3 counted from the table itself.

  Each 'Convolution + BatchNormalization' row: 3·3·C_in·C_out weights (no bias, BatchNorm
  shifts) + 2·C_out BatchNorm scale and shift. The input channels of each row follow from the
  table: the previous row's channels, or, after a 'Concatenation', the upsampled channels plus
  those of the encoder level of the same resolution. Score: 1×1 conv with bias.
  """
  rows = [  # (input channels, output channels), in table order
      (in_channels, 64), (64, 64),            # conv1_1, conv1_2
      (64, 128), (128, 128),                  # conv2
      (128, 256), (256, 256),                 # conv3
      (256, 512), (512, 512),                 # conv4
      (512, 512), (512, 512),                 # conv5 (bottleneck, after pool4)
      (512 + 512, 256), (256, 256),           # up1 + cat1 (conv4_2) -> conv6
      (256 + 256, 128), (128, 128),           # up2 + cat2 (conv3_2) -> conv7
      (128 + 128, 64), (64, 64),              # up3 + cat3 (conv2_2) -> conv8
      (64 + 64, 64), (64, 64),                # up4 + cat4 (conv1_2) -> conv9
  ]
  conv_bn = sum(9 * cin * cout + 2 * cout for cin, cout in rows)
  score = 64 * num_classes + num_classes
  return conv_bn + score


@pytest.mark.parametrize('in_channels', [1, 3])
def test_paper_unet_parameter_count(in_channels):
  model = UNet(in_channels, 4, width=64, rngs=nnx.Rngs(0))
  assert count_params(model) == table3_parameter_count(in_channels)


def test_small_cnn_parameter_count():
  model = SmallCNN(3, 4, width=64, rngs=nnx.Rngs(0))
  expected = (9 * 3 * 64 + 2 * 64) + 2 * (9 * 64 * 64 + 2 * 64) + (64 * 4 + 4)
  assert count_params(model) == expected


@pytest.mark.parametrize('size', [64, 128, 256])
@pytest.mark.parametrize('padding', [p for p in PADDING_MODES if p != 'valid'])
def test_unet_output_size_equals_input(size, padding):
  model = UNet(3, 4, width=4, padding=padding, rngs=nnx.Rngs(0))
  abstract = jax.eval_shape(lambda x: model(x, train=False),
                            jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))
  assert abstract.shape == (2, size, size, 4)


@pytest.mark.parametrize('size', [64, 128, 256])
@pytest.mark.parametrize('padding', PADDING_MODES)
def test_small_cnn_output_size(size, padding):
  model = SmallCNN(1, 4, width=8, padding=padding, rngs=nnx.Rngs(0))
  abstract = jax.eval_shape(lambda x: model(x, train=False),
                            jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32))
  side = size - 6 if padding == 'valid' else size   # three 3×3 convolutions without padding
  assert abstract.shape == (1, side, side, 4)


def test_non_square_input():
  model = UNet(1, 4, width=4, rngs=nnx.Rngs(0))
  assert model(jnp.ones((1, 32, 48, 1)), train=False).shape == (1, 32, 48, 4)


def test_unet_rejects_sizes_it_cannot_halve_four_times_and_valid_padding():
  model = UNet(1, 4, width=4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='divisible by 16'):
    model(jnp.ones((1, 40, 40, 1)))
  with pytest.raises(ValueError, match="padding='valid'"):
    UNet(1, 4, width=4, padding='valid', rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="model='vgg'"):
    create_model('vgg', in_channels=1)


def test_eval_mode_is_deterministic_and_train_mode_updates_batch_stats():
  model = UNet(3, 4, width=4, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  first = model(x, train=False)
  second = model(x, train=False)
  np.testing.assert_array_equal(first, second)
  before = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
  model(x, train=True)
  after = nnx.state(model, nnx.BatchStat)
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), before, after))
  assert all(changed)
  # Eval output now differs (running averages moved) but is again deterministic.
  third = model(x, train=False)
  assert not np.allclose(first, third)
  np.testing.assert_array_equal(third, model(x, train=False))


def test_train_mode_uses_batch_statistics():
  model = SmallCNN(1, 4, width=4, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 1))
  # With batch statistics each example depends on the others in the batch.
  alone = model(x[:1], train=True)
  together = model(x, train=True)[:1]
  assert not np.allclose(alone, together)


def test_bilinear_upsampling_matches_jax_image_resize():
  x = jax.random.normal(jax.random.key(2), (2, 5, 7, 3))
  expected = jax.image.resize(x, (2, 10, 14, 3), 'bilinear')
  np.testing.assert_allclose(upsample_bilinear_2x(x), expected, atol=1e-6)


# Output channels of every 3×3 convolution, in units of the width: the U-Net's 18 (encoder,
# bottleneck, decoder: 62 w in all) and the small CNN's 3.
CONV_OUTPUTS = {'unet': [1, 1, 2, 2, 4, 4, 8, 8, 8, 8, 4, 4, 2, 2, 1, 1, 1, 1], 'cnn4': [1, 1, 1]}


@pytest.mark.parametrize('model', ['unet', 'cnn4'])
@pytest.mark.parametrize('kind, bands, added', [('linear', 4, 2), ('centered', 4, 2),
                                                ('radial', 4, 3), ('fourier', 3, 12)])
@pytest.mark.parametrize('layers', ['input', 'all'])
def test_parameter_counts_of_each_encoding_where_it_enters(model, kind, bands, added, layers):
  from pejax.models import spec
  width = 8

  def parameters(use_pe):
    _, init_state = spec.build(model, use_pe, width, 'zeros', 'xla', 'float32', 1e-3, 4, 1,
                               kind, bands, layers)
    return spec.count_parameters(jax.eval_shape(init_state, 0).params)

  # Each added channel adds one 3×3 filter slice to every convolution it enters.
  convolutions = CONV_OUTPUTS[model][:1] if layers == 'input' else CONV_OUTPUTS[model]
  assert parameters(True) - parameters(False) == 9 * added * width * sum(convolutions)
  if model == 'unet':
    assert sum(CONV_OUTPUTS['unet']) == 62


def test_coordinates_at_every_layer_reach_every_convolution_at_its_resolution(monkeypatch):
  from pejax.models import spec, steps
  built, init_state = spec.build('unet', True, 4, 'zeros', 'xla', 'float32', 1e-3, 4, 1,
                                 'linear', 4, 'all')
  state = init_state(0)
  seen = []
  original = steps.coordinate_channels

  def recording(height, width, *args):
    seen.append((height, width))
    return original(height, width, *args)

  monkeypatch.setattr(steps, 'coordinate_channels', recording)
  logits, _ = steps.apply_model(built, state.params, state.batch_stats, jnp.zeros((1, 32, 48, 1)),
                                jnp.float32(1.0), train=False)
  assert logits.shape == (1, 32, 48, 4)
  assert sorted(set(seen)) == [(2, 3), (4, 6), (8, 12), (16, 24), (32, 48)]
  assert len(seen) == 18  # every 3×3 convolution, the first included
