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
import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from pejax.evaluation import convergence
from pejax.reporting import paired_statistics
from pejax.reporting.aggregation import (ANY, Setting, datasets_of, encoding_label, has_shifts,
                                         paired_differences, paired_values, pe_label,
                                         pe_of_interest, pe_sorted, select, standard)
from pejax.evaluation.grid_results import NOISES, noise_dice, noise_drop, shift_dice
from pejax.reporting.paired_statistics import combine, paired_effect, verdict

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

# "Far above" in the small-CNN claim: the interval of PE − no PE must lie above this.
FAR_MARGIN = 0.1

HOLDS, FAILS, INCONCLUSIVE = paired_statistics.HOLDS, paired_statistics.FAILS, paired_statistics.INCONCLUSIVE
NOT_MEASURED, NOT_ASSESSED = 'not measured', 'not assessed'
# A dataset's claims are decided only if its models learnt it: the best setting's mean clean
# Dice must beat the averaged-mask baseline by this much, and its Dice of every class must be
# above the baseline's. Claims about untrained models (e.g. a scale too small for the data)
# would be noise, whichever way they came out.
LEARNT_MARGIN = 0.05

RULE = ('Each claim is a set of paired comparisons of two settings across the test images and '
        'seeds run in both (a claim\'s quantity per image, e.g. the noise drop; per run where '
        'no per-image values were written): the effect is the mean difference; its 95% interval '
        'is a t-interval whose variance has a seed part (the spread of the seeds\' mean '
        'differences over the number of seeds) and an image part (the images\' effect shared '
        'by the seeds), with Cochran and Cox\'s critical value: about t with seeds − 1 degrees '
        'of freedom where the seeds dominate (calibration: docs/statistics.md). A comparison '
        '**holds** if the interval lies entirely on the claimed side, **does not hold** if it '
        'lies entirely on the other side, and is **inconclusive** otherwise; a claim holds if all '
        'its comparisons hold and does not hold if any does not. "Detectable" is the smallest '
        'effect (distance from the margin) these seeds would find with 80% power at the '
        'measured spread; an inconclusive comparison says how many seeds an effect of the size '
        'measured would need.')


class Verdict(NamedTuple):
  """A claim's verdict on one dataset, with the numbers it rests on."""
  claim: str
  dataset: str
  status: str     # HOLDS, FAILS, NOT_MEASURED or NOT_ASSESSED
  numbers: str
  # Which settings the verdict rests on had runs that did not converge (`pejax.evaluation.convergence`),
  # e.g. 'PE λ=256 not converged in 2 of 3 seeds'; '' where every run converged.
  convergence: str = ''
  # An inconclusive verdict: the seeds at which its undecided comparisons' effects, as large as
  # measured, would be found with 80% power (inf: more than paired_statistics.MAX_SEEDS); NaN
  # where decided or nothing was measured.
  seeds_needed: float = math.nan


@dataclasses.dataclass(frozen=True)
class Claim:
  name: str
  text: str
  rule: str
  # (settings, dataset) -> (status, numbers, the settings compared).
  check: Callable[[Sequence[Setting], str], tuple[str, str, list[Setting]]]


# A claim's quantities, per image (from a run's per-image row {(condition, level): Dice}) and
# per run (from its results), for `aggregation.paired_values`.


def _top_level(row: Mapping, condition: str) -> int:
  return max(level for name, level in row if name == condition)


def _image_clean(row):
  return row[('clean', 0)]


def _image_noise_dice(row):
  return float(np.mean([row[(name, _top_level(row, name))] for name in NOISES]))


def _image_noise_drop(row):
  return _image_clean(row) - _image_noise_dice(row)


def _image_shift_dice(row):
  return float(np.mean([v for (name, level), v in row.items()
                        if name.startswith('shift_') and level != 0]))


def _run_clean(run):
  return run.results.test['dice']


