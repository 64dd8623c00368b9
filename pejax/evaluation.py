"""Evaluation of a model state on a split: Dice (mean and per class), loss, the averaged-mask
baseline, the robustness grid, image panels — one `Evaluator` used at the end of training, by
`--mode=evaluate` and by every run of a sweep.

Dice follows the paper (see `pejax.metrics`). Every evaluation is a cached jitted sum over the
split's batches followed by one division (`metrics.finalize_dice`); the jitted functions are
module-level with a hashable `Predictor` static, so later runs of a sweep reuse them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from pejax import (configuration, convergence, examples, hparams, input_pipeline, metrics,
                   per_case, provenance, robustness, steps, surface_distance, visualize,
                   workdir as workdir_lib)


@dataclasses.dataclass(frozen=True)
class Predictor:
  """Label maps from images in [0, 1]: normalize, PE, model, argmax.

  Hashable and called as `predictor((state, pe_scale), images)`, so one compiled evaluation
  serves every state of the same architecture.
  """
  spec: steps.StepSpec
  normalizer: input_pipeline.Normalizer

  def __call__(self, model_state, images):
    state, pe_scale = model_state
    return steps.predict(self.spec, state, self.normalizer(images), pe_scale)


def evaluate_batches(predictor: Predictor, model_state, images, labels, valid):
  """Summed `steps.eval_step` statistics over (batches, batch, ...) arrays, as one scan."""
  state, pe_scale = model_state

  def sums_of(batch):
    batch_images, batch_labels, batch_valid = batch
    return steps.eval_step(predictor.spec, state, predictor.normalizer(batch_images),
                           batch_labels, batch_valid, pe_scale)

  first = jax.tree.map(lambda x: x[0], (images, labels, valid))
  initial = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(sums_of, first))
  totals, _ = jax.lax.scan(
      lambda totals, batch: (jax.tree.map(jnp.add, totals, sums_of(batch)), None),
      initial, (images, labels, valid))
  return totals


def averaged_mask_sums(num_classes: int, train_labels, example_ids, labels, valid):
  """Dice statistics of the paper's baseline: the averaged training mask of this run's
  training examples, predicted for every image of (batches, batch, ...) `labels`."""
  mask = metrics.averaged_mask(train_labels[example_ids], num_classes)
  sums = jax.vmap(lambda batch_labels, batch_valid: metrics.dice_sums(
      jnp.broadcast_to(mask, batch_labels.shape), batch_labels, num_classes, valid=batch_valid))(
          labels, valid)
  return jax.tree.map(lambda x: x.sum(axis=0), sums)


_evaluate_batches = jax.jit(evaluate_batches, static_argnums=0)
_averaged_mask_sums = jax.jit(averaged_mask_sums, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _predict(predictor: Predictor, model_state, images):
  return predictor(model_state, images)


class Evaluator:
  """The evaluations of one model architecture on one dataset's placed splits."""

  def __init__(self, spec: steps.StepSpec, run_data: input_pipeline.RunData):
    self.predictor = Predictor(spec, run_data.normalizer)
    self.run_data = run_data

  @property
  def class_names(self) -> tuple[str, ...]:
    return self.run_data.dataset.class_names

  def dice(self, state, pe_scale, split: input_pipeline.EvalSplit) -> dict[str, float]:
    """Mean and per-class Dice and the mean loss of a state on a split."""
    sums = jax.device_get(_evaluate_batches(self.predictor, (state, pe_scale), split.images01,
                                            split.labels, split.valid))
    result = metrics.finalize_dice(sums, self.class_names)
    result['loss'] = float(sums['loss_sum'] / sums['example_count'])
    return result

  def averaged_mask_dice(self, example_ids, split: input_pipeline.EvalSplit) -> dict[str, float]:
    """The averaged-mask baseline of the training examples `example_ids` on a split."""
    sums = _averaged_mask_sums(self.run_data.dataset.num_classes, self.run_data.train_labels,
                               jnp.asarray(example_ids), split.labels, split.valid)
    return metrics.finalize_dice(jax.device_get(sums), self.class_names)

  def panel(self, state, pe_scale, count: int) -> np.ndarray:
    """Input | ground truth | prediction of the first `count` validation images, with a legend
    of the classes' colours."""
    split = self.run_data.validation
    count = min(count, split.count)
    images = split.host_images01[:count]
    predictions = np.asarray(_predict(self.predictor, (state, pe_scale), images))
    return visualize.label_panel(images, split.host_labels, predictions, count,
                                 self.class_names)

  def final(self, state, pe_scale, example_ids) -> dict[str, dict]:
    """Validation and test Dice of a trained state, and the averaged mask on both splits."""
    scores = {}
    for name in ('validation', 'test'):
      split = getattr(self.run_data, name)
      scores[name] = self.dice(state, pe_scale, split)
      scores[f'{name}_averaged_mask'] = self.averaged_mask_dice(example_ids, split)
    return scores

  def robustness(self, state, pe_scale, cfg, keep_predictions: bool = False
                 ) -> robustness.GridOutput:
    """The robustness grid (`robustness.robustness_grid`) of a state on the test split."""
    test = self.run_data.test
    height, width = test.images01.shape[2:4]
    logging.info('Robustness grid: %d conditions × %d test images ...',
                 len(robustness.condition_table(cfg, height, width)), test.count)
    grid = robustness.robustness_grid(
        self.predictor, test, cfg, num_classes=self.run_data.dataset.num_classes,
        class_names=self.class_names, model_state=(state, pe_scale),
        keep_predictions=keep_predictions)
    logging.info('Robustness grid done in %.0f s.', grid.result['seconds'])
    return grid

  def averaged_mask_shifts(self, example_ids, cfg) -> dict[str, Any]:
    """Dice of the averaged-mask baseline on the clean and the shifted test split (the grid's
    shifts): the mask stays where the training anatomy was while images and labels move."""
    mask = metrics.averaged_mask(self.run_data.train_labels[jnp.asarray(example_ids)],
                                 self.run_data.dataset.num_classes)
    shifts_only = ml_collections.ConfigDict(cfg.to_dict())
    shifts_only.severities = ()
    result = robustness.robustness_grid(
        _constant_prediction, self.run_data.test, shifts_only,
        num_classes=self.run_data.dataset.num_classes, class_names=self.class_names,
        model_state=mask).result
    return {name: value for name, value in result.items()
            if name == 'clean' or name.startswith('shift_')}

  def predict_split(self, state, pe_scale, split: input_pipeline.EvalSplit) -> np.ndarray:
    """(count, H, W) uint8 label maps of a split, in its row order."""
    batches = [_predict(self.predictor, (state, pe_scale), split.images01[b]).astype(jnp.uint8)
               for b in range(split.images01.shape[0])]
    predictions = robustness.host_rows(jnp.stack(batches))
    return predictions.reshape((-1,) + predictions.shape[2:])[:split.count]

  def per_case(self, state, pe_scale, workdir: str, grid: robustness.GridOutput | None,
               cfg) -> dict[str, Any]:
    """Writes the per-case files of the test split (`pejax.per_case`) into `workdir`: per
    image, per ACDC volume, and per image under each condition of `grid` (if given); returns
    their summaries for results.json."""
    test = self.run_data.test
    predictions = self.predict_split(state, pe_scale, test)  # every process takes part
    if jax.process_index() != 0:
      return {}
    start = time.perf_counter()
    source = test.source
    rows = per_case.image_rows(predictions, source.labels, source, self.class_names)
    write = lambda name, rows: workdir_lib.write_csv(os.path.join(workdir, name), rows,
                                                     per_case.columns(rows))
    write(workdir_lib.TEST_CASES_CSV, rows)
    summary = {'test_cases_file': workdir_lib.TEST_CASES_CSV,
               'test_cases': surface_distance.summarize(rows)}
    volumes = per_case.volume_rows(predictions, source, self.class_names)
    if volumes:
      write(workdir_lib.TEST_VOLUMES_CSV, volumes)
      summary.update(test_volumes_file=workdir_lib.TEST_VOLUMES_CSV,
                     test_volumes=per_case.phase_summaries(volumes))
    if grid is not None:
      write(workdir_lib.ROBUSTNESS_CASES_CSV, per_case.grid_rows(grid, source, cfg,
                                                                 self.class_names))
      summary['robustness_cases_file'] = workdir_lib.ROBUSTNESS_CASES_CSV
    summary['seconds'] = time.perf_counter() - start
    return summary


  def finish_run(self, state, config, workdir: str, example_ids, writer, num_parameters: int,
                 timings: dict, trained: workdir_lib.Results | None = None,
                 history: dict | None = None) -> dict:
    """Final evaluation of a trained run; writes results.json, the per-case files (and the
    robustness files and example predictions) into `workdir` and the test Dice to `writer`;
    returns the results as JSON.

    `trained`: the results.json of an earlier evaluation of this run (`--mode=evaluate`); its
    training timings and the software that trained the run are kept. `history`: the run's
    training curve (`workdir.read_history`), whose validation Dice decides its convergence.
    """
    run_data = self.run_data
    class_names = self.class_names
    pe_scale = jnp.float32(configuration.pe_scale_of(config))
    is_writer = jax.process_index() == 0
    start = time.perf_counter()
    final = self.final(state, pe_scale, example_ids)
    if trained is not None:  # an evaluation's empty epoch list must not replace training's
      timings = dict(trained.timings, **{k: v for k, v in timings.items() if v})
    timings = dict(timings, eval_seconds=time.perf_counter() - start)
    final_step = int(state.step)
    writer.write_scalars(final_step, {f'test_{k}': v for k, v in final['test'].items()})
    results = workdir_lib.Results(
        config=config.to_dict(), dataset=config.dataset, class_names=list(class_names),
        num_parameters=num_parameters, num_train_examples=len(example_ids),
        epochs=int(state.epoch), steps=final_step, devices=jax.device_count(),
        processes=jax.process_count(), platform=jax.devices()[0].platform,
        jax_version=jax.__version__, normalization=dataclasses.asdict(run_data.normalizer),
        software=(trained.software if trained and trained.software else provenance.software()),
        evaluated_with=provenance.software(), **final)
    results.validation_history = list((history or {}).get('eval_dice', []))
    results.convergence = convergence.assess(results.validation_history, results.epochs)
    grid = None
    if config.run_robustness:
      grid = self.robustness(state, pe_scale, config.robustness, keep_predictions=True)
      timings['robustness_seconds'] = grid.result['seconds']
      grid.result['averaged_mask'] = self.averaged_mask_shifts(example_ids, config.robustness)
      results.robustness_file = workdir_lib.ROBUSTNESS_FILE
      if is_writer:
        _write_robustness(workdir, writer, config, grid.result,
                          final['test_averaged_mask']['dice'], final_step)
        workdir_lib.write_examples(workdir, examples.collect(
            grid, run_data.test, config.robustness, run_data.dataset.num_classes))
    results.per_case = self.per_case(state, pe_scale, workdir, grid, config.robustness)
    timings['per_case_seconds'] = results.per_case.get('seconds')
    results.timings = timings
    if is_writer:
      workdir_lib.write_results(workdir, results)
    writer.flush()
    name = os.path.basename(os.path.normpath(workdir))
    logging.info('\n%s', dice_table(
        f'{name}: Dice on the {config.dataset} test split ({run_data.test.count} images)',
        class_names, {'model': final['test'], 'averaged mask': final['test_averaged_mask']}))
    logging.info('%s: %s.', name, convergence.describe(results.convergence))
    return results.to_json()


