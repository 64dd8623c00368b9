"""Dice as the paper reports it, from per-image confusion counts.

Definition (the paper's; it reproduces the paper's averaged-mask baselines): for each image,
Dice of every foreground class c is 2|P_c ∩ G_c| / (|P_c| + |G_c|); a class absent from
both prediction and ground truth of that image is skipped; the image's Dice is the mean over
its remaining foreground classes; the reported Dice is the mean over images. Per-class Dice is
the mean over the images where that class was not skipped.

Everything here returns *sums and counts* so that batches, devices and processes can be
accumulated by plain addition and finalized once with `finalize_dice`.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np


def confusion_areas(predictions, labels, num_classes: int):
  """Per-image, per-class intersection, predicted area and true area, each (N, num_classes)."""
  classes = jnp.arange(num_classes)
  predicted = predictions[..., None] == classes
  true = labels[..., None] == classes
  spatial_axes = tuple(range(1, predictions.ndim))
  intersection = jnp.sum(predicted & true, axis=spatial_axes, dtype=jnp.float32)
  predicted_area = jnp.sum(predicted, axis=spatial_axes, dtype=jnp.float32)
  true_area = jnp.sum(true, axis=spatial_axes, dtype=jnp.float32)
  return intersection, predicted_area, true_area


def per_image_dice(predictions, labels, num_classes: int):
  """Foreground Dice per image and class, (N, num_classes - 1), and whether each is defined."""
  intersection, predicted_area, true_area = confusion_areas(predictions, labels, num_classes)
  denominator = (predicted_area + true_area)[:, 1:]
  defined = denominator > 0
  dice = jnp.where(defined, 2.0 * intersection[:, 1:] / jnp.where(defined, denominator, 1.0), 0.0)
  return dice, defined


def dice_sums(predictions, labels, num_classes: int, valid=None) -> dict[str, jnp.ndarray]:
  """Summable Dice statistics of a batch; `valid` (N,) masks out padding examples."""
  dice, defined = per_image_dice(predictions, labels, num_classes)
  if valid is not None:
    defined = defined & valid[:, None].astype(bool)
  defined_f = defined.astype(jnp.float32)
  classes_defined = defined_f.sum(axis=1)
  image_has_dice = classes_defined > 0
  image_dice = (dice * defined_f).sum(axis=1) / jnp.maximum(classes_defined, 1.0)
  return {
      'dice_sum': jnp.sum(jnp.where(image_has_dice, image_dice, 0.0)),
      'dice_count': jnp.sum(image_has_dice.astype(jnp.float32)),
      'class_dice_sum': jnp.sum(dice * defined_f, axis=0),
      'class_dice_count': jnp.sum(defined_f, axis=0),
  }


def finalize_dice(sums: Mapping[str, np.ndarray], class_names=None) -> dict[str, float]:
  """Mean Dice and per-class Dice from accumulated `dice_sums`; NaN where nothing was defined."""
  sums = {k: np.asarray(v, dtype=np.float64) for k, v in sums.items()}
  with np.errstate(invalid='ignore', divide='ignore'):
    result = {'dice': float(sums['dice_sum'] / sums['dice_count'])}
    per_class = sums['class_dice_sum'] / sums['class_dice_count']
  names = class_names or [f'class{c}' for c in range(1, per_class.shape[-1] + 1)]
  for name, value in zip(names, per_class):
    result[f'dice_{name}'] = float(value)
  return result


def averaged_mask(train_labels, num_classes: int, num_rows=None):
  """The paper's baseline: per-pixel argmax of the mean one-hot training mask, (H, W) int32.

  `num_rows` counts the real rows of a padded array (rows beyond it are ignored). Ties go to
  the lower class, as NumPy's argmax does.
  """
  train_labels = jnp.asarray(train_labels)
  rows = train_labels.shape[0] if num_rows is None else num_rows
  valid = (jnp.arange(train_labels.shape[0]) < rows)[:, None, None]
  counts = jnp.stack([jnp.sum((train_labels == c) & valid, axis=0, dtype=jnp.int32)
                      for c in range(num_classes)])
  return jnp.argmax(counts, axis=0).astype(jnp.int32)
