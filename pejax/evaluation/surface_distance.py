"""Per-case segmentation metrics: Dice, HD95 and mean surface distance, per image and per volume.

Host-side NumPy/SciPy code, run on predicted and true label maps after prediction.

Conventions:
  Surface: the foreground voxels of a mask that have a background neighbour along an axis
    (face connectivity: 4 neighbours in 2-D, 6 in 3-D). The outside of the array counts as
    background, so a mask touching the image border has a surface there. This is the
    surface of medpy.metric.binary (binary erosion with connectivity 1, border value 0).
  Directed surface distances from A to B: for each surface voxel of A, the Euclidean
    distance between voxel centres to the nearest surface voxel of B, with `spacing` giving
    the size of one step along each axis (millimetres where known; None means 1 per axis,
    distances in pixels).
  HD95: the 95th percentile of the union of both directed distance sets, interpolated
    linearly between order statistics (NumPy's default) — medpy's `hd95`. The other common
    definition, the larger of the two directed 95th percentiles (MONAI's
    HausdorffDistanceMetric(percentile=95), DeepMind's compute_robust_hausdorff), is not used.
  Mean surface distance (MSD): the mean of the union of both directed distance sets, the
    average symmetric surface distance of Heimann et al. (IEEE TMI 2009) and of medpy 0.5.2's
    `assd`. Older medpy averaged the two directed means instead, which differs when the two
    surfaces have different sizes.
  Dice of a class: 2|P ∩ G| / (|P| + |G|), as `pejax.models.dice` defines it.

Empty structures (nnU-Net's rule), recorded per class in `status_<class>`:
  'skipped'         absent from both prediction and truth: Dice, HD95 and MSD are NaN and the
                    class leaves the image's mean Dice, as in `pejax.models.dice`;
  'missed'          in the truth, not predicted: Dice 0, HD95 and MSD undefined (NaN);
  'false_positive'  predicted, not in the truth: Dice 0, HD95 and MSD undefined (NaN);
  'ok'              present in both: every metric defined.
`summarize` counts each status, so undefined distances are counted, not dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

OK = 'ok'
SKIPPED = 'skipped'
MISSED = 'missed'
FALSE_POSITIVE = 'false_positive'
STATUSES = (OK, SKIPPED, MISSED, FALSE_POSITIVE)

def _spacing(spacing, ndim: int) -> np.ndarray:
  if spacing is None:
    return np.ones(ndim)
  values = np.asarray(spacing, np.float64)
  if values.ndim == 0:
    values = np.full(ndim, float(values))
  if values.shape != (ndim,) or not np.all(values > 0):
    raise ValueError(f'spacing must be None or {ndim} positive numbers, got {spacing!r}.')
  return values


def surface(mask) -> np.ndarray:
  """Boolean surface of a boolean mask: foreground voxels with a face-connected background
  neighbour, the outside of the array counting as background."""
  mask = np.asarray(mask, bool)
  structure = ndimage.generate_binary_structure(mask.ndim, 1)
  return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Both masks cut to the bounding box of their union.

  Exact, not an approximation: every voxel cut away is background in both, so surfaces
  (outside = background) and nearest-surface distances are unchanged, and the distance
  transforms get smaller.
  """
  union = a | b
  box = tuple(slice(int(np.min(i)), int(np.max(i)) + 1) for i in np.nonzero(union))
  return a[box], b[box]


def directed_surface_distances(source, target, spacing=None) -> np.ndarray:
  """Distance from each surface voxel of `source` to the nearest surface voxel of `target`.

  Args:
    source, target: boolean masks of one shape (2-D or 3-D), both non-empty.
    spacing: step size per axis (a number for all axes, or one per axis), or None for 1.

  Returns:
    float64 (number of source surface voxels,), in the unit of `spacing`, in the row-major
    order of the source surface voxels.
  """
  source, target = np.asarray(source, bool), np.asarray(target, bool)
  if source.shape != target.shape:
    raise ValueError(f'Masks differ in shape: {source.shape} vs {target.shape}.')
  if not source.any() or not target.any():
    raise ValueError('Surface distances need two non-empty masks.')
  sampling = _spacing(spacing, source.ndim)
  source, target = _crop_to_union(source, target)
  # The transform gives each voxel its distance to the nearest zero, so zeros go on the
  # target's surface.
  to_target = ndimage.distance_transform_edt(~surface(target), sampling=sampling)
  return to_target[surface(source)]


def _pooled_distances(prediction, truth, spacing) -> np.ndarray | None:
  """Both directed distance sets, concatenated; None when either mask is empty."""
  prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
  if not prediction.any() or not truth.any():
    return None
  return np.concatenate([directed_surface_distances(prediction, truth, spacing),
                         directed_surface_distances(truth, prediction, spacing)])


def _percentile_95(distances: np.ndarray | None) -> float:
  return math.nan if distances is None else float(np.percentile(distances, 95))


