"""Every claim on synthetic runs that give each setting involved a different value, so that a
comparison of the wrong pair, a wrong sign or a wrong setting changes the verdict or its numbers.

Per-image values (3 seeds × 24 images, as the per-case files give them) are the setting's value
plus an image effect shared by every setting and a little noise, so the intervals are real.
"""

import numpy as np
import pytest

from pejax.reporting import aggregation, claims, paired_statistics
from pejax.runs.run_files import Results, RunRecord

from helpers import results_json

CLASSES = ['right_lung', 'left_lung', 'heart']
SEEDS, IMAGES = 3, 24
AVERAGED_MASK = 0.81
SHIFTS = (-8, -4, 0, 4, 8)
IMAGE_EFFECT = np.random.default_rng(0).normal(0.0, 0.02, IMAGES)
IMAGE_EFFECT -= IMAGE_EFFECT.mean()  # so that a setting's mean is its value, to the digit


def run_record(*, model='unet', padding='zeros', pe=None, seed=0, num_train_examples=None,
               clean, noise=None, shift=None, converged=True):
  """A finished run whose per-image clean Dice is about `clean`, noise Dice (Gaussian and shot
  noise at severity 5) about `noise` and Dice at every nonzero shift about `shift`."""
  config = {'dataset': 'jsrt', 'model': model, 'padding': padding, 'use_pe': pe is not None,
            'pe_scale': 1.0 if pe is None else pe, 'num_train_examples': num_train_examples,
            'seed': seed, 'image_size': 64, 'width': 16, 'num_epochs': 100}
  noise_of_run = np.random.default_rng([seed, int(1000 * clean)]).normal(0.0, 0.005, IMAGES)
  noise_of_run -= noise_of_run.mean()
  per_image = {}
  for i in range(IMAGES):
    value = lambda mean, i=i: float(mean + IMAGE_EFFECT[i] + noise_of_run[i])
    row = {('clean', 0): value(clean)}
    if noise is not None:
      row[('gaussian_noise', 5)] = row[('shot_noise', 5)] = value(noise)
      row[('gaussian_noise', 1)] = row[('shot_noise', 1)] = value(clean)
    if shift is not None:
      row.update({('shift_x', k): value(clean if k == 0 else shift) for k in SHIFTS})
    per_image[f'img{i:02d}'] = row
  dice = lambda v: {'dice': v, **{f'dice_{c}': v for c in CLASSES}}
  results = Results.from_json(results_json(
      config=config, dataset='jsrt', class_names=CLASSES, test=dice(clean),
      test_averaged_mask=dice(AVERAGED_MASK), epochs=100, convergence={'converged': converged}))
  robustness = {'shift_x': {str(k): {} for k in SHIFTS}} if noise is not None else None
  return RunRecord(f'{model}_{padding}_{pe}_{num_train_examples}_{seed}', '', config, results,
                   robustness, per_image)


def settings_of(table, unconverged=()):
  """Settings from {(model, padding, pe, num_train_examples): values}; `unconverged`: the keys
  whose seed 1 had not converged."""
  runs = [run_record(model=model, padding=padding, pe=pe, num_train_examples=size, seed=seed,
                     converged=not (seed == 1 and key in unconverged), **values)
          for key in table for (model, padding, pe, size), values in [(key, table[key])]
          for seed in range(SEEDS)]
  return aggregation.group_runs(runs)


def verdict_of(claim_name, settings):
  [verdict] = [v for v in claims.evaluate_claims(settings) if v.claim == claim_name]
  return verdict


# U-Net, zero padding: clean, noise and shift Dice per λ. Every value differs.
TABLE1 = {('unet', 'zeros', None, None): dict(clean=0.960, noise=0.560, shift=0.850),
          ('unet', 'zeros', 1.0, None): dict(clean=0.955, noise=0.655, shift=0.800),
          ('unet', 'zeros', 10.0, None): dict(clean=0.950, noise=0.750, shift=0.700),
          ('unet', 'zeros', 256.0, None): dict(clean=0.940, noise=0.840, shift=0.500)}


def test_noise_robustness_compares_the_drop_of_no_pe_and_the_largest_lambda():
  verdict = verdict_of('noise_robustness', settings_of(TABLE1))
  assert verdict.status == claims.HOLDS, verdict
  assert verdict.numbers.startswith(
      'noise drop: no PE 0.400, PE λ=1 0.300, PE λ=10 0.200, PE λ=256 0.100; '
      'drop no PE − PE λ=256 +0.300 [')
  assert 'drop PE λ=1 − PE λ=10 +0.100 [' in verdict.numbers
  assert verdict.convergence == ''


