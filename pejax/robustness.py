"""Robustness evaluation: Dice on clean, corrupted and shifted test images (paper Figs. 2–5).

The whole grid — clean, every (corruption, severity) and every shift — runs as one compiled
program over the whole test split: `lax.map` over a table of conditions, `lax.scan` over
batches of the split (padded to a multiple of the batch size and masked), the condition's
kind chosen with `lax.switch`. Condition parameters, the noise seed and the images are traced,
so evaluating another model state, seed or severity table of the same shape reuses the
compiled program. Noise keys are fixed per (corruption, severity, image index), so results do
not depend on the batch size and two evaluations of one model give identical numbers.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pejax import corruptions, data, files
from pejax.metrics import dice_sums, finalize_dice

CORRUPTIONS = ('gaussian_noise', 'shot_noise', 'gaussian_blur')
SHIFT_AXES = ('x', 'y', 'xy')

# Branch indices of the `lax.switch` in the grid program.
_CLEAN, _GAUSSIAN_NOISE, _SHOT_NOISE, _GAUSSIAN_BLUR, _SHIFT = range(5)
_KIND_INDEX = {'gaussian_noise': _GAUSSIAN_NOISE, 'shot_noise': _SHOT_NOISE,
               'gaussian_blur': _GAUSSIAN_BLUR}

CORRUPTION_TITLES = {'gaussian_noise': 'Gaussian noise', 'gaussian_blur': 'Gaussian blur',
                     'shot_noise': 'Shot noise'}


def default_robustness_config() -> ml_collections.ConfigDict:
  """Settings of `evaluate_robustness`; corruption lists hold the parameter of severity 1..5."""
  cfg = ml_collections.ConfigDict()
  cfg.gaussian_noise = corruptions.GAUSSIAN_NOISE_SIGMAS   # σ on [0, 1] intensities
  cfg.shot_noise = corruptions.SHOT_NOISE_COUNTS           # c; smaller is more severe
  cfg.gaussian_blur = corruptions.GAUSSIAN_BLUR_SIGMAS     # σ in pixels
  cfg.severities = corruptions.SEVERITIES
  # None: the paper's −64…64 step 8 at 256 px, scaled to the image size (17 shifts).
  cfg.shifts = ml_collections.config_dict.placeholder(tuple)
  cfg.shift_axis = 'x'        # 'x' (width), 'y' (height) or 'xy' (both by the same k)
  cfg.shift_fill = 'zeros'    # 'zeros' (image 0, label background) or 'edge'
  cfg.seed = 0
  cfg.batch_size = 32          # at most; the test split is cut into equal batches (data.balanced_batch_size)
  return cfg


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return (isinstance(value, (int, float, np.integer, np.floating))
          and not isinstance(value, bool) and math.isfinite(float(value)))


def _invalid(name: str, value, allowed: str) -> ValueError:
  return ValueError(f'robustness config: {name}={value!r} is not allowed; {allowed}')


def validate_robustness_config(cfg) -> None:
  """Raises ValueError naming the first setting of `cfg` that `evaluate_robustness` rejects."""
  for name in default_robustness_config():
    if name not in cfg:
      raise ValueError(f'robustness config: setting {name!r} is missing')
  severities = cfg.severities
  if (not isinstance(severities, (tuple, list))
      or not all(_is_int(s) and 1 <= s <= 5 for s in severities)
      or len(set(severities)) != len(severities)):
    raise _invalid('severities', severities, 'allowed: distinct integers in 1..5')
  for name in CORRUPTIONS:
    values = cfg[name]
    if (not isinstance(values, (tuple, list)) or len(values) != 5
        or not all(_is_number(v) for v in values)):
      raise _invalid(name, values, 'allowed: 5 finite numbers, the parameter of severity 1..5')
    if name == 'shot_noise':
      if not all(v > 0 for v in values):
        raise _invalid(name, values, 'allowed: photon counts c > 0')
    elif not all(v >= 0 for v in values):
      raise _invalid(name, values, 'allowed: standard deviations σ >= 0')
  shifts = cfg.shifts
  if shifts is not None and (
      not isinstance(shifts, (tuple, list))
      or not all(_is_number(k) and float(k) == int(k) for k in shifts)):
    raise _invalid('shifts', shifts, 'allowed: None (the default) or a list of integer pixels')
  if cfg.shift_axis not in SHIFT_AXES:
    raise _invalid('shift_axis', cfg.shift_axis, f'allowed: {SHIFT_AXES}')
  if cfg.shift_fill not in corruptions.SHIFT_FILLS:
    raise _invalid('shift_fill', cfg.shift_fill, f'allowed: {corruptions.SHIFT_FILLS}')
  if not _is_int(cfg.seed) or not 0 <= cfg.seed < 2**32:
    raise _invalid('seed', cfg.seed, 'allowed: an integer in [0, 2**32)')
  if not _is_int(cfg.batch_size) or cfg.batch_size < 1:
    raise _invalid('batch_size', cfg.batch_size, 'allowed: an integer >= 1')


def _shift_size(height: int, width: int, axis: str) -> int:
  return {'x': width, 'y': height, 'xy': min(height, width)}[axis]


def condition_table(cfg, height: int, width: int) -> list[dict[str, Any]]:
  """The conditions of the grid in order: clean, corruptions × severities, shifts."""
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
  return table


def _predict(predict_fn, model_state, images):
  return predict_fn(images) if model_state is None else predict_fn(model_state, images)


@functools.partial(jax.jit, static_argnames=(
    'predict_fn', 'num_classes', 'batch_size', 'max_blur_radius', 'shift_axis', 'shift_fill'))
def _robustness_grid(model_state, images, labels, kinds, parameters, shifts, levels, seed, *,
                     predict_fn, num_classes, batch_size, max_blur_radius, shift_axis,
                     shift_fill):
  """Summed Dice statistics per condition, each leaf stacked along a leading condition axis."""
  num_images = images.shape[0]
  num_batches = -(-num_images // batch_size)
  padding = num_batches * batch_size - num_images

  def batched(x):
    x = jnp.pad(x, [(0, padding)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape((num_batches, batch_size) + x.shape[1:])

  image_batches = batched(images)
  label_batches = batched(labels)
  image_indices = batched(jnp.arange(num_images))
  valid_batches = batched(jnp.ones((num_images,), bool))
  base_key = jax.random.key(seed)

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

  branches = [None] * 5
  branches[_CLEAN] = clean
  branches[_GAUSSIAN_NOISE] = noise_branch(corruptions.gaussian_noise)
  branches[_SHOT_NOISE] = noise_branch(corruptions.shot_noise)
  branches[_GAUSSIAN_BLUR] = blur
  branches[_SHIFT] = shift_branch

  def evaluate_condition(condition):
    kind, parameter, shift, level = condition
    # Keyed by (kind, severity), not by table position: a severity's noise stays the same
    # whichever other conditions are evaluated.
    condition_key = jax.random.fold_in(jax.random.fold_in(base_key, kind), level)

    def evaluate_batch(totals, batch):
      batch_images, batch_labels, batch_indices, batch_valid = batch
      keys = jax.vmap(lambda index: jax.random.fold_in(condition_key, index))(batch_indices)
      inputs, targets = jax.lax.switch(kind, branches, batch_images, batch_labels, parameter,
                                       shift, keys)
      predictions = _predict(predict_fn, model_state, inputs)
      sums = dice_sums(predictions, targets, num_classes, batch_valid)
      return jax.tree.map(jnp.add, totals, sums), None

    zeros = {'dice_sum': jnp.zeros(()), 'dice_count': jnp.zeros(()),
             'class_dice_sum': jnp.zeros((num_classes - 1,)),
             'class_dice_count': jnp.zeros((num_classes - 1,))}
    totals, _ = jax.lax.scan(
        evaluate_batch, zeros, (image_batches, label_batches, image_indices, valid_batches))
    return totals

  return jax.lax.map(evaluate_condition, (kinds, parameters, shifts, levels))


def evaluate_robustness(predict_fn: Callable, images, labels, cfg, *, num_classes: int = 4,
                        class_names: Sequence[str] | None = None, model_state=None) -> dict:
  """Dice on the clean test split, under every (corruption, severity) and every shift.

  Args:
    predict_fn: pure, jittable `predict_fn(images01) -> (B, H, W) int labels` taking NHWC
      images in [0, 1] (it normalizes, adds positional channels, runs the model and takes the
      argmax). With `model_state` given it is called as `predict_fn(model_state, images01)`,
      and the state is a traced argument: the compiled grid is then reused for every
      checkpoint or seed of the same architecture, instead of being compiled per closure.
      It must be hashable (it is a static argument of the compiled grid): pass the same
      function object to reuse the compilation.
    images: (N, H, W, C) float intensities in [0, 1], before normalization.
    labels: (N, H, W) integer label maps.
    cfg: a `default_robustness_config()`-like ConfigDict, validated here.
    num_classes: classes of the label maps, background 0 included.
    class_names: names of the foreground classes, for the per-class keys.
    model_state: optional pytree passed to `predict_fn` as its first argument.

  Returns:
    A JSON-able dict (floats may be NaN where a class never occurs):
      'clean': {'dice': d, 'dice_<class>': d, ...},
      'gaussian_noise', 'shot_noise', 'gaussian_blur': {'<severity>': {dice dict}, ...},
      'shift_<axis>': {'<k>': {dice dict}, ...} (k in pixels, positive = right / down),
      'parameters': {'gaussian_noise': {'<severity>': σ}, 'shot_noise': {'<severity>': c},
        'gaussian_blur': {'<severity>': σ}, 'shift_<axis>': [k, ...], 'shift_axis',
        'shift_fill', 'seed', 'batch_size', 'num_images', 'image_shape': [H, W, C]},
      'seconds': wall time of the call, compilation included.
  """
  validate_robustness_config(cfg)
  start = time.perf_counter()
  images = jnp.asarray(images, jnp.float32)
  labels = jnp.asarray(labels)
  if images.ndim != 4 or labels.ndim != 3 or images.shape[:3] != labels.shape:
    raise ValueError(f'expected images (N, H, W, C) and labels (N, H, W); got {images.shape} '
                     f'and {labels.shape}')
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f'labels must be integers; got {labels.dtype}')
  num_images, height, width, channels = images.shape
  table = condition_table(cfg, height, width)
  blur_sigmas = [row['parameter'] for row in table if row['kind'] == _GAUSSIAN_BLUR]
  max_blur_radius = max([corruptions.blur_radius(s) for s in blur_sigmas], default=0)

  sums = _robustness_grid(
      model_state, images, labels,
      jnp.asarray([row['kind'] for row in table], jnp.int32),
      jnp.asarray([row['parameter'] for row in table], jnp.float32),
      jnp.asarray([row['shift'] for row in table], jnp.int32),
      jnp.asarray([row['level'] for row in table], jnp.int32),
      jnp.asarray(cfg.seed, jnp.uint32),
      predict_fn=predict_fn, num_classes=num_classes,
      batch_size=data.balanced_batch_size(num_images, cfg.batch_size),
      max_blur_radius=max_blur_radius, shift_axis=cfg.shift_axis, shift_fill=cfg.shift_fill)
  sums = jax.device_get(sums)

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
    if row['kind'] == _SHIFT:
      parameters[shift_name].append(row['shift'])
    else:
      parameters[row['condition']][str(row['level'])] = row['parameter']
  for name in CORRUPTIONS + (shift_name,):
    result.setdefault(name, {})
  parameters.update(shift_axis=cfg.shift_axis, shift_fill=cfg.shift_fill, seed=int(cfg.seed),
                    batch_size=int(cfg.batch_size), num_images=int(num_images),
                    image_shape=[int(height), int(width), int(channels)])
  result['parameters'] = parameters
  result['seconds'] = time.perf_counter() - start
  return result


def condition_names(result: Mapping) -> list[str]:
  """Condition keys of a robustness result, in the grid's order."""
  shift_names = sorted(k for k in result if k.startswith('shift_'))
  return ['clean'] + [name for name in CORRUPTIONS if name in result] + shift_names


