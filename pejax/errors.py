"""The errors a user can fix, and the one policy every entry point has for them.

A user's mistake or a bad file ends `main.py` / the `pejax` command (every mode),
`python -m pejax.data` and `python -m pejax.reporting` with exactly one line on stderr,
`pejax: error: ...`, naming the file or setting and what to do, and exit status 1; anything
else is a bug and keeps its traceback. `PejaxError` marks a user's error; `translate` also
recognizes the library errors whose meaning pejax knows (a full, read-only or forbidden disk, a
damaged JSON file, an image too large to open, TFDS's missing manual folder, a Cloud Storage
endpoint that cannot be connected to);
`exit_on_user_error` (and `parse_flags`, for absl's flags) is what every entry point runs in.

Each class also derives from the built-in error it refines, so callers that catch e.g.
`ValueError` keep working. This module imports no other pejax module.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator


class PejaxError(Exception):
  """An error caused by a setting, a file or the environment, with what to do in its text."""


class SettingError(PejaxError, ValueError):
  """A setting that cannot work: names the setting, its value and what is allowed."""


class SettingsMismatchError(PejaxError, ValueError):
  """The workdir holds a run made with other settings."""


class WorkdirError(PejaxError, OSError):
  """The workdir cannot take the run's files (not writable, too little space)."""


class RunNotFoundError(PejaxError, FileNotFoundError):
  """A run, checkpoint or result that was asked for does not exist."""


class DatasetNotFoundError(PejaxError, RuntimeError):
  """A manually downloaded dataset is neither prepared nor present in its manual folder."""


class NonFiniteLossError(PejaxError, RuntimeError):
  """Training produced a non-finite loss or gradient."""


class InputFileError(PejaxError, ValueError):
  """A file given to predict on cannot be read, or is of a format pejax does not read."""


class CheckpointError(PejaxError, RuntimeError):
  """No checkpoint of a run can be restored (damaged files), and none was deleted."""


class WorkdirBusyError(PejaxError, RuntimeError):
  """Another process is training or evaluating the run in this workdir."""


class DamagedFileError(PejaxError, ValueError):
  """A file pejax wrote (config.json, results.json, ...) cannot be read back."""


class SourceFileError(PejaxError, ValueError):
  """A downloaded source file of a dataset (JSRT, ACDC) is damaged or not what its builder
  reads; names the file and what to do."""


class DiskError(PejaxError, OSError):
  """A file cannot be written where it should go: the disk is full or read-only, or the user may
  not write there."""


class StorageUnreachableError(PejaxError, RuntimeError):
  """The Cloud Storage endpoint of a gs:// path cannot be reached (network, endpoint, proxy).
  Not an OSError: callers that take an OSError for a missing file must not swallow it."""


class OtherProcessError(PejaxError, RuntimeError):
  """Another process of a multi-process run failed at a step all of them take; this one stops
  too, naming that failure."""


# ------------------------------------------------------------------------- the entry points


def exit_on_user_error(function: Callable) -> Callable:
  """Wraps an entry point: a user's error (`translate`) ends the program with one line,
  `pejax: error: ...`, and exit status 1; a bug propagates with its traceback.

  That line comes last: Orbax's background threads of a checkpoint being written, which fail
  with the same error (a full disk), are let finish first, and the libraries' logs of a user's
  error keep their line but not its traceback (`quiet_library_tracebacks`)."""
  @functools.wraps(function)
  def entry_point(*args, **kwargs):
    quiet_library_tracebacks()
    try:
      return function(*args, **kwargs)
    except Exception as error:
      user_error = translate(error)
      if user_error is None:
        raise
      wait_for_background_writes()
      raise SystemExit(message(user_error)) from None
  return entry_point


# The loggers through which libraries report errors of their background work: absl's (Orbax),
# gcsfs's, and asyncio's (an Orbax future whose error nobody read, when it is collected: at
# exit, after the program's last line).
_LIBRARY_LOGGERS = ('absl', 'gcsfs', 'asyncio')
_BACKGROUND_SECONDS = 30


class _UserErrorTracebacks(logging.Filter):
  """Keeps a library's log line of an error a user can fix (`translate`), without its traceback:
  the program's last line says what it is and what to do; asyncio's note of such an error left
  unread is dropped. A bug's traceback is kept."""

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    if error is None or is_own_code(record.pathname) or translate(error) is None:
      return True
    if record.name == 'asyncio':
      return False
    record.exc_info, record.exc_text = None, None
    return True