def _mean(distances: np.ndarray | None) -> float:
  return math.nan if distances is None else float(np.mean(distances))


def hd95(prediction, truth, spacing=None) -> float:
  """95th percentile of the pooled surface distances of both directions (medpy's hd95).

  NaN when either mask is empty (see `structure_status` for which case it is).
  """
  return _percentile_95(_pooled_distances(prediction, truth, spacing))


def mean_surface_distance(prediction, truth, spacing=None) -> float:
  """Symmetric mean surface distance: the mean of the pooled distances of both directions.

  NaN when either mask is empty (see `structure_status` for which case it is).
  """
  return _mean(_pooled_distances(prediction, truth, spacing))


def structure_status(prediction, truth) -> str:
  """'ok', 'skipped', 'missed' or 'false_positive' for a pair of boolean masks."""
  predicted, present = bool(np.any(prediction)), bool(np.any(truth))
  if predicted and present:
    return OK
  if present:
    return MISSED
  return FALSE_POSITIVE if predicted else SKIPPED


def _dice(prediction, truth) -> float:
  """2|P ∩ G| / (|P| + |G|) of two boolean masks of any dimension (an image or a whole volume);
  NaN when both are empty (skipped). `pejax.models.dice` computes the same for batches of
  images on the device; a test keeps the two equal."""
  prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
  denominator = int(prediction.sum()) + int(truth.sum())
  if denominator == 0:
    return math.nan
  return 2.0 * int(np.sum(prediction & truth)) / denominator


def _class_names(num_classes: int, class_names) -> list[str]:
  # The same default names as pejax.models.dice.finalize_dice, so the keys line up.
  names = list(class_names) if class_names else [f'class{c}' for c in range(1, num_classes)]
  if len(names) != num_classes - 1:
    raise ValueError(f'{len(names)} class names for {num_classes - 1} foreground classes.')
  return names


def case_metrics(prediction, truth, num_classes: int, class_names: Sequence[str] | None = None,
                 spacing=None) -> dict[str, float | str]:
  """Dice, HD95 and MSD of every foreground class of one case (an image or a volume).

  Args:
    prediction, truth: integer label maps of one shape, 2-D (H, W) or 3-D (Z, H, W).
    num_classes: number of classes including background (label 0).
    class_names: names of the foreground classes 1..num_classes-1, for the keys; default
      'class1', 'class2', ... (the default of `pejax.models.dice.finalize_dice`).
    spacing: step size per axis in mm (a number, or one per axis), or None for pixels.

  Returns:
    {'dice': mean Dice over the classes not skipped (NaN if all are), as `pejax.models.dice`
    computes an image's Dice; then per class 'dice_<c>', 'hd95_<c>', 'msd_<c>' and
    'status_<c>'} (see the module docstring for the empty-structure rule).
  """
  prediction, truth = np.asarray(prediction), np.asarray(truth)
  if prediction.shape != truth.shape:
    raise ValueError(f'Prediction {prediction.shape} and truth {truth.shape} differ in shape.')
  names = _class_names(num_classes, class_names)
  per_class = {}
  for c, name in enumerate(names, start=1):
    predicted, present = prediction == c, truth == c
    distances = _pooled_distances(predicted, present, spacing)  # once for both statistics
    per_class[name] = (_dice(predicted, present), _percentile_95(distances), _mean(distances),
                       structure_status(predicted, present))
  defined = [d for d, _, _, status in per_class.values() if status != SKIPPED]
  row: dict[str, float | str] = {'dice': float(np.mean(defined)) if defined else math.nan}
  for index, metric in enumerate(('dice', 'hd95', 'msd', 'status')):
    row.update({f'{metric}_{name}': values[index] for name, values in per_class.items()})
  return row


def volume_metrics(prediction_slices, truth_slices, num_classes: int,
                   class_names: Sequence[str] | None = None, spacing=None) -> dict:
  """3-D per-volume Dice, HD95 and MSD per structure, from the slices of one volume.

  Dice counts voxels of the whole volume (not a mean of slice Dice) and surfaces are 3-D
  (the first and last slices are surface where the structure reaches them), as the ACDC
  challenge evaluates a volume.

  Args:
    prediction_slices, truth_slices: (Z, H, W) label maps, slices in anatomical order.
    num_classes, class_names: as in `case_metrics`.
    spacing: (slice distance, row spacing, column spacing) in mm, or None for unit steps.

  Returns:
    The keys of `case_metrics`.
  """
  prediction_slices, truth_slices = np.asarray(prediction_slices), np.asarray(truth_slices)
  if prediction_slices.ndim != 3:
    raise ValueError(f'Expected (Z, H, W) slices, got shape {prediction_slices.shape}.')
  return case_metrics(prediction_slices, truth_slices, num_classes, class_names, spacing)