def result_rows(result: Mapping) -> list[dict[str, Any]]:
  """One flat row per condition: condition, level (severity or shift), parameter, Dice keys."""
  parameters = result.get('parameters', {})
  rows = []
  for name in condition_names(result):
    if name == 'clean':
      rows.append(dict(condition='clean', level=0, parameter='', **result['clean']))
      continue
    for level, dice in result[name].items():
      if name.startswith('shift_'):
        parameter = int(level)
      else:
        parameter = parameters.get(name, {}).get(level, '')
      rows.append(dict(condition=name, level=int(level), parameter=parameter, **dice))
  return rows


def write_robustness(result: Mapping, workdir: str) -> tuple[str, str]:
  """Writes `robustness.json` (NaN as null) and `robustness.csv` into `workdir`, atomically.

  Returns the two paths.
  """
  json_path = os.path.join(workdir, 'robustness.json')
  csv_path = os.path.join(workdir, 'robustness.csv')
  files.write_json(json_path, result)
  rows = result_rows(result)
  fields = ['condition', 'level', 'parameter', 'dice'] + sorted(
      {key for row in rows for key in row if key.startswith('dice_')})

  def write_csv(f):
    writer = csv.DictWriter(f, fieldnames=fields, restval='')
    writer.writeheader()
    writer.writerows(rows)

  files.write_atomically(csv_path, write_csv)
  return json_path, csv_path