def quiet_library_tracebacks() -> None:
  """Installs `_UserErrorTracebacks` on the libraries' loggers (once)."""
  for name in _LIBRARY_LOGGERS:
    logger = logging.getLogger(name)
    if not any(isinstance(f, _UserErrorTracebacks) for f in logger.filters):
      logger.addFilter(_UserErrorTracebacks())


def wait_for_background_writes(seconds: float = _BACKGROUND_SECONDS) -> None:
  """Lets Orbax's background threads (a checkpoint being written) end, for up to `seconds`:
  otherwise they log their failure after the program's last line."""
  deadline = time.monotonic() + seconds
  for thread in threading.enumerate():
    target = getattr(thread, '_target', None)
    module = getattr(target, '__module__', None) or type(thread).__module__ or ''
    if thread is not threading.current_thread() and module.startswith('orbax'):
      thread.join(max(0.0, deadline - time.monotonic()))


def parse_flags(argv: list[str], describe: Callable | None = None) -> list[str]:
  """absl's flag parsing as `app.run(..., flags_parser=...)`, with a flag the user got wrong as
  one line (absl prints two, ml_collections a traceback). `describe(error, argv)` may say what
  an error of the command's own flags means (a PejaxError), or re-raise a bug."""
  from absl import flags
  try:
    return flags.FLAGS(argv)
  except Exception as error:
    user_error = (describe(error, argv) if describe else None) or translate(error)
    if user_error is None and isinstance(error, flags.Error):
      user_error = SettingError(f'{str(error).removeprefix("flag ")} (--helpfull lists the '
                                'flags).')
    if user_error is None:
      raise
    raise SystemExit(message(user_error)) from None


def message(error: BaseException | str) -> str:
  """The line a user's error ends the program with."""
  return f'pejax: error: {one_line(error)}'


def one_line(text: BaseException | str) -> str:
  """`text` on one line: the lines of a longer message (a list of commands or instructions)
  joined by spaces, so that the error is always exactly one line of stderr."""
  return re.sub(r'\s*\n\s*', ' ', str(text).strip())


# ----------------------------------------------------------------- errors of the libraries

# What an operating-system error means for the user, by errno.
_FULL = ('{where} ({reason}): free some space there, or choose another folder, and run the '
         'same command again; a training run resumes from its last checkpoint.')
_DISK_ADVICE = {
    errno.ENOSPC: 'no space left on the disk of ' + _FULL,
    errno.EDQUOT: 'the disk quota is exceeded for ' + _FULL,
    errno.EROFS: ('{where} is on a read-only file system ({reason}): choose a folder that can '
                  'be written (--workdir, config.data_dir, --output).'),
    errno.EACCES: ('permission denied for {where} ({reason}): fix its permissions or choose '
                   'another folder (--workdir, config.data_dir, --output).'),
    errno.EEXIST: ('{where} already exists and is in the way ({reason}): move it away or '
                   'choose another name.'),
}
_DISK_ADVICE[errno.EPERM] = _DISK_ADVICE[errno.EACCES]
# Libraries that report an OS error in text of their own (TensorFlow's files, TensorStore under
# Orbax) still name it with the system's words.
_DISK_TEXTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)

# The packages whose functions name the file they work on `path` (or `filename`).
_OWN_FOLDERS = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), name) + os.sep
    for name in ('pejax', 'data_builders'))


def translate(error: BaseException) -> PejaxError | None:
  """The user's error that `error` is, or None for a bug (which keeps its traceback).

  A PejaxError counts where it was raised or as the cause of another (`raise ... from`, as TFDS
  wraps errors). A library's error counts anywhere in the chain where pejax knows what it
  means: an error while cleaning up after a full disk is still the full disk."""
  if not isinstance(error, Exception):
    return None
  for link in chain(error, causes_only=True):
    if isinstance(link, PejaxError):
      return link
  links = list(chain(error))
  for link in links:
    found = _translate_one(link)
    if found is not None:
      return found
  for link in links:
    text = str(link)
    for code in _DISK_TEXTS:
      if os.strerror(code) in text:
        where = _quoted_path(text) or _named_file(link)
        # The library's text repeats the path, often twice: the system's words suffice with it.
        reason = os.strerror(code) if where else one_line(text)[:300]
        return DiskError(_DISK_ADVICE[code].format(where=where or 'a file being written',
                                                   reason=reason))
  return None


