"""Statistics a reviewer expects of a reproduction: intervals over seeds, and paired
comparisons of two settings across test images and seeds with an effect size and its interval.

Conventions (stated in the report):
- Over seeds: the sample standard deviation (ddof=1) and a 95% t-interval of the mean.
- A paired comparison of settings A and B takes per-image Dice differences d[s, i] = A − B for
  every seed s run in both and every test image i (a claim's quantity per image, e.g. the noise
  drop). The effect is their mean; its 95% interval is a two-level bootstrap that resamples
  seeds and images with replacement, so that both sources of variation are in it.
- Its p-value is the two-sided bootstrap p of the null "the mean difference is 0", from the same
  resamples as the interval: p = min(1, 2·min(P*(mean ≤ 0), P*(mean ≥ 0))), P* the fraction of
  resampled means on that side of 0. So p < 0.05 exactly when the 95% percentile interval
  excludes 0 (up to ties at the interval's end). It respects the seed level: a resample is all
  one seed with probability S^-S (S seeds), so if one seed's differences all lie at or below 0
  and another's at or above, p ≥ 2·S^-S (2/27 ≈ 0.074 with 3 seeds, 2/256 ≈ 0.008 with 4) however
  many images agree, and at least about half that if a seed disagrees only on average; a seed that
  disagrees by as much as the others agree keeps p ≈ 14/27 ≈ 0.52 with 3 seeds (values of the
  bootstrap distribution; 2000 resamples estimate them to within about ±0.02). With no
  resample on the far side of 0, p is given as < 2/resamples, the two-sided bootstrap's resolution.
  Beside it: how many seeds' mean differences have the sign of the overall mean.
- Per run (one value per seed, no per-image values): the 95% t-interval over seeds and a
  one-sample t-test of a zero mean; none with fewer than 2 seeds.
- A verdict: **holds** if the interval lies entirely on the claimed side of the margin, **does
  not hold** if it lies entirely on the other side, **inconclusive** otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
HOLDS, FAILS, INCONCLUSIVE = 'holds', 'does not hold', 'inconclusive'


@dataclasses.dataclass(frozen=True)
class Stat:
  """Mean, sample standard deviation (ddof=1) and 95% t-interval of the mean over `n` values."""
  mean: float
  std: float
  n: int
  low: float = math.nan
  high: float = math.nan


def summarize(values: Sequence[float | None]) -> Stat:
  """`Stat` of the finite values (None and NaN are left out)."""
  finite = np.asarray([np.nan if v is None else v for v in values], np.float64)
  finite = finite[np.isfinite(finite)]
  if not finite.size:
    return Stat(math.nan, math.nan, 0)
  mean = float(np.mean(finite))
  if finite.size < 2:
    return Stat(mean, math.nan, 1)
  std = float(np.std(finite, ddof=1))
  half = float(scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, finite.size - 1)) * std / math.sqrt(
      finite.size)
  return Stat(mean, std, int(finite.size), mean - half, mean + half)


@dataclasses.dataclass(frozen=True)
class Effect:
  """A paired difference A − B: its mean, 95% interval, p-value of a zero mean, sample sizes and
  the number of seeds whose mean difference has the sign of `mean`.

  `resamples` is the number of bootstrap resamples behind the interval and p (0 per run, where
  both come from a t-distribution over seeds); a p of 2/resamples means no resample crossed 0.
  """
  mean: float
  low: float
  high: float
  p_value: float
  num_seeds: int
  num_images: int
  seeds_same_sign: int = 0
  resamples: int = 0

  def describe(self, digits: int = 3) -> str:
    if self.num_images > 1:
      side = '>' if self.mean > 0 else '<' if self.mean < 0 else '='
      sample = f'{self.num_seeds} seeds × {self.num_images} images'
      if math.isfinite(self.mean):
        sample += f', {self.seeds_same_sign} of {self.num_seeds} seeds {side} 0'
      test = 'bootstrap'
    else:
      sample, test = f'{self.num_seeds} seeds, per run', 't-test'
    p = ''
    if math.isfinite(self.p_value):
      at_floor = self.resamples and self.p_value <= 2 / self.resamples
      p = (f', {test} p < {2 / self.resamples:.2g}' if at_floor
           else f', {test} p = {self.p_value:.2g}')
    return (f'{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] '
            f'({sample}{p})')


def paired_effect(differences, *, resamples: int = BOOTSTRAP_RESAMPLES,
                  seed: int = BOOTSTRAP_SEED) -> Effect:
  """The effect of per-image differences `differences[seed, image]` (NaN where undefined).

  The interval and the p-value come from the same two-level bootstrap resamples (see the module
  docstring). With one image per seed (no per-image values), the interval is the t-interval over
  seeds and the p-value that of a one-sample t-test over seeds.
  """
  d = np.asarray(differences, np.float64)
  if d.ndim == 1:
    d = d[:, None]
  d = d[np.isfinite(d).any(axis=1)][:, np.isfinite(d).any(axis=0)]
  num_seeds, num_images = d.shape
  if not d.size or not np.isfinite(d).any():
    return Effect(math.nan, math.nan, math.nan, math.nan, num_seeds, num_images)
  mean = float(np.nanmean(d))
  with np.errstate(all='ignore'), warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    seed_means = np.nanmean(d, axis=1)
  same_sign = int(np.sum(np.sign(seed_means) == np.sign(mean)))
  if num_images == 1:
    stat = summarize(d[:, 0])
    return Effect(mean, stat.low, stat.high, _t_test(d[:, 0]), num_seeds, 1, same_sign)
  rng = np.random.default_rng(seed)
  seed_draws = rng.integers(0, num_seeds, (resamples, num_seeds))
  image_draws = rng.integers(0, num_images, (resamples, num_images))
  with np.errstate(all='ignore'), warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    means = np.array([np.nanmean(d[np.ix_(s, i)]) for s, i in zip(seed_draws, image_draws)])
  means = means[np.isfinite(means)]
  if not means.size:
    return Effect(mean, math.nan, math.nan, math.nan, num_seeds, num_images, same_sign)
  tail = (1 - CONFIDENCE) / 2
  low, high = np.quantile(means, [tail, 1 - tail])
  return Effect(mean, float(low), float(high), _bootstrap_p(means), num_seeds, num_images,
                same_sign, int(means.size))


def _bootstrap_p(means) -> float:
  """Two-sided p of a zero mean from resampled means, floored at 2/len(means): with no
  resample across 0, the two-sided estimate only says p < 2/R."""
  one_sided = min(np.mean(means <= 0), np.mean(means >= 0))
  return float(max(min(1.0, 2 * one_sided), 2 / means.size))


def _t_test(values) -> float:
  """Two-sided p of a one-sample t-test of a zero mean over the finite values; NaN with fewer
  than 2 values or no spread."""
  values = values[np.isfinite(values)]
  if values.size < 2 or np.ptp(values) == 0:  # no spread over seeds: nothing to test against
    return math.nan
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)  # precision loss on (nearly) equal values
    return float(scipy_stats.ttest_1samp(values, 0.0).pvalue)


def verdict(effect: Effect, margin: float = 0.0) -> str:
  """HOLDS if the interval lies above `margin` (the claimed direction is A − B > margin), FAILS
  if it lies below it, INCONCLUSIVE otherwise (or if nothing could be measured)."""
  if not (math.isfinite(effect.low) and math.isfinite(effect.high)):
    return INCONCLUSIVE
  if effect.low > margin:
    return HOLDS
  if effect.high < margin:
    return FAILS
  return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
  """A claim made of several comparisons: FAILS if any fails, HOLDS if all hold."""
  if any(v == FAILS for v in verdicts):
    return FAILS
  if verdicts and all(v == HOLDS for v in verdicts):
    return HOLDS
  return INCONCLUSIVE
