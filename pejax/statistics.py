"""Statistics a reviewer expects of a reproduction: intervals over seeds, and paired
comparisons of two settings across test images and seeds with an effect size and its interval.

Conventions (stated in the report):
- Over seeds: the sample standard deviation (ddof=1) and a 95% t-interval of the mean.
- A paired comparison of settings A and B takes per-image Dice differences d[s, i] = A − B for
  every seed s run in both and every test image i (a claim's quantity per image, e.g. the noise
  drop). The effect is their mean; its 95% interval is a two-level bootstrap that resamples
  seeds and images with replacement, so that both sources of variation are in it. A Wilcoxon
  signed-rank test on the per-image differences averaged over seeds gives a p-value beside it.
- A verdict: **holds** if the interval lies entirely on the claimed side of the margin, **does
  not hold** if it lies entirely on the other side, **inconclusive** otherwise.
"""

from __future__ import annotations

import dataclasses
import math
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
  """A paired difference A − B: its mean, 95% interval, Wilcoxon p-value and sample sizes."""
  mean: float
  low: float
  high: float
  p_value: float
  num_seeds: int
  num_images: int

  def describe(self, digits: int = 3) -> str:
    p = '' if not math.isfinite(self.p_value) else f', Wilcoxon p = {self.p_value:.2g}'
    sample = (f'{self.num_seeds} seeds × {self.num_images} images' if self.num_images > 1
              else f'{self.num_seeds} seeds, per run')
    return (f'{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] '
            f'({sample}{p})')


def paired_effect(differences, *, resamples: int = BOOTSTRAP_RESAMPLES,
                  seed: int = BOOTSTRAP_SEED) -> Effect:
  """The effect of per-image differences `differences[seed, image]` (NaN where undefined).

  With one image per seed (no per-image values), the interval is the t-interval over seeds.
  """
  d = np.asarray(differences, np.float64)
  if d.ndim == 1:
    d = d[:, None]
  d = d[np.isfinite(d).any(axis=1)][:, np.isfinite(d).any(axis=0)]
  num_seeds, num_images = d.shape
  if not d.size or not np.isfinite(d).any():
    return Effect(math.nan, math.nan, math.nan, math.nan, num_seeds, num_images)
  mean = float(np.nanmean(d))
  if num_images == 1:
    stat = summarize(d[:, 0])
    return Effect(mean, stat.low, stat.high, math.nan, num_seeds, 1)
  rng = np.random.default_rng(seed)
  seed_draws = rng.integers(0, num_seeds, (resamples, num_seeds))
  image_draws = rng.integers(0, num_images, (resamples, num_images))
  with np.errstate(all='ignore'):
    means = np.array([np.nanmean(d[np.ix_(s, i)]) for s, i in zip(seed_draws, image_draws)])
  tail = (1 - CONFIDENCE) / 2
  low, high = np.nanquantile(means, [tail, 1 - tail])
  return Effect(mean, float(low), float(high), _wilcoxon(np.nanmean(d, axis=0)), num_seeds,
                num_images)


def _wilcoxon(per_image) -> float:
  per_image = per_image[np.isfinite(per_image)]
  if per_image.size < 2 or not np.any(per_image):
    return math.nan
  return float(scipy_stats.wilcoxon(per_image).pvalue)


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