def test_noise_robustness_fails_when_a_larger_lambda_drops_more():
  table = dict(TABLE1)
  table[('unet', 'zeros', 10.0, None)] = dict(clean=0.950, noise=0.600, shift=0.700)
  verdict = verdict_of('noise_robustness', settings_of(table))
  assert verdict.status == claims.FAILS, verdict
  assert 'drop PE λ=1 − PE λ=10 -0.050 [' in verdict.numbers


def test_clean_cost_is_no_pe_minus_the_largest_lambda():
  verdict = verdict_of('clean_cost', settings_of(TABLE1))
  assert verdict.status == claims.HOLDS, verdict
  assert verdict.numbers.startswith('clean Dice: no PE 0.960, PE λ=256 0.940; '
                                    'clean Dice no PE − PE λ=256 +0.020 [')


def test_shift_compares_no_pe_with_each_lambda():
  verdict = verdict_of('shift', settings_of(TABLE1))
  assert verdict.status == claims.HOLDS, verdict
  for label, effect in (('PE λ=1', '+0.050'), ('PE λ=10', '+0.150'), ('PE λ=256', '+0.350')):
    assert f'no PE − {label} {effect} [' in verdict.numbers


# Figure 4 as on the real JSRT files: reflection padding is much less robust without PE and a
# little more robust with λ = 256. Every one of the four noise Dice values differs.
FIG4 = {('unet', 'zeros', None, None): dict(clean=0.960, noise=0.220, shift=0.850),
        ('unet', 'reflect', None, None): dict(clean=0.950, noise=0.010, shift=0.800),
        ('unet', 'zeros', 256.0, None): dict(clean=0.940, noise=0.780, shift=0.500),
        ('unet', 'reflect', 256.0, None): dict(clean=0.930, noise=0.860, shift=0.450)}


def test_padding_gap_is_zero_minus_reflection_at_the_same_pe():
  verdict = verdict_of('reflection_padding', settings_of(FIG4))
  # Zero − reflection without PE: +0.21 (holds); zero padding without PE − with PE, the pair
  # compared before, would be −0.56 (does not hold).
  assert verdict.status == claims.HOLDS, verdict
  assert verdict.numbers.startswith(
      'noise Dice zero/reflection padding: no PE 0.220/0.010, PE λ=256 0.780/0.860; '
      'gap (zero − reflection) without PE +0.210 [')
  # Gap with PE −0.08: the gap closes by 0.29.
  assert 'gap without PE − gap with PE λ=256 +0.290 [' in verdict.numbers


def test_padding_fails_when_reflection_is_the_more_robust_without_pe():
  table = dict(FIG4)
  table[('unet', 'reflect', None, None)] = dict(clean=0.950, noise=0.300, shift=0.800)
  verdict = verdict_of('reflection_padding', settings_of(table))
  assert verdict.status == claims.FAILS, verdict
  assert 'gap (zero − reflection) without PE -0.080 [' in verdict.numbers


SMALL_CNN = {('cnn4', 'zeros', None, None): dict(clean=0.500),
             ('cnn4', 'zeros', 256.0, None): dict(clean=0.900),
             ('unet', 'zeros', None, None): dict(clean=0.960)}


def test_small_cnn_compares_pe_with_no_pe_and_the_averaged_mask():
  verdict = verdict_of('small_cnn', settings_of(SMALL_CNN))
  assert verdict.status == claims.HOLDS, verdict
  assert verdict.numbers.startswith('clean Dice: no PE 0.500, PE λ=256 0.900, averaged mask '
                                    '0.810; clean Dice PE λ=256 − no PE +0.400 [')
  assert 'PE λ=256 − averaged mask +0.090 [' in verdict.numbers


def test_small_cnn_below_the_averaged_mask_does_not_hold():
  table = dict(SMALL_CNN)
  table[('cnn4', 'zeros', 256.0, None)] = dict(clean=0.700)
  verdict = verdict_of('small_cnn', settings_of(table))
  assert verdict.status == claims.FAILS, verdict
  assert 'PE λ=256 − averaged mask -0.110 [' in verdict.numbers


# Table 2: each subset's PE and no-PE values differ from the other subset's.
SMALL_DATA = {('unet', 'zeros', None, 10): dict(clean=0.880),
              ('unet', 'zeros', 256.0, 10): dict(clean=0.910),
              ('unet', 'zeros', None, 5): dict(clean=0.840),
              ('unet', 'zeros', 256.0, 5): dict(clean=0.850),
              ('unet', 'zeros', None, None): dict(clean=0.960)}


def test_small_data_pairs_pe_and_no_pe_on_the_same_subset():
  verdict = verdict_of('small_data', settings_of(SMALL_DATA))
  assert verdict.status == claims.HOLDS, verdict
  assert '10 images, PE λ=256 − no PE +0.030 [' in verdict.numbers
  assert '5 images, PE λ=256 − no PE +0.010 [' in verdict.numbers


