"""Report sections and claims beyond the paper: the encoding family and where coordinates enter
(`pejax.models.encoding`), and how much the predictions rely on the encoding (the robustness
grid's encoding conditions: the coordinate channels shifted while the image stays, and
replaced by their mean).

The claims are the questions a follow-up to the paper asks, judged by the paper's rule
(`claims.RULE`): paired over seeds and test images, 95% intervals with a seed and an image part.
"Behaves alike" claims are equivalence claims: a comparison holds if its interval lies within
±`EQUIVALENT`, does not hold if it lies entirely outside, and is inconclusive otherwise.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from pejax.evaluation import figures, grid_results
from pejax.evaluation.probe_results import level_spc
from pejax.evaluation.grid_results import ENCODING_REMOVED, ENCODING_SHIFT_PREFIX
from pejax.reporting import claims
from pejax.reporting.aggregation import (ANY, PAPER_ENCODING, Setting, datasets_of,
                                         encoding_label, paired_differences, paired_values,
                                         standard)
from pejax.reporting.claims import (CLEAN, FAILS, HOLDS, INCONCLUSIVE, NOISE_DROP, NOT_MEASURED,
                                    SHIFT_DICE, Claim, claim_result, compare, judged, means_line,
                                    seeds_note, seeds_to_decide)
from pejax.reporting.paired_statistics import paired_effect
from pejax.reporting.sections import (Context, block, format_stat, markdown_table, section,
                                      title_of)
from pejax.runs import run_files

# Differences of Dice within this are "alike" (a tenth of the paper's clean cost of λ = 256 on
# ACDC, 0.015, and about the seed std of its Table 1).
EQUIVALENT = 0.01
# The padding modes of the leak claim, in the order of its comparisons.
LEAK_PADDINGS = ('zeros', 'reflect', 'replicate', 'circular')


# ------------------------------------------------------------------------ quantities per run


def _image_encoding_shift_dice(row):
  return float(np.mean([v for (name, level), v in row.items()
                        if name.startswith(ENCODING_SHIFT_PREFIX) and level != 0]))


def _image_encoding_removed_dice(row):
  return row[(ENCODING_REMOVED, 0)]


ENCODING_SHIFT_DICE = (_image_encoding_shift_dice,
                       lambda run: grid_results.encoding_shift_dice(run.robustness))
ENCODING_REMOVED_DICE = (_image_encoding_removed_dice,
                         lambda run: grid_results.encoding_removed_dice(run.robustness))


def drop_correlation(grid) -> float:
  """Pearson's r over the nonzero shifts k between the Dice drop (clean − Dice) when only the
  encoding moves by k and when the image moves by k; NaN where either drop does not vary."""
  condition = grid_results.encoding_shift_condition(grid)
  shifts, real = grid_results.shift_curve(grid)
  encoding_shifts, encoding_only = grid_results.shift_curve(grid, condition=condition)
  if shifts != encoding_shifts:
    return math.nan
  pairs = np.array([(r, e) for k, r, e in zip(shifts, real, encoding_only) if k != 0], float)
  if len(pairs) < 3 or np.any(~np.isfinite(pairs)) or np.any(pairs.std(axis=0) < 1e-9):
    return math.nan
  return float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1])


DROP_CORRELATION = (None, lambda run: drop_correlation(run.robustness))


# ------------------------------------------------------------------------------------ claims


def encoding_settings(settings: Sequence[Setting], dataset: str, with_grids: bool = True
                      ) -> list[Setting]:
  """The U-Net settings of a dataset at zero padding and all data, every encoding, with grids
  (or all), no PE first, then by encoding and λ."""
  chosen = [s for s in standard(settings, dataset, 'unet', encoding=ANY)
            if s.robust_runs or not with_grids]
  return sorted(chosen, key=lambda s: (s.pe is not None, s.encoding != PAPER_ENCODING,
                                      str(s.encoding), s.pe or 0.0))


def _find(chosen: Sequence[Setting], kind: str, scale: float, layers: str = 'input'
          ) -> Setting | None:
  for setting in chosen:
    if setting.encoding is not None and setting.encoding[:2] == (kind, layers) \
        and setting.pe == scale:
      return setting
  return None


def equivalent(a: Setting, b: Setting, quantity, label: str, margin: float = EQUIVALENT
               ) -> tuple[str, str, float]:
  """The verdict of "|A − B| < margin" for a quantity, and its numbers."""
  return equivalent_to_zero(paired_differences(a, b, *quantity), label, margin)


def equivalent_to_zero(values, label: str, margin: float) -> tuple[str, str, float]:
  """The verdict of "|mean| < margin" for paired values (seeds, images), its numbers and, where
  inconclusive, the seeds that would settle an effect as large as measured (inside or outside
  the margin: `claims.seeds_to_decide`)."""
  effect = paired_effect(values)
  if not (math.isfinite(effect.low) and math.isfinite(effect.high)):
    status = INCONCLUSIVE
  elif -margin < effect.low and effect.high < margin:
    status = HOLDS
  elif effect.low > margin or effect.high < -margin:
    status = FAILS
  else:
    status = INCONCLUSIVE
    needed = seeds_to_decide(effect, abs(abs(effect.mean) - margin))
    return status, f'{label} {effect.describe()}{seeds_note(needed)}', needed
  return status, f'{label} {effect.describe()}', math.nan


_ROBUSTNESS = ((NOISE_DROP, 'noise drop'), (SHIFT_DICE, 'Dice over shifts'))


def _check_range(settings, dataset):
  chosen = encoding_settings(settings, dataset)
  linear, centered = _find(chosen, 'linear', 2.0), _find(chosen, 'centered', 1.0)
  if linear is None or centered is None:
    return NOT_MEASURED, 'needs U-Net runs with linear λ=2 and centered λ=1, with grids', []
  comparisons = [equivalent(linear, centered, quantity,
                            f'{name} {encoding_label(linear)} − {encoding_label(centered)}')
                 for quantity, name in ((CLEAN, 'clean Dice'),) + _ROBUSTNESS]
  return claim_result(comparisons, means_line([linear, centered], CLEAN, 'clean Dice'),
                      [linear, centered])


def _every_layer_pair(settings, dataset):
  chosen = encoding_settings(settings, dataset)
  every = [s for s in chosen if s.encoding and s.encoding[:2] == ('linear', 'all')]
  for setting in every:
    at_input = _find(chosen, 'linear', setting.pe)
    if at_input is not None:
      return at_input, setting
  return None, None


def _check_every_layer_noise(settings, dataset):
  at_input, every = _every_layer_pair(settings, dataset)
  if at_input is None:
    return NOT_MEASURED, 'needs U-Net runs with linear PE at the input and at every layer', []
  return claim_result([compare(at_input, every, NOISE_DROP, 'noise drop input − every layer')],
                      means_line([at_input, every], NOISE_DROP, 'noise drop'), [at_input, every])


def _check_every_layer_shift(settings, dataset):
  at_input, every = _every_layer_pair(settings, dataset)
  if at_input is None:
    return NOT_MEASURED, 'needs U-Net runs with linear PE at the input and at every layer', []
  return claim_result([compare(at_input, every, SHIFT_DICE,
                               'Dice over shifts input − every layer')],
                      means_line([at_input, every], SHIFT_DICE, 'Dice over shifts'),
                      [at_input, every])


def _check_other_kinds(settings, dataset):
  chosen = encoding_settings(settings, dataset)
  others = [s for s in chosen if s.encoding and s.encoding[0] in ('radial', 'fourier')
            and s.encoding[1] == 'input']
  comparisons, used = [], []
  for other in others:
    linear = _find(chosen, 'linear', other.pe)
    if linear is None:
      continue
    used += [linear, other]
    comparisons += [equivalent(other, linear, quantity,
                               f'{name} {encoding_label(other)} − {encoding_label(linear)}')
                    for quantity, name in _ROBUSTNESS]
  if not comparisons:
    return NOT_MEASURED, 'needs U-Net runs with radial or Fourier PE and linear PE of equal λ', []
  used = list(dict.fromkeys(used))
  return claim_result(comparisons, means_line(used, NOISE_DROP, 'noise drop'), used)


def _check_tracking(settings, dataset):
  chosen = [s for s in encoding_settings(settings, dataset) if s.pe is not None
            and all(grid_results.has_encoding_conditions(run.robustness)
                    for run in s.robust_runs)]
  if not chosen:
    return NOT_MEASURED, 'needs U-Net runs with PE and the grid\'s encoding conditions', []
  comparisons = []
  for setting in chosen:
    effect = paired_effect(paired_values([setting], *DROP_CORRELATION)[0])
    comparisons.append(judged(effect, f'r {encoding_label(setting)}'))
  return claim_result(comparisons, means_line(chosen, ENCODING_SHIFT_DICE,
                                              'Dice with the encoding shifted only'), chosen)


# The position probe (probe.json of each run): SPC, the mean of x and y.
# Without PE a padding "leaks" position where a read-out recovers its order this well from
# content-free inputs at the network's most informative level; on constant inputs a circular
# network must stay within ±`NO_POSITION` of none.
LEAK_SPC = 0.5
NO_POSITION = 0.05
# With PE at the input the first level holds position at the probe's ceiling.
CEILING_SPC = 0.99


def _probe_value(kind: str, level: int | None = None):
  """A per-run quantity of `aggregation.paired_values`: a run's probe SPC (`level_spc`)."""
  def measure(run):
    result = run_files.trained_network_probe(run)
    return None if result is None else level_spc(result, kind, level)
  return None, measure


