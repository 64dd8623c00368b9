"""The one writer of a run's final evaluation (`pejax.evaluation.evaluator.RunEvaluation`):
results.json, robustness.json/csv with their figures, examples.npz, the per-case CSVs, and the
test and robustness summaries in TensorBoard.

Only the process that writes (process 0) writes files; every process writes its (logging-only)
TensorBoard writer, so that all of them log the same lines.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pejax import storage
from pejax.evaluation import convergence, figures, grid_results
from pejax.runs import hparams, provenance, run_files


def write_evaluation(workdir: str, config, evaluation, facts: Mapping[str, Any], *, writer,
                     timings: Mapping[str, Any], write_files: bool,
                     trained: run_files.Results | None = None,
                     history: Mapping[str, list] | None = None) -> run_files.Results:
  """Writes a run's evaluation into `workdir` and `writer`; returns its results.json.

  `facts`: the fields of `run_files.Results` that are not the evaluation's: the model and data
  the run trained (num_parameters, num_train_examples, epochs, steps, normalization) and the
  machine it was evaluated on (devices, processes, platform, jax_version).
  `timings`: training's ('epoch_seconds', 'train_seconds', ...). `trained`: the results.json of
  an earlier evaluation of this run (`--mode=evaluate`), whose training timings and the software
  that trained the run are kept. `history`: the run's training curve (`run_files.read_history`),
  whose validation Dice decides its convergence.
  """
  scores = evaluation.scores
  if trained is not None:  # an evaluation's empty epoch list must not replace training's
    timings = dict(trained.timings, **{k: v for k, v in timings.items() if v})
  timings = dict(timings, eval_seconds=evaluation.eval_seconds)
  writer.write_scalars(facts['steps'], {f'test_{k}': v for k, v in scores['test'].items()})
  results = run_files.Results(
      config=config.to_dict(), dataset=config.dataset,
      class_names=list(evaluation.class_names), **facts,
      software=(trained.software if trained and trained.software else provenance.software()),
      evaluated_with=provenance.software(), **scores)
  results.validation_history = list((history or {}).get('eval_dice', []))
  results.convergence = convergence.assess(results.validation_history, results.epochs)
  if evaluation.grid is not None:
    timings['robustness_seconds'] = evaluation.grid['seconds']
    results.robustness_file = run_files.ROBUSTNESS_FILE
    if write_files:
      _write_robustness(workdir, writer, config, evaluation.grid,
                        scores['test_averaged_mask']['dice'], facts['steps'])
      run_files.write_examples(workdir, evaluation.examples)
  results.per_case = _write_per_case(workdir, evaluation.per_case) if write_files else {}
  timings['per_case_seconds'] = results.per_case.get('seconds')
  results.timings = timings
  if write_files:
    run_files.write_results(workdir, results)
  writer.flush()
  return results


def _write_per_case(workdir: str, per_case) -> dict[str, Any]:
  """The per-case CSVs; returns their names and summaries for results.json."""
  write = lambda name, rows: storage.write_csv(storage.join(workdir, name), rows)
  write(run_files.TEST_CASES_CSV, per_case.images)
  summary = {'test_cases_file': run_files.TEST_CASES_CSV, 'test_cases': per_case.image_summary}
  if per_case.volumes:
    write(run_files.TEST_VOLUMES_CSV, per_case.volumes)
    summary.update(test_volumes_file=run_files.TEST_VOLUMES_CSV,
                   test_volumes=per_case.volume_summaries)
  if per_case.conditions is not None:
    write(run_files.ROBUSTNESS_CASES_CSV, per_case.conditions)
    summary['robustness_cases_file'] = run_files.ROBUSTNESS_CASES_CSV
  summary['seconds'] = per_case.seconds
  return summary


def _write_robustness(workdir: str, writer, config, grid: dict, averaged_mask_dice: float,
                      step: int) -> None:
  """robustness.json/csv, the corruption and shift figures, and the figures and summary scalars
  (`hparams.robustness_scalars`) in TensorBoard."""
  run_files.write_robustness(workdir, grid, grid_results.result_rows(grid))
  label = config.model + (f' PE λ={config.pe_scale:g}' if config.use_pe else ' no PE')
  curve = [{'label': label, 'result': grid}]
  shift_curves = curve + ([figures.encoding_shift_curve(grid, label)]
                          if grid_results.encoding_shift_condition(grid) else [])
  shift_curves += ([figures.averaged_mask_curve(grid['averaged_mask'])]
                   if 'averaged_mask' in grid else [])
  images = {
      'robustness_corruptions': figures.plot_corruptions(
          curve, os.path.join(workdir, 'robustness_corruptions.png'),
          references=[('averaged mask', averaged_mask_dice)]),
      'robustness_shifts': figures.plot_shifts(
          shift_curves, os.path.join(workdir, 'robustness_shifts.png')),
  }
  writer.write_images(step, {k: v[None] for k, v in images.items()})
  writer.write_scalars(step, hparams.robustness_scalars(grid))
