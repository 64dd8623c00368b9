"""The errors a user can fix, and the one policy every entry point has for them.

A user's mistake or a bad file ends `main.py` / the `pejax` command (every mode),
`python -m pejax.data` and `python -m pejax.reporting` with exactly one line on stderr,
`pejax: error: ...`, naming the file or setting and what to do, and exit status 1; anything
else is a bug and keeps its traceback. `PejaxError` marks a user's error; `translate` also
recognizes the library errors whose meaning pejax knows (a full, read-only or forbidden disk, a
damaged JSON file, an image too large to open, TFDS's missing manual folder);
`exit_on_user_error` (and `parse_flags`, for absl's flags) is what every entry point runs in.

Each class also derives from the built-in error it refines, so callers that catch e.g.
`ValueError` keep working. This module imports no other pejax module.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
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


class OtherProcessError(PejaxError, RuntimeError):
  """Another process of a multi-process run failed at a step all of them take; this one stops
  too, naming that failure."""


# ------------------------------------------------------------------------- the entry points


def exit_on_user_error(function: Callable) -> Callable:
  """Wraps an entry point: a user's error (`translate`) ends the program with one line,
  `pejax: error: ...`, and exit status 1; a bug propagates with its traceback."""
  @functools.wraps(function)
  def entry_point(*args, **kwargs):
    try:
      return function(*args, **kwargs)
    except Exception as error:
      user_error = translate(error)
      if user_error is None:
        raise
      raise SystemExit(message(user_error)) from None
  return entry_point


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
        where = _quoted_path(text) or _named_file(link) or 'a file being written'
        return DiskError(_DISK_ADVICE[code].format(where=where, reason=one_line(text)[:300]))
  return None


def _translate_one(error: BaseException) -> PejaxError | None:
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


def _named_file(error: BaseException) -> str | None:
  """The file an error without a file name was about: the `path` (or `filename`) argument of
  the innermost pejax function it passed through (`storage.write_atomically`, `read_json`, a
  builder's reader)."""
  for frame, _ in reversed(list(frames(error))):
    if is_own_code(frame.f_code.co_filename):
      for name in ('path', 'filename'):
        value = frame.f_locals.get(name)
        if isinstance(value, str | os.PathLike):
          return os.fspath(value)
  return None
