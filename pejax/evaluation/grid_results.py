"""The numbers read off a robustness grid's result (`robustness.robustness_grid`, stored as
robustness.json): its conditions in order, one flat row per condition, the mean over runs,
and the summaries the report and the claims use (noise Dice and drop, Dice over shifts).

Plain Python on the stored result: the report and TensorBoard's summaries read the same
numbers without JAX.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Mapping, Sequence

import numpy as np

from pejax.choices import CORRUPTIONS

NOISES = ('gaussian_noise', 'shot_noise')
ENCODING_SHIFT_PREFIX = 'encoding_shift_'
ENCODING_REMOVED = 'encoding_removed'


def condition_names(result: Mapping) -> list[str]:
  """Condition keys of a robustness result, in the grid's order."""
  shift_names = sorted(k for k in result if k.startswith('shift_'))
  encoding_names = sorted(k for k in result if k.startswith(ENCODING_SHIFT_PREFIX))
  encoding_names += [ENCODING_REMOVED] if ENCODING_REMOVED in result else []
  return (['clean'] + [name for name in CORRUPTIONS if name in result] + shift_names
          + encoding_names)


def result_rows(result: Mapping) -> list[dict[str, Any]]:
  """One flat row per condition: condition, level (severity or shift), parameter, Dice keys."""
  parameters = result.get('parameters', {})
  rows = []
  for name in condition_names(result):
    if name == 'clean':
      rows.append(dict(condition='clean', level=0, parameter='', **result['clean']))
      continue
    for level, dice in result[name].items():
      if name.startswith(('shift_', ENCODING_SHIFT_PREFIX)):
        parameter = int(level)
      elif name == ENCODING_REMOVED:
        parameter = ''
      else:
        parameter = parameters.get(name, {}).get(level, '')
      rows.append(dict(condition=name, level=int(level), parameter=parameter, **dice))
  return rows


def aggregate_robustness(results: Sequence[Mapping], ddof: int = 0) -> tuple[dict, dict]:
  """Mean and standard deviation over several results of one setting (e.g. seeds).

  Returns two result-shaped dicts; 'parameters' is taken from the first result.
  """
  if not results:
    raise ValueError('aggregate_robustness needs at least one result')

  def combine(values, reduce):
    first = values[0]
    if isinstance(first, Mapping):
      return {key: combine([v[key] for v in values], reduce) for key in first}
    with np.errstate(all='ignore'):
      stacked = np.asarray(values, np.float64)
      if np.all(np.isnan(stacked)):
        return float('nan')
      return float(reduce(stacked))

  mean, std = {}, {}
  for name in condition_names(results[0]):
    values = [r[name] for r in results]
    mean[name] = combine(values, np.nanmean)
    std[name] = combine(values, lambda x: np.nanstd(x, ddof=ddof) if len(x) > ddof else np.nan)
  mean['parameters'] = std['parameters'] = results[0].get('parameters', {})
  return mean, std


# --------------------------------------------------------------------------- summary numbers


def _top_severity(grid: Mapping, name: str) -> str:
  return str(max(int(level) for level in grid[name]))


def corruption_dice(grid: Mapping, name: str, severity: str | None = None,
                    metric: str = 'dice') -> float:
  """Dice under one corruption at `severity` (default: the most severe in the grid)."""
  severity = severity or _top_severity(grid, name)
  value = grid[name][severity][metric]
  return float('nan') if value is None else float(value)


def noise_dice(grid: Mapping) -> float:
  """Mean Dice under Gaussian and shot noise at their top severity (5 in the paper's grid)."""
  return float(np.mean([corruption_dice(grid, name) for name in NOISES]))


def noise_drop(grid: Mapping) -> float:
  """Clean Dice minus `noise_dice`: how much noise costs."""
  return float(grid['clean']['dice']) - noise_dice(grid)


def shift_condition(grid: Mapping) -> str:
  """The grid's one shift condition ('shift_x', 'shift_y' or 'shift_xy')."""
  names = [name for name in grid if name.startswith('shift_')]
  if len(names) != 1:
    raise KeyError(f'expected one shift_* condition in the result; found {names}')
  return names[0]


def encoding_shift_condition(grid: Mapping) -> str | None:
  """The grid's encoding-shift condition ('encoding_shift_<axis>'), or None (a model without
  PE, or a grid without encoding conditions)."""
  names = [name for name in grid if name.startswith(ENCODING_SHIFT_PREFIX)]
  return names[0] if names else None


def has_encoding_conditions(grid: Mapping) -> bool:
  return bool(grid.get(ENCODING_REMOVED))


def _shift_values(grid: Mapping, metric: str = 'dice', condition: str | None = None
                  ) -> list[tuple[int, float]]:
  """(shift in pixels, Dice) in the grid's order; NaN where the Dice is undefined. Of the
  image shift, or of `condition` (e.g. the encoding shift)."""
  condition = condition or shift_condition(grid)
  return [(int(k), np.nan if dice[metric] is None else dice[metric])
          for k, dice in grid[condition].items()]


def shift_curve(grid: Mapping, metric: str = 'dice', condition: str | None = None
                ) -> tuple[list[int], list[float]]:
  """Shifts in pixels, ascending, and the Dice at each (of the image shift, or `condition`)."""
  pairs = sorted(_shift_values(grid, metric, condition))
  return [k for k, _ in pairs], [v for _, v in pairs]


def shift_dice(grid: Mapping, condition: str | None = None) -> float:
  """Mean Dice over every nonzero shift of the grid (the image's, or `condition`'s)."""
  return float(np.mean([v for k, v in _shift_values(grid, 'dice', condition) if k != 0]))


def encoding_shift_dice(grid: Mapping) -> float:
  """Mean Dice over every nonzero shift of the coordinate channels alone (image unmoved)."""
  return shift_dice(grid, encoding_shift_condition(grid))


def encoding_removed_dice(grid: Mapping) -> float:
  """Dice with each coordinate channel replaced by its mean (position removed)."""
  value = grid[ENCODING_REMOVED]['0']['dice']
  return float('nan') if value is None else float(value)


def extreme_shift_dice(grid: Mapping) -> float:
  """Mean Dice at the largest shift in both directions."""
  pairs = _shift_values(grid)
  largest = max(abs(k) for k, _ in pairs)
  return float(np.mean([v for k, v in pairs if abs(k) == largest]))


def unshifted_dice(grid: Mapping) -> float:
  shifts, values = shift_curve(grid)
  return values[shifts.index(0)]


def condition_title(condition: str, level: int) -> str:
  """A figure's row label, on two lines: 'Gaussian noise\nseverity 5', 'shift x\n+16 px'."""
  if condition == 'clean':
    return 'clean'
  if condition == ENCODING_REMOVED:
    return 'encoding\nremoved'
  if condition.startswith(ENCODING_SHIFT_PREFIX):
    return f'encoding shift {condition[len(ENCODING_SHIFT_PREFIX):]}\n{level:+d} px'
  if condition.startswith('shift_'):
    return f'shift {condition[len("shift_"):]}\n{level:+d} px'
  return f'{condition.replace("_", " ").replace("gaussian", "Gaussian")}\nseverity {level}'
