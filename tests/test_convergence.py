"""The convergence rule on validation curves whose answer is known."""

import numpy as np
import pytest

from pejax.evaluation import convergence


def curve(values, every=1):
  return [[every * (i + 1), v] for i, v in enumerate(values)]


def test_a_curve_still_rising_at_the_end_has_not_converged():
  # Saturating towards 0.95 but still 0.03 short at 80% of the epochs.
  rising = 0.95 * (1 - np.exp(-np.arange(1, 21) / 6))
  result = convergence.assess(curve(rising), 20)
  assert result['converged'] is False
  assert result['gain'] == pytest.approx(rising[-1] - rising[15])


def test_a_plateau_with_noise_and_a_dip_has_converged():
  values = [0.5, 0.8, 0.9, 0.94, 0.95, 0.951, 0.948, 0.90, 0.953, 0.952]
  result = convergence.assess(curve(values, every=2), 20)
  assert result['converged'] is True
  assert result['gain'] == pytest.approx(0.953 - 0.951)


def test_the_tolerance_is_the_boundary():
  before, last = 0.90, 0.90 + convergence.TOLERANCE
  assert convergence.assess([[80, before], [100, last - 1e-9]], 100)['converged'] is True
  assert convergence.assess([[80, before], [100, last + 1e-6]], 100)['converged'] is False


def test_without_an_evaluation_in_each_part_it_is_undetermined():
  result = convergence.assess([[15, 0.9]], 15)
  assert result['converged'] is None and 'epochs ≤ 12' in result['why']
  assert 'undetermined' in convergence.describe(result)
  assert convergence.assess([], 10)['converged'] is None


def test_evaluations_past_the_epochs_trained_are_ignored():
  # A run evaluated at epoch 40 of a longer curve, e.g. an interrupted run's history.
  values = curve([0.5, 0.9, 0.91, 0.915, 0.99], every=10)
  assert convergence.assess(values, 40)['converged'] is True


def test_counting_runs():
  results = [{'converged': True}, {'converged': False}, {'converged': None}, None, {}]
  assert convergence.count(results) == (1, 3, 5)


@pytest.mark.parametrize('epochs, expected', [(20, 2), (100, 10), (5, 1), (800, 80)])
def test_eval_every_epochs_gives_the_rule_points_in_each_part(epochs, expected):
  every = convergence.eval_every_epochs(epochs)
  assert every == expected
  evaluated = [e for e in range(1, epochs + 1) if e % every == 0 or e == epochs]
  assert convergence.assess([[e, 0.9] for e in evaluated], epochs)['converged'] is True


def test_a_run_that_fell_far_below_its_best_has_not_converged():
  # A loss spike late in training: the end is 0.16 below the model found before.
  values = [0.5, 0.8, 0.9, 0.95, 0.96, 0.96, 0.96, 0.96, 0.70, 0.80]
  result = convergence.assess(curve(values, every=2), 20)
  assert result['converged'] is False and result['state'] == convergence.FALLEN_AWAY
  assert 'NOT converged (fallen away)' in convergence.describe(result)
  # A fall within the validation estimate's noise is not.
  values[-2:] = [0.93, 0.94]
  assert convergence.assess(curve(values, every=2), 20)['converged'] is True


def test_the_report_applies_the_current_rule_to_a_recorded_history():
  from helpers import results_json
  from pejax.runs.run_files import Results
  history = curve([0.5, 0.8, 0.9, 0.95, 0.96, 0.96, 0.96, 0.96, 0.70, 0.80], every=2)
  results = Results.from_json(results_json(epochs=20, validation_history=history,
                                           convergence={'converged': True}))  # an older rule's
  assert convergence.of_run(results)['state'] == convergence.FALLEN_AWAY
  assert convergence.of_run(Results.from_json(results_json(convergence={'converged': True}))) == {
      'converged': True}
