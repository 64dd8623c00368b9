"""Writing results so that a crash never leaves a half-written file behind."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from typing import Any, Callable



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


def json_safe(value):
  """Converts NumPy/JAX scalars and arrays to plain Python; NaN and ±inf to None (valid JSON)."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if hasattr(value, 'tolist') and not isinstance(value, (str, bytes)):
    return json_safe(value.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_json(path: str, value) -> None:
  write_atomically(path, lambda f: json.dump(json_safe(value), f, indent=2, sort_keys=True,
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
    raise OSError(f'the workdir {folder} is not writable ({error.strerror}); choose another '
                  '--workdir or fix its permissions.') from error
  free = shutil.disk_usage(folder).free
  if free < required_bytes:
    raise OSError(f'the workdir {folder} has {free / 2**20:.0f} MiB free but this run needs about '
                  f'{required_bytes / 2**20:.0f} MiB for checkpoints and logs; free some space '
                  'or choose another --workdir.')
