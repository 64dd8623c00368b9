"""pejax.evaluation.surface_distance against hand-computed answers and two independent references.

References: medpy.metric.binary (hd95, asd, assd: same surface and HD95 definition, its own
code) and, below, a brute-force one written here with a different algorithm (surface by
explicit neighbour tests, distances between all pairs of surface points).
"""

import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from data_builders import conventions
from pejax.evaluation import surface_distance as sd


def brute_surface(mask):
  """Foreground pixels with a background (or outside) face neighbour, by explicit shifts."""
  padded = np.pad(mask, 1, constant_values=False)
  inner = tuple(slice(1, -1) for _ in range(mask.ndim))
  boundary = np.zeros_like(mask)
  for axis in range(mask.ndim):
    for step in (-1, 1):
      boundary |= ~np.roll(padded, step, axis=axis)[inner]
  return mask & boundary


def brute_directed(source, target, spacing):
  a = np.argwhere(brute_surface(source)) * np.asarray(spacing)
  b = np.argwhere(brute_surface(target)) * np.asarray(spacing)
  return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min(axis=1)


def brute_pooled(prediction, truth, spacing):
  return np.concatenate([brute_directed(prediction, truth, spacing),
                         brute_directed(truth, prediction, spacing)])


def random_mask(rng, shape, kind):
  if kind == 'blob':
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=1.5)
    mask = field > np.quantile(field, rng.uniform(0.5, 0.9))
  else:  # scattered pixels: many tiny components, surfaces everywhere
    mask = rng.random(shape) < rng.uniform(0.05, 0.4)
  if not mask.any():
    mask.flat[rng.integers(mask.size)] = True
  return mask


