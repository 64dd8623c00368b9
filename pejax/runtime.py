"""Process start-up: multi-process initialization and keeping TensorFlow off the accelerators."""

from __future__ import annotations

import os

from absl import logging

# Seconds a process waits for the others (coordinator start-up, a dead peer) before failing.
DISTRIBUTED_TIMEOUT_SECONDS = 120


def wants_distributed() -> bool:
  """Whether the environment describes a multi-process job that JAX can join by itself."""
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    return True
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return ',' in hosts


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  quiet_library_logs()
  import jax
  if coordinator_address is not None or wants_distributed():
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id, initialization_timeout=DISTRIBUTED_TIMEOUT_SECONDS,
        heartbeat_timeout_seconds=DISTRIBUTED_TIMEOUT_SECONDS // 4)
  import tensorflow as tf
  tf.config.set_visible_devices([], 'GPU')
  logging.info('JAX process %d of %d, %d local / %d global devices (%s).', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)


class _QuietLibraries:
  """Drops INFO records of libraries that log every file they write (Orbax) from the console."""

  NOISY = ('/orbax/', '/tensorstore/', '/absl/testing/')

  def filter(self, record) -> bool:
    if record.levelno >= 30:  # WARNING and above always pass
      return True
    return not any(part in record.pathname for part in self.NOISY)


def quiet_library_logs() -> None:
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
    handler.addFilter(_QuietLibraries())
