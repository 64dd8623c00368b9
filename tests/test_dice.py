import numpy as np
import jax.numpy as jnp
import pytest

from pejax.models.dice import averaged_mask, dice_sums, finalize_dice, per_image_dice


def test_dice_by_hand():
  labels = np.zeros((1, 4, 4), np.uint8)
  labels[0, :2, :2] = 1        # class 1: 4 pixels
  labels[0, 2:, 2:] = 2        # class 2: 4 pixels
  predictions = labels.copy()
  predictions[0, 0, 0] = 0     # class 1: 3 of 4 found
  predictions[0, 3, 0] = 2     # class 2: one false positive
  dice, defined = per_image_dice(jnp.asarray(predictions), jnp.asarray(labels), 4)
  np.testing.assert_allclose(dice[0, :2], [2 * 3 / 7, 2 * 4 / 9], rtol=1e-6)
  # Class 3 is absent from both prediction and ground truth: skipped, not counted as 0 or 1.
  assert list(np.asarray(defined[0])) == [True, True, False]
  result = finalize_dice(dice_sums(jnp.asarray(predictions), jnp.asarray(labels), 4), ['a', 'b', 'c'])
  assert result['dice'] == pytest.approx((2 * 3 / 7 + 2 * 4 / 9) / 2, rel=1e-6)
  assert np.isnan(result['dice_c'])


def test_mean_over_images_then_classes_and_padding_mask():
  labels = np.zeros((3, 2, 2), np.uint8)
  labels[:, 0, 0] = 1
  predictions = labels.copy()
  predictions[1] = 0                      # image 1: class 1 missed -> 0
  predictions[1, 1, 1] = 3                # ... and a false class-3 pixel -> class 3 Dice 0
  sums = dice_sums(jnp.asarray(predictions), jnp.asarray(labels), 4)
  result = finalize_dice(sums)
  assert result['dice'] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
  assert result['dice_class1'] == pytest.approx(2 / 3)
  assert result['dice_class3'] == pytest.approx(0.0)
  masked = finalize_dice(dice_sums(jnp.asarray(predictions), jnp.asarray(labels), 4,
                                   valid=jnp.array([1, 0, 1])))
  assert masked['dice'] == pytest.approx(1.0)


def test_sums_accumulate_across_batches():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, size=(6, 8, 8)).astype(np.uint8)
  predictions = rng.integers(0, 4, size=(6, 8, 8)).astype(np.uint8)
  whole = dice_sums(jnp.asarray(predictions), jnp.asarray(labels), 4)
  parts = [dice_sums(jnp.asarray(predictions[i:i + 2]), jnp.asarray(labels[i:i + 2]), 4) for i in (0, 2, 4)]
  summed = {k: sum(np.asarray(p[k]) for p in parts) for k in whole}
  assert finalize_dice(summed) == pytest.approx(finalize_dice(whole))


def test_averaged_mask_is_per_pixel_majority():
  labels = np.array([[[1, 0]], [[1, 2]], [[3, 2]]], np.uint8)
  np.testing.assert_array_equal(averaged_mask(labels, 4), [[1, 2]])
