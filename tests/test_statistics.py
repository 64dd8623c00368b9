"""Intervals over seeds, paired effects across images and seeds, and the verdicts they give,
down to claims judged on runs with per-image values."""

import math

import numpy as np
import pytest
import scipy.stats

from pejax import aggregation, claims, statistics, workdir as workdir_lib

NUM_SEEDS, NUM_IMAGES = 3, 60


def test_summary_is_the_sample_std_and_a_t_interval():
  values = [0.95, 0.97, 0.96, 0.90]
  stat = statistics.summarize(values + [None, float('nan')])
  low, high = scipy.stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                     scale=scipy.stats.sem(values))
  assert stat.n == 4 and stat.std == pytest.approx(np.std(values, ddof=1))
  assert (stat.low, stat.high) == pytest.approx((low, high))
  single = statistics.summarize([0.5])
  assert single.n == 1 and math.isnan(single.std) and math.isnan(single.low)


def differences(mean, image_sd, seed_sd=0.0, seed=0):
  rng = np.random.default_rng(seed)
  seed_effects = rng.normal(0.0, seed_sd, (NUM_SEEDS, 1)) if seed_sd else 0.0
  return mean + seed_effects + rng.normal(0.0, image_sd, (NUM_SEEDS, NUM_IMAGES))


def test_a_difference_within_the_noise_is_inconclusive():
  effect = statistics.paired_effect(differences(0.002, 0.05))
  assert effect.low < 0 < effect.high
  assert statistics.verdict(effect) == statistics.INCONCLUSIVE


@pytest.mark.parametrize('mean, expected', [(0.05, statistics.HOLDS),
                                            (-0.05, statistics.FAILS)])
def test_a_clear_difference_is_decided(mean, expected):
  effect = statistics.paired_effect(differences(mean, 0.02))
  assert statistics.verdict(effect) == expected
  assert effect.mean == pytest.approx(mean, abs=0.01)
  assert effect.p_value < 0.01 and effect.num_seeds == NUM_SEEDS
  assert effect.num_images == NUM_IMAGES


def test_seed_to_seed_spread_widens_the_interval():
  # Images agree within a seed but seeds disagree: resampling images alone would call this
  # significant; the seed level of the bootstrap keeps it inconclusive.
  d = differences(0.01, 0.002, seed_sd=0.05, seed=3)
  effect = statistics.paired_effect(d)
  image_only = statistics.paired_effect(d.mean(axis=0, keepdims=True))
  assert image_only.low > 0
  assert statistics.verdict(effect) == statistics.INCONCLUSIVE


def test_the_bootstrap_is_reproducible_and_nan_tolerant():
  d = differences(0.03, 0.05)
  d[0, :5] = np.nan
  assert statistics.paired_effect(d) == statistics.paired_effect(d)
  assert math.isfinite(statistics.paired_effect(d).mean)
  per_run = statistics.paired_effect([0.01, 0.02, 0.03])
  assert per_run.num_images == 1 and per_run.low < 0.02 < per_run.high


def test_combining_comparisons():
  H, F, U = statistics.HOLDS, statistics.FAILS, statistics.INCONCLUSIVE
  assert statistics.combine([H, H]) == H
  assert statistics.combine([H, U]) == U
  assert statistics.combine([U, F, H]) == F
  assert statistics.combine([]) == U


# ------------------------------------------------------------------ claims on per-image values


def fake_run(pe, seed, clean, noisy):
  """A finished U-Net run on JSRT with per-image clean and severity-5 noise Dice."""
  config = {'dataset': 'jsrt', 'model': 'unet', 'padding': 'zeros', 'use_pe': pe is not None,
            'pe_scale': pe or 1.0, 'seed': seed, 'num_train_examples': None,
            'position_jitter': None, 'image_size': 64}
  dice = {'dice': float(np.mean(clean)), 'dice_right_lung': 0.9, 'dice_left_lung': 0.9,
          'dice_heart': 0.9}
  results = workdir_lib.Results.from_json(dict(
      config=config, dataset='jsrt', class_names=['right_lung', 'left_lung', 'heart'],
      test=dice, test_averaged_mask={'dice': 0.5, 'dice_right_lung': 0.5,
                                     'dice_left_lung': 0.5, 'dice_heart': 0.5}))
  grid = {'clean': {'dice': float(np.mean(clean))},
          'gaussian_noise': {'5': {'dice': float(np.mean(noisy))}},
          'shot_noise': {'5': {'dice': float(np.mean(noisy))}}}
  per_image = {f'img{i:03d}': {('clean', 0): c, ('gaussian_noise', 5): n, ('shot_noise', 5): n}
               for i, (c, n) in enumerate(zip(clean, noisy))}
  return workdir_lib.RunRecord(f'run_{pe}_{seed}', '', config, results, grid, per_image)


def noise_verdict(drop_difference, image_sd):
  """The noise claim's verdict when PE's noise drop is `drop_difference` below no PE's."""
  rng = np.random.default_rng(1)
  runs = []
  for seed in range(NUM_SEEDS):
    clean = np.clip(0.95 + rng.normal(0, 0.01, NUM_IMAGES), 0, 1)
    drop = 0.3 + rng.normal(0, image_sd, NUM_IMAGES)
    runs.append(fake_run(None, seed, clean, clean - drop))
    runs.append(fake_run(256.0, seed, clean, clean - drop + drop_difference
                         + rng.normal(0, image_sd, NUM_IMAGES)))
  verdicts = claims.evaluate_claims(aggregation.group_runs(runs))
  return next(v for v in verdicts if v.claim == 'noise_robustness' and v.dataset == 'jsrt')


def test_a_claim_within_the_noise_is_inconclusive_and_a_clear_one_holds():
  within = noise_verdict(0.005, 0.1)
  assert within.status == claims.INCONCLUSIVE, within
  clear = noise_verdict(0.2, 0.02)
  assert clear.status == claims.HOLDS, clear
  assert '3 seeds × 60 images' in clear.numbers
  reversed_claim = noise_verdict(-0.2, 0.02)
  assert reversed_claim.status == claims.FAILS, reversed_claim
