"""A sweep's runs, aggregated into `report.md`: every table and figure beside the paper's.

  python -m pejax.report --workdir=runs/paper

Every finished run below the workdir (a folder with `results.json`) is read; runs whose
settings differ only in the seed form one *setting*, summarized as mean ± std over seeds.
The report holds the sections for which runs exist — Table 1, Figures 2/3, the small CNN of
Sec. 3.2, Table 2, Figures 4 and 5, the position-jitter experiment (beyond the paper) — and
a verdict on each qualitative claim of the paper, decided by a rule stated in the report.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import sys
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from absl import app, flags, logging

from pejax import configuration, files, robustness, visualize

RESULTS_FILE = 'results.json'
CONFIG_FILE = 'config.json'
ROBUSTNESS_FILE = 'robustness.json'
REPORT_FILE = 'report.md'
# The figures the last report wrote, so that the next one can remove those it does not write.
FIGURES_FILE = 'report_figures.json'

# Standard deviations over seeds are population standard deviations, the same convention as
# the bands of `robustness.aggregate_robustness` in the figures.
STD_DDOF = 0

DATASET_ORDER = ('jsrt', 'acdc', 'phantom_chest', 'phantom_cardiac')
DATASET_TITLES = {'jsrt': 'JSRT', 'acdc': 'ACDC', 'phantom_chest': 'chest phantom',
                  'phantom_cardiac': 'cardiac phantom'}
MODEL_TITLES = {'unet': 'U-Net', 'cnn4': 'small CNN'}
# The phantoms have no paper numbers; each mimics one real dataset, whose numbers are shown
# as an analogue (not as a target).
PAPER_ANALOGUE = {'phantom_chest': 'jsrt', 'phantom_cardiac': 'acdc'}

# The paper's numbers (DESIGN.md §1) as (mean, std); std None where the paper gives none.
# Keys: 'averaged_mask', None (no PE) or λ.
PAPER_TABLE1 = {
    'jsrt': {'averaged_mask': (0.8124, None), None: (0.9673, 0.0011), 1.0: (0.9649, 0.0012),
             10.0: (0.9637, 0.0003), 256.0: (0.9599, 0.0023)},
    'acdc': {'averaged_mask': (0.158, None), None: (0.8496, 0.0133), 1.0: (0.8582, 0.0100),
             10.0: (0.8557, 0.0035), 256.0: (0.8347, 0.0161)},
}
# Sec. 3.2 gives the small CNN's clean Dice only approximately.
PAPER_SMALL_CNN = {
    'jsrt': {'averaged_mask': '0.8124', None: '≈ 0.5', 256.0: '≈ 0.9'},
    'acdc': {'averaged_mask': '0.158', None: '< 0.1', 256.0: '≈ 0.55'},
}
# Table 2 (JSRT only): training images (None = all 156) -> {None: no PE, 256.0: PE}.
PAPER_TABLE2 = {
    'jsrt': {None: {None: (0.9673, 0.0011), 256.0: (0.9599, 0.0023)},
             10: {None: (0.8813, 0.0175), 256.0: (0.9020, 0.0027)},
             5: {None: (0.8700, 0.0170), 256.0: (0.8774, 0.0055)}},
}

# The axes along which the paper's experiments vary; every other setting (image size, width,
# epochs, ...) is the *scale* of a run, and runs of different scales are reported apart.
EXPERIMENT_AXES = ('dataset', 'model', 'padding', 'use_pe', 'pe_scale', 'num_train_examples',
                   'position_jitter')
# Left out of a setting's key, besides configuration.NON_RESULT_SETTINGS: the seed (what runs of
# one setting differ in) and whether the robustness grid was evaluated.
_NOT_GROUPED = ('seed', 'run_robustness')

NOISES = ('gaussian_noise', 'shot_noise')
# Dice differences below this count as ties where the paper's claim is an ordering of many
# settings (the λ series of Figure 2) or a gap that must exist (Figure 4).
TIE_MARGIN = 0.01
# "Far above" in the small-CNN claim.
FAR_MARGIN = 0.1

HOLDS, FAILS, NOT_MEASURED = 'holds', 'does not hold', 'not measured'
NOT_ASSESSED = 'not assessed'
# A dataset's claims are decided only if its models learnt it: the best setting's mean clean
# Dice must beat the averaged-mask baseline by this much, and its Dice of every class must be
# above the baseline's. Claims about untrained models (e.g. a scale too small for the data)
# would be noise, whichever way they came out.
LEARNT_MARGIN = 0.05


class NoFinishedRunsError(ValueError):
  """The workdir holds no finished run (no results.json below it)."""


# --------------------------------------------------------------------------------- collecting


def _read_json_or_none(path: str):
  try:
    return files.read_json(path)
  except (OSError, ValueError) as error:
    logging.warning('Skipping %s: it cannot be read (%s).', path, error)
    return None


def scan_runs(workdir: str) -> tuple[list[dict], list[str]]:
  """Finished runs below `workdir` and the folders of unfinished ones (config.json only).

  Each run is {'name': folder relative to workdir, 'path', 'config', 'results',
  'robustness': the robustness result or None}.
  """
  runs, unfinished = [], []
  for folder, subfolders, names in os.walk(workdir):
    subfolders.sort()
    if RESULTS_FILE in names:
      subfolders.clear()  # runs are not nested; skip the checkpoints
      results = _read_json_or_none(os.path.join(folder, RESULTS_FILE))
      if results is None:
        continue
      config = results.get('config')
      if config is None and CONFIG_FILE in names:
        config = _read_json_or_none(os.path.join(folder, CONFIG_FILE))
      if not config:
        logging.warning('Skipping %s: its results.json has no config.', folder)
        continue
      robustness_path = os.path.join(folder, results.get('robustness_file') or ROBUSTNESS_FILE)
      grid = _read_json_or_none(robustness_path) if os.path.exists(robustness_path) else None
      name = os.path.relpath(folder, workdir)
      runs.append({'name': name, 'path': folder, 'config': config, 'results': results,
                   'robustness': grid})
    elif CONFIG_FILE in names:
      subfolders.clear()
      unfinished.append(os.path.relpath(folder, workdir))
  return runs, unfinished


def collect_runs(workdir: str) -> list[dict]:
  """Every finished run below `workdir` (see `scan_runs`); unfinished runs are skipped."""
  runs, unfinished = scan_runs(workdir)
  if unfinished:
    logging.info('Skipping %d unfinished run(s) without results.json: %s', len(unfinished),
                 ', '.join(unfinished))
  return runs


# ---------------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Stat:
  """Mean ± std (ddof=STD_DDOF) over the finite values of `n` runs."""
  mean: float
  std: float
  n: int


def summarize(values: Sequence[float | None]) -> Stat:
  finite = np.asarray([np.nan if v is None else v for v in values], np.float64)
  finite = finite[np.isfinite(finite)]
  if not finite.size:
    return Stat(float('nan'), float('nan'), 0)
  std = float(np.std(finite, ddof=STD_DDOF)) if finite.size > STD_DDOF else float('nan')
  return Stat(float(np.mean(finite)), std, int(finite.size))


def setting_key(config: Mapping) -> dict:
  """The settings that make a run's numbers, less the seed: runs with equal keys are seeds of
  one setting."""
  settings = {k: v for k, v in config.items()
              if k not in configuration.NON_RESULT_SETTINGS and k not in _NOT_GROUPED}
  if not settings.get('use_pe', False):
    settings['pe_scale'] = None  # λ means nothing without PE
  if isinstance(settings.get('robustness'), Mapping):
    settings['robustness'] = {k: v for k, v in settings['robustness'].items()
                              if k != 'batch_size'}
  return settings


def _canonical(settings: Mapping) -> str:
  return json.dumps(files.json_safe(settings), sort_keys=True)


@dataclasses.dataclass(eq=False)
class Setting:
  """The runs (seeds) of one setting."""
  settings: dict
  runs: list[dict]

  @property
  def dataset(self) -> str:
    return self.settings.get('dataset')

  @property
  def model(self) -> str:
    return self.settings.get('model')

  @property
  def padding(self) -> str:
    return self.settings.get('padding', 'zeros')

  @property
  def pe(self) -> float | None:
    """λ, or None without PE."""
    return float(self.settings['pe_scale']) if self.settings.get('use_pe') else None

  @property
  def num_train_examples(self) -> int | None:
    return self.settings.get('num_train_examples')

  @property
  def position_jitter(self) -> float | None:
    return self.settings.get('position_jitter')

  @property
  def seeds(self) -> list:
    return [run['config'].get('seed') for run in self.runs]

  @property
  def class_names(self) -> list[str]:
    return list(self.runs[0]['results'].get('class_names') or [])

  @property
  def scale(self) -> str:
    return _canonical({k: v for k, v in self.settings.items() if k not in EXPERIMENT_AXES})

  def test(self, metric: str = 'dice') -> Stat:
    return summarize([run['results'].get('test', {}).get(metric) for run in self.runs])

  def averaged_mask(self, metric: str = 'dice') -> Stat:
    return summarize([(run['results'].get('test_averaged_mask') or {}).get(metric)
                      for run in self.runs])

  def train_examples(self) -> list[int]:
    return sorted({run['results'].get('num_train_examples') for run in self.runs} - {None})

  @property
  def robust_runs(self) -> list[dict]:
    return [run for run in self.runs if run['robustness']]

  def per_run(self, measure: Callable[[Mapping], float]) -> Stat:
    """`measure(robustness result)` over the runs with a robustness grid."""
    values = []
    for run in self.robust_runs:
      try:
        values.append(measure(run['robustness']))
      except (KeyError, TypeError, ValueError):
        values.append(None)
    return summarize(values)

  @functools.cached_property
  def robustness_curves(self) -> tuple[dict, dict] | None:
    """(mean, std) robustness results for the figures, or None without robustness grids."""
    if not self.robust_runs:
      return None
    try:
      return robustness.aggregate_robustness([run['robustness'] for run in self.robust_runs])
    except (KeyError, TypeError, ValueError) as error:
      logging.warning('Robustness grids of %s cannot be averaged (%s).', self.label, error)
      return None

  @property
  def label(self) -> str:
    return ', '.join(filter(None, [
        self.dataset, self.model, self.padding, pe_label(self.pe),
        None if self.num_train_examples is None else f'{self.num_train_examples} images',
        None if self.position_jitter is None else f'jitter {self.position_jitter:g}']))


def group_runs(runs: Sequence[Mapping]) -> list[Setting]:
  """Runs grouped into settings (all but the seed), in a stable order."""
  groups: dict[str, Setting] = {}
  for run in runs:
    key = setting_key(run['config'])
    groups.setdefault(_canonical(key), Setting(key, [])).runs.append(dict(run))
  for setting in groups.values():
    setting.runs.sort(key=lambda run: (str(run['config'].get('seed')), run['name']))
  return sorted(groups.values(), key=_setting_order)


def _dataset_rank(dataset: str) -> tuple:
  return (DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER),
          str(dataset))


def _pe_rank(pe: float | None) -> float:
  return -1.0 if pe is None else pe


def _setting_order(setting: Setting) -> tuple:
  return (setting.scale, _dataset_rank(setting.dataset), str(setting.model),
          setting.padding != 'zeros', str(setting.padding),
          setting.num_train_examples is not None, -(setting.num_train_examples or 0),
          -1.0 if setting.position_jitter is None else setting.position_jitter,
          _pe_rank(setting.pe))


_ANY = object()


def select(settings: Sequence[Setting], **conditions) -> list[Setting]:
  """Settings whose properties equal the conditions (a value, or `_ANY`)."""
  return [s for s in settings
          if all(value is _ANY or getattr(s, name) == value for name, value in conditions.items())]


def _standard(settings: Sequence[Setting], dataset: str, model: str = 'unet', *,
              padding='zeros', num_train_examples=None, position_jitter=None) -> list[Setting]:
  """The paper's default setting (zero padding, all data, default jitter) of a dataset/model."""
  return select(settings, dataset=dataset, model=model, padding=padding,
                num_train_examples=num_train_examples, position_jitter=position_jitter)


