"""A sweep's finished runs grouped into *settings* (runs that differ only in the seed), with
statistics over seeds; what the claims and the report are computed from.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from absl import logging

from pejax import configuration
from pejax.evaluation import grid_results
from pejax.reporting.paired_statistics import Stat, summarize
from pejax.runs.run_files import RunRecord

DATASET_ORDER = ('jsrt', 'acdc', 'phantom_chest', 'phantom_cardiac')


def _canonical(settings: Mapping) -> str:
  return json.dumps(configuration.json_safe(settings), sort_keys=True)


@dataclasses.dataclass(eq=False)
class Setting:
  """The runs (seeds) of one setting."""
  settings: dict
  runs: list[RunRecord]

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
  def encoding(self) -> tuple[str, str, int | None] | None:
    """(pe_kind, pe_layers, pe_bands or None), or None without PE."""
    if self.pe is None:
      return None
    return (self.settings.get('pe_kind', 'linear'), self.settings.get('pe_layers', 'input'),
            self.settings.get('pe_bands'))

  @property
  def num_train_examples(self) -> int | None:
    return self.settings.get('num_train_examples')

  @property
  def position_jitter(self) -> float | None:
    return self.settings.get('position_jitter')

  @property
  def seeds(self) -> list:
    return [run.config.get('seed') for run in self.runs]

  @property
  def class_names(self) -> list[str]:
    return list(self.runs[0].results.class_names or [])

  @property
  def scale(self) -> str:
    return _canonical({k: v for k, v in self.settings.items() if k not in configuration.EXPERIMENT_AXES})

  def test(self, metric: str = 'dice') -> Stat:
    return summarize([(run.results.test or {}).get(metric) for run in self.runs])

  def averaged_mask(self, metric: str = 'dice') -> Stat:
    return summarize([(run.results.test_averaged_mask or {}).get(metric)
                      for run in self.runs])

  def train_examples(self) -> list[int]:
    return sorted({run.results.num_train_examples for run in self.runs} - {None})

  @property
  def robust_runs(self) -> list[dict]:
    return [run for run in self.runs if run.robustness]

  def per_run(self, measure: Callable[[Mapping], float]) -> Stat:
    """`measure(robustness result)` over the runs with a robustness grid."""
    values = []
    for run in self.robust_runs:
      try:
        values.append(measure(run.robustness))
      except (KeyError, TypeError, ValueError):
        values.append(None)
    return summarize(values)

  @functools.cached_property
  def robustness_curves(self) -> tuple[dict, dict] | None:
    """(mean, std) robustness results for the figures, or None without robustness grids."""
    if not self.robust_runs:
      return None
    try:
      return grid_results.aggregate_robustness([run.robustness for run in self.robust_runs],
                                               ddof=1)
    except (KeyError, TypeError, ValueError) as error:
      logging.warning('Robustness grids of %s cannot be averaged (%s).', self.label, error)
      return None

  @property
  def label(self) -> str:
    return ', '.join(filter(None, [
        self.dataset, self.model, self.padding, encoding_label(self),
        None if self.num_train_examples is None else f'{self.num_train_examples} images',
        None if self.position_jitter is None else f'jitter {self.position_jitter:g}']))


def group_runs(runs: Sequence[RunRecord]) -> list[Setting]:
  """Runs grouped into settings (all but the seed), in a stable order."""
  groups: dict[str, Setting] = {}
  for run in runs:
    key = configuration.setting_key(run.config)
    groups.setdefault(_canonical(key), Setting(key, [])).runs.append(run)
  for setting in groups.values():
    setting.runs.sort(key=lambda run: (str(run.config.get('seed')), run.name))
  return sorted(groups.values(), key=_setting_order)


def dataset_rank(dataset: str) -> tuple:
  return (DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER),
          str(dataset))


def pe_rank(pe: float | None) -> float:
  return -1.0 if pe is None else pe


def _setting_order(setting: Setting) -> tuple:
  return (setting.scale, dataset_rank(setting.dataset), str(setting.model),
          setting.padding != 'zeros', str(setting.padding),
          setting.num_train_examples is not None, -(setting.num_train_examples or 0),
          -1.0 if setting.position_jitter is None else setting.position_jitter,
          pe_rank(setting.pe), str(setting.encoding))


ANY = object()
# (pe_kind, pe_layers, pe_bands) of the paper's encoding: linear channels at the input.
PAPER_ENCODING = ('linear', 'input', None)


def select(settings: Sequence[Setting], **conditions) -> list[Setting]:
  """Settings whose properties equal the conditions (a value, or `ANY`)."""
  return [s for s in settings
          if all(value is ANY or getattr(s, name) == value for name, value in conditions.items())]


def standard(settings: Sequence[Setting], dataset: str, model: str = 'unet', *,
             padding='zeros', num_train_examples=None, position_jitter=None,
             encoding=PAPER_ENCODING) -> list[Setting]:
  """The paper's default setting (zero padding, all data, default jitter, no PE or the paper's
  encoding) of a dataset/model. `encoding=ANY` also takes the other encodings."""
  chosen = select(settings, dataset=dataset, model=model, padding=padding,
                  num_train_examples=num_train_examples, position_jitter=position_jitter)
  return [s for s in chosen if encoding is ANY or s.encoding in (None, encoding)]


def has_shifts(setting: Setting) -> bool:
  return any(any(k.startswith('shift_') and run.robustness[k] for k in run.robustness)
             for run in setting.robust_runs)


def pe_label(pe: float | None) -> str:
  return 'no PE' if pe is None else f'PE λ={pe:g}'


def encoding_label(setting: Setting) -> str:
  """`pe_label`, naming the encoding and where it enters where they are not the paper's:
  'PE λ=1', 'centered λ=1', 'fourier K=4 λ=1', 'PE λ=1, every layer'."""
  if setting.encoding is None or setting.encoding == PAPER_ENCODING:
    return pe_label(setting.pe)
  kind, layers, bands = setting.encoding
  name = 'PE' if kind == 'linear' else kind + (f' K={bands}' if kind == 'fourier' else '')
  return f'{name} λ={setting.pe:g}' + (', every layer' if layers == 'all' else '')


def datasets_of(settings: Sequence[Setting]) -> list[str]:
  return sorted({s.dataset for s in settings}, key=dataset_rank)


def pe_sorted(settings: Sequence[Setting]) -> list[Setting]:
  return sorted(settings, key=lambda s: pe_rank(s.pe))


def pe_of_interest(settings: Sequence[Setting]) -> float | None:
  """λ=256 (the paper's PE in Table 2 and Figures 3–5) if run, else the largest λ run."""
  scales = {s.pe for s in settings} - {None}
  if not scales:
    return None
  return 256.0 if 256.0 in scales else max(scales)


def paired_values(settings: Sequence[Setting], per_image: Callable[[Mapping], float] | None,
                  per_run: Callable[[RunRecord], float]) -> np.ndarray:
  """A quantity of several settings on the seeds run in all of them, paired.

  (settings, seeds, images), paired by seed and image id, where every run involved has
  per-image values (`RunRecord.per_image`) and `per_image` is given; otherwise (settings,
  seeds, 1) from `per_run`. NaN where a value is undefined.
  """
  by_seed = [{run.config.get('seed'): run for run in setting.runs} for setting in settings]
  seeds = sorted(set.intersection(*(set(runs) for runs in by_seed)), key=str)
  rows = [[runs[seed] for seed in seeds] for runs in by_seed]
  if per_image is not None and seeds and all(run.per_image for row in rows for run in row):
    ids = sorted(set.intersection(*(set(run.per_image) for row in rows for run in row)))
    return np.array([[[_value(per_image, run.per_image[i]) for i in ids] for run in row]
                     for row in rows], np.float64).reshape(len(rows), len(seeds), len(ids))
  return np.array([[[_value(per_run, run)] for run in row] for row in rows],
                  np.float64).reshape(len(rows), len(seeds), 1)


def paired_differences(a: Setting, b: Setting, per_image: Callable[[Mapping], float] | None,
                       per_run: Callable[[RunRecord], float]) -> np.ndarray:
  """A − B of a quantity, (seeds, images) as `paired_values` pairs them."""
  values = paired_values([a, b], per_image, per_run)
  return values[0] - values[1]


def _value(measure, item) -> float:
  try:
    value = measure(item)
  except (KeyError, TypeError, ValueError):
    return np.nan
  return np.nan if value is None else float(value)


def paired_difference(with_pe: Setting, without_pe: Setting) -> Stat:
  """Clean test Dice with PE minus without, paired by seed: mean, std and interval."""
  return summarize(paired_differences(with_pe, without_pe, None,
                                      lambda run: (run.results.test or {}).get('dice'))[:, 0])
