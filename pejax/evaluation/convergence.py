"""Whether a run had converged when its training stopped: the rule, and its verdict per run.

A claim that compares settings measures their trained models; a setting whose runs were still
improving when they stopped (λ = 256 needs more steps than no PE) measures the schedule
instead. The rule, on the validation Dice that training evaluates every `eval_every_epochs`:

  gain = (best validation Dice evaluated in the last fifth of the epochs, (0.8·E, E])
         − (best validation Dice evaluated before it, epochs ≤ 0.8·E)

A run has **converged** if −FALL ≤ gain ≤ TOLERANCE; it has **not converged** if gain >
TOLERANCE (still improving: it was finding better models at the end) or gain < −FALL (fallen
away: it ended far below a model it had already found, e.g. after a loss spike; a fall within
FALL is the validation estimate's noise); it is **undetermined** without an evaluation in each
part (training evaluates the boundary epoch, `boundary_epoch`, besides every
`eval_every_epochs`, so a run of two or more epochs has both). Best-so-far values make the rule
blind to single noisy dips; only new highs count. The more evaluations, the more new highs it
can see: about ten per run (`eval_every_epochs`) is what the paper configs use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LAST_FRACTION = 0.2
TOLERANCE = 0.01
FALL = 0.05
STILL_IMPROVING, FALLEN_AWAY = 'still improving', 'fallen away'
RULE = (f'a run has converged if its best validation Dice in the last '
        f'{LAST_FRACTION:.0%} of its epochs exceeds its best before them by at most '
        f'{TOLERANCE:g} (else: {STILL_IMPROVING}) and falls below it by at most {FALL:g} '
        f'(else: {FALLEN_AWAY})')


def assess(eval_dice: Sequence[Sequence[float]], num_epochs: int) -> dict:
  """The rule on a run's validation history [[epoch, Dice], ...] of `num_epochs` epochs.

  Returns {'converged': True, False or None (undetermined), 'gain', 'rule', and the epochs
  and values compared}.
  """
  boundary = num_epochs * (1 - LAST_FRACTION)
  points = [(int(epoch), float(dice)) for epoch, dice in eval_dice
            if dice is not None and math.isfinite(float(dice)) and epoch <= num_epochs]
  before = [dice for epoch, dice in points if epoch <= boundary]
  last = [dice for epoch, dice in points if epoch > boundary]
  result = {'rule': RULE, 'converged': None, 'gain': None}
  if not before or not last:
    result['why'] = (f'needs a validation Dice in epochs ≤ {boundary:g} and in '
                     f'({boundary:g}, {num_epochs}]; evaluated at epochs '
                     f'{[epoch for epoch, _ in points]}')
    return result
  gain = max(last) - max(before)
  state = (STILL_IMPROVING if gain > TOLERANCE else FALLEN_AWAY if gain < -FALL else 'converged')
  result.update(converged=state == 'converged', state=state, gain=gain,
                best_before=max(before), best_last=max(last))
  return result


def of_run(results) -> dict:
  """A run's convergence by the current rule: from its validation history where results.json
  has one (so that the report applies the rule of this version), else as recorded."""
  if results.validation_history:
    return assess(results.validation_history, results.epochs)
  return results.convergence or {}


def boundary_epoch(num_epochs: int) -> int:
  """The last epoch before the final fifth: training always evaluates it, so that every run of
  two or more epochs has a validation Dice on each side of the rule's boundary."""
  return int(num_epochs * (1 - LAST_FRACTION))


def count(runs_convergence: Sequence[dict | None]) -> tuple[int, int, int]:
  """(not converged, undetermined, total) over runs' `assess` results (None: not recorded)."""
  not_converged = sum(1 for c in runs_convergence if c and c.get('converged') is False)
  undetermined = sum(1 for c in runs_convergence if not c or c.get('converged') is None)
  return not_converged, undetermined, len(runs_convergence)


def eval_every_epochs(num_epochs: int, evaluations: int = 10) -> int:
  """An evaluation interval that gives the rule about `evaluations` points to decide from."""
  return max(1, num_epochs // evaluations)


def describe(result: dict | None) -> str:
  """One line for the console and the report: the verdict of `assess` and its numbers."""
  if not result or result.get('converged') is None:
    return 'convergence undetermined' + (f' ({result["why"]})' if result and 'why' in result
                                         else ' (no validation history recorded)')
  state = 'converged' if result['converged'] else f'NOT converged ({result["state"]})'
  return (f'{state}: the best validation Dice changed by {result["gain"]:+.4f} in the last '
          f'{LAST_FRACTION:.0%} of the epochs (converged within −{FALL:g} … +{TOLERANCE:g})')
