"""Calibration of the verdict's interval: each candidate rule on synthetic paired differences
d[s, i] = μ + u_s + v_i + e_si (seed effect u, image effect v shared by the seeds, seed-by-image
noise e; 68 test images as the phantom and JSRT test splits have), at 2, 3, 5 and 10 seeds.

  python benchmarks/calibration_study.py                 # ~2 minutes on 2 cores
  python benchmarks/calibration_study.py --trials=300 --markdown=calibration.md

Prints (and with --markdown writes) three tables:
- false positives: the share of null data sets (μ = 0) whose 95% interval excludes 0, i.e. whose
  verdict would not be "inconclusive", per rule, seed count and variance scenario;
- power: the share of data sets with μ > 0 whose interval lies above 0, at effects δ in units of
  the spread of one seed's mean difference, τ = sqrt(σ_u² + (σ_v² + σ_e²) / I);
- the comparisons quoted from the schedule study (3 seeds × 68 images; docs/schedule_study.md):
  the seed means an interval of the earlier rule implies, their δ, and the new rule's interval
  from them (an estimate: the per-image files are not read here).

Every test is scale-free, so a scenario is its variance ratio κ = σ_img / σ_u, σ_img² = σ_v² +
σ_e² the within-seed variance of an image's difference (split evenly between v and e, or all
shared). docs/statistics.md gives the table and the choice it supports.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pejax.reporting import paired_statistics  # noqa: E402

NUM_IMAGES = 68
SEED_COUNTS = (2, 3, 5, 10)
RESAMPLES = 2000  # the earlier rule's bootstrap resamples
DELTAS = (1.0, 2.0, 4.0)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--trials', type=int, default=1000, help='null data sets per cell')
  parser.add_argument('--power_trials', type=int, default=400, help='data sets per power cell')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--markdown', default='', help='also write the tables to this file')
  return parser.parse_args(argv)


# --------------------------------------------------------------------------------- scenarios


def scenario(kappa: float, shared: float = 0.5, tails: str = 'normal', seed_sd: float = 1.0):
  """(σ_u, σ_v, σ_e, tails) for a ratio κ = σ_img / σ_u (σ_u = 0 where κ is inf)."""
  sigma_u = 0.0 if math.isinf(kappa) else seed_sd
  sigma_img = seed_sd * (1.0 if math.isinf(kappa) else kappa)
  return sigma_u, sigma_img * math.sqrt(shared), sigma_img * math.sqrt(1 - shared), tails


# The null (σ_u = σ_v = 0.05, σ_e = 0.1), then κ from seed- to image-dominated; the
# sweeps' quantities lie between κ ≈ 0.3 (shift Dice) and κ ≈ 10 (clean Dice): docs/statistics.md.
SCENARIOS = {
    'issue (σu=σv=.05, σe=.1)': (0.05, 0.05, 0.1, 'normal'),
    'κ=0.3': scenario(0.3),
    'κ=1': scenario(1.0),
    'κ=3': scenario(3.0),
    'κ=10': scenario(10.0),
    'κ=30': scenario(30.0),
    'no seed effect': scenario(math.inf),
    'κ=10, all shared': scenario(10.0, shared=1.0),
    'κ=3, t₃ tails': scenario(3.0, tails='t3'),
}
POWER_SCENARIOS = ('κ=0.3', 'κ=3', 'κ=10')


def draw(rng, trials, num_seeds, sigma_u, sigma_v, sigma_e, tails, mean=0.0):
  """`trials` data sets d[trial, seed, image]."""
  def noise(shape, sd):
    if tails == 't3':  # heavy tails (a few images that fail badly), scaled to the same sd
      return sd * rng.standard_t(3, shape) / math.sqrt(3.0)
    return sd * rng.standard_normal(shape)
  return (mean + noise((trials, num_seeds, 1), sigma_u) + noise((trials, 1, NUM_IMAGES), sigma_v)
          + noise((trials, num_seeds, NUM_IMAGES), sigma_e))


def spread(num_seeds, sigma_u, sigma_v, sigma_e, tails):
  """τ: the sd of one seed's mean difference (the unit of the effects δ)."""
  del num_seeds, tails
  return math.sqrt(sigma_u ** 2 + (sigma_v ** 2 + sigma_e ** 2) / NUM_IMAGES)