def _deepest_encoder_level(run) -> int | None:
  result = run_files.trained_network_probe(run)
  names = [level['name'] for level in result['levels']] if result else []
  return len(names) - 1 if names and names[-1] == 'bottleneck' else len(names) or None


def _probed(setting: Setting) -> bool:
  return all(run_files.trained_network_probe(run) for run in setting.runs)


def _check_padding_leak(settings, dataset):
  chosen = [s for s in standard(settings, dataset, 'unet', padding=ANY)
            if s.pe is None and _probed(s)]
  comparisons, used = [], []
  for setting in sorted(chosen, key=lambda s: LEAK_PADDINGS.index(s.padding)
                        if s.padding in LEAK_PADDINGS else len(LEAK_PADDINGS)):
    label = f'{setting.padding} padding'
    if setting.padding == 'circular':
      values = paired_values([setting], *_probe_value('constant'))[0]
      comparisons.append(equivalent_to_zero(values, f'{label}: best SPC, constant inputs',
                                            NO_POSITION))
    else:
      values = paired_values([setting], *_probe_value('content_free'))[0]
      comparisons.append(judged(paired_effect(values), f'{label}: best SPC, content-free',
                                LEAK_SPC))
    used.append(setting)
    if setting.padding == 'zeros':  # and it rises with depth
      deepest = _deepest_encoder_level(setting.runs[0])
      rise = (paired_values([setting], *_probe_value('content_free', deepest))[0]
              - paired_values([setting], *_probe_value('content_free', 1))[0])
      comparisons.append(judged(paired_effect(rise),
                                f'{label}: SPC level {deepest} − level 1, content-free'))
  if not any(s.padding == 'circular' for s in used) or len(used) < 2:
    return NOT_MEASURED, ('needs probed U-Net runs without PE with circular and another '
                          'padding'), []
  return claim_result(comparisons, 'best content-free SPC: ' + ', '.join(
      f'{s.padding} {np.nanmean(paired_values([s], *_probe_value("content_free"))):.3f}'
      for s in used), used)


