"""What data a run was trained on, and whether the data a command is about to read are the same.

A run records its data's identity when it starts (`record`, kept in the run folder as
data.json): the dataset as configured, its builder (name, config, version), and the example ids
of each split by case; for a dataset in nnU-Net's raw format also the resolved absolute source
folder, each source file's size and SHA-256, and how the files became examples
(`datasets.nnunet_inputs`: the reader and orientation rule, the slicing axis, the
normalization). Resume, `--mode=evaluate` and `--mode=probe` compare the data they are about to
use with that record and refuse a difference in one line that says what changed and how to go
on (`check_source` before the dataset is built or read, `check_splits` after), so a run is never
evaluated on other data or silently re-split.

Contents, not modification times, identify a source file: a dataset folder copied to another
machine (which changes the times) is the same data; its new place is taken when the run's
configured folder names it (`--config.dataset=nnunet:<new place>`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping

from absl import logging

from data_builders.nnunet import source as nnunet_source
from pejax import choices
from pejax.data import datasets
from pejax.errors import SettingsMismatchError

# Where data.json lists more names than this, the message shows the first ones and a count.
_SHOWN = 6


@functools.lru_cache(maxsize=65536)
def _content_hash(path: str, size: int, mtime_ns: int) -> str:
  """SHA-256 of a file; cached by (path, size, time) so that one process hashes a file once."""
  del size, mtime_ns  # the cache key: a changed file is hashed again
  digest = hashlib.sha256()
  with open(path, 'rb') as file:
    for block in iter(lambda: file.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def source_files(folder: str) -> dict[str, list]:
  """{key: [size, sha256]} of every source file of an nnU-Net-format dataset folder
  (`data_builders.nnunet.source.source_files`)."""
  files = {}
  for key, path in nnunet_source.source_files(folder):
    status = os.stat(path)
    files[key] = [status.st_size, _content_hash(path, status.st_size, status.st_mtime_ns)]
  return files


def content_fingerprint(files: Mapping[str, list]) -> str:
  return hashlib.sha256(json.dumps(sorted((k, *v) for k, v in files.items())).encode()).hexdigest()


def current_source(dataset: str) -> dict | None:
  """{'source', 'files', 'fingerprint'} of the folder an nnU-Net-format dataset setting names
  now (resolved against the current folder and $nnUNet_raw); None for the other datasets."""
  if not choices.is_nnunet(dataset):
    return None
  folder = datasets.dataset_spec(dataset).source
  files = source_files(folder)
  return {'source': folder, 'files': files, 'fingerprint': content_fingerprint(files)}


def split_cases(arrays: datasets.SplitArrays) -> list[str]:
  """A split's cases, sorted: the volumes its slices come from where the dataset has them
  (ACDC, 3-D nnU-Net cases), else its example ids."""
  cases = arrays.subjects if arrays.subjects is not None else arrays.ids
  return sorted({str(case) for case in cases})


def record(dataset: str, builder, splits: Mapping[str, datasets.SplitArrays],
           nnunet_inputs: Mapping | None) -> dict:
  """The identity of the data a run is trained on (the module's docstring)."""
  identity = {'dataset': dataset,
              'builder': f'{builder.name}/{builder.builder_config.name}/{builder.version}',
              'splits': {split: split_cases(arrays) for split, arrays in splits.items()}}
  source = current_source(dataset)
  if source is not None:
    identity.update(source)
    identity['nnunet_inputs'] = dict(nnunet_inputs or {})
  return identity


def _names(names) -> str:
  names = sorted(names)
  shown = ', '.join(names[:_SHOWN])
  return shown + (f' and {len(names) - _SHOWN} more' if len(names) > _SHOWN else '')


def describe_file_changes(recorded: Mapping[str, list], current: Mapping[str, list]) -> str:
  """In words, what differs between two {key: [size, sha256]} listings of a source folder."""
  added = set(current) - set(recorded)
  removed = set(recorded) - set(current)
  edited = {key for key in set(current) & set(recorded) if list(current[key]) != list(recorded[key])}
  parts = [f'{len(keys)} file{"" if len(keys) == 1 else "s"} {what} ({_names(keys)})'
           for what, keys in (('added', added), ('removed', removed), ('edited', edited)) if keys]
  return '; '.join(parts) or 'no file differs'


def check_source(workdir: str, recorded: Mapping | None, dataset: str) -> dict | None:
  """Raises SettingsMismatchError when the nnU-Net-format dataset that `dataset` names now is
  not the one the run in `workdir` recorded (`record`); returns its current source, None
  where there is nothing to compare (the other datasets, a run recorded before pejax kept
  data.json, whose data are recorded from now on).

  The same files at another place (a moved or copied folder) are the run's data."""
  if recorded is None or 'files' not in recorded or not choices.is_nnunet(dataset):
    return None  # nothing recorded to compare before the dataset is read (`check_splits` after)
  trained_on = recorded['source']
  try:
    current = current_source(dataset)
  except Exception as error:  # the folder named now is missing or no dataset: say what was recorded
    if os.path.isdir(trained_on):
      raise SettingsMismatchError(
          f'{workdir} was trained on {trained_on}; --config.dataset={dataset} cannot be read '
          f'({error}). Give the run its own data: --config.dataset=nnunet:{trained_on}') from None
    raise SettingsMismatchError(
        f'{workdir} was trained on {trained_on}, which no longer exists, and '
        f'--config.dataset={dataset} cannot be read ({error}). If the dataset folder moved, '
        'point the run at its new place: --config.dataset=nnunet:<the folder\'s new path> (its '
        'files must be those the run was trained on).') from None
  if current['fingerprint'] == recorded['fingerprint']:
    if current['source'] != trained_on:
      logging.info('%s was trained on %s; its files are now read from %s (the same files).',
                   workdir, trained_on, current['source'])
    return current
  changes = describe_file_changes(recorded['files'], current['files'])
  if current['source'] == trained_on:
    raise SettingsMismatchError(
        f'the files of {trained_on} changed since the run in {workdir} was trained on them '
        f'({changes}); its splits and normalization came from the files as they were. Restore '
        'them to evaluate or continue this run, or train a new run on the changed dataset in '
        'another --workdir.')
  return _raise_other_folder(workdir, trained_on, dataset, current['source'], changes)


def _raise_other_folder(workdir, trained_on, dataset, folder, changes):
  where = (f'Give the run its own data: --config.dataset=nnunet:{trained_on}'
           if os.path.isdir(trained_on) else
           f'{trained_on} no longer exists: if it moved, point the run at its new place, '
           '--config.dataset=nnunet:<the folder\'s new path> (its files must be those the run '
           'was trained on)')
  raise SettingsMismatchError(
      f'{workdir} was trained on {trained_on}; --config.dataset={dataset} names {folder}, which '
      f'holds other files ({changes}). {where}.')


def check_splits(workdir: str, recorded: Mapping | None, current: Mapping) -> None:
  """Raises SettingsMismatchError when the cases of a split are not those the run recorded
  (`record`'s 'splits'), naming the cases that moved."""
  if recorded is None or 'splits' not in recorded:
    return
  for split, cases in recorded['splits'].items():
    now = set(current['splits'].get(split, ()))
    if now != set(cases):
      gone, new = set(cases) - now, now - set(cases)
      detail = '; '.join(part for part in (
          f'{len(new)} case(s) now in it that were not ({_names(new)})' if new else '',
          f'{len(gone)} case(s) no longer in it ({_names(gone)})' if gone else '') if part)
      raise SettingsMismatchError(
          f'the {split} split of {current.get("source") or current["dataset"]} is not the one '
          f'the run in {workdir} was trained and evaluated with ({detail}; built by '
          f'{current["builder"]}, the run recorded {recorded.get("builder")}). Restore the data '
          'as they were to evaluate or continue this run, or train a new run in another '
          '--workdir.')