def random_cases(seed, count, settings):
  """(prediction, truth, spacing) triples; settings are (shape, spacing) pairs, used in turn."""
  rng = np.random.default_rng(seed)
  for i in range(count):
    shape, spacing = settings[i % len(settings)]
    if spacing == 'random':
      spacing = tuple(rng.uniform(0.3, 5.0, len(shape)))
    yield (random_mask(rng, shape, ('blob', 'noise')[i % 2]),
           random_mask(rng, shape, ('blob', 'noise')[(i // 2) % 2]), spacing)


# --- surface convention ---------------------------------------------------------------------

def test_surface_is_face_connected_boundary_and_image_border_counts_as_background():
  mask = np.zeros((5, 5), bool)
  mask[1:4, 1:4] = True
  expected = mask.copy()
  expected[2, 2] = False  # the only pixel whose 4 neighbours are all foreground
  np.testing.assert_array_equal(sd.surface(mask), expected)
  full = np.ones((4, 5), bool)
  ring = full.copy()
  ring[1:-1, 1:-1] = False
  np.testing.assert_array_equal(sd.surface(full), ring)
  single = np.zeros((3, 3, 3), bool)
  single[1, 1, 1] = True
  np.testing.assert_array_equal(sd.surface(single), single)
  # A diagonal neighbour is not a face neighbour: the plus sign's centre is interior.
  plus = ndimage.generate_binary_structure(2, 1)
  assert not sd.surface(plus)[1, 1]


def test_surface_matches_brute_force_on_random_masks():
  for prediction, truth, _ in random_cases(0, 8, [((9, 11), None), ((4, 6, 7), None)]):
    np.testing.assert_array_equal(sd.surface(prediction), brute_surface(prediction))
    np.testing.assert_array_equal(sd.surface(truth), brute_surface(truth))


# --- hand-computed distances ----------------------------------------------------------------

def test_single_pixels_isotropic_and_anisotropic():
  a = np.zeros((6, 7), bool)
  b = np.zeros((6, 7), bool)
  a[0, 0] = True
  b[3, 4] = True
  assert sd.hd95(a, b) == pytest.approx(5.0)
  assert sd.mean_surface_distance(a, b) == pytest.approx(5.0)
  assert sd.hd95(a, b, spacing=(2.0, 0.5)) == pytest.approx(math.hypot(6.0, 2.0))
  assert sd.hd95(a, b, spacing=0.5) == pytest.approx(2.5)
  assert sd.hd95(a, a) == 0.0


def test_parallel_segments_k_apart_scale_with_the_spacing_of_their_axis():
  for k in (1, 2, 5):
    rows_a = np.zeros((10, 12), bool)
    rows_b = np.zeros((10, 12), bool)
    rows_a[2, 3:9] = True
    rows_b[2 + k, 3:9] = True
    # Every surface pixel's nearest partner is straight across, k rows away.
    assert sd.hd95(rows_a, rows_b) == pytest.approx(k)
    assert sd.hd95(rows_a, rows_b, spacing=(0.7, 3.0)) == pytest.approx(0.7 * k)
    assert sd.mean_surface_distance(rows_a, rows_b, spacing=(0.7, 3.0)) == pytest.approx(0.7 * k)
    assert sd.mean_surface_distance(rows_a.T, rows_b.T, spacing=(0.7, 3.0)) == pytest.approx(3.0 * k)


def test_two_squares_five_columns_apart():
  a = np.zeros((5, 10), bool)
  b = np.zeros((5, 10), bool)
  a[1:4, 0:3] = True
  b[1:4, 5:8] = True
  # a's surface: its 3 left pixels are 5 from b's left column, the 2 middle ones 4, the 3
  # right ones 3; b mirrors it. Pooled: six 3s, four 4s, six 5s.
  np.testing.assert_allclose(np.sort(sd.directed_surface_distances(a, b)), [3, 3, 3, 4, 4, 5, 5, 5])
  assert sd.mean_surface_distance(a, b) == pytest.approx(64 / 16)
  assert sd.hd95(a, b) == pytest.approx(5.0)
  # Row spacing does not enter (partners lie on the same row); column spacing scales all.
  assert sd.mean_surface_distance(a, b, spacing=(9.0, 0.5)) == pytest.approx(2.0)
  assert sd.hd95(a, b, spacing=(9.0, 0.5)) == pytest.approx(2.5)


def test_anisotropic_spacing_changes_the_nearest_partner():
  prediction = np.zeros((5, 6), bool)
  truth = np.zeros((5, 6), bool)
  prediction[0, 0] = True
  truth[0, 4] = truth[3, 0] = True
  # Isotropic: nearest truth pixel is (3, 0) at 3; back: 4 and 3. Pooled [3, 3, 4].
  assert sd.mean_surface_distance(prediction, truth) == pytest.approx(10 / 3)
  assert sd.hd95(prediction, truth) == pytest.approx(3 + 0.9 * 1)
  # Columns 3 mm: (0, 4) is 12 mm away, (3, 0) 3 mm. Pooled [3, 3, 12]; the 95th percentile
  # interpolates 90 % of the way from the 2nd to the 3rd value (linear, NumPy's default).
  assert sd.mean_surface_distance(prediction, truth, spacing=(1.0, 3.0)) == pytest.approx(6.0)
  assert sd.hd95(prediction, truth, spacing=(1.0, 3.0)) == pytest.approx(3 + 0.9 * 9)


def test_three_dimensional_known_answer_with_slice_distance():
  a = np.zeros((4, 5, 5), bool)
  b = np.zeros((4, 5, 5), bool)
  a[0, 0, 0] = True
  b[2, 1, 0] = True
  spacing = (10.0, 1.5, 1.25)
  assert sd.hd95(a, b, spacing) == pytest.approx(math.hypot(20.0, 1.5))
  assert sd.mean_surface_distance(a, b, spacing) == pytest.approx(math.hypot(20.0, 1.5))


def test_bad_spacing_and_shapes_are_rejected():
  a = np.ones((3, 3), bool)
  with pytest.raises(ValueError):
    sd.hd95(a, a, spacing=(1.0, 1.0, 1.0))
  with pytest.raises(ValueError):
    sd.hd95(a, a, spacing=(1.0, 0.0))
  with pytest.raises(ValueError):
    sd.directed_surface_distances(a, np.ones((3, 4), bool))


# --- independent references -----------------------------------------------------------------

def test_matches_brute_force_pairwise_reference():
  settings = [((12, 10), None), ((17, 9), (0.7, 2.3)), ((11, 13), 'random'),
              ((5, 8, 7), None), ((5, 8, 7), (3.0, 0.8, 1.1)), ((4, 9, 6), 'random')]
  for prediction, truth, spacing in random_cases(1, 36, settings):
    steps = np.ones(prediction.ndim) if spacing is None else spacing
    pooled = brute_pooled(prediction, truth, steps)
    assert abs(sd.hd95(prediction, truth, spacing) - np.percentile(pooled, 95)) < 1e-6
    assert abs(sd.mean_surface_distance(prediction, truth, spacing) - pooled.mean()) < 1e-6


def test_matches_medpy():
  medpy = pytest.importorskip('medpy.metric.binary')
  settings = [((64, 48), None), ((40, 40), conventions.jsrt_pixel_spacing(256)), ((50, 30), 'random'),
              ((6, 32, 28), None), ((6, 32, 28), (10.0, 1.5625, 1.25)), ((5, 20, 24), 'random')]
  for prediction, truth, spacing in random_cases(2, 36, settings):
    assert abs(sd.hd95(prediction, truth, spacing)
               - medpy.hd95(prediction, truth, voxelspacing=spacing)) < 1e-6
    assert abs(sd.mean_surface_distance(prediction, truth, spacing)
               - medpy.assd(prediction, truth, voxelspacing=spacing)) < 1e-6
    assert abs(sd.directed_surface_distances(prediction, truth, spacing).mean()
               - medpy.asd(prediction, truth, voxelspacing=spacing)) < 1e-6


# --- empty structures and per-case rows -----------------------------------------------------

def test_empty_structure_rule():
  labels = np.zeros((6, 6), np.uint8)
  prediction = np.zeros((6, 6), np.uint8)
  labels[1:3, 1:3] = 1          # class 1: in both
  prediction[1:3, 1:4] = 1
  labels[4, 4] = 2              # class 2: missed
  prediction[0, 5] = 3          # class 3: predicted only
  # class 4: absent from both
  row = sd.case_metrics(prediction, labels, 5, ['a', 'b', 'c', 'd'])
  assert [row[f'status_{c}'] for c in 'abcd'] == ['ok', 'missed', 'false_positive', 'skipped']
  assert row['dice_a'] == pytest.approx(2 * 4 / 10)
  assert row['dice_b'] == 0.0 and row['dice_c'] == 0.0 and math.isnan(row['dice_d'])
  assert math.isfinite(row['hd95_a']) and math.isfinite(row['msd_a'])
  assert all(math.isnan(row[f'{m}_{c}']) for m in ('hd95', 'msd') for c in 'bcd')
  # The skipped class leaves the mean; the missed and false-positive ones count as 0.
  assert row['dice'] == pytest.approx((0.8 + 0 + 0) / 3)
  assert math.isnan(sd.hd95(np.zeros((3, 3), bool), np.ones((3, 3), bool)))
  assert math.isnan(sd.mean_surface_distance(np.zeros((3, 3), bool), np.zeros((3, 3), bool)))
  assert math.isnan(sd.case_metrics(np.zeros((3, 3)), np.zeros((3, 3)), 2)['dice'])


def test_per_image_dice_equals_pejax_metrics():
  jnp = pytest.importorskip('jax.numpy')
  from pejax.models import dice
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 4, (12, 16, 16)).astype(np.uint8)
  predictions = rng.integers(0, 4, (12, 16, 16)).astype(np.uint8)
  # Make some classes absent from one or both, so every empty-structure case occurs.
  labels[0][labels[0] == 3] = 0
  predictions[0][predictions[0] == 3] = 0
  labels[1][labels[1] == 2] = 1
  predictions[2][predictions[2] == 1] = 0
  labels[3] = 0
  predictions[3] = 0
  names = ['a', 'b', 'c']
  rows = [sd.case_metrics(p, t, 4, names) for p, t in zip(predictions, labels)]
  reference, defined = dice.per_image_dice(jnp.asarray(predictions), jnp.asarray(labels), 4)
  reference, defined = np.asarray(reference), np.asarray(defined)
  for row, image_dice, image_defined in zip(rows, reference, defined):
    for c, name in enumerate(names):
      assert (row[f'status_{name}'] != 'skipped') == image_defined[c]
      if image_defined[c]:
        assert row[f'dice_{name}'] == pytest.approx(image_dice[c], abs=1e-6)
  for i in range(len(rows)):
    one = dice.finalize_dice(dice.dice_sums(jnp.asarray(predictions[i:i + 1]),
                                            jnp.asarray(labels[i:i + 1]), 4))
    assert np.isclose(rows[i]['dice'], one['dice'], atol=1e-6, equal_nan=True)
  # The summary's means are the reported Dice and per-class Dice of pejax.models.dice.
  summary = sd.summarize(rows)
  total = dice.finalize_dice(
      dice.dice_sums(jnp.asarray(predictions), jnp.asarray(labels), 4), names)
  assert summary['dice_mean'] == pytest.approx(total['dice'], abs=1e-6)
  for name in names:
    assert summary[f'dice_{name}_mean'] == pytest.approx(total[f'dice_{name}'], abs=1e-6)


def test_case_metrics_passes_spacing_and_default_names():
  labels = np.zeros((8, 8), np.uint8)
  prediction = np.zeros((8, 8), np.uint8)
  labels[2, 1:6] = 1
  prediction[4, 1:6] = 1
  row = sd.case_metrics(prediction, labels, 2, spacing=conventions.jsrt_pixel_spacing(256))
  assert row['hd95_class1'] == pytest.approx(2 * 1.4)
  assert row['msd_class1'] == pytest.approx(2 * 1.4)
  with pytest.raises(ValueError):
    sd.case_metrics(prediction, labels, 3, ['only_one'])


def test_summarize_counts_every_status():
  rows = [
      {'dice': 0.5, 'dice_a': 0.5, 'hd95_a': 2.0, 'msd_a': 1.0, 'status_a': 'ok'},
      {'dice': 0.0, 'dice_a': 0.0, 'hd95_a': math.nan, 'msd_a': math.nan, 'status_a': 'missed'},
      {'dice': 0.9, 'dice_a': 0.9, 'hd95_a': 4.0, 'msd_a': 3.0, 'status_a': 'ok'},
      {'dice': math.nan, 'dice_a': math.nan, 'hd95_a': math.nan, 'msd_a': math.nan,
       'status_a': 'skipped'},
      {'dice': 0.0, 'dice_a': 0.0, 'hd95_a': math.nan, 'msd_a': math.nan,
       'status_a': 'false_positive'},
      {'dice': 0.7, 'dice_a': 0.7, 'hd95_a': 9.0, 'msd_a': 5.0, 'status_a': 'ok'},
  ]
  summary = sd.summarize(rows)
  assert summary['n_cases'] == 6 and summary['dice_n'] == 5
  assert (summary['n_ok_a'], summary['n_skipped_a'], summary['n_missed_a'],
          summary['n_false_positive_a']) == (3, 1, 1, 1)
  assert summary['dice_a_mean'] == pytest.approx((0.5 + 0 + 0.9 + 0 + 0.7) / 5)
  assert summary['dice_a_median'] == pytest.approx(0.5)
  assert summary['hd95_a_mean'] == pytest.approx(5.0)
  assert summary['hd95_a_median'] == pytest.approx(4.0)
  assert summary['msd_a_mean'] == pytest.approx(3.0)
  empty = sd.summarize([rows[3]])
  assert math.isnan(empty['dice_a_mean']) and math.isnan(empty['hd95_a_median'])
  nothing = sd.summarize([])
  assert nothing['n_cases'] == 0 and nothing['dice_n'] == 0 and math.isnan(nothing['dice_mean'])


# --- 3-D volumes ----------------------------------------------------------------------------

def test_volume_dice_known_answer_is_pooled_not_a_mean_of_slices():
  truth = np.zeros((3, 4, 4), np.uint8)
  prediction = np.zeros((3, 4, 4), np.uint8)
  truth[0, :2, :2] = 1      # slice 0: 4 true voxels, all found
  prediction[0, :2, :2] = 1
  truth[1, :, :] = 1        # slice 1: 16 true voxels, 8 found
  prediction[1, :2, :] = 1
  truth[2, 0, 0] = 1        # slice 2: 1 true voxel, missed
  row = sd.volume_metrics(prediction, truth, 2, ['lv'], spacing=(10.0, 1.5, 1.5))
  # Voxels: |P| = 4 + 8 = 12, |G| = 4 + 16 + 1 = 21, |P ∩ G| = 12.
  assert row['dice_lv'] == pytest.approx(2 * 12 / 33)
  slice_mean = np.mean([1.0, 2 * 8 / 24, 0.0])
  assert abs(row['dice_lv'] - slice_mean) > 0.1
  assert row['status_lv'] == 'ok' and math.isfinite(row['hd95_lv'])
  with pytest.raises(ValueError):
    sd.volume_metrics(prediction[0], truth[0], 2)


def test_volume_rows_group_by_subject_and_phase_against_numpy():
  rng = np.random.default_rng(4)
  volumes = {}
  for subject in ('patient007', 'patient042'):
    for phase, depth in (('ED', 5), ('ES', 4)):
      truth = rng.integers(0, 4, (depth, 10, 10)).astype(np.uint8)
      prediction = np.where(rng.random(truth.shape) < 0.7, truth,
                            rng.integers(0, 4, truth.shape)).astype(np.uint8)
      volumes[subject, phase] = prediction, truth
  prediction, truth = volumes['patient042', 'ES']
  truth[truth == 3] = 0                          # LV predicted, not in the truth
  prediction, truth = volumes['patient007', 'ES']
  truth[truth == 1] = prediction[prediction == 1] = 0   # RV in neither: skipped
  spacing_of = {'patient007': (10.0, 1.6, 1.4), 'patient042': (6.5, 1.3, 1.3)}
  ids, predictions, labels, spacings = [], [], [], []
  for (subject, phase), (prediction, truth) in volumes.items():
    for z in range(prediction.shape[0]):
      ids.append(f'{subject}_{phase}_slice{z:02d}')
      predictions.append(prediction[z])
      labels.append(truth[z])
      spacings.append(spacing_of[subject])
  order = rng.permutation(len(ids))  # slices arrive in any order
  keys = [(ids[i][:10], ids[i][11:13], int(ids[i][-2:])) for i in order]  # patient007_ES_slice03
  subjects, phases, indices = (list(column) for column in zip(*keys))
  names = ['rv', 'myo', 'lv']
  rows = sd.volume_rows(np.stack(predictions)[order], np.stack(labels)[order], subjects, phases,
                        indices, 4, names, np.asarray(spacings)[order])
  assert [(r['subject'], r['phase'], r['num_slices']) for r in rows] == [
      ('patient007', 'ED', 5), ('patient007', 'ES', 4), ('patient042', 'ED', 5),
      ('patient042', 'ES', 4)]
  for row in rows:
    prediction, truth = volumes[row['subject'], row['phase']]
    for c, name in enumerate(names, start=1):
      p, g = prediction == c, truth == c
      if not g.any() and not p.any():
        assert row[f'status_{name}'] == 'skipped'
        continue
      assert row[f'dice_{name}'] == pytest.approx(2 * np.sum(p & g) / (p.sum() + g.sum()))
      if p.any() and g.any():
        assert row[f'hd95_{name}'] == pytest.approx(
            sd.hd95(p, g, spacing_of[row['subject']]))
  assert rows[3]['status_lv'] == 'false_positive' and rows[3]['dice_lv'] == 0.0
  assert rows[1]['status_rv'] == 'skipped'
  assert [row['status_myo'] for row in rows] == ['ok'] * 4


def test_volume_rows_reject_gaps_and_mixed_spacings():
  labels = np.zeros((3, 4, 4), np.uint8)
  with pytest.raises(ValueError, match='consecutive'):
    sd.volume_rows(labels, labels, ['p'] * 3, ['ED'] * 3, [0, 1, 3], 4)
  with pytest.raises(ValueError, match='spacings'):
    sd.volume_rows(labels, labels, ['p'] * 3, ['ED'] * 3, [0, 1, 2], 4,
                   spacings=[(10, 1, 1), (10, 1, 1), (5, 1, 1)])


# --- spacing rules and import weight ----------------------------------------------------------

def test_spacing_rules():
  assert conventions.jsrt_pixel_spacing(2048) == (0.175, 0.175)
  assert conventions.jsrt_pixel_spacing(256) == pytest.approx((1.4, 1.4))
  # NIfTI (x, y, z) = (216, 256, 10) voxels of 1.5625 x 1.5625 x 10 mm, slices resized to 128:
  # rows run along y, columns along x.
  assert conventions.acdc_spacing((1.5625, 1.5625, 10.0), (216, 256, 10), 128) == pytest.approx(
      (10.0, 1.5625 * 256 / 128, 1.5625 * 216 / 128))


def test_module_imports_no_jax_or_tensorflow():
  code = ('import pejax.evaluation.surface_distance, sys; print(sorted(m for m in sys.modules if '
          'm.split(".")[0] in {"jax", "tensorflow", "tensorflow_datasets", "clu"}))')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          check=True, cwd=pathlib.Path(__file__).resolve().parents[1])
  assert result.stdout.strip() == '[]'