CLEAN = (_image_clean, _run_clean)
NOISE_DICE = (_image_noise_dice, lambda run: noise_dice(run.robustness))
NOISE_DROP = (_image_noise_drop, lambda run: noise_drop(run.robustness))
SHIFT_DICE = (_image_shift_dice, lambda run: shift_dice(run.robustness))


def compare(a: Setting, b: Setting, quantity, label: str, margin: float = 0.0
             ) -> tuple[str, str, float]:
  """The verdict of "A − B > margin" for a quantity, its numbers and `seeds_to_decide`."""
  return judged(paired_effect(paired_differences(a, b, *quantity)), label, margin)


def judged(effect: paired_statistics.Effect, label: str, margin: float = 0.0,
           status: str | None = None) -> tuple[str, str, float]:
  """(status, numbers, seeds needed) of a comparison: `status` (default: the verdict of "effect
  > margin"), the effect described, and where inconclusive the seeds an effect of the size
  measured would need (`seeds_to_decide`), also said in the numbers."""
  status = status or verdict(effect, margin)
  numbers = f'{label} {effect.describe()}'
  if status != INCONCLUSIVE:
    return status, numbers, math.nan
  needed = seeds_to_decide(effect, abs(effect.mean - margin))
  return status, numbers + seeds_note(needed), needed


def seeds_to_decide(effect: paired_statistics.Effect, distance: float) -> float:
  """The seeds at which an effect `distance` from the margin would be found with 80% power at
  the measured spread: inf beyond paired_statistics.MAX_SEEDS, NaN where nothing was measured."""
  if not (math.isfinite(distance) and math.isfinite(effect.seed_variance)):
    return math.nan
  needed = effect.seeds_for(distance)
  return math.inf if needed is None else float(needed)


def seeds_note(needed: float) -> str:
  if math.isnan(needed):
    return ''
  if math.isinf(needed):
    return (f' (as large as measured, more than {paired_statistics.MAX_SEEDS} seeds would be '
            'needed)')
  return f' (as large as measured, {needed:.0f} seeds would find it with 80% power)'


def claim_result(comparisons: Sequence[tuple], means: str, used: Sequence[Setting]
                 ) -> tuple[str, str, list[Setting], float]:
  """A claim's (status, numbers, settings, seeds needed) from its comparisons: (status,
  numbers) or (status, numbers, seeds needed) each."""
  status = combine([comparison[0] for comparison in comparisons])
  needed = [comparison[2] for comparison in comparisons
            if len(comparison) > 2 and comparison[0] == INCONCLUSIVE]
  needed = max(needed) if status == INCONCLUSIVE and needed else math.nan
  return status, '; '.join([means] + [comparison[1] for comparison in comparisons]), list(
      used), needed


def means_line(settings: Sequence[Setting], quantity, name: str) -> str:
  values = [np.nanmean(paired_values([s], *quantity)) for s in settings]
  return f'{name}: ' + ', '.join(f'{encoding_label(s)} {v:.3f}' for s, v in zip(settings, values))


def _check_noise(settings, dataset):
  chosen = [s for s in pe_sorted(standard(settings, dataset, 'unet')) if s.robust_runs]
  if len(chosen) < 2 or chosen[0].pe is not None:
    return NOT_MEASURED, 'needs U-Net runs without PE and with PE, with robustness grids', []
  comparisons = [compare(chosen[0], chosen[-1], NOISE_DROP,
                          f'drop no PE − {pe_label(chosen[-1].pe)}')]
  # "More with larger λ": no step along λ may raise the drop (reversed, interval below 0); with
  # two settings the one step is the comparison above.
  for before, after in zip(chosen, chosen[1:]) if len(chosen) > 2 else ():
    effect = paired_effect(paired_differences(before, after, *NOISE_DROP))
    comparisons.append(judged(effect, f'drop {pe_label(before.pe)} − {pe_label(after.pe)}',
                              status=FAILS if verdict(effect) == FAILS else HOLDS))
  return claim_result(comparisons, means_line(chosen, NOISE_DROP, 'noise drop'), chosen)


