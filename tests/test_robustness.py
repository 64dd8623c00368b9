import csv
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from pejax import choices, configuration
from pejax.data import input_pipeline
from pejax.evaluation import corruptions, figures, grid_results, robustness
from pejax.models import encoding
from pejax.runs import run_files
from pejax.models.dice import dice_sums, finalize_dice

from helpers import (CHEST_CLASSES, IMAGE_SIZE, make_split, placed, small_robustness_config,
                     threshold_predict)


def evaluate(predict, images, labels, cfg, batch_size=4, **kwargs):
  return robustness.evaluate_robustness(predict, placed(images, labels, batch_size), cfg,
                                        **kwargs)


@pytest.fixture(scope='module')
def split():
  return make_split()


@pytest.fixture(scope='module')
def grid(split):
  images, labels = split
  return evaluate(threshold_predict, images, labels, small_robustness_config(),
                  class_names=CHEST_CLASSES)


def direct_dice(images, labels):
  predictions = threshold_predict(jnp.asarray(images))
  return finalize_dice(dice_sums(predictions, jnp.asarray(labels), 4), CHEST_CLASSES)


def test_layout_and_default_table(grid):
  assert set(grid) == {'clean', 'gaussian_noise', 'shot_noise', 'gaussian_blur', 'shift_x',
                       'parameters', 'seconds'}
  for name in robustness.CORRUPTIONS:
    assert list(grid[name]) == ['1', '2', '3', '4', '5']
  assert list(grid['shift_x']) == [str(k) for k in range(-8, 9)]   # 32 px: step 1
  assert grid['parameters']['gaussian_blur'] == {
      str(s): v for s, v in zip(range(1, 6), choices.GAUSSIAN_BLUR_SIGMAS)}
  assert set(grid['clean']) == {'dice'} | {f'dice_{n}' for n in CHEST_CLASSES}
  json.dumps(grid)


def test_clean_and_deterministic_conditions_equal_plain_evaluation(split, grid):
  images, labels = split
  expected = direct_dice(images, labels)
  assert grid['clean'] == pytest.approx(expected, rel=1e-6, nan_ok=True)
  assert 0.3 < grid['clean']['dice'] < 0.99    # neither trivial nor broken
  blurred = corruptions.gaussian_blur(images, choices.GAUSSIAN_BLUR_SIGMAS[2])
  assert grid['gaussian_blur']['3'] == pytest.approx(direct_dice(blurred, labels), rel=1e-6)
  for k in (-5, 3):
    shifted = corruptions.shift_images_and_labels(images, labels, k)
    assert grid['shift_x'][str(k)] == pytest.approx(direct_dice(*shifted), rel=1e-6)
  assert grid['shift_x']['0'] == grid['clean']


def test_noise_lowers_dice_with_severity(grid):
  # Mild noise may happen to help a crude predictor; from severity 1 on, Dice must fall.
  for name in robustness.CORRUPTIONS:
    curve = [grid[name][str(s)]['dice'] for s in range(1, 6)]
    assert all(a > b for a, b in zip(curve, curve[1:])), (name, curve)
    assert curve[-1] < grid['clean']['dice'] - 0.1


def test_same_seed_identical_other_seed_differs(split, grid):
  images, labels = split
  again = evaluate(threshold_predict, images, labels, small_robustness_config(),
                   class_names=CHEST_CLASSES)
  other = evaluate(threshold_predict, images, labels,
                   small_robustness_config(seed=1), class_names=CHEST_CLASSES)
  for name in ('clean', 'gaussian_noise', 'shot_noise', 'gaussian_blur', 'shift_x'):
    assert again[name] == grid[name]
  for name in ('gaussian_noise', 'shot_noise'):
    assert other[name] != grid[name]
  for name in ('clean', 'gaussian_blur', 'shift_x'):
    assert other[name] == grid[name]


def test_grid_is_one_program_compiled_once(split):
  traces = []

  def counting_predict(images):
    traces.append(images.shape)    # runs only while tracing
    return threshold_predict(images)

  images, labels = split
  first = evaluate(counting_predict, images, labels, small_robustness_config())
  other_images, other_labels = make_split(seed=1)
  second = evaluate(counting_predict, other_images, other_labels,
                    small_robustness_config(seed=7))
  assert len(traces) == 1 and traces[0] == (4, IMAGE_SIZE, IMAGE_SIZE, 1)
  assert first['clean'] != second['clean']


