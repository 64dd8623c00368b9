"""The files of a run folder and how they are read back: their names, `results.json`
(`Results`), the training history, the robustness files, the example predictions, and the runs
of a sweep folder (`scan_runs`).

Every file is written whole (`storage.write_atomically`): a crash never leaves a half-written
file, readers see the old file or the new one. Nothing here loads JAX or TensorFlow, so the
report reads run folders without them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Any
from collections.abc import Mapping, Sequence

import numpy as np
from absl import logging

from pejax import configuration, errors, storage
from pejax.storage import read_json, read_json_or_none, write_csv, write_json

CONFIG_FILE = 'config.json'
RESULTS_FILE = 'results.json'
ROBUSTNESS_FILE = 'robustness.json'
ROBUSTNESS_CSV = 'robustness.csv'
# Per-case metrics (`pejax.evaluation.per_case`): per test image, per ACDC volume, per image and condition.
TEST_CASES_CSV = 'test_cases.csv'
TEST_VOLUMES_CSV = 'test_volumes.csv'
ROBUSTNESS_CASES_CSV = 'robustness_cases.csv'
# `pejax.evaluation.example_predictions`: a test image, its truth and predictions.
EXAMPLES_FILE = 'examples.npz'
# The training curve ({'train_loss': [[epoch, loss], ...], 'eval_dice': [[epoch, Dice], ...]}),
# written as training goes, so that a resumed run keeps the epochs before the interruption.
HISTORY_FILE = 'history.json'
REPORT_FILE = 'report.md'
# The figures the last report wrote, so that the next one can remove those it does not write.
FIGURES_FILE = 'report_figures.json'
# The position probe (`pejax.evaluation.probe`): its result and figure, in a run's folder (the
# figure also in a sweep's, one line per run).
PROBE_FILE = 'probe.json'
PROBE_FIGURE = 'probe.png'
# The identity of the data the run was trained on (`pejax.data.identity.record`): its dataset,
# builder, source folder and files, and the cases of each split.
DATA_FILE = 'data.json'


HISTORY_CURVES = ('train_loss', 'eval_dice', 'epoch_seconds', 'train_seconds')


def read_history(workdir: str, up_to_epoch: int | None) -> dict[str, list]:
  """The run's training curve up to `up_to_epoch` (the restored checkpoint's epoch: what came
  after it is trained again); empty for a new run or without the file.

  Each curve is [[epoch, value], ...]: the training loss, the validation Dice, the seconds of
  each epoch and the training time up to each epoch (so a resumed run's timings cover all its
  epochs)."""
  path = storage.join(workdir, HISTORY_FILE)
  stored = (read_json_or_none(path) if up_to_epoch is not None and storage.exists(path)
            else None) or {}
  return {name: [[int(epoch), value] for epoch, value in stored.get(name, [])
                 if int(epoch) <= up_to_epoch] for name in HISTORY_CURVES}


def write_history(workdir: str, history: Mapping[str, list]) -> None:
  write_json(storage.join(workdir, HISTORY_FILE), dict(history))


def read_data_record(workdir: str) -> dict | None:
  """The run's data.json, or None for a new run or one recorded before pejax kept it (a
  damaged file is an error: the run's data must not be guessed)."""
  path = storage.join(workdir, DATA_FILE)
  if not storage.exists(path):
    return None
  record = read_json(path)
  if not isinstance(record, Mapping) or not {'dataset', 'splits'} <= set(record):
    raise errors.damaged_file(path, ValueError('it does not record a dataset and its splits'))
  return dict(record)


def write_data_record(workdir: str, record: Mapping[str, Any]) -> None:
  write_json(storage.join(workdir, DATA_FILE), dict(record))


def is_finished(workdir: str, config=None) -> bool:
  """Whether the run in `workdir` was trained to its last epoch and evaluated, and, where its
  probe is enabled (in `config`, else in the run's own settings), probed at its final step.
  results.json of an unfinished run (`--mode=evaluate` of an interrupted one) does not make it
  finished, and a damaged one is warned about and counts as unfinished (training evaluates the
  run again)."""
  results = read_results_or_none(workdir)
  if results is None or not results.finished:
    return False
  probe = (config if config is not None else results.config).get('probe') or {}
  return not probe.get('enabled') or probe_step(workdir) == results.steps


