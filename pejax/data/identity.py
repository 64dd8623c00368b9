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

import hashlib
import json
import os
from collections.abc import Mapping

from absl import logging

from data_builders.nnunet import source as nnunet_source
from pejax import choices
from pejax.data import datasets
from pejax.errors import PejaxError, SettingsMismatchError

# Where data.json lists more names than this, the message shows the first ones and a count.
_SHOWN = 6


def current_source(dataset: str) -> dict | None:
  """{'source', 'files', 'fingerprint'} of the folder an nnU-Net-format dataset setting names
  now (resolved against the current folder and $nnUNet_raw); None for the other datasets."""
  if not choices.is_nnunet(dataset):
    return None
  folder = datasets.dataset_spec(dataset).source
  files = nnunet_source.file_hashes(folder)
  return {'source': folder, 'files': files, 'fingerprint': nnunet_source.fingerprint_of(files)}


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


def compact(identity: Mapping) -> dict:
  """The part of a run's data identity a checkpoint carries (its custom metadata): everything but
  the file listing, and the splits as one digest. A run folder that lost data.json is checked
  against it."""
  kept = {key: value for key, value in identity.items() if key not in ('files', 'splits')}
  kept['splits_digest'] = _digest(identity['splits'])
  return kept


def _digest(splits: Mapping) -> str:
  return hashlib.sha256(json.dumps({k: sorted(v) for k, v in splits.items()},
                                   sort_keys=True).encode()).hexdigest()


def _advice(trained_on: str) -> str:
  """How to give a run its own data, for a single run's config and for a sweep config."""
  if os.path.isdir(trained_on):
    return (f'Give the run its own data: --config.dataset=nnunet:{trained_on} (for a sweep '
            f'config, --config=<config>.py:nnunet:{trained_on})')
  return (f'{trained_on} no longer exists: if the folder moved, point the run at its new place, '
          '--config.dataset=nnunet:<its new path> (for a sweep config, --config=<config>.py:'
          'nnunet:<its new path>); its files must be those the run was trained on')


def check_source(workdir: str, recorded: Mapping | None, dataset: str) -> dict | None:
  """Raises SettingsMismatchError when the nnU-Net-format dataset that `dataset` names now is
  not the one the run in `workdir` recorded; returns its current source, None where there is
  nothing to compare before the data are read (the other datasets; a new run).

  `recorded` is data.json (`record`), a checkpoint's `compact` record (data.json lost: the files
  are compared by their fingerprint only), or for a run made before either existed
  {'source': results.json's dataset_source} (only the place is compared). The same files at
  another place (a moved or copied folder) are the run's data."""
  if recorded is None or not recorded.get('source') or not choices.is_nnunet(dataset):
    return None  # nothing recorded to compare before the dataset is read (`check_splits` after)
  trained_on = recorded['source']
  try:
    current = current_source(dataset)
  except PejaxError as error:
    if _named_folder(dataset) == trained_on:
      raise  # the run's own folder cannot be read: the file's error says why
    raise SettingsMismatchError(
        f'{workdir} was trained on {trained_on}; the dataset {dataset} cannot be read ({error}). '
        f'{_advice(trained_on)}.') from None
  if 'fingerprint' not in recorded:  # only the place is known
    if current['source'] == trained_on:
      return current
    raise SettingsMismatchError(
        f'{workdir} was trained on {trained_on} (its results.json); the dataset {dataset} names '
        f'{current["source"]}. {_advice(trained_on)}.')
  if current['fingerprint'] == recorded['fingerprint']:
    if current['source'] != trained_on:
      logging.info('%s was trained on %s; its files are now read from %s (the same files).',
                   workdir, trained_on, current['source'])
    return current
  changes = (describe_file_changes(recorded['files'], current['files']) if 'files' in recorded
             else 'the fingerprint of its files differs from the one its checkpoint records')
  if current['source'] == trained_on:
    raise SettingsMismatchError(
        f'the files of {trained_on} changed since the run in {workdir} was trained on them '
        f'({changes}); its splits and normalization came from the files as they were. Restore '
        'them to evaluate or continue this run, or train a new run on the changed dataset in '
        'another --workdir.')
  raise SettingsMismatchError(
      f'{workdir} was trained on {trained_on}; the dataset {dataset} names {current["source"]}, '
      f'which holds other files ({changes}). {_advice(trained_on)}.')


def _named_folder(dataset: str) -> str | None:
  """The folder a dataset setting names, or None where it names none that exists."""
  try:
    return nnunet_source.resolve_folder(dataset[len(choices.NNUNET_PREFIX):])
  except PejaxError:
    return None


def check_splits(workdir: str, recorded: Mapping | None, current: Mapping) -> None:
  """Raises SettingsMismatchError when the cases of a split are not those the run recorded
  (`record`'s 'splits'), naming the cases that moved."""
  if recorded is None:
    return
  if 'splits' not in recorded:
    if recorded.get('splits_digest') not in (None, _digest(current['splits'])):
      raise SettingsMismatchError(
          f'the splits of {current.get("source") or current["dataset"]} are not those the run in '
          f'{workdir} was trained and evaluated with (its checkpoint records them; its data.json, '
          'which would name the cases, is missing). Restore the data as they were, or data.json '
          'from a copy, to evaluate or continue this run, or train a new run in another '
          '--workdir.')
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
