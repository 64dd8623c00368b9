"""What TensorBoard's HParams dashboard shows of a run: its settings and the metrics it writes.

A fresh run writes into its event file the experiment config (TensorBoard's `hparams_config`
summary: every setting's name and the metric tags below) and its own values (the session-start
info). The settings are those that determine a run's numbers (`configuration.result_settings`;
bookkeeping such as data_dir or log_every_epochs is left out). Nested settings are named
`robustness.<name>`, lists become their JSON text, and None becomes the string 'None', so that
runs can be filtered by it (e.g. num_train_examples: 'None' is the whole training split). No
domain is declared: runs of one sweep may hold a number where another holds 'None'.

Metrics: the scalar tags a run writes,
  train_loss, eval_loss, eval_dice, eval_dice_<class>     during training;
  test_loss, test_dice, test_dice_<class>                 at the final step;
  with the robustness grid, at the final step:
  robustness_noise_dice   mean test Dice under Gaussian and shot noise at the top severity,
  robustness_noise_drop   test Dice on the clean images minus robustness_noise_dice,
  robustness_shift_dice   mean test Dice over the grid's nonzero shifts;
  and for a run with PE (where the grid has its encoding conditions):
  robustness_encoding_shift_dice    mean test Dice over the nonzero shifts of the coordinate
                                    channels alone (the image unmoved),
  robustness_encoding_removed_dice  test Dice with each coordinate channel replaced by its mean.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence

from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.hparams import summary_v2
from tensorboard.util import tensor_util

from pejax import configuration
from pejax.evaluation import grid_results

NOISE_DICE = 'robustness_noise_dice'
NOISE_DROP = 'robustness_noise_drop'
SHIFT_DICE = 'robustness_shift_dice'
ENCODING_SHIFT_DICE = 'robustness_encoding_shift_dice'
ENCODING_REMOVED_DICE = 'robustness_encoding_removed_dice'


def setting_values(config) -> dict[str, bool | int | float | str]:
  """A run's result settings as HParams values: flat names, lists as JSON, None as 'None'."""
  values = {}

  def add(prefix: str, settings: Mapping) -> None:
    for name, value in settings.items():
      if isinstance(value, Mapping):
        add(f'{prefix}{name}.', value)
      elif value is None:
        values[prefix + name] = 'None'
      elif isinstance(value, (bool, int, float, str)):
        values[prefix + name] = value
      else:
        values[prefix + name] = json.dumps(value)

  add('', configuration.result_settings(config))
  return values


def _has_shifts(cfg) -> bool:
  # None is the paper's shifts, scaled to the image size; 0 alone leaves no shift to average.
  return cfg.shifts is None or any(int(k) for k in cfg.shifts)


def metric_tags(config, class_names: Sequence[str]) -> list[str]:
  """The scalar tags a run of `config` writes (see the module's docstring)."""
  tags = ['train_loss']
  for prefix in ('eval', 'test'):
    tags += [f'{prefix}_loss', f'{prefix}_dice'] + [f'{prefix}_dice_{name}' for name in class_names]
  if config.run_robustness:
    if config.robustness.severities:
      tags += [NOISE_DICE, NOISE_DROP]
    if _has_shifts(config.robustness):
      tags.append(SHIFT_DICE)
    if config.use_pe and config.robustness.encoding_conditions:
      tags += ([ENCODING_SHIFT_DICE] if _has_shifts(config.robustness) else []) + [
          ENCODING_REMOVED_DICE]
  return tags


def robustness_scalars(grid: Mapping) -> dict[str, float]:
  """The robustness summaries of a grid result (`robustness.robustness_grid`) as scalars."""
  scalars = {}
  if all(grid.get(name) for name in grid_results.NOISES):
    scalars[NOISE_DICE] = grid_results.noise_dice(grid)
    scalars[NOISE_DROP] = grid_results.noise_drop(grid)
  if any(int(k) for k in grid.get(grid_results.shift_condition(grid), {})):
    scalars[SHIFT_DICE] = grid_results.shift_dice(grid)
  if grid_results.has_encoding_conditions(grid):
    scalars[ENCODING_REMOVED_DICE] = grid_results.encoding_removed_dice(grid)
    if any(int(k) for k in grid.get(grid_results.encoding_shift_condition(grid), {})):
      scalars[ENCODING_SHIFT_DICE] = grid_results.encoding_shift_dice(grid)
  return scalars


def write_hparams(writer, config, class_names: Sequence[str]) -> None:
  """Writes the experiment config and the run's setting values through a CLU metric writer
  (its own summaries, so that the events go wherever the writer's other events go)."""
  values = setting_values(config)
  experiment = summary_v2.hparams_config_pb(
      hparams=[hparams_api.HParam(name) for name in values],
      metrics=[hparams_api.Metric(tag) for tag in metric_tags(config, class_names)],
      time_created_secs=time.time())
  session = summary_v2.hparams_pb(values)
  for summary in (experiment, session):
    for value in summary.value:
      writer.write_summaries(0, {value.tag: tensor_util.make_ndarray(value.tensor)},
                             {value.tag: value.metadata})
