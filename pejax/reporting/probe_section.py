"""The report's section on the position probe (`pejax.evaluation.probe`): for the runs that
have a probe.json, SPC per level on content-free inputs and on test images, as a table (run ×
level) and a figure (one line per run)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from pejax.evaluation import probe_results
from pejax.evaluation.probe_results import mean_result
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


def probe_results_of(setting: Setting) -> list[dict]:
  """The probe results of a setting's runs (seeds) that were probed at their final step (a probe
  of another checkpoint is not the run's: `unprobed_runs` names it)."""
  return [result for run in setting.runs if (result := run_files.trained_network_probe(run))]


def unprobed_runs(settings: Sequence[Setting]) -> list[str]:
  """'<run>: why' for each run whose probe the section does not show although it has a
  probe.json or its settings enable the probe."""
  missing = []
  for setting in settings:
    for run in setting.runs:
      result = run_files.read_probe(run.path)
      if result is not None and result.get('levels'):
        if result.get('step') != run.results.steps:
          missing.append(f'{run.name}: its probe.json describes step {result.get("step")}, the '
                         f'trained network is step {run.results.steps}')
      elif (run.config.get('probe') or {}).get('enabled'):
        missing.append(f'{run.name}: its probe is enabled but was not written')
  return missing


def probe_section(ctx: Context, settings: Sequence[Setting]) -> list[str]:
  """The section, or nothing when no run of this part was probed: one row per (setting, level)
  and one line per setting, the mean over its probed seeds."""
  probed = [(setting, mean_result(results)) for setting in settings
            if (results := probe_results_of(setting))]
  missing = unprobed_runs(settings)
  note = ([f'Not shown, {len(missing)} run{"" if len(missing) == 1 else "s"} without a probe of '
           f'the trained network ({"; ".join(missing)}): probe again with --mode=probe '
           '--workdir=<the run\'s folder>.', ''] if missing else [])
  if not probed:
    return [f'{ctx.heading} {TITLE}', ''] + note if note else []
  rows = [[setting.label, f'{level["level"]} ({level["name"]})',
           f'{level["height"]}×{level["width"]}', _spc(level, 'content_free'),
           _spc(level, 'constant'), _spc(level, 'images'), result['runs']]
          for setting, result in probed for level in result['levels']]
  table = markdown_table(['setting', 'level', 'size', 'SPC x / y, content-free',
                          'SPC x / y, constant', 'SPC x / y, images', 'n'], rows)
  # Not the sweep's probe.png of --mode=probe, which a later report must not remove.
  name = ctx.figure_name('probe_levels')
  probe_results.plot_probe([{'label': setting.label, 'result': result}
                            for setting, result in probed], os.path.join(ctx.workdir, name))
  ctx.mark([setting for setting, _ in probed])
  return ([f'{ctx.heading} {TITLE}', '', INTRO + ' Each row and line: the mean over the '
           'setting\'s probed seeds (n).', ''] + table + [f'![{TITLE}]({name})', ''] + note)
