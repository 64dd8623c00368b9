"""The run folder: its file names and formats, the one place that writes and reads them.

A run's workdir holds `config.json` (the settings), `checkpoints/` (Orbax), `results.json`
(a `Results`), `robustness.json` / `robustness.csv`, figures and TensorBoard event files. A
sweep's workdir holds one such folder per run, and `report.md` with its figures.

A workdir is a local folder or a folder in a bucket (`gs://`, through `pejax.storage`). Local
files are written to a temporary name in the same folder and renamed over the target; objects
in a bucket are uploaded whole. Either way a crash never leaves a half-written file behind:
readers see the old file or the new one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import tempfile
from typing import Any
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from absl import logging
from clu import metric_writers

from pejax import checkpoints, configuration, errors, storage
from pejax.errors import (DamagedFileError, RunNotFoundError,
                          SettingsMismatchError, WorkdirError)

CONFIG_FILE = 'config.json'
RESULTS_FILE = 'results.json'
ROBUSTNESS_FILE = 'robustness.json'
ROBUSTNESS_CSV = 'robustness.csv'
# Per-case metrics (`pejax.per_case`): per test image, per ACDC volume, per image and condition.
TEST_CASES_CSV = 'test_cases.csv'
TEST_VOLUMES_CSV = 'test_volumes.csv'
ROBUSTNESS_CASES_CSV = 'robustness_cases.csv'
EXAMPLES_FILE = 'examples.npz'  # `pejax.examples`: a test image, its truth and predictions
# The training curve ({'train_loss': [[epoch, loss], ...], 'eval_dice': [[epoch, Dice], ...]}),
# written as training goes, so that a resumed run keeps the epochs before the interruption.
HISTORY_FILE = 'history.json'
REPORT_FILE = 'report.md'
# The figures the last report wrote, so that the next one can remove those it does not write.
FIGURES_FILE = 'report_figures.json'

def write_atomically(path: str, write: Callable[[Any], None], mode: str = 'w') -> None:
  """Writes through `write(file)` to a temporary file in the same folder, then renames it over
  `path`: readers see the old file or the new one, never a partial one. In a bucket, where an
  object appears only when its upload completes, the bytes are gathered first and uploaded in
  one piece (an error or interruption in `write` uploads nothing)."""
  if storage.is_remote(path):
    buffer = io.BytesIO() if 'b' in mode else io.StringIO(newline='')
    write(buffer)
    data = buffer.getvalue()
    storage.write_object(path, data if 'b' in mode else data.encode())
    return
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
  """The JSON at `path`; DamagedFileError naming the file when it is not JSON (cut short by a
  disk or copy error, or edited by hand)."""
  text = storage.read_text(path)
  try:
    return json.loads(text)
  except ValueError as error:
    raise errors.damaged_file(path, error) from None


def check_writable(folder: str, required_bytes: int) -> None:
  """Fails at start, not after hours of training, when `folder` cannot take the run's files.

  A bucket is probed with an object written and deleted; it has no free space to check."""
  if storage.is_remote(folder):
    try:
      storage.probe_bucket_folder(folder)
    except OSError as error:
      raise WorkdirError(f'the workdir {folder} is not writable ({error}); check the bucket\'s '
                         'name and permissions, or choose another --workdir.') from error
    return
  if os.path.exists(folder) and not os.path.isdir(folder):
    raise WorkdirError(f'the workdir {folder} is a file, not a folder; choose another --workdir '
                       'or move the file away.')
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
  write_json(storage.join(workdir, CONFIG_FILE), configuration.settings_dict(config))


def check_settings(workdir: str, config) -> bool:
  """True if the workdir already holds this run; raises if it holds a run with other settings.

  The settings of the run there are those of its config.json or, when that file is missing or
  damaged, those its newest checkpoint records (config.json is then written again from them)."""
  path = storage.join(workdir, CONFIG_FILE)
  stored, damaged = None, None
  if storage.exists(path):
    try:
      stored = read_json(path)
    except DamagedFileError as error:
      damaged = error
  recovered = stored is None
  if recovered:
    stored = checkpoints.recorded_settings(workdir)
    if stored is None:
      if damaged is not None:
        raise DamagedFileError(f'{damaged} No checkpoint of the run records its settings.')
      return False
    logging.warning('%s is %s; the settings of the run there are read from its newest '
                    'checkpoint, and %s is written again from them.', path,
                    'damaged' if damaged else 'missing', CONFIG_FILE)
  current = configuration.result_settings(config)
  there = configuration.result_settings(stored)
  differing = sorted(k for k in set(there) | set(current) if there.get(k) != current.get(k))
  if differing:
    details = '; '.join(f'{k}: {there.get(k)!r} there, {current.get(k)!r} now' for k in differing)
    raise SettingsMismatchError(
        f'the workdir {workdir} holds a run with other settings ({details}). Use another '
        '--workdir, or delete that one to start over.')
  if recovered:
    _write_on_process_zero(path, stored)
  return True


def _write_on_process_zero(path: str, value) -> None:
  import jax
  if jax.process_index() == 0:
    write_json(path, value)


HISTORY_CURVES = ('train_loss', 'eval_dice', 'epoch_seconds', 'train_seconds')


def read_history(workdir: str, up_to_epoch: int | None) -> dict[str, list]:
  """The run's training curve up to `up_to_epoch` (the restored checkpoint's epoch: what came
  after it is trained again); empty for a new run or without the file.

  Each curve is [[epoch, value], ...]: the training loss, the validation Dice, the seconds of
  each epoch and the training time up to each epoch (so a resumed run's timings cover all its
  epochs)."""
  path = storage.join(workdir, HISTORY_FILE)
  stored = (read_json_or_none(path) if up_to_epoch is not None and storage.exists(path)
            else None) or {}
  return {name: [[int(epoch), value] for epoch, value in stored.get(name, [])
                 if int(epoch) <= up_to_epoch] for name in HISTORY_CURVES}


def write_history(workdir: str, history: Mapping[str, list]) -> None:
  write_json(storage.join(workdir, HISTORY_FILE), dict(history))


def is_finished(workdir: str) -> bool:
  """Whether the run in `workdir` was trained to its last epoch and evaluated. results.json
  of an unfinished run (`--mode=evaluate` of an interrupted one) does not make it finished, and
  a damaged one is warned about and counts as unfinished (training evaluates the run again)."""
  results = read_results_or_none(workdir)
  return results is not None and results.finished


# --------------------------------------------------------------------------------- events


def check_location(workdir: str) -> None:
  """Refuses, before anything is written, a workdir pejax cannot write (`storage`)."""
  storage.check_location(workdir, '--workdir')


def create_metric_writer(workdir: str, just_logging: bool):
  """CLU's writer of a run's TensorBoard events (process 0; the others write nothing).

  CLU writes events through TensorFlow's gfile, whose GCS client cannot be pointed at another
  endpoint (so no test could run it against an emulator). For a workdir in a bucket the events
  are written to a local folder instead, and every flush uploads the event files that grew,
  each whole as one object (as gfile's own GCS writer does on a flush): a run on a VM that
  is deleted keeps its events up to its last flush (every epoch)."""
  if just_logging:
    # Only process 0 writes; the console shows pejax's own line per epoch, not CLU's.
    return metric_writers.MultiWriter([])
  if not storage.is_remote(workdir):
    return _summary_writer(workdir)
  return _UploadingWriter(workdir)


def _summary_writer(folder: str):
  return metric_writers.AsyncWriter(metric_writers.SummaryWriter(folder))


class _UploadingWriter(metric_writers.MultiWriter):
  """CLU's TensorBoard writer on a local folder whose event files are uploaded to a bucket."""

  def __init__(self, workdir: str):
    self._workdir = workdir
    self._local = tempfile.mkdtemp(prefix='pejax-events-')
    self._uploaded: dict[str, int] = {}
    super().__init__([_summary_writer(self._local)])

  def _upload(self) -> None:
    for name, size in storage.file_sizes(self._local).items():
      if self._uploaded.get(name) != size:
        with open(os.path.join(self._local, name), 'rb') as f:
          storage.write_object(storage.join(self._workdir, name), f.read())
        self._uploaded[name] = size

  def flush(self) -> None:
    super().flush()
    self._upload()

  def close(self) -> None:
    super().close()
    self._upload()
    shutil.rmtree(self._local, ignore_errors=True)


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
  # `provenance.software()` of the run that trained the model and of its latest evaluation.
  software: dict = dataclasses.field(default_factory=dict)
  evaluated_with: dict = dataclasses.field(default_factory=dict)
  # Summaries of the per-case files (`surface_distance.summarize`) and their names.
  per_case: dict = dataclasses.field(default_factory=dict)
  robustness_file: str | None = None   # beside results.json; None: no grid was evaluated
  # Validation Dice per evaluated epoch, [[epoch, Dice], ...], and `convergence.assess` of it.
  validation_history: list = dataclasses.field(default_factory=list)
  convergence: dict = dataclasses.field(default_factory=dict)

  @property
  def finished(self) -> bool:
    """Trained to the last epoch of its settings; False for an evaluation of an interrupted
    run, whose results.json is marked `"finished": false`."""
    return int(self.epochs or 0) >= int(self.config.get('num_epochs') or 0) > 0

  def to_json(self) -> dict[str, Any]:
    data = dataclasses.asdict(self)
    if data['robustness_file'] is None:
      del data['robustness_file']
    data['finished'] = self.finished
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
  write_json(storage.join(workdir, RESULTS_FILE), results.to_json())


def read_results(workdir: str) -> Results:
  return Results.from_json(read_json(storage.join(workdir, RESULTS_FILE)))


def read_results_or_none(workdir: str) -> Results | None:
  """The run's results, or None when it has none or they cannot be read (with a warning)."""
  path = storage.join(workdir, RESULTS_FILE)
  data = read_json_or_none(path) if storage.exists(path) else None
  return Results.from_json(data) if isinstance(data, dict) and data.get('config') else None


# --------------------------------------------------------------------------- robustness


def write_robustness(workdir: str, result: Mapping, rows: Sequence[Mapping]) -> tuple[str, str]:
  """Writes a robustness result as `robustness.json` (NaN as null) and its flat `rows` (one
  per condition) as `robustness.csv`; returns the two paths."""
  json_path = storage.join(workdir, ROBUSTNESS_FILE)
  csv_path = storage.join(workdir, ROBUSTNESS_CSV)
  write_json(json_path, result)
  fields = ['condition', 'level', 'parameter', 'dice'] + sorted(
      {key for row in rows for key in row if key.startswith('dice_')})
  write_csv(csv_path, rows, fields)
  return json_path, csv_path


def write_csv(path: str, rows: Sequence[Mapping], fields: Sequence[str]) -> None:
  """Rows as CSV with the columns `fields` (missing values empty, NaN as 'nan')."""

  def write(f):
    writer = csv.DictWriter(f, fieldnames=list(fields), restval='')
    writer.writeheader()
    writer.writerows(rows)

  write_atomically(path, write)


def write_examples(workdir: str, arrays: Mapping[str, Any]) -> None:
  """The run's example predictions (`pejax.examples.collect`) as `examples.npz`."""
  write_atomically(storage.join(workdir, EXAMPLES_FILE), lambda f: np.savez(f, **arrays), 'wb')


def read_examples(folder: str) -> dict | None:
  """The example predictions of the run in `folder`; None if it has none."""
  location = storage.join(folder, EXAMPLES_FILE)
  if not storage.exists(location):
    return None
  with np.load(io.BytesIO(storage.path(location).read_bytes()), allow_pickle=False) as data:
    return {name: data[name] for name in data.files}


# -------------------------------------------------------------------------------- sweeps


@dataclasses.dataclass
class RunRecord:
  """A finished run read back from its folder."""
  name: str                    # folder relative to the sweep's workdir
  path: str
  config: dict
  results: Results
  robustness: dict | None      # the robustness result, None without a grid
  # Per-image values, {image id: {(condition, level): Dice}} ('clean', 0), ('gaussian_noise',
  # 5), ('shift_x', -8), ...; None where the run has no per-image files.
  per_image: dict | None = None


def scan_runs(workdir: str) -> tuple[list[RunRecord], list[str]]:
  """Finished runs below `workdir` and the folders of unfinished ones (config.json only)."""
  runs, unfinished = [], []
  for folder, subfolders, names in storage.walk(workdir):
    subfolders.sort()
    if RESULTS_FILE in names:
      subfolders.clear()  # runs are not nested; skip the checkpoints
      data = read_json_or_none(storage.join(folder, RESULTS_FILE))
      if data is None:
        unfinished.append(os.path.relpath(folder, workdir))
        continue
      config = data.get('config')
      if config is None and CONFIG_FILE in names:
        config = read_json_or_none(storage.join(folder, CONFIG_FILE))
      if not config:
        logging.warning('Skipping %s: its results.json has no config.', folder)
        continue
      results = Results.from_json(dict(data, config=config))
      if not results.finished:
        unfinished.append(os.path.relpath(folder, workdir))
        continue
      robustness_path = storage.join(folder, results.robustness_file or ROBUSTNESS_FILE)
      grid = read_json_or_none(robustness_path) if storage.exists(robustness_path) else None
      runs.append(RunRecord(os.path.relpath(folder, workdir), folder, config, results, grid,
                            read_per_image_dice(folder)))
    elif CONFIG_FILE in names:
      subfolders.clear()
      unfinished.append(os.path.relpath(folder, workdir))
  return runs, unfinished


def read_per_image_dice(folder: str) -> dict | None:
  """{image id: {(condition, level): Dice}} from a run's per-case files (every condition of
  the grid where it was evaluated, else the clean test split), or None without them."""
  for name in (ROBUSTNESS_CASES_CSV, TEST_CASES_CSV):
    path = storage.join(folder, name)
    if not storage.exists(path):
      continue
    values: dict = {}
    for row in csv.DictReader(io.StringIO(storage.read_text(path))):
      key = (row.get('condition') or 'clean', int(row.get('level') or 0))
      values.setdefault(row['id'], {})[key] = _float_or_nan(row.get('dice'))
    return values
  return None


def _float_or_nan(text: str | None) -> float:
  try:
    return float(text)
  except (TypeError, ValueError):
    return float('nan')


def require_runs(workdirs: Sequence[str], started: Sequence[bool]) -> None:
  """For `--mode=evaluate`: every run must exist."""
  missing = [w for w, s in zip(workdirs, started) if not s]
  if missing:
    raise RunNotFoundError(f'--mode=evaluate: no run in {", ".join(missing)}; train it first.')
