"""The run folder: its file names and formats, the one place that writes and reads them.

A run's workdir holds `config.json` (the settings), `checkpoints/` (Orbax), `results.json`
(a `Results`), `robustness.json` / `robustness.csv`, figures and TensorBoard event files. A
sweep's workdir holds one such folder per run, and `report.md` with its figures.

Files are written to a temporary name in the same folder and renamed over the target, so a
crash never leaves a half-written file behind: readers see the old file or the new one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any
from collections.abc import Callable, Mapping, Sequence

import orbax.checkpoint as ocp
from absl import logging

from pejax import configuration
from pejax.errors import CheckpointError, RunNotFoundError, SettingsMismatchError, WorkdirError

CONFIG_FILE = 'config.json'
RESULTS_FILE = 'results.json'
CHECKPOINT_FOLDER = 'checkpoints'
ROBUSTNESS_FILE = 'robustness.json'
ROBUSTNESS_CSV = 'robustness.csv'
REPORT_FILE = 'report.md'
# The figures the last report wrote, so that the next one can remove those it does not write.
FIGURES_FILE = 'report_figures.json'

def write_atomically(path: str, write: Callable[[Any], None], mode: str = 'w') -> None:
  """Writes through `write(file)` to a temporary file in the same folder, then renames it over
  `path`: readers see the old file or the new one, never a partial one."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  descriptor, temporary = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp',
                                           dir=folder)
  try:
    # mkstemp makes the file private (0600); give it the permissions open() would have given.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    with os.fdopen(descriptor, mode, **({} if 'b' in mode else {'newline': ''})) as handle:
      write(handle)
      handle.flush()
      os.fsync(handle.fileno())
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def write_json(path: str, value) -> None:
  write_atomically(path, lambda f: json.dump(configuration.json_safe(value), f, indent=2, sort_keys=True,
                                            allow_nan=False))


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def check_writable(folder: str, required_bytes: int) -> None:
  """Fails at start, not after hours of training, when `folder` cannot take the run's files."""
  try:
    os.makedirs(folder, exist_ok=True)
    # A uniquely named probe: the processes of a multi-process run share the workdir.
    descriptor, probe = tempfile.mkstemp(prefix='.write_probe.', dir=folder)
    with os.fdopen(descriptor, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as error:
    raise WorkdirError(f'the workdir {folder} is not writable ({error.strerror}); choose another '
                  '--workdir or fix its permissions.') from error
  free = shutil.disk_usage(folder).free
  if free < required_bytes:
    raise WorkdirError(f'the workdir {folder} has {free / 2**20:.0f} MiB free but this run needs about '
                  f'{required_bytes / 2**20:.0f} MiB for checkpoints and logs; free some space '
                  'or choose another --workdir.')


def read_json_or_none(path: str):
  """The JSON at `path`, or None (with a warning) when it is missing or cannot be read."""
  try:
    return read_json(path)
  except (OSError, ValueError) as error:
    logging.warning('Skipping %s: it cannot be read (%s).', path, error)
    return None


# ----------------------------------------------------------------------------- settings


def write_config(workdir: str, config) -> None:
  write_json(os.path.join(workdir, CONFIG_FILE), configuration.settings_dict(config))


def check_settings(workdir: str, config) -> bool:
  """True if the workdir already holds this run; raises if it holds a run with other settings."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return False
  stored = configuration.result_settings(read_json(path))
  current = configuration.result_settings(config)
  differing = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
  if differing:
    details = '; '.join(f'{k}: {stored.get(k)!r} there, {current.get(k)!r} now' for k in differing)
    raise SettingsMismatchError(
        f'the workdir {workdir} holds a run with other settings ({details}). Use another '
        '--workdir, or delete that one to start over.')
  return True


def is_finished(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, RESULTS_FILE))


def checkpoint_manager(workdir: str, max_to_keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, CHECKPOINT_FOLDER)),
      # A process killed while writing leaves an uncommitted temporary folder (never read,
      # never renamed): delete such leftovers instead of letting them fill the disk.
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           cleanup_tmp_directories=True))


def restore_common_checkpoint(managers: Sequence[ocp.CheckpointManager], abstract_state, *,
                              resume: bool = True):
  """The latest epoch every run of a group has a complete, readable checkpoint of, and the runs'
  states restored from it; (None, None) when there is no common epoch.

  Orbax writes a checkpoint to a temporary folder and renames it when complete, so a
  half-written checkpoint is never listed here. One that is listed but cannot be read (a
  truncated or lost array file after a disk or bucket error) is named in a warning with the
  error. To `resume` training, the previous common epoch is tried next, and the checkpoints
  after the restored one are deleted so that the epochs trained again write them anew (Orbax
  skips saving an epoch that has a checkpoint). Otherwise (evaluation) only the latest is tried
  and nothing is deleted. CheckpointError names the checkpoints that could not be restored.
  """
  common = set.intersection(*(set(manager.all_steps()) for manager in managers))
  if not common:
    return None, None
  failures = []
  for epoch in sorted(common, reverse=True)[:None if resume else 1]:
    states = []
    for manager in managers:
      try:
        states.append(manager.restore(epoch, args=ocp.args.StandardRestore(abstract_state)))
      except Exception as error:  # Orbax raises a bare Exception for a damaged array
        failures.append(f'{manager.directory / str(epoch)} ({_root_cause(error)})')
        logging.warning('Cannot restore the checkpoint %s%s', failures[-1],
                        '; trying the previous one.' if resume else '.')
        break
    else:
      for manager in managers if resume else ():
        for later in [step for step in manager.all_steps() if step > epoch]:
          manager.delete(later)
      return epoch, states
  if not resume:
    raise CheckpointError(f'--mode=evaluate: the latest checkpoint cannot be restored: '
                          f'{failures[0]}. Restore it from a copy, or delete it to evaluate the '
                          'one before it.')
  raise CheckpointError(f'no checkpoint can be restored: {"; ".join(failures)}. Restore them '
                        'from a copy, or delete them to train the run from the start.')


def _root_cause(error: BaseException) -> str:
  """The innermost cause of an error, on one line (Orbax wraps TensorStore's in a long one)."""
  while error.__cause__ is not None:
    error = error.__cause__
  return f'{type(error).__name__}: {" ".join(str(error).split())[:300]}'


# ------------------------------------------------------------------------------ results


@dataclasses.dataclass
class Results:
  """`results.json`: a finished run's settings, numbers and provenance.

  Dice dicts hold 'dice' (mean over foreground classes), 'dice_<class>' and, for the model,
  'loss'. `timings` holds 'epoch_seconds' (list), 'train_seconds', 'median_epoch_seconds',
  'eval_seconds' and 'robustness_seconds' where measured.
  """
  config: dict
  dataset: str
  class_names: list
  num_parameters: int
  num_train_examples: int
  epochs: int
  steps: int
  devices: int
  processes: int
  platform: str
  jax_version: str
  normalization: dict
  validation: dict
  test: dict
  validation_averaged_mask: dict
  test_averaged_mask: dict
  timings: dict = dataclasses.field(default_factory=dict)
  robustness_file: str | None = None   # beside results.json; None: no grid was evaluated

  def to_json(self) -> dict[str, Any]:
    data = dataclasses.asdict(self)
    if data['robustness_file'] is None:
      del data['robustness_file']
    return configuration.json_safe(data)

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> Results:
    """Reads what `to_json` wrote; fields of other versions are ignored, missing ones default
    to empty (results.json of every earlier version of pejax can be read)."""
    known = {field.name: field for field in dataclasses.fields(cls)}
    values = {name: data[name] for name in known if name in data}
    for name, field in known.items():
      if name not in values and field.default is dataclasses.MISSING:
        values[name] = {'dict': {}, 'list': []}.get(field.type)
    return cls(**values)


def write_results(workdir: str, results: Results) -> None:
  write_json(os.path.join(workdir, RESULTS_FILE), results.to_json())


def read_results(workdir: str) -> Results:
  return Results.from_json(read_json(os.path.join(workdir, RESULTS_FILE)))


# --------------------------------------------------------------------------- robustness


def write_robustness(workdir: str, result: Mapping, rows: Sequence[Mapping]) -> tuple[str, str]:
  """Writes a robustness result as `robustness.json` (NaN as null) and its flat `rows` (one
  per condition) as `robustness.csv`; returns the two paths."""
  json_path = os.path.join(workdir, ROBUSTNESS_FILE)
  csv_path = os.path.join(workdir, ROBUSTNESS_CSV)
  write_json(json_path, result)
  fields = ['condition', 'level', 'parameter', 'dice'] + sorted(
      {key for row in rows for key in row if key.startswith('dice_')})

  def write_csv(f):
    writer = csv.DictWriter(f, fieldnames=fields, restval='')
    writer.writeheader()
    writer.writerows(rows)

  write_atomically(csv_path, write_csv)
  return json_path, csv_path


# -------------------------------------------------------------------------------- sweeps


@dataclasses.dataclass
class RunRecord:
  """A finished run read back from its folder."""
  name: str                    # folder relative to the sweep's workdir
  path: str
  config: dict
  results: Results
  robustness: dict | None      # the robustness result, None without a grid


def scan_runs(workdir: str) -> tuple[list[RunRecord], list[str]]:
  """Finished runs below `workdir` and the folders of unfinished ones (config.json only)."""
  runs, unfinished = [], []
  for folder, subfolders, names in os.walk(workdir):
    subfolders.sort()
    if RESULTS_FILE in names:
      subfolders.clear()  # runs are not nested; skip the checkpoints
      data = read_json_or_none(os.path.join(folder, RESULTS_FILE))
      if data is None:
        continue
      config = data.get('config')
      if config is None and CONFIG_FILE in names:
        config = read_json_or_none(os.path.join(folder, CONFIG_FILE))
      if not config:
        logging.warning('Skipping %s: its results.json has no config.', folder)
        continue
      results = Results.from_json(dict(data, config=config))
      robustness_path = os.path.join(folder, results.robustness_file or ROBUSTNESS_FILE)
      grid = read_json_or_none(robustness_path) if os.path.exists(robustness_path) else None
      runs.append(RunRecord(os.path.relpath(folder, workdir), folder, config, results, grid))
    elif CONFIG_FILE in names:
      subfolders.clear()
      unfinished.append(os.path.relpath(folder, workdir))
  return runs, unfinished


def require_runs(workdirs: Sequence[str], started: Sequence[bool]) -> None:
  """For `--mode=evaluate`: every run must exist."""
  missing = [w for w, s in zip(workdirs, started) if not s]
  if missing:
    raise RunNotFoundError(f'--mode=evaluate: no run in {", ".join(missing)}; train it first.')