def aggregate_robustness(results: Sequence[Mapping]) -> tuple[dict, dict]:
  """Mean and standard deviation (ddof=0) over several results of one setting (e.g. seeds).

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
    std[name] = combine(values, np.nanstd)
  mean['parameters'] = std['parameters'] = results[0].get('parameters', {})
  return mean, std


# ---------------------------------------------------------------------------------------------
# Figures. `curves` is a list of mappings, one per model or setting:
#   {'label': str, 'result': robustness result (or the mean of several),
#    'std': optional result-shaped std (drawn as a band), 'style': optional plot kwargs}.
# `references` is a list of (label, Dice) horizontal lines, e.g. the averaged-mask baseline.


def _new_figure(width: float, height: float):
  # A bare Agg figure: no pyplot, so no global backend switch and no figure registry.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  figure = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(figure)
  return figure


def figure_to_array(figure) -> np.ndarray:
  """(H, W, 3) uint8 RGB pixels of a figure; add a batch axis for `write_images`."""
  figure.canvas.draw()
  return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def _save_figure(figure, path: str) -> np.ndarray:
  files.write_atomically(path, lambda f: figure.savefig(f, format='png'), mode='wb')
  return figure_to_array(figure)


def _plot_curve(axis, xs, means, stds, curve):
  style = dict(marker='o', markersize=3)
  style.update(curve.get('style') or {})
  line, = axis.plot(xs, means, label=curve['label'], **style)
  if stds is not None:
    means, stds = np.asarray(means, float), np.asarray(stds, float)
    axis.fill_between(xs, means - stds, means + stds, color=line.get_color(), alpha=0.2,
                      linewidth=0)


def _metric_label(metric: str) -> str:
  return metric.replace('dice', 'Dice', 1).replace('_', ' ')


def _draw_references(axis, references):
  for index, (label, value) in enumerate(references):
    axis.axhline(value, color='0.4', linestyle=('--', ':', '-.')[index % 3], linewidth=1,
                 label=label)


def _severity_curve(result, name, metric):
  levels = sorted(int(level) for level in result.get(name, {}))
  xs = [0] + levels
  ys = [result['clean'][metric]] + [result[name][str(level)][metric] for level in levels]
  return xs, ys


def plot_corruptions(curves: Sequence[Mapping], path: str, *, metric: str = 'dice',
                     references: Sequence[tuple[str, float]] = (), title: str | None = None,
                     ) -> np.ndarray:
  """Dice versus severity (0 = clean) in three panels — Gaussian noise, Gaussian blur, shot
  noise — as in the paper's Figure 2. Saves a PNG at `path`, returns its RGB pixels."""
  figure = _new_figure(12, 3.6)
  axes = figure.subplots(1, 3, sharey=True)
  for axis, name in zip(axes, ('gaussian_noise', 'gaussian_blur', 'shot_noise')):
    for curve in curves:
      xs, ys = _severity_curve(curve['result'], name, metric)
      stds = _severity_curve(curve['std'], name, metric)[1] if curve.get('std') else None
      _plot_curve(axis, xs, ys, stds, curve)
    _draw_references(axis, references)
    axis.set_title(CORRUPTION_TITLES[name])
    axis.set_xlabel('severity (0 = clean)')
    axis.set_xticks(range(6))
    axis.grid(alpha=0.3)
  axes[0].set_ylabel(_metric_label(metric))
  axes[-1].legend(fontsize='small', loc='lower left')
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  return _save_figure(figure, path)


