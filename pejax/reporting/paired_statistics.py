"""Statistics a reviewer expects of a reproduction: intervals over seeds, and paired
comparisons of two settings across test images and seeds with an effect size, its interval and
the smallest effect the seeds could have shown.

Conventions (stated in the report; the calibration behind them: docs/statistics.md):
- Over seeds: the sample standard deviation (ddof=1) and a 95% t-interval of the mean.
- A paired comparison of settings A and B takes per-image Dice differences d[s, i] = A − B for
  every seed s run in both and every test image i (a claim's quantity per image, e.g. the noise
  drop). The seed (one training run) is the unit the claims are about; the test images are a
  second level, crossed with it (every seed sees the same images). The effect is the mean of
  d; its 95% interval is mean ± c·SE from a crossed random-effects model (seed + image +
  residual; balanced ANOVA estimates of its components):
      SE² = s²_seed / S + σ²_image,
  s²_seed the sample variance of the S seed means (each the mean over the I images, so the
  seed-by-image noise enters through them) and σ²_image = max(0, MS_image − MS_residual) / (S·I)
  the images' effect shared by all seeds, which more seeds do not average away. The critical
  value c is Cochran and Cox's: the t critical values of the two parts (S − 1 and I − 1 degrees
  of freedom) weighted by their shares of SE², so about t(S − 1) where the seeds dominate. With
  σ²_image = 0 it is the t-interval on the seed means. Chosen by a calibration study
  (benchmarks/calibration_study.py, docs/statistics.md): at most 6% false positives at 2 to 10
  seeds where the earlier two-level bootstrap over seeds and images gave 16–26% at 2–3 seeds
  (with all seeds of one sign no resample crosses 0), and more power than the alternatives that
  are as well calibrated.
- Its p-value is the two-sided level at which the interval's end reaches 0, so p < 0.05 exactly
  when the 95% interval excludes 0. Beside it: how many seeds' mean differences have the sign
  of the overall mean, and the degrees of freedom whose t critical value is c.
- Detectable: the smallest true effect (its distance from the claim's margin) that this many
  seeds would find with 80% power at a two-sided 5% level, at the measured spread (noncentral t
  at those degrees of freedom). `Effect.seeds_for` projects it to other seed counts: the seed
  part of SE² shrinks as 1/S, the image part does not. With 3 seeds the measured spread is
  itself uncertain (its sd's 95% interval spans a factor 12), so these are planning figures.
- Per run (one value per seed, no per-image values): the 95% t-interval over seeds and a
  one-sample t-test of a zero mean; none with fewer than 2 seeds.
- With one seed there is no interval: one training run says nothing about another.
- A verdict: **holds** if the interval lies entirely on the claimed side of the margin, **does
  not hold** if it lies entirely on the other side, **inconclusive** otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
POWER = 0.8
# Seed counts beyond this are not proposed: an effect that needs more is too small against the
# spread of training runs for seeds to settle it.
MAX_SEEDS = 50
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
  """A paired difference A − B: its mean, 95% interval, p-value of a zero mean, sample sizes,
  the number of seeds whose mean difference has the sign of `mean`, and what the interval rests
  on: `seed_variance` (of one seed's mean), `image_variance` (the images' shared part of the
  mean's variance) and the t-distribution's degrees of freedom `df`."""
  mean: float
  low: float
  high: float
  p_value: float
  num_seeds: int
  num_images: int
  seeds_same_sign: int = 0
  df: float = math.nan
  seed_variance: float = math.nan
  image_variance: float = 0.0

  @property
  def detectable(self) -> float:
    """The smallest effect (distance from the margin) found with 80% power at this many seeds."""
    return detectable(self.seed_variance, self.image_variance, self.num_seeds, self.num_images)

  def seeds_for(self, distance: float) -> int | None:
    """The fewest seeds whose detectable effect is at most `distance` at the measured spread;
    None if even MAX_SEEDS would not do (or nothing was measured)."""
    distance = abs(distance)
    if not (math.isfinite(distance) and math.isfinite(self.seed_variance)) or distance == 0:
      return None
    if detectable(self.seed_variance, self.image_variance, MAX_SEEDS, self.num_images) > distance:
      return None
    low, high = 2, MAX_SEEDS  # detectable() falls with the seeds: bisect
    while low < high:
      middle = (low + high) // 2
      if detectable(self.seed_variance, self.image_variance, middle, self.num_images) <= distance:
        high = middle
      else:
        low = middle + 1
    return low

  def describe(self, digits: int = 3) -> str:
    if self.num_images > 1:
      side = '>' if self.mean > 0 else '<' if self.mean < 0 else '='
      sample = f'{self.num_seeds} seed{"s" if self.num_seeds != 1 else ""} × {self.num_images} images'
      if math.isfinite(self.mean) and self.num_seeds > 1:
        sample += f', {self.seeds_same_sign} of {self.num_seeds} seeds {side} 0'
    else:
      sample = f'{self.num_seeds} seeds, per run'
    if math.isfinite(self.p_value):
      sample += f', t-test p = {self.p_value:.2g}'
      if self.num_images > 1:
        sample += f' ({self.df:.0f} df)' if self.df >= 10 else f' ({self.df:.1f} df)'
    if math.isfinite(self.detectable):
      sample += f'; detectable ≥ {self.detectable:.{digits}f}'
    if self.num_seeds < 2 and math.isfinite(self.mean):
      return f'{self.mean:+.{digits}f} ({sample}: no interval over seeds)'
    return (f'{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] '
            f'({sample})')


def crossed_variance(d):
  """(seed_variance, image_variance) of complete paired differences `d[..., seed, image]`
  (leading axes: independent data sets): the sample variance of the seed means, and the shared
  image part of the grand mean's variance, max(0, MS_image − MS_residual) / (S·I)."""
  d = np.asarray(d, np.float64)
  num_seeds, num_images = d.shape[-2:]
  seed_means = d.mean(axis=-1)
  image_means = d.mean(axis=-2)
  grand = seed_means.mean(axis=-1)
  image_ms = num_seeds * np.var(image_means, axis=-1, ddof=1)
  residual = d - seed_means[..., :, None] - image_means[..., None, :] + grand[..., None, None]
  residual_ms = np.sum(residual ** 2, axis=(-2, -1)) / ((num_seeds - 1) * (num_images - 1))
  shared = np.maximum(image_ms - residual_ms, 0.0) / (num_seeds * num_images)
  return np.var(seed_means, axis=-1, ddof=1), shared


def critical_value(seed_term, image_term, num_seeds: int, num_images: int,
                   alpha: float = 1 - CONFIDENCE):
  """Cochran and Cox's critical value of (mean − μ) / SE for SE² = seed_term + image_term: the
  two components' two-sided t critical values (S − 1 and I − 1 degrees of freedom) weighted by
  their share of SE². Satterthwaite's degrees of freedom, estimated from the same few seeds,
  gave 7–8% false positives at 3 seeds (docs/statistics.md)."""
  seed_term, image_term = np.asarray(seed_term, float), np.asarray(image_term, float)
  with np.errstate(all='ignore'):
    share = np.where(seed_term + image_term > 0, image_term / (seed_term + image_term), 0.0)
  seed_t = scipy_stats.t.isf(alpha / 2, num_seeds - 1)
  image_t = scipy_stats.t.isf(alpha / 2, max(num_images - 1, 1))
  return (1 - share) * seed_t + share * image_t


def interval(mean, seed_variance, image_variance, num_seeds: int, num_images: int):
  """(low, high) of the 95% interval of the mean (arrays broadcast)."""
  seed_term = np.asarray(seed_variance, float) / num_seeds
  half = critical_value(seed_term, image_variance, num_seeds, num_images) * np.sqrt(
      seed_term + image_variance)
  return mean - half, mean + half


def t_interval(mean, variance, df):
  """(low, high, p) of a two-sided t-interval and test of a zero mean (arrays broadcast)."""
  se = np.sqrt(variance)
  half = scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, df) * se
  with np.errstate(all='ignore'):
    p = 2 * scipy_stats.t.sf(np.abs(mean) / se, df)
  return mean - half, mean + half, p


