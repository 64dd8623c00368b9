import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.filters

from pejax import choices, configuration
from pejax.evaluation import corruptions


def skimage_blur(images, sigma):
  """Reference: skimage per 2-D channel of an NHWC batch."""
  return np.stack([
      np.stack([skimage.filters.gaussian(image[..., c].astype(np.float64), sigma,
                                         mode='nearest', truncate=4.0, preserve_range=True)
                for c in range(image.shape[-1])], axis=-1)
      for image in images])


@pytest.mark.parametrize('shape', [(2, 24, 40, 2), (1, 32, 32, 1)])
def test_blur_matches_skimage_for_every_default_sigma(shape):
  images = np.random.default_rng(0).random(shape).astype(np.float32)
  max_radius = corruptions.blur_radius(max(choices.GAUSSIAN_BLUR_SIGMAS))
  traced_blur = jax.jit(lambda x, s: corruptions.gaussian_blur(x, s, max_radius=max_radius))
  for sigma in choices.GAUSSIAN_BLUR_SIGMAS + (0.18,):   # 0.18: the paper's literal list
    expected = skimage_blur(images, sigma)
    np.testing.assert_allclose(traced_blur(images, sigma), expected, atol=1e-5)
    np.testing.assert_allclose(corruptions.gaussian_blur(images, sigma), expected, atol=1e-5)


def test_blur_kernel_is_zero_beyond_own_radius_and_identity_at_zero():
  weights = np.asarray(corruptions.gaussian_kernel_1d(0.5, max_radius=6))
  assert np.count_nonzero(weights) == 2 * corruptions.blur_radius(0.5) + 1
  assert weights.sum() == pytest.approx(1.0, abs=1e-6)
  images = np.random.default_rng(1).random((1, 8, 8, 1)).astype(np.float32)
  np.testing.assert_array_equal(corruptions.gaussian_blur(images, 0.0, max_radius=3), images)


@pytest.mark.parametrize('sigma', [0.04, 0.08, 0.12])
def test_gaussian_noise_mean_and_variance(sigma):
  # 0.5 lies >4σ from both bounds, so clipping does not bias the statistics.
  images = jnp.full((1, 256, 256, 1), 0.5)
  noisy = np.asarray(corruptions.gaussian_noise(images, sigma, jax.random.key(0)), np.float64)
  samples = noisy.size
  assert abs(noisy.mean() - 0.5) < 5 * sigma / np.sqrt(samples)
  assert noisy.var() == pytest.approx(sigma**2, rel=5 * np.sqrt(2 / samples))


@pytest.mark.parametrize('count', [15.0, 50.0, 250.0])
def test_shot_noise_poisson_statistics(count):
  intensity = 0.3   # P(Poisson(0.3·15) > 15) ≈ 1e-5: clipping is negligible
  images = jnp.full((1, 256, 256, 1), intensity)
  noisy = np.asarray(corruptions.shot_noise(images, count, jax.random.key(1)), np.float64)
  samples = noisy.size
  variance = intensity / count
  assert abs(noisy.mean() - intensity) < 5 * np.sqrt(variance / samples)
  assert noisy.var() == pytest.approx(variance, rel=5 * np.sqrt(2 / samples))
  # Poisson(x·c)/c lives on the lattice k/c.
  np.testing.assert_allclose(noisy * count, np.round(noisy * count), atol=1e-3)


def test_results_are_clipped_to_unit_interval():
  # The shape of the severity test below, so both share compilations.
  images = jnp.concatenate([jnp.zeros((1, 32, 48, 1)), jnp.ones((1, 32, 48, 1))])
  key = jax.random.key(2)
  for result in (corruptions.gaussian_noise(images, 0.5, key),
                 corruptions.shot_noise(images, 2.0, key),
                 corruptions.gaussian_blur(images, 1.5, max_radius=6)):
    result = np.asarray(result)
    assert result.min() >= 0.0 and result.max() <= 1.0
  noisy = np.asarray(corruptions.gaussian_noise(images, 0.5, key))
  assert (noisy == 0.0).any() and (noisy == 1.0).any()


