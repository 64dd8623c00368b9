"""Which processes write a run folder: one command at a time (the lock a training or an
evaluation holds), and every process of that command (`check_shared`).

Two processes writing one run folder would race on its checkpoints (Orbax deletes the other's
temporary folders, each replaces the other's steps) and its results. So a training or an
evaluation takes the run folder's lock before it writes anything, and a second one stops at
start with one line naming the holder. Reading (reports, predict, `pejax.load`) takes no lock.

- Local folder (or a shared file system): an advisory `fcntl.flock` on `<workdir>/.pejax_lock`,
  a file removed on release. The kernel releases the lock when its process ends, however it
  ends (kill -9 included), so no lock outlives its holder; a file left by a killed process is
  simply locked again. Linux's NFS client maps it onto NFS byte-range locks, so it holds
  across the machines of a cluster that mount the folder.
- Bucket (`gs://`): an object created only if absent (Cloud Storage's generation
  precondition), refreshed by its holder every HEARTBEAT_SECONDS and deleted on release. A
  process that was killed, or a VM that was deleted, cannot delete it: an object whose holder
  ran on this machine and has ended, or that was not refreshed for STALE_SECONDS (its machine
  is gone), is taken over, with a warning naming its holder.

In a multi-process run only process 0 takes the lock; the others learn whether it succeeded.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence

import numpy as np
from absl import logging

from pejax import storage
from pejax.errors import WorkdirBusyError, WorkdirError

LOCK_FILE = '.pejax_lock'
# Written by process 0 and read by the others at start (`check_shared`), then deleted.
SHARED_TOKEN_FILE = '.shared_workdir_token'
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 120.0


def _description() -> dict:
  return {'host': socket.gethostname(), 'pid': os.getpid(),
          'since': time.strftime('%Y-%m-%d %H:%M:%S %Z'), 'heartbeat': time.time(),
          'command': ' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])[:300]}


def _holder_text(holder: dict | None) -> str:
  if not holder:
    return 'another pejax process'
  return (f'pid {holder.get("pid")} on host {holder.get("host")}, since {holder.get("since")}: '
          f'{holder.get("command")}')


class RunLock:
  """The lock of one run folder; `acquire` raises WorkdirBusyError naming the holder."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = storage.join(workdir, LOCK_FILE)
    self._descriptor = None
    self._created_folder = False
    self._stop = threading.Event()
    self._heartbeat = None

  def acquire(self) -> None:
    if storage.is_remote(self.path):
      self._acquire_object()
    else:
      self._acquire_file()

  def release(self) -> None:
    if self._descriptor is not None:
      import fcntl
      # Removed while still held, so that no run folder keeps a lock file; a process that
      # opened it meanwhile finds it gone once it holds it, and takes the lock again.
      with contextlib.suppress(FileNotFoundError):
        os.remove(self.path)
      fcntl.flock(self._descriptor, fcntl.LOCK_UN)
      os.close(self._descriptor)
      self._descriptor = None
      if self._created_folder:  # a command that stopped before writing leaves no folder
        with contextlib.suppress(OSError):
          os.rmdir(self.workdir)
    if self._heartbeat is not None:
      self._stop.set()
      self._heartbeat.join()
      self._heartbeat = None
      with contextlib.suppress(FileNotFoundError):
        storage.remove(self.path)

  def _busy(self, holder: dict | None, extra: str = '') -> WorkdirBusyError:
    return WorkdirBusyError(
        f'the workdir {self.workdir} is in use by {_holder_text(holder)}{extra}. One training '
        'or evaluation of a run folder at a time: wait for it to end, or stop it; or choose '
        'another --workdir.')

  # ------------------------------------------------------------------------ local folders

  def _acquire_file(self) -> None:
    import fcntl
    from pejax.runs import folder
    self._created_folder = not os.path.isdir(self.workdir)
    folder.check_writable(self.workdir, 0)
    while True:
      descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
      try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _read_description(functools.partial(_read_open_file, descriptor))
        os.close(descriptor)
        raise self._busy(holder) from None
      except BaseException:
        os.close(descriptor)
        raise
      try:
        same_file = os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
      except FileNotFoundError:
        same_file = False
      if same_file:
        break
      os.close(descriptor)  # released and removed by its holder meanwhile: take the new one
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(_description()).encode(), 0)
    self._descriptor = descriptor

  # ------------------------------------------------------------------------------ buckets

  def _acquire_object(self) -> None:
    for _ in range(2):
      try:
        storage.create_object(self.path, json.dumps(_description()).encode())
        break
      except FileExistsError:
        holder = _read_description(lambda: storage.read_text(self.path))
        age = time.time() - float((holder or {}).get('heartbeat', 0))
        if holder is not None and age < STALE_SECONDS and not _ended_here(holder):
          raise self._busy(holder, f' (refreshed {age:.0f} s ago; a lock not refreshed for '
                           f'{STALE_SECONDS:.0f} s is taken over)') from None
        logging.warning('Taking over the lock %s of %s: not refreshed for %.0f s, its process '
                        'has ended.', self.path, _holder_text(holder), age)
        with contextlib.suppress(FileNotFoundError):
          storage.remove(self.path)
    else:
      raise self._busy(None, ' (it took the lock over at the same moment)')
    self._stop.clear()
    self._heartbeat = threading.Thread(target=self._refresh, name='pejax-lock', daemon=True)
    self._heartbeat.start()

  def _refresh(self) -> None:
    description = _description()
    while not self._stop.wait(HEARTBEAT_SECONDS):
      description['heartbeat'] = time.time()
      try:
        storage.write_object(self.path, json.dumps(description).encode())
      except OSError as error:  # a passing network error; the next refresh tries again
        logging.warning('Cannot refresh the lock %s: %s', self.path, error)