def _check_clean_cost(settings, dataset):
  chosen = pe_sorted(standard(settings, dataset, 'unet'))
  if len(chosen) < 2 or chosen[0].pe is not None:
    return NOT_MEASURED, 'needs U-Net runs without and with PE', []
  compared = [chosen[0], chosen[-1]]
  return claim_result([compare(*compared, CLEAN, f'clean Dice no PE − {pe_label(chosen[-1].pe)}')],
                 means_line(compared, CLEAN, 'clean Dice'), compared)


def _check_padding(settings, dataset):
  chosen = [s for s in standard(settings, dataset, 'unet', padding=ANY) if s.robust_runs]
  pe = pe_of_interest([s for s in chosen if s.padding == 'reflect'])
  found = {(s.padding, s.pe): s for s in chosen if s.padding in ('zeros', 'reflect')}
  if pe is None or not all((padding, q) in found for padding in ('zeros', 'reflect')
                           for q in (None, pe)):
    return NOT_MEASURED, ('needs U-Net runs with zero and reflection padding, without PE and '
                          'with PE, with robustness grids'), []
  # Named, not positional: the gap is zero − reflection padding at the same PE setting.
  compared = {name: found[key] for name, key in (
      ('zeros_nope', ('zeros', None)), ('reflect_nope', ('reflect', None)),
      ('zeros_pe', ('zeros', pe)), ('reflect_pe', ('reflect', pe)))}
  values = dict(zip(compared, paired_values(list(compared.values()), *NOISE_DICE)))
  gap_without = values['zeros_nope'] - values['reflect_nope']
  gap_with = values['zeros_pe'] - values['reflect_pe']
  without = paired_effect(gap_without)
  closing = paired_effect(gap_without - gap_with)
  means = (f'noise Dice zero/reflection padding: no PE {np.nanmean(values["zeros_nope"]):.3f}/'
           f'{np.nanmean(values["reflect_nope"]):.3f}, {pe_label(pe)} '
           f'{np.nanmean(values["zeros_pe"]):.3f}/{np.nanmean(values["reflect_pe"]):.3f}')
  return claim_result([judged(without, 'gap (zero − reflection) without PE'),
                       judged(closing, f'gap without PE − gap with {pe_label(pe)}')],
                      means, compared.values())


def _check_shift(settings, dataset):
  chosen = [s for s in pe_sorted(standard(settings, dataset, 'unet')) if has_shifts(s)]
  if len(chosen) < 2 or chosen[0].pe is not None:
    return NOT_MEASURED, 'needs U-Net runs without and with PE, with a shift grid', []
  return claim_result([compare(chosen[0], s, SHIFT_DICE, f'no PE − {pe_label(s.pe)}')
                  for s in chosen[1:]], means_line(chosen, SHIFT_DICE, 'mean Dice over shifts'),
                 chosen)


def _check_small_cnn(settings, dataset):
  chosen = standard(settings, dataset, 'cnn4')
  pe = pe_of_interest(chosen)
  without = select(chosen, pe=None)
  with_pe = select(chosen, pe=pe) if pe is not None else []
  if not without or not with_pe:
    return NOT_MEASURED, 'needs small-CNN runs without and with PE', []
  lifted = compare(with_pe[0], without[0], CLEAN, f'clean Dice {pe_label(pe)} − no PE',
                    margin=FAR_MARGIN)
  # The averaged mask of a run's training set is fixed: PE's per-image Dice against its mean,
  # seed by seed (both from `paired_values`, so in the same order).
  dice = paired_values(with_pe, *CLEAN)[0]
  masks = paired_values(with_pe, None,
                        lambda run: (run.results.test_averaged_mask or {}).get('dice'))[0]
  above = paired_effect(dice - masks)
  means = means_line([without[0], with_pe[0]], CLEAN, 'clean Dice') + (
      f', averaged mask {np.nanmean(masks):.3f}')
  return claim_result([lifted, judged(above, f'{pe_label(pe)} − averaged mask')], means,
                      [without[0], with_pe[0]])


