import numpy as np
import jax.numpy as jnp
import pytest

from pejax.models.encoding import add_coordinate_channels, coordinate_channels, input_channels


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
