"""Sweeps: many runs from one config, trained as few programs as their shapes allow.

A sweep config is a base config with a field `sweep`: a list of override dicts, one per run,
built with `product` and `union` (e.g. datasets × PE settings × seeds). Each run gets its own
sub-folder of the sweep's workdir (checkpoints, TensorBoard logs, results.json, robustness
files). Runs that differ only in λ and/or seed are trained together as one vmapped program.
Finished runs are skipped, so a stopped sweep continues where it was when started again.
"""

from __future__ import annotations

import copy
import itertools
import os
import time
from typing import Any, Iterable, Mapping, Sequence

import jax
import ml_collections
from absl import logging

from pejax import configuration, data, files, train

# Models trained together in one program at most (memory grows with it). On XLA:CPU a vmapped
# convolution becomes a grouped convolution that runs ~3× slower per model than K separate
# ones (BENCHMARKS.md), so there runs are trained one at a time unless the config says otherwise.
DEFAULT_MODELS_PER_PROGRAM = {'cpu': 1}
DEFAULT_MODELS_PER_PROGRAM_ACCELERATOR = 12


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
    short = {'dataset': '', 'model': '', 'padding': '', 'seed': 'seed',
             'num_train_examples': 'n', 'position_jitter': 'jitter',
             'num_epochs': 'epochs'}.get(key, key)
    shown = 'all' if value is None else (f'{value:g}' if isinstance(value, float) else value)
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
        raise ValueError(f'sweep: setting {key!r} in {dict(overrides)} is not a config setting.')
      run_config[key] = value
    runs.append((run_name(overrides), run_config))
  names = [name for name, _ in runs]
  if len(set(names)) != len(names):
    raise ValueError('sweep: two runs have the same settings; remove the duplicate.')
  return runs


def plan_programs(runs, models_per_program: int):
  """Groups runs that can be trained together (same data, same shapes), in the sweep's order."""
  groups: dict[tuple, list] = {}
  for name, config in runs:
    key = (train.data_settings(config),
           tuple(sorted(files.json_safe(train.group_settings(config)).items(), key=str)))
    groups.setdefault(key, []).append((name, config))
  programs = []
  for members in groups.values():
    for start in range(0, len(members), models_per_program):
      programs.append(members[start:start + models_per_program])
  return programs


def run_sweep(config: ml_collections.ConfigDict, workdir: str, *, evaluate_only: bool = False):
  """Runs every unfinished run of a sweep config under `workdir`, then writes the report."""
  platform = jax.devices()[0].platform
  models_per_program = int(config.get('max_models_per_program') or DEFAULT_MODELS_PER_PROGRAM.get(
      platform, DEFAULT_MODELS_PER_PROGRAM_ACCELERATOR))
  runs = expand(config)
  mesh = data.make_mesh()
  # Everything is checked before any compute: settings, and that no finished run would be
  # overwritten by a run with other settings.
  for name, run_config in runs:
    try:
      configuration.validate_config(run_config, mesh.size)
    except ValueError as error:
      raise ValueError(f'sweep run {name}: {error}') from None
    train.check_settings(os.path.join(workdir, name), run_config)
  if evaluate_only:
    pending = [(n, c) for n, c in runs if train.is_finished(os.path.join(workdir, n))]
  else:
    pending = [(n, c) for n, c in runs if not train.is_finished(os.path.join(workdir, n))]
  total, done = len(runs), len(runs) - len(pending)
  logging.info('Sweep %s: %d runs, %d finished, %d to %s.', workdir, total, done, len(pending),
               'evaluate' if evaluate_only else 'run')
  programs = plan_programs(pending, models_per_program)
  start = time.perf_counter()
  finished_here = 0
  loaded: dict[tuple, train.RunData] = {}
  for index, program in enumerate(programs, 1):
    names = [name for name, _ in program]
    logging.info('Sweep program %d/%d: %s (runs done %d/%d)', index, len(programs),
                 ', '.join(names), done, total)
    key = train.data_settings(program[0][1])
    if key not in loaded:
      loaded.clear()  # keep one dataset on the device at a time
      loaded[key] = train.load_run_data(program[0][1], mesh)
    train.train_group([c for _, c in program], [os.path.join(workdir, n) for n in names],
                      mesh=mesh, run_data=loaded[key], evaluate_only=evaluate_only)
    done += len(program)
    finished_here += len(program)
    elapsed = time.perf_counter() - start
    remaining = len(pending) - finished_here
    eta = elapsed / finished_here * remaining
    logging.info('Sweep: runs done %d/%d, %.0fs elapsed, ETA %.0fs (%s).', done, total, elapsed,
                 eta, time.strftime('%H:%M:%S', time.localtime(time.time() + eta)))
  if jax.process_index() == 0:
    from pejax import report
    path = report.write_report(workdir)
    logging.info('Report: %s', path)
  return [os.path.join(workdir, name) for name, _ in runs]


def is_sweep(config: ml_collections.ConfigDict) -> bool:
  return 'sweep' in config
