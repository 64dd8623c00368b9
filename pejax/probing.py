"""`--mode=probe`: the position probe (`pejax.evaluation.probe`) of a finished run's trained
network, or of every finished run below a sweep's folder.

A run is probed under its lock (`run_lock`: never while it trains), only when finished and only
when its latest checkpoint is the step its results.json describes, on the data it recorded
(data.json, `pejax.data.identity`); probe.json names that step, and the report shows no probe of
another step as the run's.

Each run is restored as `pejax.load` restores it (settings, normalization and state from the
checkpoint) and its probe written into its folder (`pejax.runs.probe_outputs`): probe.json,
probe.png and TensorBoard scalars; a sweep's folder also gets probe.png with a line per run.
The probe's settings are the run's own `config.probe` (the defaults for runs made before it
existed), or those of --config where one is given.
"""

from __future__ import annotations

import os

import ml_collections
from absl import logging

from pejax import choices, configuration, storage
from pejax.data import identity
from pejax.errors import CheckpointError, RunNotFoundError, SettingsMismatchError
from pejax.evaluation import probe
from pejax.inference import predict
from pejax.runs import checkpoints, event_writers, probe_outputs, run_files, run_lock
from pejax.runs import folder as run_folder_lib


def trained_runs(workdir: str) -> list[str]:
  """The run folders `workdir` stands for: itself where it holds checkpoints, else every
  finished run below it; raises RunNotFoundError (nothing written) where there is none."""
  storage.check_location(workdir, '--workdir')
  if storage.isdir(storage.join(workdir, checkpoints.CHECKPOINT_FOLDER)):
    return [workdir]
  runs = run_files.scan_runs(workdir)[0] if storage.isdir(workdir) else []
  found = [run.path for run in runs
           if storage.isdir(storage.join(run.path, checkpoints.CHECKPOINT_FOLDER))]
  if not found:
    state = 'holds no trained run' if storage.isdir(workdir) else 'does not exist'
    raise RunNotFoundError(
        f'--mode=probe: {workdir} {state} (no {checkpoints.CHECKPOINT_FOLDER}/ in it and no '
        'finished run below it). Give the folder of a trained run or of a sweep, or train '
        f'one first, e.g. python main.py --config=configs/cnn4_pe.py:quick --workdir={workdir}')
  return found


def finished_results(run_folder: str) -> run_files.Results:
  """The results.json of a finished run; RunNotFoundError (nothing written) for a run that is
  still training, was interrupted or was never evaluated: its probe would describe a checkpoint
  that is not the run's."""
  results = run_files.read_results_or_none(run_folder)
  if results is None or not results.finished:
    state = ('has no results.json' if results is None else
             f'trained {results.epochs} of {results.config.get("num_epochs")} epochs')
    raise RunNotFoundError(
        f'--mode=probe: the run in {run_folder} is not finished (it {state}): its latest '
        'checkpoint is not the trained network. Finish it with its training command (which '
        'continues it), then probe it.')
  return results


def run_dataset(run_folder: str, config, dataset: str | None = None) -> str:
  """The dataset setting that reads the data the run was trained on: for a dataset in nnU-Net's
  format its recorded folder (`pejax.runs.folder.recorded_data`), or `dataset` (--config.dataset)
  where the folder moved, checked to hold the files the run recorded, never what the configured
  relative path names from the current folder. A moved folder's new place is recorded."""
  recorded = run_folder_lib.recorded_data(run_folder)
  trained_on = (recorded or {}).get('source')
  if not choices.is_nnunet(config.dataset) or not trained_on:
    return config.dataset
  named = dataset if dataset and choices.is_nnunet(dataset) else choices.NNUNET_PREFIX + trained_on
  if named == choices.NNUNET_PREFIX + trained_on and not os.path.isdir(trained_on):
    raise SettingsMismatchError(
        f'--mode=probe: {run_folder} was trained on {trained_on}, which no longer exists. If the '
        'dataset folder moved, name its new place: --config=<the run\'s config> '
        '--config.dataset=nnunet:<the folder\'s new path> (its files must be those the run was '
        'trained on).')
  current = identity.check_source(run_folder, recorded, named)
  if current is not None and current['source'] != trained_on and 'files' in recorded:
    run_files.write_data_record(run_folder, dict(recorded, dataset=named, source=current['source']))
  return named


def probe_folder(run_folder: str, cfg=None, label: str | None = None,
                 dataset: str | None = None) -> dict:
  """Probes the trained network of one finished run, holding the run's lock, and writes the
  probe into its folder; returns the result. `dataset`: where the run's dataset folder is now,
  if it moved (`run_dataset`)."""
  with run_lock.hold([run_folder]):
    results = finished_results(run_folder)
    model = predict.load(run_folder)
    if model.step != results.steps:
      raise CheckpointError(
          f'--mode=probe: the latest checkpoint of {run_folder} is step {model.step}, but its '
          f'results.json describes step {results.steps}: evaluate it again (--mode=evaluate) '
          'or restore the checkpoint results.json was made from, then probe.')
    config = ml_collections.ConfigDict(model.config.to_dict())
    config.dataset = run_dataset(run_folder, config, dataset)
    return _probe_model(run_folder, model, config, cfg, label)


def _probe_model(run_folder, model, config, cfg, label) -> dict:
  cfg = cfg if cfg is not None else configuration.probe_config_of(model.config)
  configuration.validate_probe_config(cfg)
  label = label or os.path.basename(os.path.normpath(run_folder))
  logging.info('Probing %s (epoch %d) ...', run_folder, model.epoch)
  result = probe.probe_run(model.predictor, model.model_state, config, cfg)
  result.update(run=label, epoch=model.epoch, step=model.step)
  writer = event_writers.create_metric_writer(run_folder, just_logging=False)
  try:
    probe_outputs.write_probe(run_folder, result, label=label, writer=writer, step=model.step)
  finally:
    writer.close()
  return result


def probe_workdir(workdir: str, cfg=None, dataset: str | None = None) -> list[str]:
  """`--mode=probe` on a run's or a sweep's folder; returns the probe.json files written."""
  if cfg is not None:  # checked before the first run is loaded
    configuration.validate_probe_config(cfg)
  folders = trained_runs(workdir)
  curves = []
  for folder in folders:
    label = os.path.relpath(folder, workdir) if folder != workdir else None
    result = probe_folder(folder, cfg, label, dataset)
    curves.append({'label': result['run'], 'result': result})
  if folders != [workdir]:
    logging.info('Probe figure of the sweep: %s', probe_outputs.write_sweep_figure(workdir, curves))
  return [storage.join(folder, run_files.PROBE_FILE) for folder in folders]