def _translate_one(error: BaseException) -> PejaxError | None:
  if _is_connection_error(error):
    host, port = getattr(error, 'host', None), getattr(error, 'port', None)
    return unreachable(_named_file(error) or 'a gs:// path',
                       f'{host}:{port}' if host else 'its endpoint', error)
  if isinstance(error, OSError) and error.errno in _DISK_ADVICE:
    where = error.filename or _named_file(error) or 'a file being written'
    return DiskError(_DISK_ADVICE[error.errno].format(
        where=os.fspath(where), reason=error.strerror or os.strerror(error.errno)))
  if isinstance(error, json.JSONDecodeError):
    # A file cut short or edited by hand; without its name it could be a bug's own JSON.
    where = _named_file(error)
    if where is not None:
      return damaged_file(where, error)
  if type(error).__name__ == 'DecompressionBombError' and type(error).__module__ == 'PIL.Image':
    where = _named_file(error) or 'an image'
    return InputFileError(f'{where} has more pixels than PIL opens safely ({error}); use a '
                          'smaller copy of the image.')
  if isinstance(error, AssertionError):
    # TFDS's DownloadManager.manual_dir, for a builder that does not say it itself.
    match = re.match(r'Manual directory (.+?) does not exist or is empty', str(error))
    if match:
      return DatasetNotFoundError(
          f'the manual folder {match.group(1)} does not exist or is empty: put the downloaded '
          'files of the dataset there, or give their folder with --manual_dir '
          f'(config.manual_dir). {str(error)[match.end():].lstrip(". ")}')
  return None


def unreachable(location, endpoint: str, error: BaseException) -> StorageUnreachableError:
  """Cloud Storage at `endpoint` could not be connected to for `location` (`error`)."""
  emulator = os.environ.get('STORAGE_EMULATOR_HOST')
  where = f'STORAGE_EMULATOR_HOST={emulator}' if emulator else 'no proxy or firewall blocks it'
  return StorageUnreachableError(
      f'{location}: Cloud Storage cannot be reached at {endpoint} ({one_line(error)[:200]}): '
      f'check the network connection and the endpoint ({where}), and the credentials '
      '(gcloud auth application-default login); then run the same command again.')


def _is_connection_error(error: BaseException) -> bool:
  """aiohttp's failure to connect at all (refused, no such host), as gcsfs raises it after its
  retries; not an HTTP error answered by the server."""
  return (type(error).__module__.startswith('aiohttp')
          and any(kind.__name__ == 'ClientConnectorError' for kind in type(error).__mro__))


def damaged_file(where, error: BaseException) -> DamagedFileError:
  """A file cut short or edited by hand (`error`: its parser's), named with what to do."""
  return DamagedFileError(f'{where} is damaged and cannot be read ({error}); restore it from a '
                          'copy, or delete it.')


def is_own_code(filename: str) -> bool:
  """Whether a traceback's file is pejax's own code (a bug there is pejax's, not the user's)."""
  return filename.startswith(_OWN_FOLDERS)


def chain(error: BaseException, causes_only: bool = False) -> Iterator[BaseException]:
  """`error`, then what it was raised from (and, unless `causes_only`, during)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    if error.__cause__ is not None or causes_only:
      error = error.__cause__
    else:
      error = None if error.__suppress_context__ else error.__context__


def frames(error: BaseException) -> Iterator[tuple]:
  """The (frame, line) pairs of an error's traceback, outermost first."""
  traceback = error.__traceback__
  while traceback is not None:
    yield traceback.tb_frame, traceback.tb_lineno
    traceback = traceback.tb_next


def _quoted_path(text: str) -> str | None:
  match = re.search(r'''["'](/[^"'\n]+)["']''', text)
  return match.group(1) if match else None


# The arguments that name the file a function works on: pejax's own (`storage.write_atomically`,
# `read_json`, a builder's reader, `storage.exists`), and the libraries' that write a run's files
# (Orbax's metadata store: `file_path`; etils' Path methods: the path itself).
_OWN_FILE_NAMES = ('path', 'filename', 'location')
_LIBRARY_FILE_NAMES = ('file_path', 'filename', 'self')


def _named_file(error: BaseException) -> str | None:
  """The file an error without a file name was about: the path argument of the innermost
  function it passed through that names one (`_OWN_FILE_NAMES`, `_LIBRARY_FILE_NAMES`), also in
  a background thread whose error was raised again."""
  for frame, _ in reversed(list(frames(error))):
    own = is_own_code(frame.f_code.co_filename)
    for name in _OWN_FILE_NAMES if own else _LIBRARY_FILE_NAMES:
      value = frame.f_locals.get(name)
      if isinstance(value, os.PathLike) or (isinstance(value, str) and name != 'self'):
        return os.fspath(value)
  return None