def probe_step(workdir: str) -> int | None:
  """The checkpoint step the run's probe.json describes; None where there is none."""
  probe = read_probe(workdir)
  return None if probe is None or probe.get('step') is None else int(probe['step'])


# ------------------------------------------------------------------------------ results


@dataclasses.dataclass
class Results:
  """`results.json`: a finished run's settings, numbers and provenance.

  Dice dicts hold 'dice' (mean over foreground classes), 'dice_<class>' and, for the model,
  'loss'. `timings` holds 'epoch_seconds' (list), 'train_seconds', 'median_epoch_seconds',
  'eval_seconds' and 'robustness_seconds' where measured.
  """
  config: dict
  dataset: str
  class_names: list
  num_parameters: int
  num_train_examples: int
  epochs: int
  steps: int
  devices: int
  processes: int
  platform: str
  jax_version: str
  normalization: dict
  validation: dict
  test: dict
  validation_averaged_mask: dict
  test_averaged_mask: dict
  timings: dict = dataclasses.field(default_factory=dict)
  # `provenance.software()` of the run that trained the model and of its latest evaluation.
  software: dict = dataclasses.field(default_factory=dict)
  evaluated_with: dict = dataclasses.field(default_factory=dict)
  # Summaries of the per-case files (`surface_distance.summarize`) and their names.
  per_case: dict = dataclasses.field(default_factory=dict)
  robustness_file: str | None = None   # beside results.json; None: no grid was evaluated
  # Validation Dice per evaluated epoch, [[epoch, Dice], ...], and `convergence.assess` of it.
  validation_history: list = dataclasses.field(default_factory=list)
  convergence: dict = dataclasses.field(default_factory=dict)
  # The source folder of a dataset in nnU-Net's format; None for the others.
  dataset_source: str | None = None

  @property
  def finished(self) -> bool:
    """Trained to the last epoch of its settings; False for an evaluation of an interrupted
    run, whose results.json is marked `"finished": false`."""
    return int(self.epochs or 0) >= int(self.config.get('num_epochs') or 0) > 0

  def to_json(self) -> dict[str, Any]:
    data = dataclasses.asdict(self)
    for optional in ('robustness_file', 'dataset_source'):
      if data[optional] is None:
        del data[optional]
    data['finished'] = self.finished
    return configuration.json_safe(data)

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> Results:
    """Reads what `to_json` wrote (`finished` is derived again); ValueError names the fields
    that have no default and are missing."""
    fields = dataclasses.fields(cls)
    missing = [field.name for field in fields if field.name not in data
               and field.default is dataclasses.MISSING
               and field.default_factory is dataclasses.MISSING]
    if not isinstance(data.get('config', {}), Mapping):
      missing.append('config (as a mapping)')
    if missing:
      raise ValueError(f'it has no {", ".join(missing)}; --mode=evaluate writes it anew from the '
                       'run\'s checkpoint')
    return cls(**{field.name: data[field.name] for field in fields if field.name in data})


def write_results(workdir: str, results: Results) -> None:
  write_json(storage.join(workdir, RESULTS_FILE), results.to_json())


def results_from(path: str, data) -> Results:
  """The Results of the JSON `data` read from `path`; DamagedFileError naming the file when it
  is not a results.json."""
  try:
    if not isinstance(data, Mapping):
      raise ValueError('it is not a JSON object')
    return Results.from_json(data)
  except ValueError as error:
    raise errors.damaged_file(path, error) from None


def read_results(workdir: str) -> Results:
  path = storage.join(workdir, RESULTS_FILE)
  return results_from(path, read_json(path))


def read_results_or_none(workdir: str) -> Results | None:
  """The run's results, or None when it has none or they cannot be read (with a warning)."""
  path = storage.join(workdir, RESULTS_FILE)
  data = read_json_or_none(path) if storage.exists(path) else None
  if data is None:
    return None
  try:
    return results_from(path, data)
  except errors.DamagedFileError as error:
    logging.warning('Skipping %s: %s', path, error)
    return None


# --------------------------------------------------------------------------- robustness


