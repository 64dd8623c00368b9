"""Robustness evaluation: Dice on clean, corrupted and shifted test images (paper Figs. 2–5).

The whole grid — clean, every (corruption, severity), every shift and, for a model with
positional encoding, the encoding conditions (the coordinate channels shifted by each k while the
image stays, and the channels replaced by their mean) — runs as one compiled
program over the device-resident test split (`input_pipeline.EvalSplit`, already cut into
equal, masked batches): `lax.map` over a table of conditions, `lax.scan` over the batches, the
condition's kind chosen with `lax.switch`. Condition parameters, the noise seed and the images
are traced, so evaluating another model state, seed or severity table of the same shape reuses
the compiled program. Noise keys are fixed per (corruption, severity, image index), so results
do not depend on the batching and two evaluations of one model give identical numbers.

The summary numbers the report and the claims read off a result (noise drop, mean Dice over
shifts) are computed once, in `pejax.evaluation.grid_results`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pejax import configuration
from pejax.evaluation import corruptions
from pejax.evaluation.grid_results import ENCODING_REMOVED, ENCODING_SHIFT_PREFIX
from pejax.choices import CORRUPTIONS
from pejax.models import encoding
from pejax.models.dice import dice_sums, finalize_dice

# Branch indices of the `lax.switch` in the grid program (the encoding conditions leave the
# images as they are; the change reaches the model as an `encoding.EncodingChange`).
(_CLEAN, _GAUSSIAN_NOISE, _SHOT_NOISE, _GAUSSIAN_BLUR, _SHIFT, _ENCODING_SHIFT,
 _ENCODING_REMOVED) = range(7)
_KIND_INDEX = {'gaussian_noise': _GAUSSIAN_NOISE, 'shot_noise': _SHOT_NOISE,
               'gaussian_blur': _GAUSSIAN_BLUR}


def _shift_size(height: int, width: int, axis: str) -> int:
  return {'x': width, 'y': height, 'xy': min(height, width)}[axis]


def condition_table(cfg, height: int, width: int, encoding_conditions: bool = False
                    ) -> list[dict[str, Any]]:
  """The conditions of the grid in order: clean, corruptions × severities, shifts and, with
  `encoding_conditions` (a model with PE) where `cfg.encoding_conditions` asks for them, the
  encoding shifted by each shift's k and the encoding removed."""
  table = [dict(condition='clean', level=0, kind=_CLEAN, parameter=0.0, shift=0)]
  for name in CORRUPTIONS:
    for severity in cfg.severities:
      table.append(dict(condition=name, level=int(severity), kind=_KIND_INDEX[name],
                        parameter=float(cfg[name][severity - 1]), shift=0))
  shifts = cfg.shifts
  if shifts is None:
    shifts = corruptions.default_shifts(_shift_size(height, width, cfg.shift_axis))
  for k in shifts:
    table.append(dict(condition=f'shift_{cfg.shift_axis}', level=int(k), kind=_SHIFT,
                      parameter=float(k), shift=int(k)))
  if encoding_conditions and cfg.encoding_conditions:
    for k in shifts:
      table.append(dict(condition=ENCODING_SHIFT_PREFIX + cfg.shift_axis, level=int(k),
                        kind=_ENCODING_SHIFT, parameter=float(k), shift=int(k)))
    table.append(dict(condition=ENCODING_REMOVED, level=0, kind=_ENCODING_REMOVED,
                      parameter=0.0, shift=0))
  return table


def _predict(predict_fn, model_state, images, change=None):
  arguments = (images,) if model_state is None else (model_state, images)
  return predict_fn(*arguments) if change is None else predict_fn(*arguments, change=change)


def _encoding_change(kind, shift, shift_axis: str, height: int, width: int):
  """The condition's change of the coordinate channels (none outside the encoding conditions)."""
  k = jnp.where(kind == _ENCODING_SHIFT, shift, 0).astype(jnp.float32)
  change = encoding.pixel_shift(k if 'x' in shift_axis else 0.0, k if 'y' in shift_axis else 0.0,
                                height, width)
  return change._replace(removed=kind == _ENCODING_REMOVED)


