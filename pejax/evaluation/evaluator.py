"""Evaluation of a model state on a split: Dice (mean and per class), loss, the averaged-mask
baseline, the robustness grid, per-case metrics, example predictions, image panels — one
`Evaluator` used during training, at its end, by `--mode=evaluate` and by every run of a sweep.
It computes and returns values (`RunEvaluation`) and writes nothing: the run folder's owner
(`pejax.runs.outputs`) writes them.

Dice follows the paper (see `pejax.models.dice`). Every evaluation is a cached jitted sum over the
split's batches followed by one division (`dice.finalize_dice`); the jitted functions are
module-level with a hashable `Predictor` static, so later runs of a sweep reuse them.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from pejax import configuration, drawing
from pejax.data import input_pipeline
from pejax.evaluation import example_predictions, per_case, robustness, surface_distance
from pejax.models import dice, steps
from pejax.models.predictor import Predictor


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
  mask = dice.averaged_mask(train_labels[example_ids], num_classes)
  sums = jax.vmap(lambda batch_labels, batch_valid: dice.dice_sums(
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
    result = dice.finalize_dice(sums, self.class_names)
    result['loss'] = float(sums['loss_sum'] / sums['example_count'])
    return result

  def averaged_mask_dice(self, example_ids, split: input_pipeline.EvalSplit) -> dict[str, float]:
    """The averaged-mask baseline of the training examples `example_ids` on a split."""
    sums = _averaged_mask_sums(self.run_data.dataset.num_classes, self.run_data.train_labels,
                               jnp.asarray(example_ids), split.labels, split.valid)
    return dice.finalize_dice(jax.device_get(sums), self.class_names)

  def panel(self, state, pe_scale, count: int) -> np.ndarray:
    """Input | ground truth | prediction of the first `count` validation images, with a legend
    of the classes' colours."""
    split = self.run_data.validation
    count = min(count, split.count)
    images = split.host_images01[:count]
    predictions = np.asarray(_predict(self.predictor, (state, pe_scale), images))
    return drawing.label_panel(images, split.host_labels, predictions, count,
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
                 len(robustness.condition_table(cfg, height, width,
                                                self.predictor.uses_encoding)), test.count)
    grid = robustness.robustness_grid(
        self.predictor, test, cfg, num_classes=self.run_data.dataset.num_classes,
        class_names=self.class_names, model_state=(state, pe_scale),
        keep_predictions=keep_predictions, encoding_conditions=self.predictor.uses_encoding)
    logging.info('Robustness grid done in %.0f s.', grid.result['seconds'])
    return grid

  def averaged_mask_shifts(self, example_ids, cfg) -> dict[str, Any]:
    """Dice of the averaged-mask baseline on the clean and the shifted test split (the grid's
    shifts): the mask stays where the training anatomy was while images and labels move."""
    mask = dice.averaged_mask(self.run_data.train_labels[jnp.asarray(example_ids)],
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

  def per_case(self, state, pe_scale, grid: robustness.GridOutput | None, cfg
               ) -> PerCase | None:
    """The per-case rows of the test split (`pejax.evaluation.per_case`): per image, per ACDC
    volume and per image under each condition of `grid` (if given), and their summaries; None
    on every process but the one that writes them."""
    test = self.run_data.test
    predictions = self.predict_split(state, pe_scale, test)  # every process takes part
    if jax.process_index() != 0:
      return None
    start = time.perf_counter()
    source = test.source
    images = per_case.image_rows(predictions, source.labels, source, self.class_names)
    volumes = per_case.volume_rows(predictions, source, self.class_names)
    conditions = (per_case.grid_rows(grid, source, cfg, self.class_names)
                  if grid is not None else None)
    return PerCase(images=images, volumes=volumes, conditions=conditions,
                   image_summary=surface_distance.summarize(images),
                   volume_summaries=per_case.phase_summaries(volumes) if volumes else None,
                   seconds=time.perf_counter() - start)

  def evaluate_run(self, state, config, example_ids) -> RunEvaluation:
    """Everything the final evaluation of a trained run measures (`RunEvaluation`); it writes
    nothing (`pejax.runs.outputs.write_evaluation` does)."""
    pe_scale = jnp.float32(configuration.pe_scale_of(config))
    start = time.perf_counter()
    scores = self.final(state, pe_scale, example_ids)
    seconds = time.perf_counter() - start
    grid = examples = None
    if config.run_robustness:
      grid = self.robustness(state, pe_scale, config.robustness, keep_predictions=True)
      grid.result['averaged_mask'] = self.averaged_mask_shifts(example_ids, config.robustness)
      if jax.process_index() == 0:
        examples = example_predictions.collect(grid, self.run_data.test, config.robustness,
                                               self.run_data.dataset.num_classes)
    return RunEvaluation(
        scores=scores, eval_seconds=seconds, grid=grid.result if grid else None,
        examples=examples, per_case=self.per_case(state, pe_scale, grid, config.robustness),
        class_names=self.class_names, test_count=self.run_data.test.count)


@dataclasses.dataclass
class PerCase:
  """Per-case rows of the test split (`pejax.evaluation.per_case`) and their summaries."""
  images: list[dict[str, Any]]               # one row per test image
  volumes: list[dict[str, Any]]              # one row per ACDC volume; empty for 2-D datasets
  conditions: list[dict[str, Any]] | None    # one row per image and grid condition
  image_summary: dict[str, Any]              # `surface_distance.summarize` of `images`
  volume_summaries: dict[str, Any] | None    # `per_case.phase_summaries` of `volumes`
  seconds: float


@dataclasses.dataclass
class RunEvaluation:
  """What the final evaluation of a run measured, for the run folder's owner to write."""
  scores: dict[str, dict]          # validation, test and their averaged-mask baselines
  eval_seconds: float
  grid: dict[str, Any] | None      # the robustness result, with its 'averaged_mask' shifts
  # `example_predictions.collect`, and the per-case rows: on the writing process only.
  examples: dict[str, np.ndarray] | None
  per_case: PerCase | None
  class_names: tuple[str, ...]
  test_count: int


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