# ------------------------------------------------------------------------- robustness measures


def _top_severity(grid: Mapping, name: str) -> str:
  return str(max(int(level) for level in grid[name]))


def corruption_dice(grid: Mapping, name: str, severity: str | None = None,
                    metric: str = 'dice') -> float:
  """Dice under one corruption at `severity` (default: the most severe in the grid)."""
  severity = severity or _top_severity(grid, name)
  value = grid[name][severity][metric]
  return float('nan') if value is None else float(value)


def noise_dice(grid: Mapping) -> float:
  """Mean Dice under Gaussian and shot noise at their top severity (5 in the paper's grid)."""
  return float(np.mean([corruption_dice(grid, name) for name in NOISES]))


def noise_drop(grid: Mapping) -> float:
  """Clean Dice minus `noise_dice`: how much noise costs."""
  return float(grid['clean']['dice']) - noise_dice(grid)


def _shift_condition(grid: Mapping) -> str:
  names = [name for name in grid if name.startswith('shift_')]
  if len(names) != 1:
    raise KeyError('no single shift condition')
  return names[0]


def shift_dice(grid: Mapping) -> float:
  """Mean Dice over every nonzero shift of the grid."""
  condition = _shift_condition(grid)
  values = [grid[condition][k]['dice'] for k in grid[condition] if int(k) != 0]
  return float(np.mean([np.nan if v is None else v for v in values]))


