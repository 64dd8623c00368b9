import numpy as np
import jax.numpy as jnp
import pytest

from pejax.models.encoding import (EncodingChange, add_coordinate_channels, coordinate_channels,
                                   input_channels, num_coordinate_channels, pixel_shift)


@pytest.mark.parametrize('scale', [1.0, 10.0, 256.0])
def test_corner_values_and_orientation(scale):
  images = jnp.zeros((2, 5, 7, 1))
  encoded = np.asarray(add_coordinate_channels(images, scale))
  assert encoded.shape == (2, 5, 7, 3)
  x, y = encoded[0, ..., 1], encoded[0, ..., 2]
  # Corners (row, column): x = λ·i/(W−1) runs along the width, y = λ·j/(H−1) along the height.
  assert (x[0, 0], y[0, 0]) == (0.0, 0.0)
  assert x[0, -1] == pytest.approx(scale) and y[0, -1] == 0.0
  assert x[-1, 0] == 0.0 and y[-1, 0] == pytest.approx(scale)
  assert x[-1, -1] == pytest.approx(scale) and y[-1, -1] == pytest.approx(scale)
  np.testing.assert_allclose(x[2], scale * np.arange(7) / 6, rtol=1e-6)
  np.testing.assert_allclose(y[:, 3], scale * np.arange(5) / 4, rtol=1e-6)
  # Constant along the other axis.
  assert np.all(x == x[:1]) and np.all(y == y[:, :1])


def test_image_channel_untouched_and_batch_shared():
  images = jnp.arange(2 * 4 * 6, dtype=jnp.float32).reshape(2, 4, 6, 1)
  encoded = add_coordinate_channels(images, 10.0)
  np.testing.assert_array_equal(encoded[..., :1], images)
  np.testing.assert_array_equal(encoded[0, ..., 1:], encoded[1, ..., 1:])


def test_non_square_tall_image():
  channels = np.asarray(coordinate_channels(9, 3, 2.0))
  np.testing.assert_allclose(channels[0, :, 0], [0.0, 1.0, 2.0])
  np.testing.assert_allclose(channels[:, 0, 1], np.linspace(0, 2, 9), rtol=1e-6)


def test_no_pe_and_channel_count():
  images = jnp.ones((1, 4, 4, 1))
  assert add_coordinate_channels(images, None) is images
  assert input_channels(None) == 1 and input_channels(256.0) == 3


def _paper_channels(height, width, scale):
  """Eq. 1a/1b as pejax computed them before the encodings became a family."""
  x = scale * (jnp.arange(width, dtype=jnp.float32) / max(width - 1, 1))
  y = scale * (jnp.arange(height, dtype=jnp.float32) / max(height - 1, 1))
  return jnp.stack([jnp.broadcast_to(x[None, :], (height, width)),
                    jnp.broadcast_to(y[:, None], (height, width))], axis=-1)


@pytest.mark.parametrize('scale', [1.0, 10.0, 256.0])
def test_linear_is_bit_identical_to_the_papers_channels(scale):
  np.testing.assert_array_equal(np.asarray(coordinate_channels(40, 24, scale, kind='linear')),
                                np.asarray(_paper_channels(40, 24, scale)))


# (row, column) of the corners and the centre of a 5 × 7 image, and x̂, ŷ there.
POINTS = [((0, 0), 0.0, 0.0), ((0, 6), 1.0, 0.0), ((4, 0), 0.0, 1.0), ((4, 6), 1.0, 1.0),
          ((2, 3), 0.5, 0.5)]


def formula(kind, scale, bands, x_hat, y_hat):
  """The channels of the module's docstring at one point (x̂, ŷ)."""
  if kind == 'linear':
    return [scale * x_hat, scale * y_hat]
  if kind in ('centered', 'radial'):
    x, y = scale * (2 * x_hat - 1), scale * (2 * y_hat - 1)
    return [x, y] + ([np.hypot(x, y)] if kind == 'radial' else [])
  return ([scale * f(2**k * np.pi * x_hat) for k in range(bands) for f in (np.sin, np.cos)]
          + [scale * f(2**k * np.pi * y_hat) for k in range(bands) for f in (np.sin, np.cos)])


@pytest.mark.parametrize('kind', ['linear', 'centered', 'radial', 'fourier'])
def test_each_encoding_equals_its_formula_at_corners_and_centre_of_a_non_square_image(kind):
  scale, bands = 3.0, 3
  channels = np.asarray(coordinate_channels(5, 7, scale, kind=kind, bands=bands))
  assert channels.shape == (5, 7, num_coordinate_channels(kind, bands))
  for (row, column), x_hat, y_hat in POINTS:
    np.testing.assert_allclose(channels[row, column], formula(kind, scale, bands, x_hat, y_hat),
                               atol=1e-5, rtol=1e-5)


def test_centered_at_lambda_one_is_coordconvs_range_and_radial_adds_r():
  channels = np.asarray(coordinate_channels(4, 9, 1.0, kind='radial'))
  assert channels[..., 0].min() == -1.0 and channels[..., 0].max() == 1.0
  assert channels[..., 1].min() == -1.0 and channels[..., 1].max() == 1.0
  np.testing.assert_allclose(channels[0, 0, 2], np.sqrt(2.0), rtol=1e-6)


def test_an_unknown_kind_is_refused():
  with pytest.raises(ValueError, match='pe_kind'):
    coordinate_channels(4, 4, 1.0, kind='sinusoidal')


@pytest.mark.parametrize('kind', ['linear', 'centered', 'radial', 'fourier'])
def test_a_shifted_encoding_is_the_formula_k_pixels_further_at_every_resolution(kind):
  # An 8 × 12 input whose content meets the coordinates of 3 pixels right and 2 up: the
  # formula at column i + 3, row j − 2, continued past the edge; at a U-Net level of half the
  # resolution (pe_layers='all') the same fraction of the image further.
  change = pixel_shift(3, -2, 8, 12)
  for height, width in ((8, 12), (4, 6)):
    shifted = np.asarray(coordinate_channels(height, width, 2.0, kind=kind, bands=2,
                                             change=change))
    for row, column in ((0, 0), (height - 1, width - 1), (height // 2, 1)):
      x_hat = column / (width - 1) + 3 / 11
      y_hat = row / (height - 1) - 2 / 7
      np.testing.assert_allclose(shifted[row, column], formula(kind, 2.0, 2, x_hat, y_hat),
                                 atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('kind', ['linear', 'radial', 'fourier'])
def test_removed_encoding_is_each_channels_mean_and_no_change_is_bit_identical(kind):
  clean = np.asarray(coordinate_channels(6, 9, 3.0, kind=kind, bands=2))
  removed = np.asarray(coordinate_channels(6, 9, 3.0, kind=kind, bands=2,
                                           change=EncodingChange(removed=True)))
  np.testing.assert_allclose(removed, np.broadcast_to(clean.mean(axis=(0, 1)), clean.shape),
                             rtol=1e-6, atol=1e-6)
  unchanged = coordinate_channels(6, 9, 3.0, kind=kind, bands=2, change=EncodingChange())
  np.testing.assert_array_equal(unchanged, clean)