def _check_small_data(settings, dataset):
  chosen = standard(settings, dataset, 'unet', num_train_examples=ANY)
  subsets = [s for s in chosen if s.num_train_examples is not None]
  pe = pe_of_interest(subsets)
  comparisons, means, used = [], [], []
  for size in sorted({s.num_train_examples for s in subsets}, reverse=True):
    without = select(subsets, num_train_examples=size, pe=None)
    with_pe = select(subsets, num_train_examples=size, pe=pe)
    if without and with_pe and pe is not None:
      comparisons.append(compare(with_pe[0], without[0], CLEAN,
                                  f'{size} images, {pe_label(pe)} − no PE'))
      means.append(f'{size} images ' + means_line([without[0], with_pe[0]], CLEAN, 'clean Dice'))
      used += [without[0], with_pe[0]]
  if not comparisons:
    return NOT_MEASURED, 'needs U-Net runs on training subsets, without and with PE', []
  return claim_result(comparisons, '; '.join(means), used)


CLAIMS = (
    Claim('noise_robustness', 'PE raises robustness to noise, more with larger λ (Fig. 2)',
          'U-Net, zero padding, all data; noise drop = clean Dice − mean Dice under Gaussian '
          'and shot noise at severity 5; comparisons: drop without PE − drop with the largest λ '
          '> 0, and along increasing λ no step whose drop rises (interval of the step below 0)',
          _check_noise),
    Claim('clean_cost', 'The largest λ costs some Dice on clean images (Table 1)',
          'U-Net, zero padding, all data; comparison: clean Dice without PE − with the largest '
          'λ > 0', _check_clean_cost),
    Claim('reflection_padding', 'Reflection padding without PE is less robust than zero '
          'padding (paper: JSRT); PE closes the gap (Fig. 4)',
          'U-Net, all data; noise Dice = mean Dice under Gaussian and shot noise at severity 5; '
          'gap = zero − reflection padding; comparisons: gap without PE > 0, and gap without '
          'PE − gap with PE (λ=256 or the largest λ) > 0', _check_padding),
    Claim('shift', 'Under x-shifts the U-Net without PE does better than with PE (Fig. 5)',
          'U-Net, zero padding, all data; mean Dice over every nonzero shift; comparisons: no '
          'PE − each PE setting > 0', _check_shift),
    Claim('small_cnn', 'Small CNN: PE lifts Dice far above no PE and above the averaged mask '
          '(Sec. 3.2)',
          f'small CNN, zero padding, all data; comparisons: clean Dice with PE (λ=256 or the '
          f'largest λ) − without PE > {FAR_MARGIN}, and clean Dice with PE − the averaged-mask '
          'Dice > 0', _check_small_cnn),
    Claim('small_data', 'With 5/10 training images PE helps the U-Net (Table 2)',
          'U-Net, zero padding; comparisons: for every training subset, clean Dice with PE '
          '(λ=256 or the largest λ) − without PE > 0', _check_small_data),
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
                    learnt_reference: Sequence[Setting] | None = None,
                    claims: Sequence[Claim] = CLAIMS) -> list[Verdict]:
  """One verdict per claim (default: the paper's) and dataset among `settings`.

  A dataset's claims are not assessed if no setting of `learnt_reference` (default:
  `settings`; the report passes every part, so that e.g. small-CNN runs at another scale are
  judged by whether anything learnt the dataset) learnt it.
  """
  reference = settings if learnt_reference is None else learnt_reference
  not_learnt = {dataset: _not_learnt(reference, dataset) for dataset in datasets_of(settings)}
  verdicts = []
  for claim in claims:
    for dataset in datasets_of(settings):
      status, numbers, used, *needed = claim.check(settings, dataset)
      needed = needed[0] if needed else math.nan
      if not_learnt[dataset] and status != NOT_MEASURED:
        status, numbers, needed = NOT_ASSESSED, not_learnt[dataset], math.nan
      verdicts.append(Verdict(claim.name, dataset, status, numbers, convergence_note(used),
                              needed))
  return verdicts