def extreme_shift_dice(grid: Mapping) -> float:
  """Mean Dice at the largest shift in both directions."""
  condition = _shift_condition(grid)
  largest = max(abs(int(k)) for k in grid[condition])
  values = [grid[condition][k]['dice'] for k in grid[condition] if abs(int(k)) == largest]
  return float(np.mean([np.nan if v is None else v for v in values]))


def _has_shifts(setting: Setting) -> bool:
  return any(any(k.startswith('shift_') and run['robustness'][k] for k in run['robustness'])
             for run in setting.robust_runs)


# -------------------------------------------------------------------------------- formatting


def pe_label(pe: float | None) -> str:
  return 'no PE' if pe is None else f'PE λ={pe:g}'


def format_stat(stat: Stat, digits: int = 4) -> str:
  if not stat.n or not np.isfinite(stat.mean):
    return '—'
  if stat.n == 1 or not np.isfinite(stat.std):
    return f'{stat.mean:.{digits}f}'
  return f'{stat.mean:.{digits}f} ± {stat.std:.{digits}f}'


def format_paper(value) -> str:
  if value is None:
    return '—'
  if isinstance(value, str):
    return value
  mean, std = value
  # A bare number is shown as the paper prints it (0.158, not 0.1580).
  return f'{mean:g}' if std is None else f'{mean:.4f} ± {std:.4f}'


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |' for row in rows]
  return lines + ['']


def _paper_source(dataset: str, table: Mapping) -> tuple[str | None, str]:
  """(key into a paper table, column header) for a dataset: its own numbers or an analogue."""
  if dataset in table:
    return dataset, 'paper'
  analogue = PAPER_ANALOGUE.get(dataset)
  if analogue in table:
    return analogue, f'paper ({DATASET_TITLES[analogue]}, analogue)'
  return None, 'paper'


def _analogue_note(dataset: str, source: str | None) -> list[str]:
  if source is None or source == dataset:
    return []
  return [f'Paper: n/a (phantom). The {DATASET_TITLES[source]} value is the paper\'s number on '
          'the real dataset this phantom mimics, shown as an analogue, not as a target.', '']


# PE settings keep their colour in every figure: no PE blue, as in the paper's Figure 2.
_PE_COLORS = {None: 'tab:blue', 1.0: 'tab:orange', 10.0: 'tab:green', 256.0: 'tab:red'}
_OTHER_COLORS = ('tab:purple', 'tab:brown', 'tab:pink', 'tab:olive', 'tab:cyan', 'tab:gray')


def _pe_color(pe: float | None, others: list) -> str:
  if pe in _PE_COLORS:
    return _PE_COLORS[pe]
  if pe not in others:
    others.append(pe)
  return _OTHER_COLORS[others.index(pe) % len(_OTHER_COLORS)]


def _title(setting_or_dataset) -> str:
  dataset = getattr(setting_or_dataset, 'dataset', setting_or_dataset)
  return DATASET_TITLES.get(dataset, str(dataset))


# ----------------------------------------------------------------------------------- sections


@dataclasses.dataclass
class _Context:
  """Where one part of the report (one scale) puts its figures, and what it has shown."""
  workdir: str
  suffix: str
  heading: str
  all_settings: Sequence[Setting]  # of every part: whether a dataset was learnt at all
  shown: set = dataclasses.field(default_factory=set)
  figures: list = dataclasses.field(default_factory=list)

  def figure_name(self, stem: str) -> str:
    name = f'{stem}{self.suffix}.png'
    self.figures.append(os.path.join(self.workdir, name))
    return name

  def mark(self, settings: Sequence[Setting]) -> None:
    self.shown.update(id(s) for s in settings)


def _datasets(settings: Sequence[Setting]) -> list[str]:
  return sorted({s.dataset for s in settings}, key=_dataset_rank)


def _pe_sorted(settings: Sequence[Setting]) -> list[Setting]:
  return sorted(settings, key=lambda s: _pe_rank(s.pe))


def _pe_of_interest(settings: Sequence[Setting]) -> float | None:
  """λ=256 (the paper's PE in Table 2 and Figures 3–5) if run, else the largest λ run."""
  scales = {s.pe for s in settings} - {None}
  if not scales:
    return None
  return 256.0 if 256.0 in scales else max(scales)


def _clean_table(ctx: _Context, settings: Sequence[Setting], paper_table: Mapping,
                 dataset: str) -> list[str]:
  """Averaged mask + one row per PE setting: clean Dice, n, per-class Dice, paper column."""
  source, paper_header = _paper_source(dataset, paper_table)
  class_names = settings[0].class_names
  header = ['model', 'Dice', 'n'] + [f'Dice {c}' for c in class_names]
  if source:
    header.append(paper_header)
  all_runs = Setting({}, [run for s in settings for run in s.runs])
  rows = []
  mask_row = ['averaged mask', format_stat(all_runs.averaged_mask()), all_runs.averaged_mask().n]
  mask_row += [format_stat(all_runs.averaged_mask(f'dice_{c}')) for c in class_names]
  if source:
    mask_row.append(format_paper(paper_table[source].get('averaged_mask')))
  rows.append(mask_row)
  model = MODEL_TITLES.get(settings[0].model, settings[0].model)
  for setting in _pe_sorted(settings):
    row = [f'{model} {"w/o PE" if setting.pe is None else f"w/ PE (λ={setting.pe:g})"}',
           format_stat(setting.test()), setting.test().n]
    row += [format_stat(setting.test(f'dice_{c}')) for c in class_names]
    if source:
      row.append(format_paper(paper_table[source].get(setting.pe)))
    rows.append(row)
  ctx.mark(settings)
  return markdown_table(header, rows) + _analogue_note(dataset, source)


