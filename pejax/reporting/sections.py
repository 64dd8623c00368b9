"""The sections of `report.md`, one function per table or figure of the paper: Table 1, Figures
2 and 3, the small CNN of Sec. 3.2, Table 2, Figures 4 and 5, the position-jitter experiment
(beyond the paper), the verdicts on the claims, and the settings no section shows.

Each section takes the report context (where its figures go) and the settings of one part of
the report and returns markdown lines, empty when its runs do not exist.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from absl import logging

from pejax import choices, drawing
from pejax.evaluation import convergence, figures, grid_results
from pejax.reporting import claims
from pejax.runs import run_files
from pejax.reporting.aggregation import (ANY, Setting, Stat, datasets_of, has_shifts, paired_difference,
                                         pe_label, pe_of_interest, pe_rank, pe_sorted, select, standard)
from pejax.reporting.claims import CLAIMS, PAPER_SMALL_CNN, PAPER_TABLE1, PAPER_TABLE2
from pejax.reporting.paper_comparison import VERSUS_PAPER, compares, scale_note, versus_paper

DATASET_TITLES = {'jsrt': 'JSRT', 'acdc': 'ACDC', 'phantom_chest': 'chest phantom',
                  'phantom_cardiac': 'cardiac phantom'}
MODEL_TITLES = {'unet': 'U-Net', 'cnn4': 'small CNN'}
# The phantoms have no paper numbers; each mimics one real dataset, whose numbers are shown
# as an analogue (not as a target).
PAPER_ANALOGUE = {'phantom_chest': 'jsrt', 'phantom_cardiac': 'acdc'}


# -------------------------------------------------------------------------------- formatting


def format_stat(stat: Stat, digits: int = 4) -> str:
  """'mean ± sd [95% interval]' over seeds; the mean alone for one seed."""
  if not stat.n or not np.isfinite(stat.mean):
    return '—'
  if stat.n == 1 or not np.isfinite(stat.std):
    return f'{stat.mean:.{digits}f}'
  return (f'{stat.mean:.{digits}f} ± {stat.std:.{digits}f} '
          f'[{stat.low:.{digits}f}, {stat.high:.{digits}f}]')


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
_MODEL_COLORS = {'cnn4': 'tab:purple', 'unet': 'tab:green'}
_PADDING_LINESTYLES = {'zeros': '-', 'reflect': '--'}
_OTHER_COLORS = ('tab:purple', 'tab:brown', 'tab:pink', 'tab:olive', 'tab:cyan', 'tab:gray')


def _pe_color(pe: float | None, others: list) -> str:
  if pe in _PE_COLORS:
    return _PE_COLORS[pe]
  if pe not in others:
    others.append(pe)
  return _OTHER_COLORS[others.index(pe) % len(_OTHER_COLORS)]


def title_of(setting_or_dataset) -> str:
  dataset = str(getattr(setting_or_dataset, 'dataset', setting_or_dataset))
  if choices.is_nnunet(dataset):  # the dataset folder's name
    return choices.nnunet_name(dataset)
  return DATASET_TITLES.get(dataset, dataset)


# ----------------------------------------------------------------------------------- sections


@dataclasses.dataclass
class Context:
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


def section(ctx: Context, title: str, out: list[str], *intro: str) -> list[str]:
  """A section: its heading and introductory paragraphs above `out`, or nothing if `out` is
  empty (its runs do not exist)."""
  if not out:
    return []
  return [f'{ctx.heading} {title}', ''] + [line for text in intro for line in (text, '')] + out


def block(ctx: Context, shown: Sequence[Setting], caption: str, *parts: list[str]
           ) -> list[str]:
  """One dataset's block of a section: a caption paragraph, then tables and figures; the
  settings in it count as shown."""
  ctx.mark(shown)
  return [caption, ''] + [line for part in parts for line in part]


def _clean_table(ctx: Context, settings: Sequence[Setting], paper_table: Mapping,
                 dataset: str) -> list[str]:
  """Averaged mask + one row per PE setting: clean Dice, n, per-class Dice, paper column (and
  for a dataset of the paper, the columns of VERSUS_PAPER), and the scale of the runs."""
  source, paper_header = _paper_source(dataset, paper_table)
  compared = compares(dataset, source)
  class_names = settings[0].class_names
  header = ['model', 'Dice', 'n', 'converged'] + [f'Dice {c}' for c in class_names]
  if source:
    header += [paper_header, *VERSUS_PAPER] if compared else [paper_header]

  def paper_cells(stat: Stat, key) -> list[str]:
    if not source:
      return []
    value = paper_table[source].get(key)
    return [format_paper(value)] + (versus_paper(stat, value) if compared else [])

  all_runs = Setting({}, [run for s in settings for run in s.runs])
  mask = all_runs.averaged_mask()
  rows = [['averaged mask', format_stat(mask), mask.n, '—']
          + [format_stat(all_runs.averaged_mask(f'dice_{c}')) for c in class_names]
          + paper_cells(mask, 'averaged_mask')]
  model = MODEL_TITLES.get(settings[0].model, settings[0].model)
  for setting in pe_sorted(settings):
    stat = setting.test()
    rows.append([f'{model} {"w/o PE" if setting.pe is None else f"w/ PE (λ={setting.pe:g})"}',
                 format_stat(stat), stat.n, converged_seeds(setting)]
                + [format_stat(setting.test(f'dice_{c}')) for c in class_names]
                + paper_cells(stat, setting.pe))
  ctx.mark(settings)
  return (markdown_table(header, rows) + _analogue_note(dataset, source)
          + (scale_note(settings) if source else []))


def converged_seeds(setting: Setting) -> str:
  """'3 of 3' seeds converged, with how many are undetermined ('2 of 3, 1 unknown')."""
  not_converged, unknown, total = convergence.count([convergence.of_run(run.results)
                                                     for run in setting.runs])
  converged = total - not_converged - unknown
  return f'{converged} of {total}' + (f', {unknown} unknown' if unknown else '')


def _clean_tables(ctx: Context, settings: Sequence[Setting], model: str, paper_table: Mapping,
                  caption: str) -> list[str]:
  """Per dataset: `caption` (after the dataset's title) and the clean Dice table of `model`."""
  out = []
  for dataset in datasets_of(settings):
    chosen = standard(settings, dataset, model)
    if chosen:
      out += [f'**{title_of(dataset)}** — {caption}', '']
      out += _clean_table(ctx, chosen, paper_table, dataset)
  return out


def _table1_section(ctx: Context, settings: Sequence[Setting]) -> list[str]:
  out = _clean_tables(ctx, settings, 'unet', PAPER_TABLE1, 'U-Net, zero padding, all training '
                      'data; clean test Dice (mean ± std over seeds, n seeds).')
  return section(ctx, 'Table 1: clean test Dice, U-Net with and without PE', out)


def _corruption_table(settings: Sequence[Setting], label: Callable[[Setting], str]) -> list[str]:
  rows = []
  for setting in settings:
    rows.append([label(setting), format_stat(setting.test()),
                 format_stat(setting.per_run(lambda g: grid_results.corruption_dice(g, 'gaussian_noise'))),
                 format_stat(setting.per_run(lambda g: grid_results.corruption_dice(g, 'shot_noise'))),
                 format_stat(setting.per_run(lambda g: grid_results.corruption_dice(g, 'gaussian_blur'))),
                 format_stat(setting.per_run(grid_results.noise_drop)), len(setting.robust_runs)])
  return markdown_table(['setting', 'clean', 'Gaussian noise s5', 'shot noise s5',
                         'Gaussian blur s5', 'noise drop', 'n'], rows)


def _corruption_figure(ctx: Context, settings: Sequence[Setting], stem: str, title: str,
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
  figures.plot_corruptions(curves, os.path.join(ctx.workdir, name), references=references,
                           title=title)
  return [f'![{title}]({name})', '']


def _pe_style(setting: Setting, others: list) -> dict:
  return {'color': _pe_color(setting.pe, others)}


def _corruptions_section(ctx: Context, settings: Sequence[Setting]) -> list[str]:
  out = []
  for model, figure in (('unet', 'Figure 2'), ('cnn4', 'Figure 3')):
    for dataset in datasets_of(settings):
      chosen = [s for s in pe_sorted(standard(settings, dataset, model)) if s.robust_runs]
      if not chosen:
        continue
      model_title = MODEL_TITLES.get(model, model)
      title = f'{title_of(dataset)}, {model_title}: Dice under corruptions ({figure}-like)'
      average = Setting({}, [run for s in chosen for run in s.runs]).averaged_mask()
      out += block(ctx, chosen,
                    f'**{title}** — zero padding, all training data; mean ± std over seeds '
                    '(band), severity 0 = clean; dashed line: averaged mask.',
                    _corruption_figure(ctx, chosen, f'fig{figure[-1]}_{dataset}_{model}', title,
                                       _pe_style, lambda s: pe_label(s.pe), average),
                    _corruption_table(chosen, lambda s: pe_label(s.pe)))
  return section(ctx, 'Figures 2 and 3: Dice versus corruption severity', out,
                  'Noise drop = clean Dice minus the mean Dice under Gaussian and shot noise at '
                  'severity 5. Paper (Fig. 2): without PE the U-Net degrades quickly under noise; PE '
                  'mitigates it, more with larger λ, at some cost on clean images.')


def _small_cnn_section(ctx: Context, settings: Sequence[Setting]) -> list[str]:
  out = _clean_tables(ctx, settings, 'cnn4', PAPER_SMALL_CNN, 'small CNN (4 conv layers), zero '
                      'padding, all training data; clean test Dice.')
  return section(ctx, 'Small CNN (Sec. 3.2)', out,
                  'Paper: without PE ≈ 0.5 (JSRT), < 0.1 (ACDC); with PE λ=256 ≈ 0.9 (JSRT), ≈ 0.55 '
                  '(ACDC).')


def _size_label(size: int | None, settings: Sequence[Setting]) -> str:
  if size is not None:
    return str(size)
  counts = sorted({n for s in settings for n in s.train_examples()})
  return f'all ({", ".join(map(str, counts))})' if counts else 'all'


def _table2_section(ctx: Context, settings: Sequence[Setting]) -> list[str]:
  out = []
  for dataset in datasets_of(settings):
    chosen = standard(settings, dataset, 'unet', num_train_examples=ANY)
    sizes = sorted({s.num_train_examples for s in chosen},
                   key=lambda n: (n is not None, -(n or 0)))
    if not any(size is not None for size in sizes):
      continue
    pe = pe_of_interest(chosen)
    columns = [None] + ([pe] if pe is not None else [])
    chosen = [s for s in chosen if s.pe in columns]
    source, paper_header = _paper_source(dataset, PAPER_TABLE2)
    compared = compares(dataset, source)
    header = ['training images']
    for column in columns:
      header += [pe_label(column), 'n']
    if source:  # per PE column: the paper's number (and for the paper's dataset, VERSUS_PAPER)
      for column in columns:
        header.append(f'{paper_header} {pe_label(column)}')
        header += [f'{name}, {pe_label(column)}' for name in VERSUS_PAPER] if compared else []
    rows = []
    for size in sizes:
      row_settings = [s for s in chosen if s.num_train_examples == size]
      row, paper = [_size_label(size, row_settings)], []
      for column in columns:
        match = [s for s in row_settings if s.pe == column]
        stat = match[0].test() if match else Stat(float('nan'), float('nan'), 0)
        row += [format_stat(stat), stat.n]
        if source:
          value = PAPER_TABLE2[source].get(size, {}).get(column)
          paper += [format_paper(value)] + (versus_paper(stat, value) if compared else [])
      rows.append(row + paper)
    out += block(ctx, chosen, f'**{title_of(dataset)}** — U-Net, zero padding; clean test Dice '
                  'by training-set size.',
                  markdown_table(header, rows) + _analogue_note(dataset, source)
                  + (scale_note(chosen) if source else []))
  return section(ctx, 'Table 2: training-set size', out,
                  'Paper (JSRT): with 10 or 5 training images PE helps the U-Net.')


def _padding_section(ctx: Context, settings: Sequence[Setting]) -> list[str]:
  out = []
  for dataset in datasets_of(settings):
    chosen = standard(settings, dataset, 'unet', padding=ANY)
    other = [s for s in chosen if s.padding != 'zeros']
    if not other:
      continue
    pe_values = {s.pe for s in other}
    chosen = [s for s in chosen if s.pe in pe_values]
    chosen.sort(key=lambda s: (s.padding != 'zeros', s.padding, pe_rank(s.pe)))
    def label(setting):
      return f'{setting.padding} padding, {pe_label(setting.pe)}'

    def style(setting, others):
      return {'color': _pe_color(setting.pe, others),
              'linestyle': _PADDING_LINESTYLES.get(setting.padding, ':')}

    title = f'{title_of(dataset)}, U-Net: padding and PE (Figure 4-like)'
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
  return section(ctx, 'Figure 4: zero versus reflection padding', out,
                  'Paper: no difference on clean images; on JSRT reflection padding without PE is less '
                  'robust to noise than zero padding and PE closes the gap; no meaningful difference '
                  'on ACDC.')


def _shift_section(ctx: Context, settings: Sequence[Setting]) -> list[str]:
  out = []
  for dataset in datasets_of(settings):
    chosen = [s for s in pe_sorted(standard(settings, dataset, 'unet')) if has_shifts(s)]
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
    masks = [run.robustness['averaged_mask'] for s in chosen for run in s.robust_runs
             if 'averaged_mask' in run.robustness]
    if masks:  # the baseline stays put while images and labels shift
      curves.append(figures.averaged_mask_curve(*grid_results.aggregate_robustness(masks,
                                                                                   ddof=1)))
    title = f'{title_of(dataset)}, U-Net: Dice versus shift (Figure 5-like)'
    name = ctx.figure_name(f'fig5_{dataset}_shift')
    try:
      figures.plot_shifts(curves, os.path.join(ctx.workdir, name), title=title)
    except (KeyError, ValueError) as error:
      logging.warning('No shift figure for %s: %s', dataset, error)
      ctx.figures.pop()
      continue
    rows = [[pe_label(s.pe), format_stat(s.per_run(grid_results.unshifted_dice)),
             format_stat(s.per_run(grid_results.shift_dice)),
             format_stat(s.per_run(grid_results.extreme_shift_dice)),
             len(s.robust_runs)] for s in chosen]
    out += block(ctx, chosen,
                  f'**{title}** — zero padding, all training data; mean ± std over seeds; dashed gray: '
                  'the averaged mask, which stays where the training anatomy was.',
                  [f'![{title}]({name})', ''],
                  markdown_table(['setting', 'no shift', 'mean over shifts ≠ 0',
                                  'largest ±shift', 'n'], rows))
  return section(ctx, 'Figure 5: shifted test images', out,
                  'Paper: under x-shifts the U-Net without PE does better than with PE.')


def _examples_section(ctx: Context, settings: Sequence[Setting]) -> list[str]:
  out = []
  for dataset in datasets_of(settings):
    shown = []  # (setting, seed, examples) of the first seed with examples per PE setting
    for setting in pe_sorted(standard(settings, dataset, 'unet')):
      for run in sorted(setting.runs, key=lambda run: run.config.get('seed', 0)):
        found = run_files.read_examples(run.path)
        if found is not None:
          shown.append((setting, run.config.get('seed'), found))
          break
    # Every run shows the same test image, unless their test splits differ.
    shown = [entry for entry in shown if entry[2]['image_id'] == shown[0][2]['image_id']]
    if not shown:
      continue
    first = shown[0][2]
    rows = [grid_results.condition_title(str(c), int(level))
            for c, level in zip(first['conditions'], first['levels'])]
    title = f'{title_of(dataset)}, U-Net: example predictions'
    name = ctx.figure_name(f'examples_{dataset}')
    drawing.plot_predictions(
        os.path.join(ctx.workdir, name), title, rows, first['inputs'], first['targets'],
        [(pe_label(s.pe), found['predictions']) for s, _, found in shown],
        shown[0][0].class_names)
    seeds = ', '.join(f'{pe_label(s.pe)}: seed {seed}' for s, seed, _ in shown)
    out += [f'**{title}** — test image {first["image_id"]} (the first with every class), as '
            f'each model saw it; zero padding, all training data ({seeds}). Under the shift the '
            'truth moves with the image.', '', f'![{title}]({name})', '']
  return section(ctx, 'Example predictions', out)


def _jitter_section(ctx: Context, settings: Sequence[Setting]) -> list[str]:
  out = []
  for dataset in datasets_of(settings):
    chosen = [s for s in select(settings, dataset=dataset, padding='zeros',
                                num_train_examples=None) if s.position_jitter is not None]
    pe = pe_of_interest(chosen)
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
    title = f'{title_of(dataset)}: PE benefit versus position jitter'
    name = ctx.figure_name(f'jitter_{dataset}')
    figures.plot_jitter(os.path.join(ctx.workdir, name), lines, title)
    out += block(ctx, used,
                  f'**{title}** — zero padding, all training data; PE benefit = clean Dice with '
                  f'{pe_label(pe)} minus without PE, paired by seed (mean ± std over seeds).',
                  [f'![{title}]({name})', ''],
                  markdown_table(['model', 'jitter', 'no PE', pe_label(pe), 'PE benefit',
                                  'n (no PE / PE)'], rows))
  return section(ctx, 'Beyond the paper: position jitter', out,
                  'The phantoms vary how far the anatomy moves between images; the more it moves, '
                  'the less absolute position tells. Not in the paper: no paper values.')


def _verdict_section(ctx: Context, settings: Sequence[Setting]) -> list[str]:
  verdicts = claims.evaluate_claims(settings, ctx.all_settings)
  out = [f'{ctx.heading} Verdicts on the paper\'s claims', '',
         claims.RULE + ' Each claim is decided per dataset by the comparisons beside it. A '
         'phantom verdict is about the phantom, not about the paper\'s data. A verdict that '
         'rests on runs which had not converged says so ("caution: ..."): it may measure the '
         f'schedule rather than the setting. Convergence: {convergence.RULE} (per run in '
         'results.json).', '']
  for claim in CLAIMS:
    out.append(f'- **{claim.text}.** Rule: {claim.rule}.')
    for verdict in verdicts:
      if verdict.claim == claim.name:
        out.append(f'  - {title_of(verdict.dataset)}: {claims.describe(verdict)}')
  advice = claims.seeds_advice(verdicts, max((len(s.runs) for s in settings), default=0))
  return out + ([''] + [advice] if advice else []) + ['']


def other_section(ctx: Context, settings: Sequence[Setting]) -> list[str]:
  rest = [s for s in settings if id(s) not in ctx.shown]
  if not rest:
    return []
  rows = [[s.label, format_stat(s.test()), s.test().n] for s in rest]
  return ([f'{ctx.heading} Other settings', '', 'Runs that belong to none of the sections '
           'above; clean test Dice.', ''] + markdown_table(['setting', 'Dice', 'n'], rows))


SECTIONS = (_verdict_section, _table1_section, _corruptions_section, _small_cnn_section,
            _table2_section, _padding_section, _shift_section, _examples_section, _jitter_section)
