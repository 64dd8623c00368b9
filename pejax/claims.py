"""The paper's numbers and qualitative claims, and the rules that judge a sweep against them.

Murase, Suganuma, Okatani, "How can CNNs use image position for segmentation?" (arXiv
2005.03463). What the code relies on:

- Positional encoding: two channels I1(i, j) = λ·i/(W−1), I2(i, j) = λ·j/(H−1) appended to the
  gray-scale input, λ ∈ {1, 10, 256}; "no PE" is the plain 1-channel input.
- Models: U-Net (Table 3) and a small CNN (Table 4), 3×3 convolutions padded by 1 (zero
  padding by default; reflection padding in Sec. 3.4). Training: softmax cross-entropy, Adam,
  learning rate 1e-3, batch 20, 100 epochs, clean images only.
- Dice: per image, the mean over the foreground classes (a class absent from both prediction
  and ground truth is skipped), then the mean over test images. Averaged-mask baseline: the
  per-pixel argmax of the mean one-hot training mask, predicted for every test image.
- Corruptions at severities 1..5 with Tiny-ImageNet-C's parameters (`pejax.choices`); shifts of
  test images and masks along x (Fig. 5).
- Table 1 (Dice, mean ± std): JSRT averaged mask 0.8124, U-Net w/o PE 0.9673 ± 0.0011, λ=1
  0.9649 ± 0.0012, λ=10 0.9637 ± 0.0003, λ=256 0.9599 ± 0.0023; ACDC averaged mask 0.158,
  w/o PE 0.8496 ± 0.0133, λ=1 0.8582 ± 0.0100, λ=10 0.8557 ± 0.0035, λ=256 0.8347 ± 0.0161.
- Table 2 (JSRT U-Net, w/o PE | λ=256): 156 images 0.9673 | 0.9599; 10 images 0.8813 ± 0.0175
  | 0.9020 ± 0.0027; 5 images 0.8700 ± 0.0170 | 0.8774 ± 0.0055.
- Sec. 3.2, small CNN, clean: w/o PE ≈ 0.5 (JSRT), < 0.1 (ACDC); λ=256 ≈ 0.9 (JSRT), ≈ 0.55
  (ACDC).
- Qualitative claims (`CLAIMS`): PE raises robustness to noise, more with larger λ, at some
  cost on clean images; reflection padding without PE is less robust than zero padding on
  JSRT and PE closes that gap; under x-shifts the U-Net without PE does better than with PE;
  PE lifts the small CNN; with 5 or 10 training images PE helps.

Each claim is judged per dataset by the rule stated beside it (`Claim.rule`), on means over
seeds; a dataset whose models did not beat the averaged-mask baseline is not assessed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from pejax.aggregation import (ANY, Setting, Stat, datasets_of, has_shifts, pe_label,
                               pe_of_interest, pe_sorted, select, standard)
from pejax.robustness import noise_dice, noise_drop, shift_dice

# The paper's numbers (see the module docstring) as (mean, std); std None where the paper gives none.
# Keys: 'averaged_mask', None (no PE) or λ.
PAPER_TABLE1 = {
    'jsrt': {'averaged_mask': (0.8124, None), None: (0.9673, 0.0011), 1.0: (0.9649, 0.0012),
             10.0: (0.9637, 0.0003), 256.0: (0.9599, 0.0023)},
    'acdc': {'averaged_mask': (0.158, None), None: (0.8496, 0.0133), 1.0: (0.8582, 0.0100),
             10.0: (0.8557, 0.0035), 256.0: (0.8347, 0.0161)},
}
# Sec. 3.2 gives the small CNN's clean Dice only approximately.
PAPER_SMALL_CNN = {
    'jsrt': {'averaged_mask': '0.8124', None: '≈ 0.5', 256.0: '≈ 0.9'},
    'acdc': {'averaged_mask': '0.158', None: '< 0.1', 256.0: '≈ 0.55'},
}
# Table 2 (JSRT only): training images (None = all 156) -> {None: no PE, 256.0: PE}.
PAPER_TABLE2 = {
    'jsrt': {None: {None: (0.9673, 0.0011), 256.0: (0.9599, 0.0023)},
             10: {None: (0.8813, 0.0175), 256.0: (0.9020, 0.0027)},
             5: {None: (0.8700, 0.0170), 256.0: (0.8774, 0.0055)}},
}

# Dice differences below this count as ties where the paper's claim is an ordering of many
# settings (the λ series of Figure 2) or a gap that must exist (Figure 4).
TIE_MARGIN = 0.01
# "Far above" in the small-CNN claim.
FAR_MARGIN = 0.1

HOLDS, FAILS, NOT_MEASURED = 'holds', 'does not hold', 'not measured'
NOT_ASSESSED = 'not assessed'
# A dataset's claims are decided only if its models learnt it: the best setting's mean clean
# Dice must beat the averaged-mask baseline by this much, and its Dice of every class must be
# above the baseline's. Claims about untrained models (e.g. a scale too small for the data)
# would be noise, whichever way they came out.
LEARNT_MARGIN = 0.05


class Verdict(NamedTuple):
  """A claim's verdict on one dataset, with the numbers it rests on."""
  claim: str
  dataset: str
  status: str     # HOLDS, FAILS, NOT_MEASURED or NOT_ASSESSED
  numbers: str