def _table1_section(ctx: _Context, settings: Sequence[Setting]) -> list[str]:
  out = []
  for dataset in _datasets(settings):
    chosen = _standard(settings, dataset, 'unet')
    if not chosen:
      continue
    out += [f'**{_title(dataset)}** — U-Net, zero padding, all training data; clean test '
            'Dice (mean ± std over seeds, n seeds).', '']
    out += _clean_table(ctx, chosen, PAPER_TABLE1, dataset)
  if not out:
    return []
  return [f'{ctx.heading} Table 1: clean test Dice, U-Net with and without PE', ''] + out


def _corruption_table(settings: Sequence[Setting], label: Callable[[Setting], str]) -> list[str]:
  rows = []
  for setting in settings:
    rows.append([label(setting), format_stat(setting.test()),
                 format_stat(setting.per_run(lambda g: corruption_dice(g, 'gaussian_noise'))),
                 format_stat(setting.per_run(lambda g: corruption_dice(g, 'shot_noise'))),
                 format_stat(setting.per_run(lambda g: corruption_dice(g, 'gaussian_blur'))),
                 format_stat(setting.per_run(noise_drop)), len(setting.robust_runs)])
  return markdown_table(['setting', 'clean', 'Gaussian noise s5', 'shot noise s5',
                         'Gaussian blur s5', 'noise drop', 'n'], rows)


def _corruption_figure(ctx: _Context, settings: Sequence[Setting], stem: str, title: str,
                       style: Callable[[Setting, list], dict], label: Callable[[Setting], str],
                       reference: Stat | None) -> list[str]:
  others: list = []
  curves = []
  for setting in settings:
    mean_std = setting.robustness_curves
    if mean_std is None:
      continue
    curves.append({'label': f'{label(setting)} (n={len(setting.robust_runs)})',
                   'result': mean_std[0], 'std': mean_std[1], 'style': style(setting, others)})
  if not curves:
    return []
  references = ([('averaged mask', reference.mean)]
                if reference is not None and reference.n and np.isfinite(reference.mean) else [])
  name = ctx.figure_name(stem)
  robustness.plot_corruptions(curves, os.path.join(ctx.workdir, name), references=references,
                              title=title)
  return [f'![{title}]({name})', '']


def _pe_style(setting: Setting, others: list) -> dict:
  return {'color': _pe_color(setting.pe, others)}


def _corruptions_section(ctx: _Context, settings: Sequence[Setting]) -> list[str]:
  out = []
  for model, figure in (('unet', 'Figure 2'), ('cnn4', 'Figure 3')):
    for dataset in _datasets(settings):
      chosen = [s for s in _pe_sorted(_standard(settings, dataset, model)) if s.robust_runs]
      if not chosen:
        continue
      model_title = MODEL_TITLES.get(model, model)
      title = f'{_title(dataset)}, {model_title}: Dice under corruptions ({figure}-like)'
      out += [f'**{title}** — zero padding, all training data; mean ± std over seeds '
              '(band), severity 0 = clean; dashed line: averaged mask.', '']
      average = Setting({}, [run for s in chosen for run in s.runs]).averaged_mask()
      out += _corruption_figure(ctx, chosen, f'fig{figure[-1]}_{dataset}_{model}', title,
                                _pe_style, lambda s: pe_label(s.pe), average)
      out += _corruption_table(chosen, lambda s: pe_label(s.pe))
      ctx.mark(chosen)
  if not out:
    return []
  return [f'{ctx.heading} Figures 2 and 3: Dice versus corruption severity', '',
          'Noise drop = clean Dice minus the mean Dice under Gaussian and shot noise at '
          'severity 5. Paper (Fig. 2): without PE the U-Net degrades quickly under noise; PE '
          'mitigates it, more with larger λ, at some cost on clean images.', ''] + out


def _small_cnn_section(ctx: _Context, settings: Sequence[Setting]) -> list[str]:
  out = []
  for dataset in _datasets(settings):
    chosen = _standard(settings, dataset, 'cnn4')
    if not chosen:
      continue
    out += [f'**{_title(dataset)}** — small CNN (4 conv layers), zero padding, all training '
            'data; clean test Dice.', '']
    out += _clean_table(ctx, chosen, PAPER_SMALL_CNN, dataset)
  if not out:
    return []
  return [f'{ctx.heading} Small CNN (Sec. 3.2)', '',
          'Paper: without PE ≈ 0.5 (JSRT), < 0.1 (ACDC); with PE λ=256 ≈ 0.9 (JSRT), ≈ 0.55 '
          '(ACDC).', ''] + out


def _size_label(size: int | None, settings: Sequence[Setting]) -> str:
  if size is not None:
    return str(size)
  counts = sorted({n for s in settings for n in s.train_examples()})
  return f'all ({", ".join(map(str, counts))})' if counts else 'all'


def _table2_section(ctx: _Context, settings: Sequence[Setting]) -> list[str]:
  out = []
  for dataset in _datasets(settings):
    chosen = _standard(settings, dataset, 'unet', num_train_examples=_ANY)
    sizes = sorted({s.num_train_examples for s in chosen},
                   key=lambda n: (n is not None, -(n or 0)))
    if not any(size is not None for size in sizes):
      continue
    pe = _pe_of_interest(chosen)
    columns = [None] + ([pe] if pe is not None else [])
    chosen = [s for s in chosen if s.pe in columns]
    source, paper_header = _paper_source(dataset, PAPER_TABLE2)
    header = ['training images']
    for column in columns:
      header += [pe_label(column), 'n']
    if source:
      header += [f'{paper_header} {pe_label(column)}' for column in columns]
    rows = []
    for size in sizes:
      row_settings = [s for s in chosen if s.num_train_examples == size]
      row = [_size_label(size, row_settings)]
      for column in columns:
        match = [s for s in row_settings if s.pe == column]
        stat = match[0].test() if match else Stat(float('nan'), float('nan'), 0)
        row += [format_stat(stat), stat.n]
      if source:
        row += [format_paper(PAPER_TABLE2[source].get(size, {}).get(column)) for column in columns]
      rows.append(row)
    out += [f'**{_title(dataset)}** — U-Net, zero padding; clean test Dice by training-set '
            'size.', '']
    out += markdown_table(header, rows) + _analogue_note(dataset, source)
    ctx.mark(chosen)
  if not out:
    return []
  return [f'{ctx.heading} Table 2: training-set size', '',
          'Paper (JSRT): with 10 or 5 training images PE helps the U-Net.', ''] + out