def _check_probe_ceiling(settings, dataset):
  chosen = [s for s in encoding_settings(settings, dataset, with_grids=False)
            if s.pe is not None and _probed(s)]
  if not chosen:
    return NOT_MEASURED, 'needs probed U-Net runs with PE', []
  comparisons = []
  for setting in chosen:
    effect = paired_effect(paired_values([setting], *_probe_value('content_free', 1))[0])
    comparisons.append(judged(effect, f'{encoding_label(setting)}: level-1 SPC, content-free',
                              CEILING_SPC))
  return claim_result(comparisons, f'ceiling {CEILING_SPC}', chosen)


CLAIMS = (
    Claim('encoding_range', 'At equal span the range does not matter: linear [0, 2] and '
          'centered [−1, 1] behave alike',
          f'U-Net, zero padding, all data; linear λ=2 − centered λ=1 in clean Dice, noise drop '
          f'and mean Dice over shifts ≠ 0, each within ±{EQUIVALENT}', _check_range),
    Claim('every_layer_noise', 'Coordinates at every 3×3 convolution (CoordConv) make the U-Net '
          'more robust to noise than at the input only',
          'U-Net, zero padding, all data, linear PE of equal λ; comparison: noise drop at the '
          'input − at every layer > 0', _check_every_layer_noise),
    Claim('every_layer_shift', 'Coordinates at every 3×3 convolution make the U-Net less '
          'robust to shifts',
          'U-Net, zero padding, all data, linear PE of equal λ; comparison: mean Dice over '
          'shifts ≠ 0 at the input − at every layer > 0', _check_every_layer_shift),
    Claim('other_encodings', 'Radial and Fourier encodings are as robust as linear, to noise '
          'and to shifts',
          f'U-Net, zero padding, all data, equal λ; radial/Fourier − linear in noise drop and '
          f'mean Dice over shifts ≠ 0, each within ±{EQUIVALENT}', _check_other_kinds),
    Claim('padding_leak', 'Without PE, zero, reflect and replicate padding leak absolute '
          'position into the network, more with depth; circular padding (a torus) leaks none',
          f'U-Net without PE, each padding mode, all data; the position probe\'s '
          f'SPC (mean of x and y) at the level where it is highest: on content-free inputs > '
          f'{LEAK_SPC} for each non-circular padding, on constant inputs within ±{NO_POSITION} '
          f'for circular padding; zero padding: SPC at the deepest encoder level − level 1 > 0 '
          f'(t-intervals over seeds)', _check_padding_leak),
    Claim('probe_ceiling', 'With PE, the first level holds position at the probe\'s ceiling',
          f'U-Net, zero padding, all data, every encoding; level-1 SPC (mean of x and y) on '
          f'content-free inputs > {CEILING_SPC} (t-interval over seeds)',
          _check_probe_ceiling),
    Claim('encoding_shift_tracks_shift', 'The Dice drop when only the encoding shifts tracks '
          'the drop under a real shift',
          'U-Net, zero padding, all data, every PE setting; per run, Pearson\'s r over the '
          'nonzero shifts k between the two drops (clean − Dice); comparison: r > 0 (t-interval '
          'over seeds)', _check_tracking),
)