def test_small_data_fails_when_pe_hurts_on_one_subset():
  table = dict(SMALL_DATA)
  table[('unet', 'zeros', 256.0, 5)] = dict(clean=0.800)
  verdict = verdict_of('small_data', settings_of(table))
  assert verdict.status == claims.FAILS, verdict
  assert '5 images, PE λ=256 − no PE -0.040 [' in verdict.numbers


@pytest.mark.parametrize('claim, table, key, note', [
    ('noise_robustness', TABLE1, ('unet', 'zeros', 256.0, None),
     'PE λ=256 not converged in 1 of 3 seeds'),
    ('reflection_padding', FIG4, ('unet', 'reflect', 256.0, None),
     'reflection padding, PE λ=256 not converged in 1 of 3 seeds'),
    ('small_data', SMALL_DATA, ('unet', 'zeros', None, 5),
     '5 images, no PE not converged in 1 of 3 seeds'),
])
def test_a_verdict_names_the_settings_that_did_not_converge(claim, table, key, note):
  verdict = verdict_of(claim, settings_of(table, unconverged=[key]))
  assert verdict.convergence == note
  assert claims.describe(verdict).startswith(f'**{verdict.status}** (caution: {note}) — ')


def test_a_setting_not_compared_adds_no_caution():
  # λ = 10 is not part of the clean-cost comparison (no PE against the largest λ).
  verdict = verdict_of('clean_cost', settings_of(TABLE1, unconverged=[('unet', 'zeros', 10.0,
                                                                          None)]))
  assert verdict.convergence == ''


def test_runs_without_a_convergence_record_are_named_as_unknown():
  settings = settings_of(TABLE1)
  for setting in settings:
    for run in setting.runs:
      run.results.convergence = {}
  verdict = verdict_of('clean_cost', settings)
  assert verdict.convergence == 'no PE, PE λ=256 convergence unknown in 3 of 3 seeds each'


def test_a_run_that_fell_away_from_its_best_is_named_apart():
  settings = settings_of(TABLE1, unconverged=[('unet', 'zeros', 256.0, None)])
  [fallen] = [run for s in settings for run in s.runs if run.results.convergence['converged'] is False]
  fallen.results.convergence = {'converged': False, 'state': 'fallen away'}
  verdict = verdict_of('clean_cost', settings)
  assert verdict.convergence == 'PE λ=256 not converged (fallen away) in 1 of 3 seeds'


# ------------------------------------------------------------------- power and seed advice


def test_an_inconclusive_comparison_says_how_many_seeds_an_effect_of_its_size_needs():
  rng = np.random.default_rng(0)
  # Seeds at +0.02, −0.01 and +0.03 (seed sd 0.02), images shared: inconclusive at 3 seeds.
  d = np.array([[0.02], [-0.01], [0.03]]) + 0.01 * rng.normal(size=(1, 68)) \
      + 0.005 * rng.normal(size=(3, 68))
  status, numbers, needed = claims.judged(paired_statistics.paired_effect(d), 'no PE − PE λ=1')
  assert status == claims.INCONCLUSIVE and 3 < needed <= paired_statistics.MAX_SEEDS
  assert numbers.endswith(f'(as large as measured, {needed:.0f} seeds would find it with 80% '
                          'power)'), numbers
  assert 'detectable ≥ ' in numbers
  decided = claims.judged(paired_statistics.paired_effect(d + 0.2), 'no PE − PE λ=10')
  assert decided[0] == claims.HOLDS and np.isnan(decided[2]) and 'seeds would' not in decided[1]


def test_the_seed_advice_names_what_more_seeds_would_decide():
  def verdict(name, status, needed=float('nan')):
    return claims.Verdict(name, 'jsrt', status, '', '', needed)
  assert claims.seeds_advice([verdict('clean_cost', claims.HOLDS)], 3) == (
      '**Seeds for a decision** (this sweep: 3): every claim judged was decided at 3 seeds.')
  text = claims.seeds_advice([verdict('clean_cost', claims.HOLDS),
                              verdict('shift', claims.INCONCLUSIVE, 7.0),
                              verdict('small_cnn', claims.INCONCLUSIVE, 5.0),
                              verdict('encoding_range', claims.INCONCLUSIVE, float('inf')),
                              verdict('small_data', claims.NOT_MEASURED)], 3)
  assert '7 seeds would decide shift (jsrt), small_cnn (jsrt) with 80% power' in text
  assert 'encoding_range (jsrt) would need more than 50 seeds' in text
  assert claims.seeds_advice([verdict('shift', claims.NOT_MEASURED)], 3) == ''