def _padding_section(ctx: _Context, settings: Sequence[Setting]) -> list[str]:
  out = []
  for dataset in _datasets(settings):
    chosen = _standard(settings, dataset, 'unet', padding=_ANY)
    other = [s for s in chosen if s.padding != 'zeros']
    if not other:
      continue
    pe_values = {s.pe for s in other}
    chosen = [s for s in chosen if s.pe in pe_values]
    chosen.sort(key=lambda s: (s.padding != 'zeros', s.padding, _pe_rank(s.pe)))
    lines = {'zeros': '-', 'reflect': '--'}

    def label(setting):
      return f'{setting.padding} padding, {pe_label(setting.pe)}'

    def style(setting, others):
      return {'color': _pe_color(setting.pe, others),
              'linestyle': lines.get(setting.padding, ':')}

    title = f'{_title(dataset)}, U-Net: padding and PE (Figure 4-like)'
    out += [f'**{title}** — all training data.', '']
    robust = [s for s in chosen if s.robust_runs]
    if any(s.padding != 'zeros' for s in robust):
      out += _corruption_figure(ctx, robust, f'fig4_{dataset}_padding', title, style, label,
                                None)
      out += ['Solid lines: zero padding; dashed: reflection; dotted: other paddings.', '']
    if all(s.robust_runs for s in chosen):
      out += _corruption_table(chosen, label)
    else:
      rows = [[label(s), format_stat(s.test()), s.test().n] for s in chosen]
      out += markdown_table(['setting', 'clean', 'n'], rows)
    ctx.mark(chosen)
  if not out:
    return []
  return [f'{ctx.heading} Figure 4: zero versus reflection padding', '',
          'Paper: no difference on clean images; on JSRT reflection padding without PE is less '
          'robust to noise than zero padding and PE closes the gap; no meaningful difference '
          'on ACDC.', ''] + out


def _shift_section(ctx: _Context, settings: Sequence[Setting]) -> list[str]:
  out = []
  for dataset in _datasets(settings):
    chosen = [s for s in _pe_sorted(_standard(settings, dataset, 'unet')) if _has_shifts(s)]
    if not chosen:
      continue
    chosen = [s for s in chosen if s.robustness_curves is not None]
    if not chosen:
      continue
    curves, others = [], []
    for setting in chosen:
      mean, std = setting.robustness_curves
      curves.append({'label': f'{pe_label(setting.pe)} (n={len(setting.robust_runs)})',
                     'result': mean, 'std': std, 'style': _pe_style(setting, others)})
    title = f'{_title(dataset)}, U-Net: Dice versus shift (Figure 5-like)'
    name = ctx.figure_name(f'fig5_{dataset}_shift')
    try:
      robustness.plot_shifts(curves, os.path.join(ctx.workdir, name), title=title)
    except (KeyError, ValueError) as error:
      logging.warning('No shift figure for %s: %s', dataset, error)
      ctx.figures.pop()
      continue
    rows = [[pe_label(s.pe), format_stat(s.per_run(lambda g: g[_shift_condition(g)]['0']['dice'])),
             format_stat(s.per_run(shift_dice)), format_stat(s.per_run(extreme_shift_dice)),
             len(s.robust_runs)] for s in chosen]
    out += [f'**{title}** — zero padding, all training data; mean ± std over seeds.', '',
            f'![{title}]({name})', '']
    out += markdown_table(['setting', 'no shift', 'mean over shifts ≠ 0', 'largest ±shift',
                           'n'], rows)
    ctx.mark(chosen)
  if not out:
    return []
  return [f'{ctx.heading} Figure 5: shifted test images', '',
          'Paper: under x-shifts the U-Net without PE does better than with PE.', ''] + out


def paired_difference(with_pe: Setting, without_pe: Setting) -> Stat:
  """Dice with PE minus without, over seeds run in both (paired), else of the two means."""
  def dice(run):
    return (run['results'].get('test') or {}).get('dice')

  by_seed = {run['config'].get('seed'): run for run in without_pe.runs}
  pairs = [(dice(run), dice(by_seed[run['config'].get('seed')]))
           for run in with_pe.runs if run['config'].get('seed') in by_seed]
  pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
  if pairs:
    return summarize([a - b for a, b in pairs])
  a, b = with_pe.test(), without_pe.test()
  if not a.n or not b.n:
    return Stat(float('nan'), float('nan'), 0)
  return Stat(a.mean - b.mean, float(np.hypot(a.std, b.std)), min(a.n, b.n))


def _jitter_figure(path: str, lines: Sequence[tuple[str, str, str, list, list, list]],
                   title: str) -> None:
  """Dice versus jitter; each line is (label, color, linestyle, jitters, means, stds)."""
  figure = visualize.new_figure(6, 4)
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
  files.write_atomically(path, lambda f: figure.savefig(f, format='png'), mode='wb')


_MODEL_COLORS = {'cnn4': 'tab:purple', 'unet': 'tab:green'}


def _jitter_section(ctx: _Context, settings: Sequence[Setting]) -> list[str]:
  out = []
  for dataset in _datasets(settings):
    chosen = [s for s in select(settings, dataset=dataset, padding='zeros',
                                num_train_examples=None) if s.position_jitter is not None]
    pe = _pe_of_interest(chosen)
    if pe is None:
      continue
    rows, lines, used = [], [], []
    for model in sorted({s.model for s in chosen}, key=lambda m: (m != 'cnn4', m)):
      jitters = sorted({s.position_jitter for s in chosen if s.model == model})
      series = {None: ([], [], []), pe: ([], [], [])}
      for jitter in jitters:
        without = select(chosen, model=model, position_jitter=jitter, pe=None)
        with_pe = select(chosen, model=model, position_jitter=jitter, pe=pe)
        if not without or not with_pe:
          continue
        used += without + with_pe
        benefit = paired_difference(with_pe[0], without[0])
        rows.append([MODEL_TITLES.get(model, model), f'{jitter:g}',
                     format_stat(without[0].test()), format_stat(with_pe[0].test()),
                     format_stat(benefit), f'{without[0].test().n} / {with_pe[0].test().n}'])
        for key, setting in ((None, without[0]), (pe, with_pe[0])):
          series[key][0].append(jitter)
          series[key][1].append(setting.test().mean)
          series[key][2].append(setting.test().std)
      for key, linestyle in ((None, '--'), (pe, '-')):
        if series[key][0]:
          lines.append((f'{MODEL_TITLES.get(model, model)}, {pe_label(key)}',
                        _MODEL_COLORS.get(model, 'tab:gray'), linestyle, *series[key]))
    if not rows:
      continue
    title = f'{_title(dataset)}: PE benefit versus position jitter'
    name = ctx.figure_name(f'jitter_{dataset}')
    _jitter_figure(os.path.join(ctx.workdir, name), lines, title)
    out += [f'**{title}** — zero padding, all training data; PE benefit = clean Dice with '
            f'{pe_label(pe)} minus without PE, paired by seed (mean ± std over seeds).', '',
            f'![{title}]({name})', '']
    out += markdown_table(['model', 'jitter', 'no PE', pe_label(pe), 'PE benefit',
                           'n (no PE / PE)'], rows)
    ctx.mark(used)
  if not out:
    return []
  return [f'{ctx.heading} Beyond the paper: position jitter', '',
          'The phantoms vary how far the anatomy moves between images; the more it moves, '
          'the less absolute position tells. Not in the paper: no paper values.', ''] + out