def test_model_state_is_a_traced_argument(split):
  traces = []

  def predict_with_state(gain, images):
    traces.append(1)
    return threshold_predict(images * gain)

  images, labels = split
  cfg = small_robustness_config(severities=(), shifts=(0, 4))
  results = [evaluate(predict_with_state, images, labels, cfg,
                                            model_state=jnp.float32(gain))
             for gain in (1.05, 0.8)]
  assert len(traces) == 1
  assert results[0]['clean']['dice'] == pytest.approx(1.0)
  assert results[1]['clean']['dice'] < 0.9
  assert list(results[0]['shift_x']) == ['0', '4']
  assert results[0]['gaussian_noise'] == {} and results[0]['parameters']['shot_noise'] == {}


def test_batch_size_edge_fill_and_y_axis(split, grid):
  images, labels = split
  cfg = small_robustness_config(shifts=(-3, 6), shift_axis='y', shift_fill='edge')
  result = evaluate(threshold_predict, images, labels, cfg, batch_size=3,
                    class_names=CHEST_CLASSES)
  # Noise is keyed per image, not per batch: another batch size gives the same numbers.
  for name in ('gaussian_noise', 'shot_noise'):
    for severity, dice in result[name].items():
      assert dice == pytest.approx(grid[name][severity], rel=1e-5)
  assert 'shift_x' not in result and list(result['shift_y']) == ['-3', '6']
  shifted = corruptions.shift_images_and_labels(images, labels, 0, 6, fill='edge')
  assert result['shift_y']['6'] == pytest.approx(direct_dice(*shifted), rel=1e-6)


@pytest.mark.parametrize('name, value, message', [
    ('severities', (0, 1), 'severities'),
    ('severities', (1, 6), '1..5'),
    ('gaussian_noise', (0.1, 0.2, 0.3), 'gaussian_noise'),
    ('gaussian_blur', (0.5, -0.75, 1.0, 1.25, 1.5), 'gaussian_blur'),
    ('shot_noise', (250.0, 100.0, 0.0, 30.0, 15.0), 'c > 0'),
    ('shifts', (1.5,), 'shifts'),
    ('shift_fill', 'reflect', 'zeros'),
    ('shift_axis', 'z', 'shift_axis'),
    ('seed', -1, 'seed'),
])
def test_config_validation(name, value, message):
  cfg = configuration.default_robustness_config()
  configuration.validate_robustness_config(cfg)
  cfg[name] = value
  with pytest.raises(ValueError, match=message) as error:
    configuration.validate_robustness_config(cfg)
  assert name in str(error.value) and repr(value) in str(error.value)


def test_paper_literal_blur_list_is_accepted():
  cfg = configuration.default_robustness_config()
  cfg.gaussian_blur = (0.04, 0.08, 0.12, 0.15, 0.18)
  cfg.shifts = (-4, 0, 4)
  configuration.validate_robustness_config(cfg)


def test_write_robustness_json_and_csv(grid, tmp_path):
  result = dict(grid)
  result['clean'] = dict(grid['clean'], dice_heart=float('nan'))
  json_path, csv_path = run_files.write_robustness(str(tmp_path), result,
                                                   grid_results.result_rows(result))
  assert sorted(os.listdir(tmp_path)) == ['robustness.csv', 'robustness.json']
  with open(json_path) as f:
    loaded = json.load(f)
  assert loaded['clean']['dice_heart'] is None
  assert loaded['shift_x']['-8'] == pytest.approx(grid['shift_x']['-8'])
  with open(csv_path, newline='') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 1 + 3 * 5 + 17
  assert rows[0]['condition'] == 'clean'
  noise_3 = next(r for r in rows if r['condition'] == 'gaussian_noise' and r['level'] == '3')
  assert float(noise_3['parameter']) == pytest.approx(0.12)
  assert float(noise_3['dice']) == pytest.approx(grid['gaussian_noise']['3']['dice'])
  assert set(rows[0]) >= {'level', 'dice_right_lung', 'dice_left_lung', 'dice_heart'}


def test_aggregate_and_plots(grid, tmp_path):
  shifted = json.loads(json.dumps(grid))
  for name in robustness.CORRUPTIONS:
    for dice in shifted[name].values():
      dice['dice'] -= 0.1
  mean, std = grid_results.aggregate_robustness([grid, shifted])
  assert mean['gaussian_noise']['2']['dice'] == pytest.approx(
      grid['gaussian_noise']['2']['dice'] - 0.05)
  assert std['gaussian_noise']['2']['dice'] == pytest.approx(0.05)
  assert std['clean']['dice'] == 0.0
  curves = [{'label': 'w/o PE', 'result': grid},
            {'label': 'two seeds', 'result': mean, 'std': std, 'style': {'linestyle': '--'}}]
  references = [('averaged mask', 0.5)]
  pixels = figures.plot_corruptions(curves, str(tmp_path / 'corruptions.png'),
                                    references=references, title='phantom')
  assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[-1] == 3
  assert pixels.shape[1] > pixels.shape[0]
  pixels = figures.plot_shifts(curves, str(tmp_path / 'shifts.png'), references=references)
  assert pixels.dtype == np.uint8 and pixels.shape[-1] == 3
  assert sorted(os.listdir(tmp_path)) == ['corruptions.png', 'shifts.png']
  with open(tmp_path / 'shifts.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('num_examples, max_batch, multiple, expected', [
    (68, 32, 1, 23), (64, 32, 1, 32), (23, 32, 1, 23), (33, 32, 1, 17), (68, 32, 4, 24),
    (1, 32, 4, 4), (100, 7, 1, 7)])