# ------------------------------------------------------------------------------------- rules
# Each returns the interval's (low, high) per data set (NaN where it has none).


def two_level_bootstrap(d):
  """pejax's earlier rule: percentile interval of a bootstrap over seeds and images, with the
  draws of the landed `paired_effect` (seed 0, 2000 resamples)."""
  trials, num_seeds, num_images = d.shape
  rng = np.random.default_rng(0)
  seed_draws = rng.integers(0, num_seeds, (RESAMPLES, num_seeds))
  image_draws = rng.integers(0, num_images, (RESAMPLES, num_images))
  seed_counts = np.stack([np.bincount(row, minlength=num_seeds) for row in seed_draws]) / num_seeds
  image_counts = np.stack([np.bincount(row, minlength=num_images)
                           for row in image_draws]) / num_images
  lows, highs = np.empty(trials), np.empty(trials)
  for start in range(0, trials, 100):  # in blocks: (block, resamples, images) stays small
    block = np.einsum('bs,tsi->tbi', seed_counts, d[start:start + 100])
    means = np.einsum('tbi,bi->tb', block, image_counts)
    lows[start:start + 100], highs[start:start + 100] = np.quantile(means, [0.025, 0.975], axis=1)
  return lows, highs


def seed_mean_t(d):
  """t-interval on the seed means, S − 1 degrees of freedom (images averaged within a seed)."""
  means = d.mean(axis=2)
  num_seeds = means.shape[1]
  return paired_statistics.t_interval(means.mean(axis=1), means.var(axis=1, ddof=1) / num_seeds,
                                      num_seeds - 1)[:2]


def _crossed_parts(d):
  seed_variance, image_variance = paired_statistics.crossed_variance(d)
  return d.mean(axis=(1, 2)), seed_variance / d.shape[1], image_variance


def crossed_satterthwaite(d):
  """The crossed components of the chosen rule (seed part not truncated), Satterthwaite degrees
  of freedom over the mean squares they are made of."""
  _, num_seeds, num_images = d.shape
  mean, seed_term, image_term = _crossed_parts(d)
  # image_term = (MS_image − MS_residual) / (S·I) where positive: its two mean squares' parts.
  cells = num_seeds * num_images
  image_ms = num_seeds * d.mean(axis=1).var(axis=1, ddof=1)
  residual_ms = np.where(image_term > 0, image_ms - image_term * cells, 0.0)
  image_ms = np.where(image_term > 0, image_ms, 0.0)
  with np.errstate(all='ignore'):
    df = (seed_term + image_term) ** 2 / (
        seed_term ** 2 / (num_seeds - 1) + (image_ms / cells) ** 2 / (num_images - 1)
        + (residual_ms / cells) ** 2 / ((num_seeds - 1) * (num_images - 1)))
  return paired_statistics.t_interval(mean, seed_term + image_term, df)[:2]


def crossed_seed_df(d):
  """The crossed components with S − 1 degrees of freedom whatever the images' share."""
  mean, seed_term, image_term = _crossed_parts(d)
  return paired_statistics.t_interval(mean, seed_term + image_term, d.shape[1] - 1)[:2]


def crossed_cochran_cox(d):
  """The chosen rule (`paired_statistics.paired_effect`): the crossed components, Cochran and
  Cox's critical value."""
  seed_variance, image_variance = paired_statistics.crossed_variance(d)
  return paired_statistics.interval(d.mean(axis=(1, 2)), seed_variance, image_variance,
                                    d.shape[1], d.shape[2])