def _condition_branches(max_blur_radius: int, shift_axis: str, shift_fill: str) -> list:
  """The `lax.switch` branches: (images, labels, parameter, shift, keys) -> (images, labels)."""

  def noise_branch(noise_fn):
    def branch(batch_images, batch_labels, parameter, shift, keys):
      del shift
      noisy = jax.vmap(lambda image, key: noise_fn(image[None], parameter, key)[0])(
          batch_images, keys)
      return noisy, batch_labels
    return branch

  def clean(batch_images, batch_labels, parameter, shift, keys):
    del parameter, shift, keys
    return batch_images, batch_labels

  def blur(batch_images, batch_labels, parameter, shift, keys):
    del shift, keys
    return (corruptions.gaussian_blur(batch_images, parameter, max_radius=max_blur_radius),
            batch_labels)

  def shift_branch(batch_images, batch_labels, parameter, shift, keys):
    del parameter, keys
    shift_x = shift if 'x' in shift_axis else 0
    shift_y = shift if 'y' in shift_axis else 0
    return corruptions.shift_images_and_labels(batch_images, batch_labels, shift_x, shift_y,
                                               shift_fill)

  branches = [None] * 7
  branches[_CLEAN] = branches[_ENCODING_SHIFT] = branches[_ENCODING_REMOVED] = clean
  branches[_GAUSSIAN_NOISE] = noise_branch(corruptions.gaussian_noise)
  branches[_SHOT_NOISE] = noise_branch(corruptions.shot_noise)
  branches[_GAUSSIAN_BLUR] = blur
  branches[_SHIFT] = shift_branch
  return branches


def _image_keys(base_key, kind, level, index):
  """The random keys of images `index` under a condition: keyed by (kind, severity), not by
  table position, so a severity's noise stays the same whichever other conditions are
  evaluated, and by the image's row, so it does not depend on the batching."""
  condition_key = jax.random.fold_in(jax.random.fold_in(base_key, kind), level)
  return jax.vmap(lambda i: jax.random.fold_in(condition_key, i))(index)


def condition_inputs(images01, labels, index, row: Mapping, cfg):
  """The inputs and true label maps of test images (`index`: their rows in the split) under one
  condition of `condition_table`, made as the grid makes them (the same noise): what a model
  was shown. NHWC images in [0, 1] and (N, H, W) labels, host or device arrays."""
  _, height, width, _ = np.shape(images01)
  return _condition_inputs(
      jnp.asarray(images01, jnp.float32), jnp.asarray(labels), jnp.asarray(index, jnp.int32),
      jnp.int32(row['kind']), jnp.float32(row['parameter']), jnp.int32(row['shift']),
      jnp.int32(row['level']), jnp.asarray(cfg.seed, jnp.uint32),
      max_blur_radius=_max_blur_radius(condition_table(cfg, height, width)),
      shift_axis=cfg.shift_axis, shift_fill=cfg.shift_fill)


@functools.partial(jax.jit, static_argnames=('max_blur_radius', 'shift_axis', 'shift_fill'))
def _condition_inputs(images, labels, index, kind, parameter, shift, level, seed, *,
                      max_blur_radius, shift_axis, shift_fill):
  branches = _condition_branches(max_blur_radius, shift_axis, shift_fill)
  keys = _image_keys(jax.random.key(seed), kind, level, index)
  return jax.lax.switch(kind, branches, images, labels, parameter, shift, keys)


def _max_blur_radius(table: Sequence[Mapping]) -> int:
  """The blur kernel's radius the grid is compiled for: the largest of its severities."""
  return max([corruptions.blur_radius(row['parameter']) for row in table
              if row['kind'] == _GAUSSIAN_BLUR], default=0)


@functools.partial(jax.jit, static_argnames=(
    'predict_fn', 'num_classes', 'max_blur_radius', 'shift_axis', 'shift_fill',
    'keep_predictions', 'encoding_conditions'))