def volume_rows(predictions, labels, subjects: Sequence[str], phases: Sequence[str],
                slice_indices: Sequence[int], num_classes: int,
                class_names: Sequence[str] | None = None, spacings=None) -> list[dict]:
  """Per-volume rows of ACDC-style data: slices grouped by (subject, phase), stacked by index.

  Args:
    predictions, labels: (N, H, W) label maps of N slices, in any order.
    subjects, phases, slice_indices: (N,) each slice's volume and position in it (see
      `acdc_slice_key` to get them from example ids). A volume's indices must be
      consecutive: a missing slice would put two slices a slice distance too close.
    num_classes, class_names: as in `case_metrics`.
    spacings: None (unit steps), or (N, 3) per slice (slice distance, row spacing, column
      spacing) in mm, the same for every slice of a volume.

  Returns:
    One row per volume, sorted by (subject, phase): {'subject', 'phase', 'num_slices'} and the
    keys of `case_metrics`. Summarize ED and ES apart, e.g. `summarize(r for r in rows if
    r['phase'] == 'ED')`.
  """
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  indices = np.asarray(slice_indices, np.int64)
  count = predictions.shape[0]
  if not labels.shape[0] == len(subjects) == len(phases) == len(indices) == count:
    raise ValueError('predictions, labels, subjects, phases and slice_indices differ in length.')
  if spacings is not None:
    spacings = np.asarray(spacings, np.float64)
    if spacings.shape != (count, 3):
      raise ValueError(f'spacings must be (N, 3) = ({count}, 3), got {spacings.shape}.')
  volumes: dict[tuple[str, str], list[int]] = {}
  for i, key in enumerate(zip(subjects, phases)):
    volumes.setdefault((str(key[0]), str(key[1])), []).append(i)
  rows = []
  for (subject, phase), members in sorted(volumes.items()):
    members = sorted(members, key=lambda i: indices[i])
    order = indices[members]
    if np.any(np.diff(order) != 1):
      raise ValueError(f'{subject} {phase}: slice indices {order.tolist()} are not consecutive.')
    spacing = None
    if spacings is not None:
      spacing = spacings[members[0]]
      if not np.allclose(spacings[members], spacing, rtol=1e-6, atol=0.0):
        raise ValueError(f'{subject} {phase}: slices have different spacings.')
    row = {'subject': subject, 'phase': phase, 'num_slices': len(members)}
    row.update(volume_metrics(predictions[members], labels[members], num_classes,
                              class_names, spacing))
    rows.append(row)
  return rows


def summarize(rows: Iterable[Mapping]) -> dict[str, float | int]:
  """Per-class mean and median of the rows of `case_metrics` or `volume_rows`, with counts.

  Dice statistics are over the cases where the class was not skipped (missed and false
  positive cases count as Dice 0); HD95 and MSD statistics are over the 'ok' cases only, and
  `n_missed_<c>` + `n_false_positive_<c>` says how many cases had no distance. The overall
  'dice_mean' is the mean of the per-case Dice over cases with any class not skipped, the
  reported Dice of `pejax.models.dice`.

  Returns:
    {'n_cases', 'dice_mean', 'dice_median', 'dice_n', then per class c:
    'dice_<c>_mean', 'dice_<c>_median', 'hd95_<c>_mean', 'hd95_<c>_median', 'msd_<c>_mean',
    'msd_<c>_median', 'n_ok_<c>', 'n_skipped_<c>', 'n_missed_<c>', 'n_false_positive_<c>'};
    statistics of no cases are NaN.
  """
  rows = list(rows)
  names = [key[len('status_'):] for key in rows[0] if key.startswith('status_')] if rows else []

  def stats(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    if values.size == 0:
      return math.nan, math.nan
    return float(np.mean(values)), float(np.median(values))

  image_dice = [row['dice'] for row in rows if not math.isnan(row['dice'])]
  summary: dict[str, float | int] = {'n_cases': len(rows)}
  summary['dice_mean'], summary['dice_median'] = stats(image_dice)
  summary['dice_n'] = len(image_dice)
  for name in names:
    statuses = [row[f'status_{name}'] for row in rows]
    unknown = set(statuses) - set(STATUSES)
    if unknown:
      raise ValueError(f'Unknown status {sorted(unknown)} for class {name}.')
    scored = [row for row, status in zip(rows, statuses) if status != SKIPPED]
    measured = [row for row, status in zip(rows, statuses) if status == OK]
    summary[f'dice_{name}_mean'], summary[f'dice_{name}_median'] = stats(
        [row[f'dice_{name}'] for row in scored])
    for metric in ('hd95', 'msd'):
      summary[f'{metric}_{name}_mean'], summary[f'{metric}_{name}_median'] = stats(
          [row[f'{metric}_{name}'] for row in measured])
    for status in STATUSES:
      summary[f'n_{status}_{name}'] = statuses.count(status)
  return summary