def mixed_model_reml(d):
  """A linear mixed model with crossed seed and image effects, REML (closed form for a balanced
  design: the ANOVA estimates truncated at 0), Satterthwaite degrees of freedom over the
  components kept (what lmerTest reports; Kenward–Roger coincides on balanced data)."""
  _, num_seeds, num_images = d.shape
  seed_means, image_means = d.mean(axis=2), d.mean(axis=1)
  grand = d.mean(axis=(1, 2))
  seed_ms = num_images * seed_means.var(axis=1, ddof=1)
  image_ms = num_seeds * image_means.var(axis=1, ddof=1)
  residual_df = (num_seeds - 1) * (num_images - 1)
  residual = d - seed_means[:, :, None] - image_means[:, None, :] + grand[:, None, None]
  residual_ms = (residual ** 2).sum(axis=(1, 2)) / residual_df
  var_u = np.maximum(seed_ms - residual_ms, 0) / num_images
  var_v = np.maximum(image_ms - residual_ms, 0) / num_seeds
  cells = num_seeds * num_images
  variance = var_u / num_seeds + var_v / num_images + residual_ms / cells
  # Satterthwaite over the mean squares each kept component is made of.
  seed_kept, image_kept = var_u > 0, var_v > 0
  coefficient_seed = np.where(seed_kept, 1 / cells, 0.0)
  coefficient_image = np.where(image_kept, 1 / cells, 0.0)
  coefficient_residual = (1 - seed_kept - image_kept) / cells
  terms = [(coefficient_seed * seed_ms, num_seeds - 1), (coefficient_image * image_ms, num_images - 1),
           (coefficient_residual * residual_ms, residual_df)]
  df = variance ** 2 / sum(term ** 2 / degrees for term, degrees in terms)
  return paired_statistics.t_interval(grand, variance, df)[:2]


WEBB = np.array([-math.sqrt(1.5), -1.0, -math.sqrt(0.5), math.sqrt(0.5), 1.0, math.sqrt(1.5)])


def wild_cluster_bootstrap(d, rng):
  """Wild cluster bootstrap-t (restricted: the null imposed), Webb's six-point weights at the
  seed level, every weight pattern where there are at most 6^5 (else 1999 drawn). A test, not an
  interval: returns (0, 0) where it does not reject, else ±(1, 1) on the side of the mean."""
  means = d.mean(axis=2)
  num_seeds = means.shape[1]
  if 6 ** num_seeds <= 6 ** 5:
    weights = np.array(list(itertools.product(WEBB, repeat=num_seeds)))
  else:
    weights = rng.choice(WEBB, (1999, num_seeds))

  def t_stat(m):
    with np.errstate(all='ignore'):
      return m.mean(axis=-1) / np.sqrt(m.var(axis=-1, ddof=1) / num_seeds)
  observed = t_stat(means)
  boot = t_stat(means[:, None, :] * weights[None])  # null imposed: residuals are the seed means
  p = np.mean(np.abs(boot) >= np.abs(observed)[:, None], axis=1)
  side = np.sign(means.mean(axis=1)) * (p < 0.05)
  return side, side


RULES = {
    'two-level bootstrap (earlier)': lambda d, rng: two_level_bootstrap(d),
    't on seed means, S−1 df': lambda d, rng: seed_mean_t(d),
    'wild cluster bootstrap (Webb)': wild_cluster_bootstrap,
    'mixed model, REML + Satterthwaite': lambda d, rng: mixed_model_reml(d),
    'crossed, Satterthwaite df': lambda d, rng: crossed_satterthwaite(d),
    'crossed, S−1 df': lambda d, rng: crossed_seed_df(d),
    'crossed, Cochran–Cox (chosen)': lambda d, rng: crossed_cochran_cox(d),
}


# --------------------------------------------------------------------------------- the study


def rates(rule, rng, trials, num_seeds, parameters, delta=0.0):
  sigma_u, sigma_v, sigma_e, tails = parameters
  mean = delta * spread(num_seeds, *parameters)
  d = draw(rng, trials, num_seeds, sigma_u, sigma_v, sigma_e, tails, mean)
  low, high = rule(d, rng)
  if delta:
    return float(np.mean(low > 0))
  return float(np.mean((low > 0) | (high < 0)))