def _p_value(statistic: float, seed_term: float, image_term: float, num_seeds: int,
             num_images: int) -> float:
  """The two-sided p of |mean| / SE = `statistic`: the level at which the critical value
  equals it, so that p < 0.05 exactly when the 95% interval excludes 0."""
  if not math.isfinite(statistic):
    return math.nan
  def excess(log_alpha):
    return float(critical_value(seed_term, image_term, num_seeds, num_images,
                                10.0 ** log_alpha)) - statistic
  if excess(0.0) >= 0:
    return 1.0
  if excess(-300.0) <= 0:
    return 1e-300
  return 10.0 ** optimize.brentq(excess, -300.0, 0.0, xtol=1e-6)


def effective_df(seed_term: float, image_term: float, num_seeds: int, num_images: int) -> float:
  """The degrees of freedom of the t-distribution whose 95% critical value is the Cochran–Cox
  one: S − 1 where the seeds dominate, up to I − 1 where the images do."""
  critical = float(critical_value(seed_term, image_term, num_seeds, num_images))
  low, high = num_seeds - 1, max(num_images - 1, num_seeds - 1)
  if high <= low or critical >= scipy_stats.t.isf((1 - CONFIDENCE) / 2, low):
    return float(low)
  return float(optimize.brentq(
      lambda df: scipy_stats.t.isf((1 - CONFIDENCE) / 2, df) - critical, low, high))