# ----------------------------------------------------------------------------------- verdicts


@dataclasses.dataclass(frozen=True)
class Verdict:
  claim: str
  dataset: str
  status: str
  numbers: str


@dataclasses.dataclass(frozen=True)
class Claim:
  name: str
  text: str
  rule: str
  check: Callable[[Sequence[Setting], str], tuple[str, str]]


def _mean(stat: Stat) -> float:
  return stat.mean if stat.n else float('nan')


def _check_noise(settings, dataset):
  chosen = [s for s in _pe_sorted(_standard(settings, dataset, 'unet')) if s.robust_runs]
  drops = [(s.pe, _mean(s.per_run(noise_drop))) for s in chosen]
  drops = [(pe, d) for pe, d in drops if np.isfinite(d)]
  if not drops or drops[0][0] is not None or len(drops) < 2:
    return NOT_MEASURED, 'needs U-Net runs without PE and with PE, with robustness grids'
  numbers = ', '.join(f'{pe_label(pe)} {d:.3f}' for pe, d in drops)
  lowers = drops[-1][1] < drops[0][1] - TIE_MARGIN
  ordered = all(b[1] <= a[1] + TIE_MARGIN for a, b in zip(drops, drops[1:]))
  return (HOLDS if lowers and ordered else FAILS), f'noise drop: {numbers}'


def _check_clean_cost(settings, dataset):
  chosen = _pe_sorted(_standard(settings, dataset, 'unet'))
  without = [s for s in chosen if s.pe is None]
  with_pe = [s for s in chosen if s.pe is not None]
  if not without or not with_pe:
    return NOT_MEASURED, 'needs U-Net runs without and with PE'
  clean_without, clean_top = _mean(without[0].test()), _mean(with_pe[-1].test())
  numbers = (f'clean Dice no PE {clean_without:.4f}, {pe_label(with_pe[-1].pe)} '
             f'{clean_top:.4f}')
  return (HOLDS if clean_top < clean_without else FAILS), numbers


def _check_padding(settings, dataset):
  chosen = [s for s in _standard(settings, dataset, 'unet', padding=_ANY) if s.robust_runs]
  pe = _pe_of_interest([s for s in chosen if s.padding == 'reflect'])
  score = {}
  for s in chosen:
    if s.padding in ('zeros', 'reflect') and s.pe in (None, pe):
      score[(s.padding, s.pe)] = _mean(s.per_run(noise_dice))
  needed = [(p, q) for p in ('zeros', 'reflect') for q in (None, pe)]
  if pe is None or not all(np.isfinite(score.get(key, np.nan)) for key in needed):
    return NOT_MEASURED, ('needs U-Net runs with zero and reflection padding, without PE and '
                          'with PE, with robustness grids')
  gap_without = score[('zeros', None)] - score[('reflect', None)]
  gap_with = score[('zeros', pe)] - score[('reflect', pe)]
  numbers = (f'noise Dice zero/reflect: no PE {score[("zeros", None)]:.3f}/'
             f'{score[("reflect", None)]:.3f} (gap {gap_without:+.3f}), {pe_label(pe)} '
             f'{score[("zeros", pe)]:.3f}/{score[("reflect", pe)]:.3f} (gap {gap_with:+.3f})')
  holds = gap_without > TIE_MARGIN and abs(gap_with) <= gap_without / 2
  return (HOLDS if holds else FAILS), numbers


def _check_shift(settings, dataset):
  chosen = [s for s in _pe_sorted(_standard(settings, dataset, 'unet')) if _has_shifts(s)]
  values = [(s.pe, _mean(s.per_run(shift_dice))) for s in chosen]
  values = [(pe, v) for pe, v in values if np.isfinite(v)]
  if not values or values[0][0] is not None or len(values) < 2:
    return NOT_MEASURED, 'needs U-Net runs without and with PE, with a shift grid'
  numbers = 'mean Dice over shifts: ' + ', '.join(f'{pe_label(pe)} {v:.3f}' for pe, v in values)
  holds = all(values[0][1] > v for _, v in values[1:])
  return (HOLDS if holds else FAILS), numbers


def _check_small_cnn(settings, dataset):
  chosen = _standard(settings, dataset, 'cnn4')
  pe = _pe_of_interest(chosen)
  without = select(chosen, pe=None)
  with_pe = select(chosen, pe=pe) if pe is not None else []
  if not without or not with_pe:
    return NOT_MEASURED, 'needs small-CNN runs without and with PE'
  clean_without, clean_pe = _mean(without[0].test()), _mean(with_pe[0].test())
  mask = _mean(Setting({}, without[0].runs + with_pe[0].runs).averaged_mask())
  numbers = (f'clean Dice no PE {clean_without:.3f}, {pe_label(pe)} {clean_pe:.3f}, '
             f'averaged mask {mask:.3f}')
  holds = clean_pe - clean_without >= FAR_MARGIN and clean_pe > mask
  return (HOLDS if holds else FAILS), numbers