def _robustness_grid(model_state, images, labels, valid, index, kinds, parameters, shifts,
                     levels, seed, *, predict_fn, num_classes, max_blur_radius, shift_axis,
                     shift_fill, keep_predictions=False, encoding_conditions=False):
  """Summed Dice statistics per condition, each leaf stacked along a leading condition axis,
  and with `keep_predictions` the label maps, uint8 (conditions, batches, batch, H, W), for
  per-image metrics on the host (else None).

  `images`, `labels`, `valid`, `index`: (batches, batch, ...) arrays of an `EvalSplit`.
  """
  branches = _condition_branches(max_blur_radius, shift_axis, shift_fill)
  base_key = jax.random.key(seed)
  height, width = images.shape[2:4]

  def evaluate_condition(condition):
    kind, parameter, shift, level = condition
    change = (_encoding_change(kind, shift, shift_axis, height, width)
              if encoding_conditions else None)

    def evaluate_batch(totals, batch):
      batch_images, batch_labels, batch_valid, batch_index = batch
      keys = _image_keys(base_key, kind, level, batch_index)
      inputs, targets = jax.lax.switch(kind, branches, batch_images, batch_labels, parameter,
                                       shift, keys)
      predictions = _predict(predict_fn, model_state, inputs, change)
      sums = dice_sums(predictions, targets, num_classes, batch_valid)
      kept = predictions.astype(jnp.uint8) if keep_predictions else None
      return jax.tree.map(jnp.add, totals, sums), kept

    zeros = {'dice_sum': jnp.zeros(()), 'dice_count': jnp.zeros(()),
             'class_dice_sum': jnp.zeros((num_classes - 1,)),
             'class_dice_count': jnp.zeros((num_classes - 1,))}
    return jax.lax.scan(evaluate_batch, zeros, (images, labels, valid, index))

  return jax.lax.map(evaluate_condition, (kinds, parameters, shifts, levels))


def evaluate_robustness(predict_fn: Callable, split, cfg, *, num_classes: int = 4,
                        class_names: Sequence[str] | None = None, model_state=None,
                        encoding_conditions: bool = False) -> dict:
  """The result of `robustness_grid` (without the predictions)."""
  return robustness_grid(predict_fn, split, cfg, num_classes=num_classes,
                         class_names=class_names, model_state=model_state,
                         encoding_conditions=encoding_conditions).result


@dataclasses.dataclass
class GridOutput:
  result: dict                     # JSON-able, see `robustness_grid`
  table: list[dict[str, Any]]      # `condition_table`: one row per condition, in grid order
  predictions: np.ndarray | None   # (conditions, N, H, W) uint8 label maps, or None