def false_positive_table(args):
  rows = []
  for name, rule in RULES.items():
    for num_seeds in SEED_COUNTS:
      rng = np.random.default_rng([args.seed, num_seeds])  # the same data for every rule
      rows.append([name, num_seeds] + [rates(rule, rng, args.trials, num_seeds, parameters)
                                       for parameters in SCENARIOS.values()])
  return rows


def power_table(args):
  rows = []
  for name, rule in RULES.items():
    for num_seeds in SEED_COUNTS:
      row = [name, num_seeds]
      for label in POWER_SCENARIOS:
        rng = np.random.default_rng([args.seed, num_seeds, 1])
        row += [rates(rule, rng, args.power_trials, num_seeds, SCENARIOS[label], delta)
                for delta in DELTAS]
      rows.append(row)
  return rows


def detectable_table(args):
  """The chosen rule's smallest detectable δ (80% power) in the seed-dominated scenario (κ =
  0.3; the noncentral t the report uses, with the true variances), and the power simulated
  there."""
  parameters = SCENARIOS['κ=0.3']
  sigma_u, sigma_v, sigma_e, _ = parameters
  rows = []
  for num_seeds in (2, 3, 4, 5, 6, 8, 10):
    tau = spread(num_seeds, *parameters)
    seed_variance = sigma_u ** 2 + sigma_e ** 2 / NUM_IMAGES  # v is shared: not in it
    delta = paired_statistics.detectable(seed_variance, sigma_v ** 2 / NUM_IMAGES, num_seeds,
                                         NUM_IMAGES) / tau
    rng = np.random.default_rng([args.seed, num_seeds, 2])
    rows.append([num_seeds, delta, rates(RULES['crossed, Cochran–Cox (chosen)'], rng,
                                         args.power_trials, num_seeds, parameters, delta)])
  return rows