@functools.lru_cache(maxsize=4096)
def _noncentrality(df: float) -> float:
  """The noncentrality at which a two-sided 5% t-test with `df` degrees of freedom has 80%
  power (the far tail is negligible there)."""
  critical = scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, df)
  return optimize.brentq(lambda nc: scipy_stats.nct.sf(critical, df, nc) - POWER, 0.0, 100.0)


def detectable(seed_variance: float, image_variance: float, num_seeds: int,
               num_images: int) -> float:
  """The smallest effect the interval excludes 0 for with 80% power at `num_seeds` seeds, for
  a seed-mean variance and a shared image variance (the latter does not shrink with the seeds):
  the noncentral t at the Cochran–Cox critical value's degrees of freedom."""
  if num_seeds < 2 or not math.isfinite(seed_variance):
    return math.nan
  seed_term = seed_variance / num_seeds
  variance = seed_term + image_variance
  if variance <= 0:
    return math.nan
  df = effective_df(seed_term, image_variance, num_seeds, num_images)
  return _noncentrality(round(df, 1)) * math.sqrt(variance)


def paired_effect(differences) -> Effect:
  """The effect of per-image differences `differences[seed, image]` (NaN where undefined).

  The interval and p-value are the crossed random-effects t-interval of the module docstring,
  on the images measured in every seed. With one image per seed (no per-image values), the
  interval is the t-interval over seeds and the p-value that of a one-sample t-test over seeds.
  """
  d = np.asarray(differences, np.float64)
  if d.ndim == 1:
    d = d[:, None]
  d = d[np.isfinite(d).any(axis=1)][:, np.isfinite(d).any(axis=0)]
  num_seeds, num_images = d.shape
  if not d.size:
    return Effect(math.nan, math.nan, math.nan, math.nan, num_seeds, num_images)
  with np.errstate(all='ignore'), warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    seed_means = np.nanmean(d, axis=1)
  complete = d[:, np.isfinite(d).all(axis=0)]
  if complete.shape[1] < 2:  # no image in every seed twice: the seed means alone
    complete = seed_means[:, None]
  num_images = complete.shape[1]
  mean = float(complete.mean())
  same_sign = int(np.sum(np.sign(seed_means) == np.sign(mean)))
  if num_seeds < 2:
    return Effect(mean, math.nan, math.nan, math.nan, num_seeds, num_images, same_sign)
  if num_images == 1:
    values = complete[:, 0]
    stat = summarize(values)
    seed_variance = float(np.var(values, ddof=1))
    return Effect(mean, stat.low, stat.high, _t_test(values), num_seeds, 1, same_sign,
                  num_seeds - 1, seed_variance)
  seed_variance, image_variance = (float(v) for v in crossed_variance(complete))
  seed_term = seed_variance / num_seeds
  df = effective_df(seed_term, image_variance, num_seeds, num_images)
  if seed_term + image_variance <= 0:  # every difference the same: nothing to test against
    return Effect(mean, mean, mean, math.nan, num_seeds, num_images, same_sign, df,
                  seed_variance, image_variance)
  low, high = interval(mean, seed_variance, image_variance, num_seeds, num_images)
  p = _p_value(abs(mean) / math.sqrt(seed_term + image_variance), seed_term, image_variance,
               num_seeds, num_images)
  return Effect(mean, float(low), float(high), p, num_seeds, num_images, same_sign, df,
                seed_variance, image_variance)


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