@pytest.mark.parametrize('kind', ['gaussian_noise', 'shot_noise', 'gaussian_blur'])
def test_more_severe_changes_images_more(kind):
  images = jnp.asarray(np.random.default_rng(3).uniform(0.2, 0.8, (2, 32, 48, 1)), jnp.float32)
  key = jax.random.key(4)
  apply = {
      'gaussian_noise': lambda s: corruptions.gaussian_noise(images, s, key),
      'shot_noise': lambda c: corruptions.shot_noise(images, c, key),
      'gaussian_blur': lambda s: corruptions.gaussian_blur(images, s, max_radius=6),
  }[kind]
  parameters = configuration.default_robustness_config()[kind]
  changes = [float(jnp.mean(jnp.abs(apply(parameters[severity - 1]) - images)))
             for severity in choices.SEVERITIES]
  assert all(a < b for a, b in zip(changes, changes[1:])), changes


def test_corruptions_jit_and_vmap_with_traced_parameters():
  images = jnp.asarray(np.random.default_rng(5).random((3, 16, 16, 1)), jnp.float32)
  keys = jax.random.split(jax.random.key(6), 3)
  sigmas = jnp.asarray([0.04, 0.08, 0.12])
  per_image = jax.jit(jax.vmap(lambda x, s, k: corruptions.gaussian_noise(x, s, k)))
  noisy = per_image(images, sigmas, keys)
  for i in range(3):
    np.testing.assert_allclose(
        noisy[i], corruptions.gaussian_noise(images[i], float(sigmas[i]), keys[i]), atol=1e-6)
  counts = jnp.asarray([15.0, 50.0, 250.0])
  shot = jax.jit(jax.vmap(corruptions.shot_noise))(images, counts, keys)
  assert shot.shape == images.shape


def rectangle_mask(height=12, width=20):
  mask = np.zeros((1, height, width), np.uint8)
  mask[0, 3:8, 5:11] = 2
  return mask


@pytest.mark.parametrize('shift', [3, -4])
def test_shift_zeros_moves_mask_along_width(shift):
  labels = rectangle_mask()
  images = labels[..., None].astype(np.float32) / 2 + 0.25
  moved_images, moved_labels = jax.jit(corruptions.shift_images_and_labels)(
      images, labels, shift)
  expected = np.zeros_like(labels)
  expected[0, 3:8, 5 + shift:11 + shift] = 2
  np.testing.assert_array_equal(moved_labels, expected)
  expected_images = np.full(images.shape, 0.25, np.float32)
  expected_images[0, 3:8, 5 + shift:11 + shift] = 1.25
  exposed = slice(0, shift) if shift > 0 else slice(shift, None)
  expected_images[:, :, exposed] = 0.0   # exposed columns: image 0
  np.testing.assert_array_equal(moved_images, expected_images)


@pytest.mark.parametrize('shift', [5, -6])
def test_shift_edge_replicates_border_column(shift):
  labels = rectangle_mask()
  labels[0, :, 0] = 1        # distinct edge columns, so replication is visible
  labels[0, :, -1] = 3
  images = np.arange(12 * 20, dtype=np.float32).reshape(1, 12, 20, 1) / 240
  moved_images, moved_labels = corruptions.shift_images_and_labels(
      images, labels, shift, fill='edge')
  pad = (shift, 0) if shift > 0 else (0, -shift)
  expected_labels = np.pad(labels, [(0, 0), (0, 0), pad], mode='edge')
  expected_images = np.pad(images, [(0, 0), (0, 0), pad, (0, 0)], mode='edge')
  crop = slice(0, 20) if shift > 0 else slice(-shift, None)
  np.testing.assert_array_equal(moved_labels, expected_labels[:, :, crop])
  np.testing.assert_array_equal(moved_images, expected_images[:, :, crop])


def test_shift_along_y_and_one_compilation_for_every_shift():
  traces = []

  def shift_y(images, labels, k):
    traces.append(k)
    return corruptions.shift_images_and_labels(images, labels, 0, k)

  shift_y = jax.jit(shift_y)
  labels = rectangle_mask()
  images = labels[..., None].astype(np.float32)
  for k in (-2, 0, 2):
    _, moved = shift_y(images, labels, k)
    expected = np.zeros_like(labels)
    expected[0, 3 + k:8 + k, 5:11] = 2
    np.testing.assert_array_equal(moved, expected)
  assert len(traces) == 1


def test_default_shifts_scale_with_image_size():
  assert corruptions.default_shifts(256) == tuple(range(-64, 65, 8))
  assert corruptions.default_shifts(64) == tuple(range(-16, 17, 2))
  assert corruptions.default_shifts(16) == tuple(range(-8, 9))
  assert len(corruptions.default_shifts(100)) == 17


def test_unknown_fill_is_rejected():
  with pytest.raises(ValueError, match='circular'):
    corruptions.shift_array(jnp.zeros((1, 4, 4)), 1, 2, fill='circular')