@dataclasses.dataclass(frozen=True)
class Claim:
  name: str
  text: str
  rule: str
  check: Callable[[Sequence[Setting], str], tuple[str, str]]


def _mean(stat: Stat) -> float:
  return stat.mean if stat.n else float('nan')


def _check_noise(settings, dataset):
  chosen = [s for s in pe_sorted(standard(settings, dataset, 'unet')) if s.robust_runs]
  drops = [(s.pe, _mean(s.per_run(noise_drop))) for s in chosen]
  drops = [(pe, d) for pe, d in drops if np.isfinite(d)]
  if not drops or drops[0][0] is not None or len(drops) < 2:
    return NOT_MEASURED, 'needs U-Net runs without PE and with PE, with robustness grids'
  numbers = ', '.join(f'{pe_label(pe)} {d:.3f}' for pe, d in drops)
  lowers = drops[-1][1] < drops[0][1] - TIE_MARGIN
  ordered = all(b[1] <= a[1] + TIE_MARGIN for a, b in zip(drops, drops[1:]))
  return (HOLDS if lowers and ordered else FAILS), f'noise drop: {numbers}'


def _check_clean_cost(settings, dataset):
  chosen = pe_sorted(standard(settings, dataset, 'unet'))
  without = [s for s in chosen if s.pe is None]
  with_pe = [s for s in chosen if s.pe is not None]
  if not without or not with_pe:
    return NOT_MEASURED, 'needs U-Net runs without and with PE'
  clean_without, clean_top = _mean(without[0].test()), _mean(with_pe[-1].test())
  numbers = (f'clean Dice no PE {clean_without:.4f}, {pe_label(with_pe[-1].pe)} '
             f'{clean_top:.4f}')
  return (HOLDS if clean_top < clean_without else FAILS), numbers


def _check_padding(settings, dataset):
  chosen = [s for s in standard(settings, dataset, 'unet', padding=ANY) if s.robust_runs]
  pe = pe_of_interest([s for s in chosen if s.padding == 'reflect'])
  score = {}
  for s in chosen:
    if s.padding in ('zeros', 'reflect') and s.pe in (None, pe):
      score[(s.padding, s.pe)] = _mean(s.per_run(noise_dice))
  needed = [(p, q) for p in ('zeros', 'reflect') for q in (None, pe)]
  if pe is None or not all(np.isfinite(score.get(key, np.nan)) for key in needed):
    return NOT_MEASURED, ('needs U-Net runs with zero and reflection padding, without PE and '
                          'with PE, with robustness grids')
  gap_without = score[('zeros', None)] - score[('reflect', None)]
  gap_with = score[('zeros', pe)] - score[('reflect', pe)]
  numbers = (f'noise Dice zero/reflect: no PE {score[("zeros", None)]:.3f}/'
             f'{score[("reflect", None)]:.3f} (gap {gap_without:+.3f}), {pe_label(pe)} '
             f'{score[("zeros", pe)]:.3f}/{score[("reflect", pe)]:.3f} (gap {gap_with:+.3f})')
  holds = gap_without > TIE_MARGIN and abs(gap_with) <= gap_without / 2
  return (HOLDS if holds else FAILS), numbers


def _check_shift(settings, dataset):
  chosen = [s for s in pe_sorted(standard(settings, dataset, 'unet')) if has_shifts(s)]
  values = [(s.pe, _mean(s.per_run(shift_dice))) for s in chosen]
  values = [(pe, v) for pe, v in values if np.isfinite(v)]
  if not values or values[0][0] is not None or len(values) < 2:
    return NOT_MEASURED, 'needs U-Net runs without and with PE, with a shift grid'
  numbers = 'mean Dice over shifts: ' + ', '.join(f'{pe_label(pe)} {v:.3f}' for pe, v in values)
  holds = all(values[0][1] > v for _, v in values[1:])
  return (HOLDS if holds else FAILS), numbers


def _check_small_cnn(settings, dataset):
  chosen = standard(settings, dataset, 'cnn4')
  pe = pe_of_interest(chosen)
  without = select(chosen, pe=None)
  with_pe = select(chosen, pe=pe) if pe is not None else []
  if not without or not with_pe:
    return NOT_MEASURED, 'needs small-CNN runs without and with PE'
  clean_without, clean_pe = _mean(without[0].test()), _mean(with_pe[0].test())
  mask = _mean(Setting({}, without[0].runs + with_pe[0].runs).averaged_mask())
  numbers = (f'clean Dice no PE {clean_without:.3f}, {pe_label(pe)} {clean_pe:.3f}, '
             f'averaged mask {mask:.3f}')
  holds = clean_pe - clean_without >= FAR_MARGIN and clean_pe > mask
  return (HOLDS if holds else FAILS), numbers


