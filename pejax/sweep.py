"""Sweeps: the grammar of many runs from one config, and their grouping into programs (pure).

A sweep config is a base config with a field `sweep`: a list of override dicts, one per run,
built with `product` and `union` (e.g. datasets × PE settings × seeds). `expand` gives each run
its name (its sub-folder of the sweep's workdir) and config; `plan_programs` groups the runs
that can be trained together (same data, differing only in λ and/or seed); `shard_runs` deals
whole programs to N processes that share a sweep (`--shard=I/N`). Training a sweep is
`pejax.train.train_sweep`.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any
from collections.abc import Iterable, Mapping, Sequence

import ml_collections

from pejax import choices, configuration
from pejax.errors import SettingError


def product(**axes: Sequence[Any]) -> list[dict[str, Any]]:
  """All combinations of the axes; an axis value may itself be a dict of several settings."""
  names = list(axes)
  runs = []
  for values in itertools.product(*(axes[name] for name in names)):
    run = {}
    for name, value in zip(names, values):
      run.update(value if isinstance(value, Mapping) else {name: value})
    runs.append(run)
  return runs


def union(*run_lists: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Concatenation without duplicates (first occurrence kept)."""
  seen, runs = set(), []
  for run in itertools.chain(*run_lists):
    key = tuple(sorted(run.items()))
    if key not in seen:
      seen.add(key)
      runs.append(dict(run))
  return runs


def pe_settings(scales: Sequence[float | None]) -> list[dict[str, Any]]:
  """PE axis values: None = no PE, a number = PE with that λ."""
  return [{'use_pe': False} if s is None else {'use_pe': True, 'pe_scale': float(s)}
          for s in scales]


def run_name(overrides: Mapping[str, Any]) -> str:
  """A readable, unique folder name for a run, from its overrides."""
  parts = []
  for key in sorted(overrides):
    value = overrides[key]
    if key == 'use_pe':
      if not value:
        parts.append('nope')
      continue
    if key == 'pe_scale':
      if overrides.get('use_pe', True):
        parts.append(f'pe{value:g}')
      continue
    if key == 'run_robustness':
      if not value:
        parts.append('nogrid')
      continue
    role = configuration.ROLES.get(key)
    short = key if role is None or role.name is None else role.name
    shown = 'all' if value is None else (f'{value:g}' if isinstance(value, float) else value)
    if key == 'dataset' and choices.is_nnunet(value):  # a folder's name, not its path
      shown = choices.nnunet_name(value)
    parts.append(f'{short}{shown}')
  return '_'.join(str(p) for p in parts) or 'base'


def expand(config: ml_collections.ConfigDict) -> list[tuple[str, ml_collections.ConfigDict]]:
  """(name, config) of every run of a sweep config, in the sweep's order."""
  base = copy.deepcopy(config)
  with base.unlocked():
    overrides_list = list(base.sweep)
    del base['sweep']
    if 'max_models_per_program' in base:
      del base['max_models_per_program']
  runs = []
  for overrides in overrides_list:
    run_config = copy.deepcopy(base)
    for key, value in overrides.items():
      if key not in run_config:
        raise SettingError(f'sweep: setting {key!r} in {dict(overrides)} is not a config setting.')
      run_config[key] = value
    runs.append((run_name(overrides), run_config))
  first_of: dict[str, Mapping[str, Any]] = {}
  for overrides, (name, _) in zip(overrides_list, runs):
    if name in first_of:
      raise _same_name_error(name, first_of[name], overrides)
    first_of[name] = overrides
  return runs


def _same_name_error(name: str, first: Mapping[str, Any], second: Mapping[str, Any]) -> SettingError:
  """Why two runs of a sweep would share the folder `name`, and what to do."""
  if dict(first) == dict(second):
    return SettingError(f'sweep: two runs have the same settings ({dict(first)}, folder {name}); '
                        'remove the duplicate.')
  datasets = first.get('dataset'), second.get('dataset')
  if datasets[0] != datasets[1] and all(choices.is_nnunet(d) for d in datasets):
    # A run's folder is named by the dataset folder's name, not its path (`run_name`).
    paths = [d[len(choices.NNUNET_PREFIX):] for d in datasets]
    return SettingError(
        f'sweep: the dataset folders {paths[0]} and {paths[1]} have the same name, '
        f'{choices.nnunet_name(datasets[0])}, which names their runs\' folders (both would be '
        f'{name}); rename one of them (nnU-Net\'s DatasetXXX_Name, e.g. another number), or '
        'sweep them into two workdirs.')
  differing = sorted(key for key in set(first) | set(second) if first.get(key) != second.get(key))
  return SettingError(
      f'sweep: the runs {dict(first)} and {dict(second)} would share the folder {name} (they '
      f'differ in {", ".join(differing)}, which the folder name does not show); sweep them into '
      'two workdirs.')


def plan_programs(runs, models_per_program: int):
  """Groups runs that can be trained together (same data, same shapes), in the sweep's order."""
  groups: dict[tuple, list] = {}
  for name, config in runs:
    key = (configuration.data_settings(config),
           tuple(sorted(configuration.group_settings(config).items(), key=str)))
    groups.setdefault(key, []).append((name, config))
  programs = []
  for members in groups.values():
    for start in range(0, len(members), models_per_program):
      programs.append(members[start:start + models_per_program])
  return programs


def parse_shard(text: str) -> tuple[int, int]:
  """`--shard=I/N` as (I, N), 0 ≤ I < N; a SettingError saying what is allowed otherwise."""
  index, slash, count = text.partition('/')
  try:
    index, count = int(index), int(count)
  except ValueError:
    index = count = -1
  if not slash or not 0 <= index < count:
    raise SettingError(f'--shard={text} is not allowed: use I/N with 0 ≤ I < N, e.g. --shard=0/4 '
                       'for the first of 4 shards (with SLURM: '
                       '--shard=$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT and --array=0-3).')
  return index, count


def shard_runs(runs, index: int, count: int, models_per_program: int):
  """The runs of shard `index` of `count`: whole programs of the sweep, all of whose runs it
  trains, so that `count` independent processes complete the sweep together.

  The programs are those of every run of the sweep, finished or not (`plan_programs`), dealt in
  the sweep's order each to the shard with the fewest runs so far: the share depends on the
  runs and `models_per_program` only, so the processes agree without talking to each other.
  """
  dealt = [0] * count
  mine = []
  for program in plan_programs(runs, models_per_program):
    shard = dealt.index(min(dealt))
    dealt[shard] += len(program)
    if shard == index:
      mine.extend(program)
  return mine


def is_sweep(config: ml_collections.ConfigDict) -> bool:
  return 'sweep' in config