# Comparisons the schedule study printed under the earlier rule (docs/schedule_study.md; 3 seeds
# × 68 images): (claim, schedule, comparison, mean, low, high, seeds of the mean's sign).
QUOTED = (
    ('noise_robustness', 160, 'drop no PE − PE λ=256', 0.215, 0.171, 0.249, 3),
    ('noise_robustness', 400, 'drop no PE − PE λ=256', 0.281, 0.205, 0.342, 3),
    ('noise_robustness', 800, 'drop no PE − PE λ=256', 0.339, 0.242, 0.410, 3),
    ('clean_cost', 160, 'clean Dice no PE − PE λ=256', 0.086, 0.055, 0.135, 3),
    ('clean_cost', 400, 'clean Dice no PE − PE λ=256', 0.012, 0.010, 0.015, 3),
    ('clean_cost', 800, 'clean Dice no PE − PE λ=256', 0.009, 0.007, 0.010, 3),
    ('reflection_padding', 160, 'gap without PE', 0.464, 0.303, 0.614, 3),
    ('reflection_padding', 160, 'gap without PE − gap with PE λ=256', 0.358, 0.265, 0.503, 3),
    ('reflection_padding', 400, 'gap without PE', 0.491, 0.437, 0.571, 3),
    ('reflection_padding', 400, 'gap without PE − gap with PE λ=256', 0.489, 0.436, 0.568, 3),
    ('reflection_padding', 800, 'gap without PE', 0.407, 0.318, 0.470, 3),
    ('reflection_padding', 800, 'gap without PE − gap with PE λ=256', 0.402, 0.319, 0.464, 3),
    ('shift', 160, 'no PE − PE λ=1', 0.028, -0.019, 0.059, 2),
    ('shift', 160, 'no PE − PE λ=10', 0.126, 0.107, 0.142, 3),
    ('shift', 160, 'no PE − PE λ=256', 0.314, 0.260, 0.379, 3),
    ('shift', 400, 'no PE − PE λ=1', 0.019, -0.025, 0.062, 2),
    ('shift', 400, 'no PE − PE λ=10', 0.118, 0.089, 0.144, 3),
    ('shift', 400, 'no PE − PE λ=256', 0.175, 0.113, 0.225, 3),
    ('shift', 800, 'no PE − PE λ=1', 0.012, -0.024, 0.048, 2),
    ('shift', 800, 'no PE − PE λ=10', 0.116, 0.087, 0.134, 3),
    ('shift', 800, 'no PE − PE λ=256', 0.158, 0.110, 0.186, 3),
    ('small_cnn', 160, 'PE λ=256 − no PE (margin 0.1)', 0.437, 0.366, 0.501, 3),
    ('small_cnn', 160, 'PE λ=256 − averaged mask', 0.019, -0.011, 0.049, 2),
    ('small_cnn', 400, 'PE λ=256 − no PE (margin 0.1)', 0.331, 0.295, 0.361, 3),
    ('small_cnn', 400, 'PE λ=256 − averaged mask', 0.098, 0.090, 0.106, 3),
    ('small_cnn', 800, 'PE λ=256 − no PE (margin 0.1)', 0.293, 0.263, 0.333, 3),
    ('small_cnn', 800, 'PE λ=256 − averaged mask', 0.138, 0.131, 0.143, 3),
    ('small_data', 160, '10 images, PE λ=256 − no PE', -0.060, -0.074, -0.048, 3),
    ('small_data', 160, '5 images, PE λ=256 − no PE', -0.088, -0.110, -0.069, 3),
    ('small_data', 400, '10 images, PE λ=256 − no PE', -0.050, -0.059, -0.042, 3),
    ('small_data', 400, '5 images, PE λ=256 − no PE', -0.091, -0.112, -0.074, 3),
    ('small_data', 800, '10 images, PE λ=256 − no PE', -0.052, -0.072, -0.036, 3),
    ('small_data', 800, '5 images, PE λ=256 − no PE', -0.082, -0.113, -0.059, 3),
    # Beyond the paper, chest phantom (README, "Beyond the paper"); "alike": within ±0.01.
    ('encoding_range', 160, 'clean Dice linear λ=2 − centered λ=1 (alike)', -0.001, -0.005, 0.002, 0),
    ('encoding_range', 160, 'noise drop linear λ=2 − centered λ=1 (alike)', -0.016, -0.049, 0.003, 0),
    ('encoding_range', 160, 'Dice over shifts linear λ=2 − centered λ=1 (alike)', -0.013, -0.035, 0.008,
     0),
    ('every_layer_noise', 160, 'noise drop input − every layer', -0.064, -0.102, -0.029, 3),
    ('every_layer_shift', 160, 'Dice over shifts input − every layer', 0.032, 0.003, 0.063, 3),
    ('radial_fourier', 160, 'noise drop Fourier − linear (alike)', -0.122, -0.192, -0.030, 3),
    ('radial_fourier', 160, 'Dice over shifts Fourier − linear (alike)', -0.165, -0.176, -0.154, 3),
    ('radial_fourier', 160, 'noise drop radial − linear (alike)', -0.048, -0.102, -0.002, 3),
    ('radial_fourier', 160, 'Dice over shifts radial − linear (alike)', -0.054, -0.112, -0.018, 3),
)
EQUIVALENT = 0.01  # beyond_paper.EQUIVALENT: "alike" comparisons hold within ±0.01


def implied_seed_means(mean, low, high):
  """Three seed means consistent with an earlier-rule interval: with 3 seeds, 1 in 27 of its
  resamples is the lowest seed three times (more than the 2.5% tail), so its ends lie near the
  lowest and highest seed means; the third follows from the mean. The image resampling widens
  the ends a little, so these overstate the seed spread slightly."""
  middle = min(max(3 * mean - low - high, low), high)
  return np.array([low, middle, high])