def write_robustness(workdir: str, result: Mapping, rows: Sequence[Mapping]) -> tuple[str, str]:
  """Writes a robustness result as `robustness.json` (NaN as null) and its flat `rows` (one
  per condition) as `robustness.csv`; returns the two paths."""
  json_path = storage.join(workdir, ROBUSTNESS_FILE)
  csv_path = storage.join(workdir, ROBUSTNESS_CSV)
  write_json(json_path, result)
  fields = ['condition', 'level', 'parameter', 'dice'] + sorted(
      {key for row in rows for key in row if key.startswith('dice_')})
  write_csv(csv_path, rows, fields)
  return json_path, csv_path


def write_examples(workdir: str, arrays: Mapping[str, Any]) -> None:
  """The run's example predictions (`pejax.evaluation.example_predictions.collect`) as `examples.npz`."""
  storage.write_atomically(storage.join(workdir, EXAMPLES_FILE), lambda f: np.savez(f, **arrays), 'wb')


def read_examples(folder: str) -> dict | None:
  """The example predictions of the run in `folder`; None if it has none."""
  location = storage.join(folder, EXAMPLES_FILE)
  if not storage.exists(location):
    return None
  with np.load(io.BytesIO(storage.path(location).read_bytes()), allow_pickle=False) as data:
    return {name: data[name] for name in data.files}


# -------------------------------------------------------------------------------- sweeps


@dataclasses.dataclass
class RunRecord:
  """A finished run read back from its folder."""
  name: str                    # folder relative to the sweep's workdir
  path: str
  config: dict
  results: Results
  robustness: dict | None      # the robustness result, None without a grid
  # Per-image values, {image id: {(condition, level): Dice}} ('clean', 0), ('gaussian_noise',
  # 5), ('shift_x', -8), ...; None where the run has no per-image files.
  per_image: dict | None = None


def scan_runs(workdir: str) -> tuple[list[RunRecord], list[str]]:
  """Finished runs below `workdir` and the folders of unfinished ones (config.json only)."""
  runs, unfinished = [], []
  for folder, subfolders, names in storage.walk(workdir):
    subfolders.sort()
    if RESULTS_FILE in names:
      subfolders.clear()  # runs are not nested; skip the checkpoints
      results = read_results_or_none(folder)
      if results is None or not results.finished:
        unfinished.append(os.path.relpath(folder, workdir))
        continue
      config = results.config
      robustness_path = storage.join(folder, results.robustness_file or ROBUSTNESS_FILE)
      grid = read_json_or_none(robustness_path) if storage.exists(robustness_path) else None
      runs.append(RunRecord(os.path.relpath(folder, workdir), folder, config, results, grid,
                            read_per_image_dice(folder)))
    elif CONFIG_FILE in names:
      subfolders.clear()
      unfinished.append(os.path.relpath(folder, workdir))
  return runs, unfinished


def read_probe(folder: str) -> dict | None:
  """The position probe's result of a run folder, or None where it was not probed (a damaged
  file is warned about and counts as absent)."""
  path = storage.join(folder, PROBE_FILE)
  return read_json_or_none(path) if storage.exists(path) else None


def trained_network_probe(run: RunRecord) -> dict | None:
  """A finished run's probe, or None where it has none of its trained network (the step its
  results describe): a probe of another checkpoint is not the run's."""
  result = read_probe(run.path)
  if not result or not result.get('levels') or result.get('step') != run.results.steps:
    return None
  return result


def read_per_image_dice(folder: str) -> dict | None:
  """{image id: {(condition, level): Dice}} from a run's per-case files (every condition of
  the grid where it was evaluated, else the clean test split), or None without them."""
  for name in (ROBUSTNESS_CASES_CSV, TEST_CASES_CSV):
    path = storage.join(folder, name)
    if not storage.exists(path):
      continue
    values: dict = {}
    for row in csv.DictReader(io.StringIO(storage.read_text(path))):
      key = (row.get('condition') or 'clean', int(row.get('level') or 0))
      values.setdefault(row['id'], {})[key] = _float_or_nan(row.get('dice'))
    return values
  return None


def _float_or_nan(text: str | None) -> float:
  try:
    return float(text)
  except (TypeError, ValueError):
    return float('nan')
