"""The report's section on the position probe (`pejax.evaluation.probe`): for the runs that
have a probe.json, SPC per level on content-free inputs and on test images, as a table (run ×
level) and a figure (one line per run)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from pejax.evaluation import probe_results
from pejax.reporting.aggregation import Setting
from pejax.reporting.sections import Context, markdown_table
from pejax.runs import run_files

TITLE = 'Position information (probe)'
INTRO = (
    'How much absolute position each level of a trained network holds (Islam et al. 2020): a '
    '3×3 read-out per level, trained to output the normalized coordinates (x̂, ŷ) of that '
    "level's pixels, measured on inputs it was not trained on by Spearman's rank correlation "
    '(SPC, 1 = the order of positions fully recovered, 0 = none). *Content-free*: constant and '
    'noise images, where any position found is what the network adds (padding, positional '
    'encoding); *images*: test images, whose anatomy shows position by itself. Levels: the '
    "U-Net's encoder levels 1–4 and its bottleneck, the small CNN's layers.")


def _spc(level: dict, kind: str) -> str:
  scores = level.get(kind)
  return '—' if not scores else f'{scores["spc_x"]:.3f} / {scores["spc_y"]:.3f}'


def _label(run: run_files.RunRecord) -> str:
  """A run's folder below the report's; its own name where the report is of the run alone."""
  return run.name if run.name != '.' else os.path.basename(os.path.normpath(run.path))


def probe_section(ctx: Context, settings: Sequence[Setting]) -> list[str]:
  """The section, or nothing when no run of this part was probed."""
  probed = [(_label(run), result) for setting in settings for run in setting.runs
            if (result := run_files.read_probe(run.path)) and result.get('levels')]
  if not probed:
    return []
  rows = [[name, f'{level["level"]} ({level["name"]})', f'{level["height"]}×{level["width"]}',
           _spc(level, 'content_free'), _spc(level, 'images')]
          for name, result in probed for level in result['levels']]
  table = markdown_table(['run', 'level', 'size', 'SPC x / y, content-free', 'SPC x / y, images'],
                         rows)
  # Not the sweep's probe.png of --mode=probe, which a later report must not remove.
  name = ctx.figure_name('probe_levels')
  probe_results.plot_probe([{'label': label, 'result': result} for label, result in probed],
                           os.path.join(ctx.workdir, name))
  return [f'{ctx.heading} {TITLE}', '', INTRO, ''] + table + [f'![{TITLE}]({name})', '']