def judge(label, mean, low, high):
  if '(alike)' in label:  # beyond_paper.equivalent_to_zero
    if -EQUIVALENT < low and high < EQUIVALENT:
      return paired_statistics.HOLDS
    if low > EQUIVALENT or high < -EQUIVALENT:
      return paired_statistics.FAILS
    return paired_statistics.INCONCLUSIVE
  margin = 0.1 if 'margin 0.1' in label else 0.0
  return paired_statistics.verdict(paired_statistics.Effect(mean, low, high, 0, 3, NUM_IMAGES),
                                   margin)


def requoted_table():
  """The quoted comparisons re-judged from their implied seed means: the image part of the new
  interval is left out (not recoverable from an interval), so the new intervals are if
  anything too narrow."""
  rows = []
  for claim, steps, label, mean, low, high, _ in QUOTED:
    margin = 0.1 if 'margin 0.1' in label else EQUIVALENT if '(alike)' in label else 0.0
    seeds = implied_seed_means(mean, low, high)
    sd = float(np.std(seeds, ddof=1))
    new_low, new_high = paired_statistics.interval(mean, sd ** 2, 0.0, 3, NUM_IMAGES)
    old, new = judge(label, mean, low, high), judge(label, mean, float(new_low), float(new_high))
    if '(alike)' in label:
      margin = EQUIVALENT if abs(mean) < EQUIVALENT else -EQUIVALENT * np.sign(mean)
    needed = paired_statistics.Effect(mean, 0, 0, 0, 3, NUM_IMAGES, 0, 2, sd ** 2).seeds_for(mean - margin)
    rows.append([claim, steps, label, f'{mean:+.3f} [{low:+.3f}, {high:+.3f}]', old,
                 f'{sd:.3f}', f'{abs(mean - margin) / sd:.1f}',
                 f'{mean:+.3f} [{float(new_low):+.3f}, {float(new_high):+.3f}]', new,
                 needed or f'> {paired_statistics.MAX_SEEDS}'])
  return rows


def markdown(header, rows, percent_from=None):
  def cell(value, column):
    if isinstance(value, float) and percent_from is not None and column >= percent_from:
      return f'{100 * value:.1f}%'
    return f'{value:.2f}' if isinstance(value, float) else str(value)
  return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)] + [
      '| ' + ' | '.join(cell(v, c) for c, v in enumerate(row)) + ' |' for row in rows]


def main(argv=None):
  args = parse_args(argv)
  start = time.time()
  lines = [f'False positives: share of null data sets (μ = 0) whose 95% interval excludes 0; '
           f'{args.trials} per cell, {NUM_IMAGES} images (binomial SE at 5%: '
           f'{100 * math.sqrt(0.05 * 0.95 / args.trials):.1f} points).', '']
  lines += markdown(['rule', 'seeds'] + list(SCENARIOS), false_positive_table(args), 2)
  print('\n'.join(lines), flush=True)
  power_lines = ['', f'Power: share of data sets with μ = δ·τ > 0 whose interval lies above 0; '
                 f'{args.power_trials} per cell.', '']
  power_lines += markdown(['rule', 'seeds'] + [f'{label}, δ={delta:g}' for label in POWER_SCENARIOS
                                               for delta in DELTAS], power_table(args), 2)
  power_lines += ['', 'Chosen rule: the smallest effect found with 80% power (δ, in units of τ; '
                  'κ=0.3, seed-dominated), as the report computes it, and the power simulated '
                  'there:', '']
  power_lines += markdown(['seeds', 'detectable δ', 'simulated power'], detectable_table(args), 2)
  print('\n'.join(power_lines), flush=True)
  quoted = ['', 'Quoted comparisons (3 seeds × 68 images), re-judged from the seed means their '
            'earlier intervals imply (an estimate):', '']
  quoted += markdown(['claim', 'steps', 'comparison', 'earlier rule', 'verdict', 'seed sd',
                      'δ', 'new rule (est.)', 'verdict', 'seeds for 80% power'], requoted_table())
  print('\n'.join(quoted))
  print(f'\n{time.time() - start:.0f} s')
  if args.markdown:
    with open(args.markdown, 'w') as f:
      f.write('\n'.join(lines + power_lines + quoted) + '\n')


if __name__ == '__main__':
  main()
