"""Per-case metrics of a trained run: one row per test image (and per ACDC volume), for the clean
test split and for every condition of the robustness grid, as segmentation papers report them.

Rows hold the case's identity (id; subject, phase and slice index where the dataset has them),
the image's mean Dice and per class `dice_<c>`, `hd95_<c>`, `msd_<c>` (mean surface distance)
and `status_<c>`, with the distance unit: 'mm' where the pixel spacing is known (JSRT, ACDC
from its NIfTI headers), 'px' otherwise. The metrics and the empty-structure rule (nnU-Net's)
are `pejax.evaluation.surface_distance`'s. ACDC volumes get 3-D Dice, HD95 and MSD per structure, per
(subject, phase), as the ACDC challenge evaluates them.

Predictions come from the device; distances are computed here, on the host.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pejax.data import datasets
from pejax.evaluation import robustness, surface_distance

MM, PIXELS = 'mm', 'px'


def _identity(source: datasets.SplitArrays, index: int) -> dict[str, Any]:
  row: dict[str, Any] = {'id': str(source.ids[index])}
  if source.subjects is not None:
    row['subject'] = str(source.subjects[index])
  if source.phases is not None:
    row['phase'] = str(source.phases[index])
  if source.slice_indices is not None:
    row['slice_index'] = int(source.slice_indices[index])
  return row


def image_spacing(source: datasets.SplitArrays, index: int) -> tuple[float, float] | None:
  """(row, column) spacing in mm of one image, or None where it is not known."""
  if source.spacings is None:
    return None
  row_mm, column_mm = (float(v) for v in source.spacings[index][1:])
  return (row_mm, column_mm) if math.isfinite(row_mm) and math.isfinite(column_mm) else None


def image_rows(predictions: np.ndarray, labels: np.ndarray, source: datasets.SplitArrays,
               class_names: Sequence[str]) -> list[dict[str, Any]]:
  """One row per image of (N, H, W) `predictions` against `labels` (rows in `source` order).

  Args:
    predictions, labels: integer label maps.
    source: the split the images come from (ids, per-case identity, spacings).
    class_names: the foreground classes, in label order 1, 2, ...
  """
  num_classes = len(class_names) + 1
  rows = []
  for index in range(len(predictions)):
    spacing = image_spacing(source, index)
    row = _identity(source, index)
    row.update(surface_distance.case_metrics(predictions[index], labels[index], num_classes,
                                             class_names, spacing))
    row['distance_unit'] = PIXELS if spacing is None else MM
    rows.append(row)
  return rows


def volume_rows(predictions: np.ndarray, source: datasets.SplitArrays,
                class_names: Sequence[str]) -> list[dict[str, Any]] | None:
  """3-D per-volume rows of the split's slices, or None for a dataset without volumes.

  Volumes whose slices all have a spacing are measured in mm, the others in pixels (slice
  distance 1); rows are sorted by (subject, phase).
  """
  if source.subjects is None or source.phases is None or source.slice_indices is None:
    return None
  num_classes = len(class_names) + 1
  spacings = source.spacings
  known = (np.all(np.isfinite(spacings), axis=1) if spacings is not None
           else np.zeros(len(source.ids), bool))
  rows = []
  for unit, members in ((MM, np.flatnonzero(known)), (PIXELS, np.flatnonzero(~known))):
    if not len(members):
      continue
    for row in surface_distance.volume_rows(
        predictions[members], source.labels[members], source.subjects[members],
        source.phases[members], source.slice_indices[members], num_classes, class_names,
        spacings[members] if unit == MM else None):
      rows.append(dict(row, distance_unit=unit))
  return sorted(rows, key=lambda row: (row['subject'], row['phase']))


def grid_rows(grid: robustness.GridOutput, source: datasets.SplitArrays, cfg,
              class_names: Sequence[str]) -> list[dict[str, Any]]:
  """One row per (condition of the robustness grid, test image), in the grid's order; the
  truth of a shift condition is the shifted label map, as in the grid."""
  rows = []
  for condition, predictions in zip(grid.table, grid.predictions):
    targets = robustness.condition_targets(source.labels, condition, cfg)
    parameter = condition['parameter'] if condition['condition'] != 'clean' else ''
    prefix = {'condition': condition['condition'], 'level': condition['level'],
              'parameter': parameter}
    rows.extend(dict(prefix, **row)
                for row in image_rows(predictions, targets, source, class_names))
  return rows


def phase_summaries(rows: Sequence[dict[str, Any]]) -> dict[str, dict]:
  """`surface_distance.summarize` of volume rows, per phase (ED, ES), as ACDC reports them."""
  phases = sorted({row['phase'] for row in rows})
  return {phase: surface_distance.summarize(r for r in rows if r['phase'] == phase)
          for phase in phases}