def convergence_note(used: Sequence[Setting]) -> str:
  """Which of the compared settings have runs that did not converge, or whose convergence is
  not known, e.g. 'PE λ=256 not converged in 2 of 3 seeds'; settings with the same counts are
  named together ('no PE, PE λ=256 not converged in 1 of 3 seeds each')."""
  groups: dict[tuple[str, int, int], list[str]] = {}
  for setting in used:
    verdicts = [convergence.of_run(run.results) for run in setting.runs]
    total = len(verdicts)
    states = [v.get('state', convergence.STILL_IMPROVING) for v in verdicts
              if v.get('converged') is False]
    undetermined = convergence.count(verdicts)[1]
    for what, number in (('not converged', states.count(convergence.STILL_IMPROVING)),
                         (f'not converged ({convergence.FALLEN_AWAY})',
                          states.count(convergence.FALLEN_AWAY)),
                         ('convergence unknown', undetermined)):
      if number:
        groups.setdefault((what, number, total), []).append(setting_name(setting, used))
  return '; '.join(f'{", ".join(names)} {what} in {number} of {total} seeds'
                   + (' each' if len(names) > 1 else '')
                   for (what, number, total), names in groups.items())


PADDING_NAMES = {'zeros': 'zero', 'reflect': 'reflection'}


def setting_name(setting: Setting, among: Sequence[Setting]) -> str:
  """The shortest label that tells `setting` apart from the others compared with it."""
  parts = [encoding_label(setting)]
  if len({s.padding for s in among}) > 1:
    parts.insert(0, f'{PADDING_NAMES.get(setting.padding, setting.padding)} padding')
  if len({s.num_train_examples for s in among}) > 1 and setting.num_train_examples:
    parts.insert(0, f'{setting.num_train_examples} images')
  return ', '.join(parts)


def seeds_advice(verdicts: Sequence[Verdict], num_seeds: int) -> str:
  """The report's recommendation of a seed count: what the inconclusive verdicts would need if
  their effects are as large as measured ('' where nothing was judged)."""
  judged_verdicts = [v for v in verdicts if v.status in (HOLDS, FAILS, INCONCLUSIVE)]
  if not judged_verdicts:
    return ''
  undecided = [v for v in judged_verdicts if v.status == INCONCLUSIVE]
  text = (f'**Seeds for a decision** (this sweep: {num_seeds}): ')
  if not undecided:
    return text + f'every claim judged was decided at {num_seeds} seeds.'
  decidable = [v for v in undecided if math.isfinite(v.seeds_needed)]
  names = lambda found: ', '.join(f'{v.claim} ({v.dataset})' for v in found)
  parts = []
  if decidable:
    most = max(int(v.seeds_needed) for v in decidable)
    parts.append(f'{most} seeds would decide {names(decidable)} with 80% power if the effects '
                 'are as large as measured here')
  beyond = [v for v in undecided if math.isinf(v.seeds_needed)]
  if beyond:
    parts.append(f'{names(beyond)} would need more than {paired_statistics.MAX_SEEDS} seeds: '
                 'an effect that small against the spread of training runs (or of the test '
                 'images, which seeds do not average away) is not worth deciding by seeds')
  unknown = [v for v in undecided if math.isnan(v.seeds_needed)]
  if unknown:
    parts.append(f'{names(unknown)}: no spread measured (one seed, or no interval)')
  return text + '; '.join(parts) + '. The measured spread of 2–3 seeds is itself uncertain: ' \
      'these are planning figures (docs/statistics.md).'


def describe(verdict: Verdict) -> str:
  """A verdict as the report lists it: status, the convergence caveat if any, the numbers."""
  caveat = f' (caution: {verdict.convergence})' if verdict.convergence else ''
  return f'**{verdict.status}**{caveat} — {verdict.numbers}'