def test_balanced_batch_size(num_examples, max_batch, multiple, expected):
  size = input_pipeline.balanced_batch_size(num_examples, max_batch, multiple)
  assert size == expected
  assert size % multiple == 0 and size <= max(max_batch, multiple)
  assert -(-num_examples // size) == -(-num_examples // max_batch)  # no extra batch


# ---------------------------------------------------------------- encoding conditions (with PE)


def coordinate_predict(gain, images, change=None):
  """A model that sees only the encoding: class 1 where the linear x channel is in
  [0.3, 0.7]·λ (λ = `gain`), so its prediction moves with the coordinates alone."""
  coords = encoding.add_coordinate_channels(images, gain, change=change)
  x = coords[..., 1] / gain
  return jnp.where((x >= 0.3) & (x <= 0.7), 1, 0)


def band_labels(images):
  return np.asarray(coordinate_predict(1.0, jnp.asarray(images)), np.uint8)


def test_encoding_conditions_pair_with_real_shifts(split):
  images, _ = split
  labels = band_labels(images)
  cfg = small_robustness_config(severities=(), shifts=(-6, -2, 0, 3, 5))
  result = evaluate(coordinate_predict, images, labels, cfg, model_state=jnp.float32(1.0),
                    encoding_conditions=True, class_names=['band'])
  assert grid_results.condition_names(result) == [
      'clean', 'gaussian_noise', 'shot_noise', 'gaussian_blur', 'shift_x', 'encoding_shift_x',
      'encoding_removed']
  assert result['clean']['dice'] == 1.0
  assert result['parameters']['encoding_shift_x'] == [-6, -2, 0, 3, 5]
  # A model that reads only the coordinates loses under a shift of the encoding alone exactly
  # what it loses when the image moves by the same k (the band stays inside the image).
  for k in ('-6', '-2', '3', '5'):
    assert result['encoding_shift_x'][k]['dice'] < 0.9
    assert result['encoding_shift_x'][k]['dice'] == pytest.approx(
        result['shift_x'][k]['dice'], abs=1e-6), k
  assert result['encoding_shift_x']['0'] == result['clean']
  # The direction: the content meets the coordinates it would after a shift of k, so the band
  # this model draws moves by −k over the unmoved image.
  output = robustness.robustness_grid(coordinate_predict, placed(images, labels), cfg,
                                      num_classes=2, model_state=jnp.float32(1.0),
                                      encoding_conditions=True, keep_predictions=True)
  conditions = [(row['condition'], row['level']) for row in output.table]
  clean = output.predictions[conditions.index(('clean', 0))]
  for k in (-6, 3):
    moved = output.predictions[conditions.index(('encoding_shift_x', k))]
    np.testing.assert_array_equal(moved, np.roll(clean, -k, axis=2))
  # Removed: every pixel gets the mean x (λ/2, inside the band): class 1 everywhere.
  band_fraction = labels.mean()
  assert result['encoding_removed']['0']['dice'] == pytest.approx(
      2 * band_fraction / (1 + band_fraction), rel=1e-5)
  rows = grid_results.result_rows(result)
  assert [r['condition'] for r in rows][-6:] == ['encoding_shift_x'] * 5 + ['encoding_removed']
  assert grid_results.encoding_shift_dice(result) == pytest.approx(
      grid_results.shift_dice(result), abs=1e-6)


def test_encoding_conditions_only_for_models_with_pe_and_when_asked(split):
  images, _ = split
  labels = band_labels(images)
  cfg = small_robustness_config(severities=(), shifts=(0, 2))
  without = evaluate(coordinate_predict, images, labels, cfg, model_state=jnp.float32(1.0))
  assert 'encoding_removed' not in without and 'encoding_shift_x' not in without
  cfg.encoding_conditions = False
  off = evaluate(coordinate_predict, images, labels, cfg, model_state=jnp.float32(1.0),
                 encoding_conditions=True)
  assert 'encoding_removed' not in off
  assert robustness.condition_table(cfg, 32, 32, True) == robustness.condition_table(cfg, 32, 32)
