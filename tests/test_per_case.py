"""Per-case rows (`pejax.evaluation.per_case`): the grid's predictions per image and condition agree with
the grid's own Dice, shifted conditions are scored against shifted truth, and identity and
units come from the split."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from pejax import configuration
from pejax.data import datasets, input_pipeline
from pejax.evaluation import per_case, robustness, surface_distance

from helpers import CHEST_CLASSES, make_split, threshold_predict


@pytest.fixture(scope='module')
def grid_and_source():
  images, labels = make_split()
  ids = np.array([f'case{i:02d}' for i in range(len(images))])
  source = datasets.SplitArrays(images, labels, ids)
  cfg = configuration.default_robustness_config()
  cfg.shifts = (-3, 0, 5)
  # 10 images in batches of 4: the padded rows of the last batch must not come back.
  placed = input_pipeline.place_eval_split(source, 4)
  grid = robustness.robustness_grid(threshold_predict, placed, cfg, class_names=CHEST_CLASSES,
                                    keep_predictions=True)
  return grid, source, cfg


def test_kept_predictions_are_the_grids_in_row_order(grid_and_source):
  grid, source, _ = grid_and_source
  assert grid.predictions.shape == (len(grid.table), 10, 32, 32)
  assert grid.predictions.dtype == np.uint8
  clean = np.asarray(threshold_predict(jnp.asarray(source.images)))
  np.testing.assert_array_equal(grid.predictions[0], clean)


def test_per_image_rows_reproduce_the_grids_dice_for_every_condition(grid_and_source):
  grid, source, cfg = grid_and_source
  rows = per_case.grid_rows(grid, source, cfg, CHEST_CLASSES)
  assert len(rows) == len(grid.table) * 10
  assert [row['id'] for row in rows[:10]] == list(source.ids)
  for condition in grid.table:
    chosen = [row for row in rows
              if row['condition'] == condition['condition'] and row['level'] == condition['level']]
    summary = surface_distance.summarize(chosen)
    expected = (grid.result['clean'] if condition['condition'] == 'clean'
                else grid.result[condition['condition']][str(condition['level'])])
    assert summary['dice_mean'] == pytest.approx(expected['dice'], abs=1e-6), condition
    for name in CHEST_CLASSES:
      if not math.isnan(expected[f'dice_{name}']):
        assert summary[f'dice_{name}_mean'] == pytest.approx(expected[f'dice_{name}'], abs=1e-6)
  assert {row['distance_unit'] for row in rows} == {'px'}


def test_shift_conditions_are_scored_against_the_shifted_truth(grid_and_source):
  grid, source, cfg = grid_and_source
  index = next(i for i, row in enumerate(grid.table) if row['shift'] == 5)
  targets = robustness.condition_targets(source.labels, grid.table[index], cfg)
  np.testing.assert_array_equal(targets[:, :, 5:], source.labels[:, :, :-5])
  assert not targets[:, :, :5].any()  # 'zeros' fill: background comes in
  rows = per_case.grid_rows(grid, source, cfg, CHEST_CLASSES)
  shifted = [row for row in rows if row['condition'] == 'shift_x' and row['level'] == 5]
  row = shifted[3]
  expected = surface_distance.case_metrics(grid.predictions[index][3], targets[3], 4,
                                           CHEST_CLASSES)
  assert row['dice'] == pytest.approx(expected['dice'])
  assert row['hd95_heart'] == pytest.approx(expected['hd95_heart'], nan_ok=True)


def test_identity_columns_and_millimetres_where_the_spacing_is_known():
  labels = np.zeros((2, 8, 8), np.uint8)
  labels[:, 2:6, 2:6] = 1
  predictions = labels.copy()
  predictions[:, 2:6, 6] = 1  # one column too wide: HD95 one column step
  source = datasets.SplitArrays(
      np.zeros((2, 8, 8, 1), np.float32), labels, np.array(['p1_ED_slice00', 'p1_ED_slice01']),
      subjects=np.array(['p1', 'p1']), phases=np.array(['ED', 'ED']),
      slice_indices=np.array([0, 1]),
      spacings=np.array([[10.0, 0.5, 2.0], [10.0, math.nan, math.nan]]))
  rows = per_case.image_rows(predictions, labels, source, ['a', 'b', 'c'])
  assert list(rows[0])[:4] == ['id', 'subject', 'phase', 'slice_index']
  assert rows[0]['distance_unit'] == 'mm' and rows[1]['distance_unit'] == 'px'
  assert rows[0]['hd95_a'] == pytest.approx(2.0)   # a column step is 2 mm
  assert rows[1]['hd95_a'] == pytest.approx(1.0)   # unknown spacing: pixels
  assert rows[0]['status_b'] == 'skipped' and math.isnan(rows[0]['dice_b'])
