"""A run's checkpoints: Orbax's manager of its `checkpoints/` folder, the settings its newest
checkpoint records, and the restore policy when a checkpoint cannot be read."""

from __future__ import annotations

import os
from collections.abc import Sequence

import orbax.checkpoint as ocp
from absl import logging

from pejax import storage
from pejax.errors import CheckpointError

CHECKPOINT_FOLDER = 'checkpoints'


def orbax_path(path) -> str:
  """`path` as Orbax takes it: a gs:// path as it is (Orbax writes buckets through epath and
  TensorStore, and marks a finished checkpoint there by a commit file instead of a rename), a
  local one made absolute (Orbax refuses relative paths)."""
  return str(path) if storage.is_remote(path) else os.path.abspath(path)


def manager(workdir: str, max_to_keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      orbax_path(storage.join(workdir, CHECKPOINT_FOLDER)),
      # A process killed while writing leaves an uncommitted temporary folder (never read,
      # never renamed): delete such leftovers instead of letting them fill the disk.
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           cleanup_tmp_directories=True),
      # One unnamed state per step. Left to guess, Orbax would infer it from the newest step
      # folder, and one missing its item would make every older, intact step unreadable.
      item_handlers=ocp.StandardCheckpointHandler())


def recorded_settings(workdir: str) -> dict | None:
  """The settings recorded in the newest checkpoint of `workdir` that records them, or None."""
  described = recorded_description(workdir, 'config')
  return None if described is None else dict(described['config'])


def recorded_description(workdir: str, field: str) -> dict | None:
  """The description (`provenance.model_description`) of the newest checkpoint of `workdir`
  that records `field`, or None."""
  folder = storage.join(workdir, CHECKPOINT_FOLDER)
  if not storage.isdir(folder):
    return None
  reader = ocp.CheckpointManager(
      orbax_path(folder), options=ocp.CheckpointManagerOptions(create=False, read_only=True),
      item_handlers=ocp.StandardCheckpointHandler())
  try:
    for step in sorted(reader.all_steps(), reverse=True):
      try:
        described = reader.metadata(step).custom_metadata or {}
      except Exception:  # noqa: BLE001  a damaged step folder says nothing; try the older one
        continue
      if described.get(field):
        return dict(described)
    return None
  finally:
    reader.close()


def restore_common(managers: Sequence[ocp.CheckpointManager], abstract_state, *,
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
        failures.append(f'{manager.directory / str(epoch)} ({root_cause(error)})')
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


def root_cause(error: BaseException) -> str:
  """The innermost cause of an error, on one line (Orbax wraps TensorStore's in a long one)."""
  while error.__cause__ is not None:
    error = error.__cause__
  return f'{type(error).__name__}: {" ".join(str(error).split())[:300]}'