def _check_small_data(settings, dataset):
  chosen = _standard(settings, dataset, 'unet', num_train_examples=_ANY)
  subsets = [s for s in chosen if s.num_train_examples is not None]
  pe = _pe_of_interest(subsets)
  comparisons = []
  for size in sorted({s.num_train_examples for s in subsets}, reverse=True):
    without = select(subsets, num_train_examples=size, pe=None)
    with_pe = select(subsets, num_train_examples=size, pe=pe)
    if without and with_pe and pe is not None:
      comparisons.append((size, _mean(without[0].test()), _mean(with_pe[0].test())))
  if not comparisons:
    return NOT_MEASURED, 'needs U-Net runs on training subsets, without and with PE'
  numbers = '; '.join(f'{size} images: no PE {a:.4f}, {pe_label(pe)} {b:.4f}'
                      for size, a, b in comparisons)
  return (HOLDS if all(b > a for _, a, b in comparisons) else FAILS), numbers


CLAIMS = (
    Claim('noise_robustness', 'PE raises robustness to noise, more with larger λ (Fig. 2)',
          'U-Net, zero padding, all data; noise drop = clean Dice − mean Dice under Gaussian '
          'and shot noise at severity 5 (means over seeds); holds if the largest λ drops less '
          f'than no PE by more than {TIE_MARGIN} and the drop never rises by more than '
          f'{TIE_MARGIN} from no PE through increasing λ', _check_noise),
    Claim('clean_cost', 'The largest λ costs some Dice on clean images (Table 1)',
          'U-Net, zero padding, all data; holds if the clean Dice with the largest λ is below '
          'that without PE', _check_clean_cost),
    Claim('reflection_padding', 'Reflection padding without PE is less robust than zero '
          'padding (paper: JSRT); PE closes the gap (Fig. 4)',
          'U-Net, all data; noise Dice = mean Dice under Gaussian and shot noise at severity 5; '
          f'gap = zero − reflection; holds if the gap without PE exceeds {TIE_MARGIN} and the '
          'gap with PE (λ=256 or the largest λ) is at most half of it in size', _check_padding),
    Claim('shift', 'Under x-shifts the U-Net without PE does better than with PE (Fig. 5)',
          'U-Net, zero padding, all data; mean Dice over every nonzero shift; holds if no PE '
          'is above every PE setting', _check_shift),
    Claim('small_cnn', 'Small CNN: PE lifts Dice far above no PE and above the averaged mask '
          '(Sec. 3.2)',
          f'small CNN, zero padding, all data; holds if clean Dice with PE (λ=256 or the '
          f'largest λ) exceeds that without PE by at least {FAR_MARGIN} and exceeds the '
          'averaged-mask Dice', _check_small_cnn),
    Claim('small_data', 'With 5/10 training images PE helps the U-Net (Table 2)',
          'U-Net, zero padding; holds if for every training subset run, clean Dice with PE '
          '(λ=256 or the largest λ) is above that without PE', _check_small_data),
)


def _not_learnt(settings: Sequence[Setting], dataset: str) -> str | None:
  """Why the dataset's claims cannot be assessed (its best setting does not beat the averaged
  mask, overall by LEARNT_MARGIN and in every class), or None."""
  members = [s for s in settings if s.dataset == dataset and np.isfinite(s.test().mean)]
  if not members:
    return None
  best = max(members, key=lambda s: s.test().mean)
  best_dice, baseline = best.test().mean, best.averaged_mask().mean
  if not np.isfinite(baseline):
    return None
  shortfalls = []
  if best_dice < baseline + LEARNT_MARGIN:
    shortfalls.append(f'mean Dice {best_dice:.3f} vs averaged mask {baseline:.3f}')
  for name in best.class_names:
    dice, mask = best.test(f'dice_{name}').mean, best.averaged_mask(f'dice_{name}').mean
    if np.isfinite(dice) and np.isfinite(mask) and dice <= mask:
      shortfalls.append(f'{name} Dice {dice:.3f} vs averaged mask {mask:.3f}')
  if not shortfalls:
    return None
  return (f'the models did not learn this dataset at this scale; best setting '
          f'({best.label}): {"; ".join(shortfalls)}')


def evaluate_claims(settings: Sequence[Setting],
                    learnt_reference: Sequence[Setting] | None = None) -> list[Verdict]:
  """One verdict per claim of the paper and dataset among `settings`.

  A dataset's claims are not assessed if no setting of `learnt_reference` (default:
  `settings`; the report passes every part, so that e.g. small-CNN runs at another scale are
  judged by whether anything learnt the dataset) learnt it.
  """
  reference = settings if learnt_reference is None else learnt_reference
  not_learnt = {dataset: _not_learnt(reference, dataset) for dataset in _datasets(settings)}
  verdicts = []
  for claim in CLAIMS:
    for dataset in _datasets(settings):
      status, numbers = claim.check(settings, dataset)
      if not_learnt[dataset] and status != NOT_MEASURED:
        status, numbers = NOT_ASSESSED, not_learnt[dataset]
      verdicts.append(Verdict(claim.name, dataset, status, numbers))
  return verdicts


def _verdict_section(ctx: _Context, settings: Sequence[Setting]) -> list[str]:
  verdicts = evaluate_claims(settings, ctx.all_settings)
  out = [f'{ctx.heading} Verdicts on the paper\'s claims', '',
         'Each claim is decided per dataset by the rule beside it, on means over seeds. A '
         'phantom verdict is about the phantom, not about the paper\'s data.', '']
  for claim in CLAIMS:
    out.append(f'- **{claim.text}.** Rule: {claim.rule}.')
    for verdict in verdicts:
      if verdict.claim == claim.name:
        out.append(f'  - {_title(verdict.dataset)}: **{verdict.status}** — {verdict.numbers}')
  return out + ['']


def _other_section(ctx: _Context, settings: Sequence[Setting]) -> list[str]:
  rest = [s for s in settings if id(s) not in ctx.shown]
  if not rest:
    return []
  rows = [[s.label, format_stat(s.test()), s.test().n] for s in rest]
  return ([f'{ctx.heading} Other settings', '', 'Runs that belong to none of the sections '
           'above; clean test Dice.', ''] + markdown_table(['setting', 'Dice', 'n'], rows))


