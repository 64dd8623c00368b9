"""Example predictions: the inputs are the grid's own (same noise, same shift), the file round
trips, and the report shows them."""

import numpy as np
import pytest

from pejax import drawing
from pejax.evaluation import example_predictions, grid_results, robustness
from pejax.runs import run_files

from helpers import make_split, placed, small_robustness_config, threshold_predict


@pytest.fixture(scope='module')
def grid_and_split():
  images, labels = make_split()
  split = placed(images, labels)
  cfg = small_robustness_config()
  grid = robustness.robustness_grid(threshold_predict, split, cfg, class_names=['a', 'b', 'c'],
                                    keep_predictions=True)
  return grid, split, cfg


def test_rows_are_clean_strongest_noise_largest_shift(grid_and_split):
  grid, _, _ = grid_and_split
  rows = example_predictions.example_rows(grid.table)
  assert [(row['condition'], row['level']) for row in rows] == [
      ('clean', 0), ('gaussian_noise', 5), ('shift_x', 8)]


@pytest.mark.parametrize('position', [0, 3, 9])
def test_condition_inputs_are_the_grids_inputs(grid_and_split, position):
  """The grid's prediction of every condition equals the prediction of the inputs rebuilt for
  one image alone: the same noise (keyed by the image's row, not its batch) and shift."""
  grid, split, cfg = grid_and_split
  for condition, row in enumerate(grid.table):
    inputs, targets = robustness.condition_inputs(
        split.host_images01[position:position + 1], split.host_labels[position:position + 1],
        [position], row, cfg)
    np.testing.assert_array_equal(np.asarray(threshold_predict(inputs))[0],
                                  grid.predictions[condition, position], err_msg=str(row))
    truth = robustness.condition_targets(split.host_labels, row, cfg)[position]
    np.testing.assert_array_equal(np.asarray(targets)[0], truth)


def test_noise_of_another_image_is_not_the_grids(grid_and_split):
  """The check above can fail: noise drawn for another row gives other predictions."""
  grid, split, cfg = grid_and_split
  row = example_predictions.example_rows(grid.table)[1]
  inputs, _ = robustness.condition_inputs(split.host_images01[:1], split.host_labels[:1], [1],
                                          row, cfg)
  assert (np.asarray(threshold_predict(inputs))[0] != grid.predictions[
      grid.table.index(row), 0]).mean() > 0.05


def test_collect_write_read_and_figure(grid_and_split, tmp_path):
  grid, split, cfg = grid_and_split
  found = example_predictions.collect(grid, split, cfg, num_classes=4)
  position = example_predictions.example_image(split.host_labels, 4)
  assert len(np.unique(split.host_labels[position])) == 4
  assert str(found['image_id']) == split.ids[position]
  assert found['inputs'].shape == (3, 32, 32, 1) and found['inputs'].dtype == np.float16
  assert found['predictions'].shape == found['targets'].shape == (3, 32, 32)
  # The noisy input is not the clean one, the shifted truth is the truth moved by 8 px.
  assert np.abs(found['inputs'][1] - found['inputs'][0]).mean() > 0.05
  np.testing.assert_array_equal(found['targets'][2][:, 8:], split.host_labels[position][:, :-8])
  run_files.write_examples(str(tmp_path), found)
  back = run_files.read_examples(str(tmp_path))
  assert set(back) == set(found)
  for name, value in found.items():
    np.testing.assert_array_equal(back[name], value)
  assert run_files.read_examples(str(tmp_path / 'missing')) is None
  rows = [grid_results.condition_title(c, int(level))
          for c, level in zip(back['conditions'], back['levels'])]
  assert rows == ['clean', 'Gaussian noise\nseverity 5', 'shift x\n+8 px']
  pixels = drawing.plot_predictions(
      str(tmp_path / 'example_predictions.png'), 'title', rows, back['inputs'], back['targets'],
      [('no PE', back['predictions']), ('PE λ=1', back['predictions'])], ['a', 'b', 'c'])
  assert (tmp_path / 'example_predictions.png').exists() and pixels.ndim == 3
  # The legend shows each class colour.
  for color in drawing.CLASS_COLORS[1:4]:
    assert (np.abs(pixels.astype(float) - color * 255).max(axis=-1) < 3).any(), color