def _ended_here(holder: dict) -> bool:
  """Whether the holder was a process of this machine that no longer runs."""
  if holder.get('host') != socket.gethostname():
    return False
  try:
    os.kill(int(holder.get('pid')), 0)
  except ProcessLookupError:
    return True
  except (OSError, TypeError, ValueError):
    return False
  return False


def _read_open_file(descriptor: int) -> str:
  return os.pread(descriptor, 4096, 0).decode()


def _read_description(read) -> dict | None:
  """The holder's description; None if it is being written or unreadable at this moment."""
  try:
    return json.loads(read())
  except (OSError, ValueError):
    return None


@contextlib.contextmanager
def hold(workdirs: Sequence[str]) -> Iterator[None]:
  """Holds the locks of `workdirs` (process 0 of a multi-process run) for the block.

  Every process learns whether process 0 took them, so that all stop together, none waiting
  at a later collective."""
  import jax
  locks, failure = [], None
  if jax.process_index() == 0:
    try:
      for workdir in workdirs:
        lock = RunLock(workdir)
        lock.acquire()
        locks.append(lock)
    except Exception as error:  # also not a lock error: the other processes must not hang
      failure = error
      for lock in locks:
        lock.release()
      locks = []
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    failed = int(np.asarray(multihost_utils.broadcast_one_to_all(np.int32(failure is not None))))
    if failed and failure is None:
      failure = WorkdirBusyError(f'process 0 could not take the lock of {", ".join(workdirs)}; '
                                 'its log names the reason.')
  if failure is not None:
    raise failure
  try:
    yield
  finally:
    for lock in locks:
      lock.release()


def check_shared(workdir: str) -> None:
  """On several processes: stops every process, with one clear message, unless all of them
  see the folder process 0 writes to (one bucket, or one file system all machines mount).

  Process 0 writes a random token into `workdir` and hands its value to the others, which must
  read it there; on a per-machine folder (e.g. the default runs/... on each host's own disk)
  they find none. Every process takes part in every step, so none is left waiting."""
  import jax
  from jax.experimental import multihost_utils
  if jax.process_count() == 1:
    return
  token_path = storage.join(workdir, SHARED_TOKEN_FILE)
  token, problem = uuid.uuid4().hex, None
  if jax.process_index() == 0:
    try:
      storage.write_atomically(token_path, lambda f: f.write(token))
    except OSError as error:
      problem = f'process 0 cannot write to it ({error})'
  token = np.asarray(multihost_utils.broadcast_one_to_all(
      np.frombuffer(bytes.fromhex(token), np.uint8))).tobytes().hex()
  try:
    sees = storage.read_text(token_path) == token
  except OSError:
    sees = False
  seen = np.asarray(multihost_utils.process_allgather(np.int32(sees)))
  if jax.process_index() == 0 and problem is None:
    storage.remove(token_path)
  blind = [index for index, value in enumerate(seen) if not value]
  if problem is None and blind:
    problem = (f'process{"es" if len(blind) > 1 else ""} {", ".join(map(str, blind))} of '
               f'{len(seen)} cannot see what process 0 writes there')
  if problem:
    raise WorkdirError(
        f'the workdir {workdir} is not one folder shared by all processes: {problem}. Give '
        'every process the same --workdir in a bucket (gs://...) or on a file system that '
        'every machine mounts; the default runs/... is on each machine\'s own disk.')
