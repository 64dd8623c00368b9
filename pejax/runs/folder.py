"""The run folder's owner: where a run may be written (`check_location`, `check_writable`), the
settings check against the run already there (`check_settings`), and `write_config`.

A workdir is a local folder or a folder in a bucket (`gs://`, through `pejax.storage`).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Sequence

from absl import logging

from pejax import choices, configuration, storage
from pejax.errors import DamagedFileError, RunNotFoundError, SettingsMismatchError, WorkdirError
from pejax.runs import checkpoints, run_files
from pejax.runs.run_files import CONFIG_FILE
from pejax.storage import read_json, write_json


def check_location(workdir: str) -> None:
  """Refuses, before anything is written, a workdir pejax cannot write (`storage`)."""
  storage.check_location(workdir, '--workdir')


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
    remedy = ('free some space' if error.errno in (errno.ENOSPC, errno.EDQUOT)
              else 'fix its permissions')
    raise WorkdirError(f'the workdir {folder} is not writable ({error.strerror}); choose another '
                       f'--workdir or {remedy}.') from error
  free = shutil.disk_usage(folder).free
  if free < required_bytes:
    raise WorkdirError(f'the workdir {folder} has {free / 2**20:.0f} MiB free but this run needs about '
                       f'{required_bytes / 2**20:.0f} MiB for checkpoints and logs; free some space '
                       'or choose another --workdir.')


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
  if 'dataset' in differing and _checked_by_data_record(workdir, there, current):
    differing.remove('dataset')
  if differing:
    details = '; '.join(f'{k}: {there.get(k)!r} there, {current.get(k)!r} now' for k in differing)
    raise SettingsMismatchError(
        f'the workdir {workdir} holds a run with other settings ({details}). Use another '
        '--workdir, or delete that one to start over.')
  if recovered:
    _write_on_process_zero(path, stored)
  return True


def _checked_by_data_record(workdir: str, there: dict, current: dict) -> bool:
  """Whether the run's dataset is judged by its data.json rather than by the setting's text:
  for datasets in nnU-Net's format, where one folder has many spellings (relative, absolute, a
  name in $nnUNet_raw) and one spelling names other folders from other places, the recorded
  files decide (`pejax.data.identity.check_source`)."""
  return (choices.is_nnunet(str(there.get('dataset'))) and choices.is_nnunet(str(current.get('dataset')))
          and recorded_data(workdir) is not None)


def _write_on_process_zero(path: str, value) -> None:
  import jax
  if jax.process_index() == 0:
    write_json(path, value)


def recorded_data(workdir: str) -> dict | None:
  """What data the run in `workdir` was trained on: its data.json; where that is missing, the
  compact record of its newest checkpoint (`pejax.data.identity.compact`) or, for a run made
  before either existed, the dataset folder its results.json names; None for a new run."""
  record = run_files.read_data_record(workdir)
  if record is not None:
    return record
  described = checkpoints.recorded_description(workdir, 'data')
  if described is not None:
    return dict(described['data'])
  results = run_files.read_results_or_none(workdir)
  if results is not None and results.dataset_source:
    return {'dataset': results.config.get('dataset'), 'source': results.dataset_source}
  return None


def require_runs(workdirs: Sequence[str], started: Sequence[bool]) -> None:
  """For `--mode=evaluate`: every run must exist."""
  missing = [w for w, s in zip(workdirs, started) if not s]
  if missing:
    raise RunNotFoundError(f'--mode=evaluate: no run in {", ".join(missing)}; train it first.')