def _check_small_data(settings, dataset):
  chosen = standard(settings, dataset, 'unet', num_train_examples=ANY)
  subsets = [s for s in chosen if s.num_train_examples is not None]
  pe = pe_of_interest(subsets)
  comparisons = []
  for size in sorted({s.num_train_examples for s in subsets}, reverse=True):
    without = select(subsets, num_train_examples=size, pe=None)
    with_pe = select(subsets, num_train_examples=size, pe=pe)
    if without and with_pe and pe is not None:
      comparisons.append((size, _mean(without[0].test()), _mean(with_pe[0].test())))
  if not comparisons:
    return NOT_MEASURED, 'needs U-Net runs on training subsets, without and with PE'
  numbers = '; '.join(f'{size} images: no PE {a:.4f}, {pe_label(pe)} {b:.4f}'
                      for size, a, b in comparisons)
  return (HOLDS if all(b > a for _, a, b in comparisons) else FAILS), numbers


CLAIMS = (
    Claim('noise_robustness', 'PE raises robustness to noise, more with larger λ (Fig. 2)',
          'U-Net, zero padding, all data; noise drop = clean Dice − mean Dice under Gaussian '
          'and shot noise at severity 5 (means over seeds); holds if the largest λ drops less '
          f'than no PE by more than {TIE_MARGIN} and the drop never rises by more than '
          f'{TIE_MARGIN} from no PE through increasing λ', _check_noise),
    Claim('clean_cost', 'The largest λ costs some Dice on clean images (Table 1)',
          'U-Net, zero padding, all data; holds if the clean Dice with the largest λ is below '
          'that without PE', _check_clean_cost),
    Claim('reflection_padding', 'Reflection padding without PE is less robust than zero '
          'padding (paper: JSRT); PE closes the gap (Fig. 4)',
          'U-Net, all data; noise Dice = mean Dice under Gaussian and shot noise at severity 5; '
          f'gap = zero − reflection; holds if the gap without PE exceeds {TIE_MARGIN} and the '
          'gap with PE (λ=256 or the largest λ) is at most half of it in size', _check_padding),
    Claim('shift', 'Under x-shifts the U-Net without PE does better than with PE (Fig. 5)',
          'U-Net, zero padding, all data; mean Dice over every nonzero shift; holds if no PE '
          'is above every PE setting', _check_shift),
    Claim('small_cnn', 'Small CNN: PE lifts Dice far above no PE and above the averaged mask '
          '(Sec. 3.2)',
          f'small CNN, zero padding, all data; holds if clean Dice with PE (λ=256 or the '
          f'largest λ) exceeds that without PE by at least {FAR_MARGIN} and exceeds the '
          'averaged-mask Dice', _check_small_cnn),
    Claim('small_data', 'With 5/10 training images PE helps the U-Net (Table 2)',
          'U-Net, zero padding; holds if for every training subset run, clean Dice with PE '
          '(λ=256 or the largest λ) is above that without PE', _check_small_data),
)


def _not_learnt(settings: Sequence[Setting], dataset: str) -> str | None:
  """Why the dataset's claims cannot be assessed (its best setting does not beat the averaged
  mask, overall by LEARNT_MARGIN and in every class), or None."""
  members = [s for s in settings if s.dataset == dataset and np.isfinite(s.test().mean)]
  if not members:
    return None
  best = max(members, key=lambda s: s.test().mean)
  best_dice, baseline = best.test().mean, best.averaged_mask().mean
  if not np.isfinite(baseline):
    return None
  shortfalls = []
  if best_dice < baseline + LEARNT_MARGIN:
    shortfalls.append(f'mean Dice {best_dice:.3f} vs averaged mask {baseline:.3f}')
  for name in best.class_names:
    dice, mask = best.test(f'dice_{name}').mean, best.averaged_mask(f'dice_{name}').mean
    if np.isfinite(dice) and np.isfinite(mask) and dice <= mask:
      shortfalls.append(f'{name} Dice {dice:.3f} vs averaged mask {mask:.3f}')
  if not shortfalls:
    return None
  return (f'the models did not learn this dataset at this scale; best setting '
          f'({best.label}): {"; ".join(shortfalls)}')


def evaluate_claims(settings: Sequence[Setting],
                    learnt_reference: Sequence[Setting] | None = None) -> list[Verdict]:
  """One verdict per claim of the paper and dataset among `settings`.

  A dataset's claims are not assessed if no setting of `learnt_reference` (default:
  `settings`; the report passes every part, so that e.g. small-CNN runs at another scale are
  judged by whether anything learnt the dataset) learnt it.
  """
  reference = settings if learnt_reference is None else learnt_reference
  not_learnt = {dataset: _not_learnt(reference, dataset) for dataset in datasets_of(settings)}
  verdicts = []
  for claim in CLAIMS:
    for dataset in datasets_of(settings):
      status, numbers = claim.check(settings, dataset)
      if not_learnt[dataset] and status != NOT_MEASURED:
        status, numbers = NOT_ASSESSED, not_learnt[dataset]
      verdicts.append(Verdict(claim.name, dataset, status, numbers))
  return verdicts


