"""Process start-up: multi-process initialization and keeping TensorFlow off the accelerators."""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import sys

from absl import logging

from pejax.errors import SettingError

# Seconds a process waits for the others (coordinator start-up, a dead peer, shutdown) before
# failing; the environment variable PEJAX_DISTRIBUTED_TIMEOUT_SECONDS overrides it.
DISTRIBUTED_TIMEOUT_SECONDS = 120


def wants_distributed() -> bool:
  """Whether the environment describes a multi-process job that JAX can join by itself."""
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    return True
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return ',' in hosts


def distributed_timeout_seconds() -> int:
  value = os.environ.get('PEJAX_DISTRIBUTED_TIMEOUT_SECONDS')
  if value is None:
    return DISTRIBUTED_TIMEOUT_SECONDS
  if not value.isdigit() or int(value) < 1:
    raise SettingError(f'PEJAX_DISTRIBUTED_TIMEOUT_SECONDS={value!r} is not allowed: use a whole '
                     'number of seconds ≥ 1.')
  return int(value)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, verbose: bool = False) -> None:
  """Starts JAX (several processes where asked) and keeps TensorFlow off the accelerators;
  without `verbose`, the libraries' start-up notices stay off the console."""
  quiet_library_logs(verbose)
  if not verbose:
    # "Unable to initialize backend 'tpu'" on every machine without a TPU.
    std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)
  import jax
  # Runs of a sweep compile the same programs again; a persistent cache makes that a lookup.
  cache_dir = os.environ.get('PEJAX_COMPILATION_CACHE',
                             os.path.join(os.path.expanduser('~'), '.cache', 'pejax', 'xla'))
  if cache_dir:
    jax.config.update('jax_compilation_cache_dir', cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  if coordinator_address is not None or wants_distributed():
    timeout = distributed_timeout_seconds()
    if not os.environ.get('JAX_CPU_COLLECTIVES_IMPLEMENTATION'):
      # Processes on CPU exchange gradients through Gloo (older JAX had no default).
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    # A dead peer is noticed after the heartbeat timeout: every process then exits with an
    # error instead of waiting forever in a collective or at shutdown.
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id, initialization_timeout=timeout,
        heartbeat_timeout_seconds=max(1, timeout // 4), shutdown_timeout_seconds=timeout)
  with stderr_silenced(not verbose):  # TensorFlow's C++ start-up notices (oneDNN)
    import tensorflow as tf
  tf.config.set_visible_devices([], 'GPU')
  logging.info('JAX process %d of %d, %d local / %d global devices (%s).', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)


@contextlib.contextmanager
def stderr_silenced(enabled: bool = True):
  """Sends what is written to the process's stderr meanwhile (also by C++ code) to /dev/null;
  an exception raised inside still reaches the console, after the block."""
  if not enabled:
    yield
    return
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


class _QuietLibraries:
  """Drops INFO records of libraries that log every file they write or read (Orbax, gcsfs)
  from the console."""

  NOISY = ('/orbax/', '/tensorstore/', '/absl/testing/', '/gcsfs/')

  def filter(self, record) -> bool:
    if record.levelno >= 30:  # WARNING and above always pass
      return True
    return not any(part in record.pathname for part in self.NOISY)


class _QuietRepeats:
  """Drops INFO lines that repeat what pejax says: TFDS's for every split read of a prepared
  dataset (its line saying that a dataset is being generated stays) and CLU's progress notes
  (pejax's epoch line has the rate and the ETA)."""

  REPEATED = (('/tensorflow_datasets/', ('Reusing dataset', 'Load dataset info from')),
              ('/clu/', ('Setting work unit notes',)))

  def filter(self, record) -> bool:
    if record.levelno >= 30:
      return True
    return not any(part in record.pathname and str(record.msg).startswith(messages)
                   for part, messages in self.REPEATED)


def quiet_library_logs(verbose: bool = False) -> None:
  """Filters the console (absl's handler): libraries' per-file lines always, lines repeating
  pejax's own (`_QuietRepeats`) unless `verbose`."""
  handler = logging.get_absl_handler()
  quiet = [_QuietLibraries] + ([] if verbose else [_QuietRepeats])
  for kind in quiet:
    if not any(isinstance(f, kind) for f in handler.filters):
      handler.addFilter(kind())