def _write_robustness(workdir: str, writer, config, grid: dict, averaged_mask_dice: float,
                      step: int) -> None:
  """robustness.json/csv, the corruption and shift figures, and the figures and summary scalars
  (`hparams.robustness_scalars`) in TensorBoard."""
  workdir_lib.write_robustness(workdir, grid, robustness.result_rows(grid))
  label = config.model + (f' PE λ={config.pe_scale:g}' if config.use_pe else ' no PE')
  curve = [{'label': label, 'result': grid}]
  shift_curves = curve + ([visualize.averaged_mask_curve(grid['averaged_mask'])]
                          if 'averaged_mask' in grid else [])
  images = {
      'robustness_corruptions': visualize.plot_corruptions(
          curve, os.path.join(workdir, 'robustness_corruptions.png'),
          references=[('averaged mask', averaged_mask_dice)]),
      'robustness_shifts': visualize.plot_shifts(
          shift_curves, os.path.join(workdir, 'robustness_shifts.png')),
  }
  writer.write_images(step, {k: v[None] for k, v in images.items()})
  writer.write_scalars(step, hparams.robustness_scalars(grid))


def _constant_prediction(mask, images):
  """The averaged-mask baseline as a predictor: the same label map for every image."""
  return jnp.broadcast_to(mask, images.shape[:3])


def dice_table(title: str, class_names, rows: dict[str, dict]) -> str:
  """A plain-text table of mean and per-class Dice, one row per entry of `rows`."""
  header = ['', 'dice'] + list(class_names)
  lines = [title, '  '.join(f'{h:>14}' for h in header)]
  for name, values in rows.items():
    cells = [values['dice']] + [values[f'dice_{c}'] for c in class_names]
    lines.append('  '.join([f'{name:>14}'] + [f'{v:14.4f}' for v in cells]))
  return '\n'.join(lines)
