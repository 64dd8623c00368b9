"""The errors a user can fix: each becomes one line and a non-zero exit in `main.py`.

Anything else is a bug and keeps its traceback. Each class also derives from the built-in
error it refines, so callers that catch e.g. `ValueError` keep working.
"""


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
