"""A sweep's runs, presented as `report.md`: every table and figure beside the paper's numbers,
and the verdicts of `pejax.reporting.claims`.

  python -m pejax.reporting --workdir=runs/paper

Every finished run below the workdir (a folder with `results.json`) is read; runs whose
settings differ only in the seed form one *setting* (`pejax.reporting.aggregation`), summarized as
mean ± std over seeds. The report holds the sections for which runs exist — Table 1, Figures
2/3, the small CNN of Sec. 3.2, Table 2, Figures 4 and 5, the position-jitter experiment
(beyond the paper) — and a verdict on each qualitative claim of the paper, decided by the rule
stated beside it.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any
from collections.abc import Callable, Mapping, Sequence

from absl import flags, logging

from pejax import configuration, errors, storage
from pejax.reporting import claims
from pejax.runs import run_files
from pejax.reporting.aggregation import Setting, datasets_of, group_runs
from pejax.reporting.claims import CLAIMS, NOT_MEASURED
from pejax.errors import RunNotFoundError
from pejax.reporting.paper_comparison import scale_label
from pejax.reporting.beyond_paper import encodings_section, verdict_section
from pejax.reporting.probe_section import probe_section
from pejax.reporting.sections import SECTIONS, Context, other_section, title_of


class NoFinishedRunsError(RunNotFoundError):
  """The workdir holds no finished run (no results.json below it)."""


def _summary_section(parts: Sequence[tuple[str, Sequence[Setting]]],
                     all_settings: Sequence[Setting]) -> list[str]:
  """The verdicts of a report with several parts ((scale label, settings) each) in one list:
  each claim is judged in the parts that have its runs (e.g. Table 2 at 100 epochs, the small
  CNN at 30)."""
  out = ['## Verdicts on the paper\'s claims, all parts', '',
         'Each claim as judged in the parts that have its runs (rules and every number in the '
         'parts below).', '']
  judged = [(f'part {index}, {scale}', claims.evaluate_claims(members, all_settings))
            for index, (scale, members) in enumerate(parts, 1)]
  for claim in CLAIMS:
    out.append(f'- **{claim.text}.**')
    for dataset in datasets_of(all_settings):
      found = [(label, v) for label, verdicts in judged for v in verdicts
               if v.claim == claim.name and v.dataset == dataset and v.status != NOT_MEASURED]
      if not found:
        out.append(f'  - {title_of(dataset)}: **{NOT_MEASURED}**')
      for label, verdict in found:
        out.append(f'  - {title_of(dataset)} ({label}): {claims.describe(verdict)}')
  advice = claims.seeds_advice([v for _, verdicts in judged for v in verdicts],
                               max((len(s.runs) for s in all_settings), default=0))
  return out + ([''] + [advice] if advice else []) + ['']



# ------------------------------------------------------------------------------------- header


def _scale_label(settings: Mapping, differing: Sequence[str]) -> str:
  parts = [scale_label(settings)]
  parts += [f'{name}={json.dumps(configuration.json_safe(settings.get(name)))}' for name in differing
            if name not in ('image_size', 'width', 'num_epochs')]
  return ', '.join(filter(None, parts))


def _count(number: int, noun: str) -> str:
  return f'{number} {noun}{"" if number == 1 else "s"}'


def _values(runs: Sequence[Mapping], get: Callable[[Mapping], Any]) -> str:
  values = sorted({str(get(run)) for run in runs} - {'None'})
  return ', '.join(values) if values else 'unknown'


def _header(title: str, runs: Sequence[Mapping], unfinished: Sequence[str],
            settings: Sequence[Setting], scales: Mapping[str, str]) -> list[str]:
  made = datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')
  seconds = sum(float((run.results.timings or {}).get('train_seconds') or 0)
                for run in runs)
  datasets = ', '.join(title_of(d) for d in datasets_of(settings))
  lines = [f'# {title}', '',
           f'- Made: {made}, from {_count(len(runs), "finished run")} in '
           f'{_count(len(settings), "setting")}'
           + (f'; {_count(len(unfinished), "unfinished run")} skipped ({", ".join(unfinished)})'
              if unfinished else '') + '.',
           f'- Datasets: {datasets}.']
  sources = {run.results.dataset: run.results.dataset_source for run in runs
             if run.results.dataset_source}
  lines += [f'- {title_of(dataset)}: a dataset in nnU-Net\'s raw format, from {source} '
            '(not in the paper: its tables have no paper columns).'
            for dataset, source in sorted(sources.items())]
  for index, scale in enumerate(scales, 1):
    members = [s for s in settings if s.scale == scale]
    example = members[0].settings
    lines.append(f'- Settings{"" if len(scales) == 1 else f" of part {index}"}: image '
                 f'{example.get("image_size")}×{example.get("image_size")}, width '
                 f'{example.get("width")}, {example.get("num_epochs")} epochs, batch '
                 f'{example.get("batch_size")}, learning rate {example.get("learning_rate")}, '
                 f'{example.get("compute_dtype", "float32")}; {_count(len(members), "setting")}.')
  lines += [
      f'- Machine: platform {_values(runs, lambda r: r.results.platform)}, devices '
      f'{_values(runs, lambda r: r.results.devices)}, processes '
      f'{_values(runs, lambda r: r.results.processes)}, JAX '
      f'{_values(runs, lambda r: r.results.jax_version)}; training time '
      f'{seconds / 3600:.2f} h summed over runs.',
      '- Numbers: Dice on the test split (mean over the foreground classes per image, then '
      'over images) as mean ± std [95% interval of the mean] over seeds: the sample std '
      '(ddof=1), also for the bands in the figures, and a t-interval; n = seeds. Severity 5 is '
      'the most severe corruption.', '']
  return lines


# ------------------------------------------------------------------------------------- report


def write_report(workdir: str, *, title: str | None = None) -> str:
  """Writes `workdir/report.md` and its PNG figures beside it; returns the report's path.

  Raises NoFinishedRunsError if no finished run lies below `workdir`.
  """
  storage.check_location(workdir, '--workdir')
  if not storage.isdir(workdir):
    raise NoFinishedRunsError(f'{workdir} does not exist or is not a folder.')
  runs, unfinished = run_files.scan_runs(workdir)
  if unfinished:
    logging.info('Skipping %d unfinished run(s) without results.json: %s', len(unfinished),
                 ', '.join(unfinished))
  if not runs:
    raise NoFinishedRunsError(
        f'{workdir} holds no finished run (no results.json below it'
        + (f'; {len(unfinished)} unfinished' if unfinished else '') + '). Train first, e.g. '
        f'python main.py --config=configs/paper/phantom_all.py --workdir={workdir}')
  path = os.path.join(workdir, run_files.REPORT_FILE)
  logging.info('Writing the report of %d runs to %s ...', len(runs), path)
  settings = group_runs(runs)
  scale_keys = list(dict.fromkeys(s.scale for s in settings))
  scale_settings = [json.loads(key) for key in scale_keys]
  differing = sorted({name for a in scale_settings for b in scale_settings
                      for name in set(a) | set(b) if a.get(name) != b.get(name)})
  scales = {key: _scale_label(value, differing) for key, value in zip(scale_keys, scale_settings)}
  title = title or f'pejax report: {os.path.basename(os.path.normpath(os.path.abspath(workdir)))}'
  lines = _header(title, runs, unfinished, settings, scales)
  parts = [(scales[key], [s for s in settings if s.scale == key]) for key in scale_keys]
  if len(parts) > 1:
    lines += _summary_section(parts, settings)
  figures = []
  for index, (scale, members) in enumerate(parts):
    if len(parts) > 1:
      lines += [f'## Part {index + 1}: {scale}', '']
      ctx = Context(workdir, f'_part{index + 1}', '###', settings)
    else:
      ctx = Context(workdir, '', '##', settings)
    for section in SECTIONS + (encodings_section, probe_section, verdict_section,
                               other_section):
      lines += section(ctx, members)
    figures += [os.path.basename(figure) for figure in ctx.figures]
  text = '\n'.join(lines).rstrip('\n') + '\n'
  storage.write_atomically(path, lambda f: f.write(text))
  _remove_stale_figures(workdir, figures)
  return path


def _remove_stale_figures(workdir: str, figures: Sequence[str]) -> None:
  """Deletes the figures an earlier report wrote (listed in its FIGURES_FILE) that this one
  did not write again (e.g. after the part numbering changed), then lists this report's."""
  listing = os.path.join(workdir, run_files.FIGURES_FILE)
  previous = storage.read_json_or_none(listing) if storage.exists(listing) else None
  for name in (previous or {}).get('figures', []):
    # Only plain file names of this folder: the listing is ours, but it is read from disk.
    if name not in figures and name == os.path.basename(name) and name.endswith('.png'):
      try:
        storage.remove(storage.join(workdir, name))
      except FileNotFoundError:
        pass
  storage.write_json(listing, {'figures': sorted(figures)})


@errors.exit_on_user_error  # a wrong folder or a bad file as one line, as in main.py
def main(argv):
  """`python -m pejax.reporting --workdir=W [--title=T]` (flags defined by `__main__`)."""
  if len(argv) > 1:
    raise errors.SettingError(f'unexpected arguments {argv[1:]}: give the folder as '
                              '--workdir=... (--helpfull lists the flags).')
  print(write_report(flags.FLAGS.workdir, title=flags.FLAGS.title))