def robustness_grid(predict_fn: Callable, split, cfg, *, num_classes: int = 4,
                    class_names: Sequence[str] | None = None, model_state=None,
                    keep_predictions: bool = False, encoding_conditions: bool = False
                    ) -> GridOutput:
  """Dice on the clean test split, under every (corruption, severity), every shift and the
  encoding conditions.

  Args:
    predict_fn: pure, jittable `predict_fn(images01) -> (B, H, W) int labels` taking NHWC
      images in [0, 1] (it normalizes, adds positional channels, runs the model and takes the
      argmax). With `model_state` given it is called as `predict_fn(model_state, images01)`,
      and the state is a traced argument: the compiled grid is then reused for every
      checkpoint or seed of the same architecture, instead of being compiled per closure.
      It must be hashable (it is a static argument of the compiled grid): pass the same
      function object to reuse the compilation.
    split: an `input_pipeline.EvalSplit` (images in [0, 1], batched, on the device(s)).
    cfg: a `configuration.default_robustness_config()`-like ConfigDict, validated here.
    num_classes: classes of the label maps, background 0 included.
    class_names: names of the foreground classes, for the per-class keys.
    model_state: optional pytree passed to `predict_fn` as its first argument.
    keep_predictions: also return every condition's label maps (per-image metrics).
    encoding_conditions: the model has coordinate channels: add the encoding conditions
      (where `cfg.encoding_conditions`); `predict_fn` then also takes `change=` (an
      `encoding.EncodingChange`).

  Returns:
    A `GridOutput`: the table of conditions, the predictions if kept, and as `result` a
    JSON-able dict (floats may be NaN where a class never occurs):
      'clean': {'dice': d, 'dice_<class>': d, ...},
      'gaussian_noise', 'shot_noise', 'gaussian_blur': {'<severity>': {dice dict}, ...},
      'shift_<axis>': {'<k>': {dice dict}, ...} (k in pixels, positive = right / down),
      'encoding_shift_<axis>': {'<k>': {dice dict}, ...} (the image as it is, the coordinate
        channels as its content would meet them after a shift of k) and 'encoding_removed':
        {'0': {dice dict}} (each channel replaced by its mean), with encoding conditions only,
      'parameters': {'gaussian_noise': {'<severity>': σ}, 'shot_noise': {'<severity>': c},
        'gaussian_blur': {'<severity>': σ}, 'shift_<axis>': [k, ...],
        'encoding_shift_<axis>': [k, ...] (with encoding conditions), 'shift_axis',
        'shift_fill', 'seed', 'batch_size', 'num_images', 'image_shape': [H, W, C]},
      'seconds': wall time of the call, compilation included.
  """
  configuration.validate_robustness_config(cfg)
  start = time.perf_counter()
  _, batch_size, height, width, channels = split.images01.shape
  table = condition_table(cfg, height, width, encoding_conditions)
  encoding_conditions = any(row['kind'] == _ENCODING_REMOVED for row in table)
  max_blur_radius = _max_blur_radius(table)

  sums, predictions = _robustness_grid(
      model_state, split.images01, split.labels, split.valid, split.index,
      jnp.asarray([row['kind'] for row in table], jnp.int32),
      jnp.asarray([row['parameter'] for row in table], jnp.float32),
      jnp.asarray([row['shift'] for row in table], jnp.int32),
      jnp.asarray([row['level'] for row in table], jnp.int32),
      jnp.asarray(cfg.seed, jnp.uint32),
      predict_fn=predict_fn, num_classes=num_classes, max_blur_radius=max_blur_radius,
      shift_axis=cfg.shift_axis, shift_fill=cfg.shift_fill, keep_predictions=keep_predictions,
      encoding_conditions=encoding_conditions)
  if predictions is not None:
    predictions = host_rows(predictions)
    predictions = predictions.reshape((len(table), -1) + predictions.shape[3:])[:, :split.count]
  result = _result_of(jax.device_get(sums), table, cfg, class_names)
  result['parameters'].update(
      shift_axis=cfg.shift_axis, shift_fill=cfg.shift_fill, seed=int(cfg.seed),
      batch_size=int(batch_size), num_images=int(split.count),
      image_shape=[int(height), int(width), int(channels)])
  result['seconds'] = time.perf_counter() - start
  return GridOutput(result, table, predictions)


def host_rows(array: jax.Array) -> np.ndarray:
  """A (possibly multi-process) sharded array as one NumPy array on every process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))
  return np.asarray(jax.device_get(array))


def condition_targets(labels: np.ndarray, row: Mapping, cfg) -> np.ndarray:
  """The true (N, H, W) label maps of one condition of the table: the labels, shifted with
  the image for a shift condition (as `shift_images_and_labels` shifts them in the grid)."""
  if row['kind'] != _SHIFT:
    return labels
  shift_x = row['shift'] if 'x' in cfg.shift_axis else 0
  shift_y = row['shift'] if 'y' in cfg.shift_axis else 0
  shifted = corruptions.shift_array(corruptions.shift_array(labels, shift_x, 2, cfg.shift_fill),
                                    shift_y, 1, cfg.shift_fill)
  return np.asarray(shifted)


def _result_of(sums, table, cfg, class_names) -> dict[str, Any]:
  """The grid's summed statistics as the nested result of `evaluate_robustness`."""
  result: dict[str, Any] = {}
  shift_name = f'shift_{cfg.shift_axis}'
  parameters: dict[str, Any] = {name: {} for name in CORRUPTIONS}
  parameters[shift_name] = []
  for index, row in enumerate(table):
    dice = finalize_dice({key: value[index] for key, value in sums.items()}, class_names)
    if row['condition'] == 'clean':
      result['clean'] = dice
      continue
    result.setdefault(row['condition'], {})[str(row['level'])] = dice
    if row['kind'] in (_SHIFT, _ENCODING_SHIFT):
      parameters.setdefault(row['condition'], []).append(row['shift'])
    elif row['kind'] != _ENCODING_REMOVED:
      parameters[row['condition']][str(row['level'])] = row['parameter']
  for name in CORRUPTIONS + (shift_name,):
    result.setdefault(name, {})
  result['parameters'] = parameters
  return result