def _summary_section(parts: Sequence[tuple[str, Sequence[Setting]]],
                     all_settings: Sequence[Setting]) -> list[str]:
  """The verdicts of a report with several parts ((scale label, settings) each) in one list:
  each claim is judged in the parts that have its runs (e.g. Table 2 at 100 epochs, the small
  CNN at 30)."""
  out = ['## Verdicts on the paper\'s claims, all parts', '',
         'Each claim as judged in the parts that have its runs (rules and every number in the '
         'parts below).', '']
  judged = [(f'part {index}, {scale}', evaluate_claims(members, all_settings))
            for index, (scale, members) in enumerate(parts, 1)]
  for claim in CLAIMS:
    out.append(f'- **{claim.text}.**')
    for dataset in _datasets(all_settings):
      found = [(label, v) for label, verdicts in judged for v in verdicts
               if v.claim == claim.name and v.dataset == dataset and v.status != NOT_MEASURED]
      if not found:
        out.append(f'  - {_title(dataset)}: **{NOT_MEASURED}**')
      for label, verdict in found:
        out.append(f'  - {_title(dataset)} ({label}): **{verdict.status}** — {verdict.numbers}')
  return out + ['']


SECTIONS = (_verdict_section, _table1_section, _corruptions_section, _small_cnn_section,
            _table2_section, _padding_section, _shift_section, _jitter_section)


# ------------------------------------------------------------------------------------- header


def _scale_label(settings: Mapping, differing: Sequence[str]) -> str:
  size = settings.get('image_size')
  parts = [f'{size}×{size}' if size else None,
           f'width {settings.get("width")}' if 'width' in settings else None,
           f'{settings.get("num_epochs")} epochs' if 'num_epochs' in settings else None]
  parts += [f'{name}={json.dumps(files.json_safe(settings.get(name)))}' for name in differing
            if name not in ('image_size', 'width', 'num_epochs')]
  return ', '.join(filter(None, parts))


def _count(number: int, noun: str) -> str:
  return f'{number} {noun}{"" if number == 1 else "s"}'


def _values(runs: Sequence[Mapping], get: Callable[[Mapping], Any]) -> str:
  values = sorted({str(get(run)) for run in runs} - {'None'})
  return ', '.join(values) if values else 'unknown'


def _header(title: str, runs: Sequence[Mapping], unfinished: Sequence[str],
            settings: Sequence[Setting], scales: Mapping[str, str]) -> list[str]:
  made = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
  seconds = sum(float((run['results'].get('timings') or {}).get('train_seconds') or 0)
                for run in runs)
  datasets = ', '.join(_title(d) for d in _datasets(settings))
  lines = [f'# {title}', '',
           f'- Made: {made}, from {_count(len(runs), "finished run")} in '
           f'{_count(len(settings), "setting")}'
           + (f'; {_count(len(unfinished), "unfinished run")} skipped ({", ".join(unfinished)})'
              if unfinished else '') + '.',
           f'- Datasets: {datasets}.']
  for index, scale in enumerate(scales, 1):
    members = [s for s in settings if s.scale == scale]
    example = members[0].settings
    lines.append(f'- Settings{"" if len(scales) == 1 else f" of part {index}"}: image '
                 f'{example.get("image_size")}×{example.get("image_size")}, width '
                 f'{example.get("width")}, {example.get("num_epochs")} epochs, batch '
                 f'{example.get("batch_size")}, learning rate {example.get("learning_rate")}, '
                 f'{example.get("compute_dtype", "float32")}; {_count(len(members), "setting")}.')
  lines += [
      f'- Machine: platform {_values(runs, lambda r: r["results"].get("platform"))}, devices '
      f'{_values(runs, lambda r: r["results"].get("devices"))}, processes '
      f'{_values(runs, lambda r: r["results"].get("processes"))}, JAX '
      f'{_values(runs, lambda r: r["results"].get("jax_version"))}; training time '
      f'{seconds / 3600:.2f} h summed over runs.',
      f'- Numbers: Dice on the test split (mean over the foreground classes per image, then '
      f'over images) as mean ± std over seeds; std is the population std (ddof={STD_DDOF}), '
      'also for the bands in the figures; n = seeds. Severity 5 is the most severe '
      'corruption.', '']
  return lines


# ------------------------------------------------------------------------------------- report


def write_report(workdir: str, *, title: str | None = None) -> str:
  """Writes `workdir/report.md` and its PNG figures beside it; returns the report's path.

  Raises NoFinishedRunsError if no finished run lies below `workdir`.
  """
  if not os.path.isdir(workdir):
    raise NoFinishedRunsError(f'{workdir} does not exist or is not a folder.')
  runs, unfinished = scan_runs(workdir)
  if unfinished:
    logging.info('Skipping %d unfinished run(s) without results.json: %s', len(unfinished),
                 ', '.join(unfinished))
  if not runs:
    raise NoFinishedRunsError(
        f'{workdir} holds no finished run (no results.json below it'
        + (f'; {len(unfinished)} unfinished' if unfinished else '') + '). Train first, e.g. '
        f'python main.py --config=configs/paper/phantom_all.py --workdir={workdir}')
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
      ctx = _Context(workdir, f'_part{index + 1}', '###', settings)
    else:
      ctx = _Context(workdir, '', '##', settings)
    for section in SECTIONS + (_other_section,):
      lines += section(ctx, members)
    figures += [os.path.basename(figure) for figure in ctx.figures]
  path = os.path.join(workdir, REPORT_FILE)
  text = '\n'.join(lines).rstrip('\n') + '\n'
  files.write_atomically(path, lambda f: f.write(text))
  _remove_stale_figures(workdir, figures)
  return path


def _remove_stale_figures(workdir: str, figures: Sequence[str]) -> None:
  """Deletes the figures an earlier report wrote (listed in its FIGURES_FILE) that this one
  did not write again (e.g. after the part numbering changed), then lists this report's."""
  listing = os.path.join(workdir, FIGURES_FILE)
  previous = _read_json_or_none(listing) if os.path.exists(listing) else None
  for name in (previous or {}).get('figures', []):
    # Only plain file names of this folder: the listing is ours, but it is read from disk.
    if name not in figures and name == os.path.basename(name) and name.endswith('.png'):
      try:
        os.remove(os.path.join(workdir, name))
      except FileNotFoundError:
        pass
  files.write_json(listing, {'figures': sorted(figures)})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    path = write_report(flags.FLAGS.workdir, title=flags.FLAGS.title)
  except NoFinishedRunsError as error:
    sys.exit(f'pejax.report: {error}')
  print(path)


if __name__ == '__main__':
  # Defined here, not at import: main.py (which imports this module through the sweep) has
  # its own --workdir flag.
  flags.DEFINE_string('workdir', None, 'Sweep folder: every run below it is reported.')
  flags.DEFINE_string('title', None, 'Title of the report; default: the folder name.')
  flags.mark_flag_as_required('workdir')
  app.run(main)