# ---------------------------------------------------------------------------------- sections


def _shows_encodings(chosen: Sequence[Setting]) -> bool:
  return any(s.encoding not in (None, PAPER_ENCODING) for s in chosen) or any(
      grid_results.has_encoding_conditions(run.robustness) for s in chosen
      for run in s.robust_runs)


def encodings_section(ctx: Context, settings: Sequence[Setting]) -> list[str]:
  out = []
  for dataset in datasets_of(settings):
    chosen = encoding_settings(settings, dataset)
    if not _shows_encodings(chosen):
      continue
    title = f'{title_of(dataset)}, U-Net: encodings, and how much the prediction relies on them'
    rows, curves = [], []
    for index, setting in enumerate(chosen):
      label = encoding_label(setting)
      with_conditions = setting.pe is not None and all(
          grid_results.has_encoding_conditions(run.robustness) for run in setting.robust_runs)
      per_run = setting.per_run
      rows.append([label, format_stat(setting.test(), 3),
                   format_stat(per_run(grid_results.noise_drop), 3),
                   format_stat(per_run(grid_results.shift_dice), 3),
                   format_stat(per_run(grid_results.encoding_shift_dice), 3)
                   if with_conditions else '—',
                   format_stat(per_run(grid_results.encoding_removed_dice), 3)
                   if with_conditions else '—',
                   format_stat(per_run(drop_correlation), 2) if with_conditions else '—',
                   len(setting.robust_runs)])
      if setting.robustness_curves is None:
        continue
      mean, std = setting.robustness_curves
      style = {'color': f'C{index % 10}'}
      curves.append({'label': label, 'result': mean, 'std': std, 'style': style})
      if with_conditions:
        curves.append(figures.encoding_shift_curve(mean, label, std, style))
    name = ctx.figure_name(f'encodings_{dataset}_shift')
    figures.plot_shifts(curves, os.path.join(ctx.workdir, name), legend_outside=True,
                        title=f'{title_of(dataset)}, U-Net: Dice versus shift (dotted: the '
                              'encoding shifted only)')
    out += block(ctx, chosen,
                 f'**{title}** — zero padding, all training data; mean ± std [95% interval] '
                 'over seeds. Noise drop: clean Dice − mean Dice under Gaussian and shot noise '
                 'at severity 5. Encoding shifted only: the image unmoved, the coordinate '
                 'channels as its content would meet them after each shift k ≠ 0 (mean Dice). '
                 'Encoding removed: each channel replaced by its mean over the image. r: '
                 'Pearson\'s r over k between the Dice drops of the two kinds of shift.',
                 markdown_table(['setting', 'clean', 'noise drop', 'Dice over shifts',
                                 'encoding shifted only', 'encoding removed', 'r (drops)', 'n'],
                                rows),
                 [f'![{title}]({name})', ''])
  return section(ctx, 'Beyond the paper: encodings and reliance on the encoding', out,
                 'Other encodings (centered [−λ, λ], radial, Fourier), coordinates at every 3×3 '
                 'convolution, and the robustness grid\'s encoding conditions. Not in the '
                 'paper: no paper values.')


def verdict_section(ctx: Context, settings: Sequence[Setting]) -> list[str]:
  verdicts = [v for v in claims.evaluate_claims(settings, ctx.all_settings, CLAIMS)
              if v.status != NOT_MEASURED]
  if not verdicts:
    return []
  out = [f'{ctx.heading} Verdicts beyond the paper', '',
         'Questions the paper leaves open, judged by the same rule as its claims; "alike" '
         f'claims hold where every interval lies within ±{EQUIVALENT} and do not hold where one '
         'lies entirely outside.', '']
  for claim in CLAIMS:
    found = [v for v in verdicts if v.claim == claim.name]
    if found:
      out.append(f'- **{claim.text}.** Rule: {claim.rule}.')
      out += [f'  - {title_of(v.dataset)}: {claims.describe(v)}' for v in found]
  advice = claims.seeds_advice(verdicts, max((len(s.runs) for s in settings), default=0))
  return out + ([''] + [advice] if advice else []) + ['']

