"""The robustness curves: Dice versus corruption severity (paper Fig. 2) and versus shift
(Fig. 5), and clean Dice versus position jitter, for a run's folder and for the report.

Robustness plots take `curves`, a list of mappings, one per model or setting:
  {'label': str, 'result': robustness result (or the mean of several),
   'std': optional result-shaped std (drawn as a band), 'style': optional plot kwargs},
and `references`, a list of (label, Dice) horizontal lines, e.g. the averaged-mask baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pejax.drawing import new_figure, save_figure
from pejax.evaluation import grid_results

CORRUPTION_TITLES = {'gaussian_noise': 'Gaussian noise', 'gaussian_blur': 'Gaussian blur',
                     'shot_noise': 'Shot noise'}


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
  figure = new_figure(12, 3.6)
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
  return save_figure(figure, path)


def averaged_mask_curve(result: Mapping, std: Mapping | None = None) -> dict:
  """The shifted averaged-mask baseline as a curve of `plot_shifts` (a gray dashed line)."""
  return {'label': 'averaged mask', 'result': result, 'std': std,
          'style': {'color': '0.4', 'linestyle': '--', 'marker': None}}


def encoding_shift_curve(grid: Mapping, label: str, std: Mapping | None = None,
                         style: Mapping | None = None) -> dict:
  """The Dice of a grid's encoding shifts (coordinate channels shifted, image unmoved) as a
  dotted curve of `plot_shifts`, beside the real shift's."""
  name = grid_results.shift_condition(grid)
  condition = grid_results.encoding_shift_condition(grid)
  as_shift = lambda result: {name: result[condition]} if result else None
  return {'label': f'{label}, encoding shifted only', 'result': as_shift(grid),
          'std': as_shift(std), 'style': {'linestyle': ':', **(style or {})}}


def plot_shifts(curves: Sequence[Mapping], path: str, *, metric: str = 'dice',
                references: Sequence[tuple[str, float]] = (), title: str | None = None,
                legend_outside: bool = False) -> np.ndarray:
  """Dice versus shift in pixels, as in the paper's Figure 5. Saves a PNG at `path`, returns
  its RGB pixels. `legend_outside`: the legend right of the axes (for many curves)."""
  figure = new_figure(9.5 if legend_outside else 5.5, 4.5 if legend_outside else 4)
  axis = figure.subplots()
  name = 'shift_x'
  for curve in curves:
    name = grid_results.shift_condition(curve['result'])
    xs, ys = grid_results.shift_curve(curve['result'], metric)
    stds = grid_results.shift_curve(curve['std'], metric)[1] if curve.get('std') else None
    _plot_curve(axis, xs, ys, stds, curve)
  _draw_references(axis, references)
  axis.set_xlabel(f'shift along {name.removeprefix("shift_")} (pixels)')
  axis.set_ylabel(_metric_label(metric))
  axis.grid(alpha=0.3)
  if legend_outside:
    axis.legend(fontsize='small', loc='center left', bbox_to_anchor=(1.02, 0.5))
  else:
    axis.legend(fontsize='small')
  if title:
    axis.set_title(title)
  figure.tight_layout()
  return save_figure(figure, path)


def plot_jitter(path: str, lines: Sequence[tuple[str, str, str, list, list, list]],
                title: str) -> np.ndarray:
  """Clean Dice versus position jitter; each line is (label, color, linestyle, jitters, means,
  stds)."""
  figure = new_figure(6, 4)
  axis = figure.subplots()
  for label, color, linestyle, xs, means, stds in lines:
    means, stds = np.asarray(means, float), np.asarray(stds, float)
    axis.plot(xs, means, label=label, color=color, linestyle=linestyle, marker='o', markersize=3)
    axis.fill_between(xs, means - np.nan_to_num(stds), means + np.nan_to_num(stds), color=color,
                      alpha=0.15, linewidth=0)
  axis.set_xlabel('position jitter (fraction of the image size)')
  axis.set_ylabel('clean test Dice')
  axis.set_title(title)
  axis.grid(alpha=0.3)
  axis.legend(fontsize='small')
  figure.tight_layout()
  return save_figure(figure, path)
