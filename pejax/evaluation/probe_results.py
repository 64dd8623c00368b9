"""The position probe's results (`pejax.evaluation.probe`, probe.json) read back: the names of
its levels, its TensorBoard scalars and its figure (SPC per level, one line per run). Nothing
here loads JAX, so the report draws the figure from run folders alone.

A result holds `levels`, one entry per level, finest first:
  {'level': 1, 'name': 'encoder_1', 'height': H, 'width': W, 'channels': C,
   '<kind>': {'spc_x', 'spc_y', 'mae_x', 'mae_y'} for each kind measured}
with the kinds of `KINDS` ('images' only where the run's data were read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pejax.drawing import new_figure, save_figure

AXES = ('x', 'y')
# Held-out inputs: test images; content-free ones, together and by their two sorts.
KINDS = ('images', 'content_free', 'constant', 'noise')
KIND_TITLES = {'images': 'test images', 'content_free': 'content-free',
               'constant': 'constant images', 'noise': 'noise images'}


def level_names(model: str, count: int) -> list[str]:
  """The names of a model's probed levels: the U-Net's encoder levels and bottleneck, the small
  CNN's layers."""
  if model == 'unet':
    return [f'encoder_{k}' for k in range(1, count)] + ['bottleneck']
  return [f'layer_{k}' for k in range(1, count + 1)]


def kinds_of(result: Mapping) -> list[str]:
  """The kinds of held-out inputs a result measured, in `KINDS` order."""
  levels = result.get('levels') or [{}]
  return [kind for kind in KINDS if kind in levels[0]]


def scalars(result: Mapping) -> dict[str, float]:
  """TensorBoard scalars of a result: probe_<kind>_<spc|mae>_<axis>/level_<k>."""
  return {f'probe_{kind}_{metric}_{axis}/level_{level["level"]}': level[kind][f'{metric}_{axis}']
          for level in result['levels'] for kind in kinds_of(result)
          for metric in ('spc', 'mae') for axis in AXES}


def mean_result(results: Sequence[Mapping]) -> dict:
  """The mean over several runs' results (e.g. the seeds of one setting) of every level's
  numbers, in the layout of one result; the levels and kinds of the first."""
  first = results[0]
  levels = []
  for index, level in enumerate(first['levels']):
    mean = {key: value for key, value in level.items() if not isinstance(value, Mapping)}
    for kind in kinds_of(first):
      mean[kind] = {name: float(np.mean([r['levels'][index][kind][name] for r in results]))
                    for name in level[kind]}
    levels.append(mean)
  return {'levels': levels, 'runs': len(results)}


def level_spc(result: Mapping, kind: str, level: int | None = None) -> float:
  """SPC of one kind of input at a level (1 = the finest; None = the level where it is
  highest), the mean of x and y."""
  values = [(entry['level'], (entry[kind]['spc_x'] + entry[kind]['spc_y']) / 2)
            for entry in result['levels'] if kind in entry]
  if level is None:
    return max(value for _, value in values)
  return dict(values)[level]


def spc_curve(result: Mapping, kind: str, axis: str) -> tuple[list[int], list[float]]:
  """(levels, SPC) of one kind of input and one axis."""
  levels = [level for level in result['levels'] if kind in level]
  return [level['level'] for level in levels], [level[kind][f'spc_{axis}'] for level in levels]


def plot_probe(curves: Sequence[Mapping], path: str, title: str | None = None):
  """SPC per level, one line per run (`curves`: {'label', 'result'}), one panel per kind of
  held-out input (columns) and axis (rows). Saves a PNG at `path`, returns its RGB pixels."""
  kinds = [kind for kind in KINDS if any(kind in kinds_of(c['result']) for c in curves)]
  figure = new_figure(3.2 * len(kinds), 5.6)
  axes = figure.subplots(len(AXES), len(kinds), sharex=True, sharey=True, squeeze=False)
  for row, axis_name in enumerate(AXES):
    for column, kind in enumerate(kinds):
      axis = axes[row][column]
      for curve in curves:
        xs, ys = spc_curve(curve['result'], kind, axis_name)
        if xs:
          axis.plot(xs, ys, marker='o', markersize=3, label=curve['label'])
      axis.axhline(0, color='0.6', linewidth=0.8)
      axis.set_ylim(top=1.05)  # the bottom as low as a line goes (0 is drawn)
      axis.grid(alpha=0.3)
      if row == 0:
        axis.set_title(KIND_TITLES[kind])
      if column == 0:
        axis.set_ylabel(f'SPC ({axis_name})')
      if row == len(AXES) - 1:
        axis.set_xlabel('level (finest first)')
  # Below the panels, so that no line of any panel is hidden behind it.
  handles, labels = axes[0][0].get_legend_handles_labels()
  rows = -(-len(labels) // 3)
  figure.set_size_inches(figure.get_figwidth(), figure.get_figheight() + 0.25 * rows)
  figure.legend(handles, labels, fontsize='small', loc='lower center', ncol=min(3, len(labels)))
  if title:
    figure.suptitle(title)
  figure.tight_layout(rect=(0, 0.25 * rows / figure.get_figheight() + 0.02, 1, 1))
  return save_figure(figure, path)