def _shift_curve(result, metric):
  names = [k for k in result if k.startswith('shift_')]
  if len(names) != 1:
    raise ValueError(f'expected one shift_* condition in the result; found {names}')
  shifts = sorted(int(k) for k in result[names[0]])
  return names[0], shifts, [result[names[0]][str(k)][metric] for k in shifts]


def plot_shifts(curves: Sequence[Mapping], path: str, *, metric: str = 'dice',
                references: Sequence[tuple[str, float]] = (), title: str | None = None,
                ) -> np.ndarray:
  """Dice versus shift in pixels, as in the paper's Figure 5. Saves a PNG at `path`, returns
  its RGB pixels."""
  figure = _new_figure(5.5, 4)
  axis = figure.subplots()
  name = 'shift_x'
  for curve in curves:
    name, xs, ys = _shift_curve(curve['result'], metric)
    stds = _shift_curve(curve['std'], metric)[2] if curve.get('std') else None
    _plot_curve(axis, xs, ys, stds, curve)
  _draw_references(axis, references)
  axis.set_xlabel(f'shift along {name.removeprefix("shift_")} (pixels)')
  axis.set_ylabel(_metric_label(metric))
  axis.grid(alpha=0.3)
  axis.legend(fontsize='small')
  if title:
    axis.set_title(title)
  figure.tight_layout()
  return _save_figure(figure, path)
