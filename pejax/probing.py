"""`--mode=probe`: the position probe (`pejax.evaluation.probe`) of a trained run's latest
checkpoint, or of every finished run below a sweep's folder.

Each run is restored as `pejax.load` restores it (settings, normalization and state from the
checkpoint) and its probe written into its folder (`pejax.runs.probe_outputs`): probe.json,
probe.png and TensorBoard scalars; a sweep's folder also gets probe.png with a line per run.
The probe's settings are the run's own `config.probe` (the defaults for runs made before it
existed), or those of --config where one is given.
"""

from __future__ import annotations

import os

from absl import logging

from pejax import configuration, storage
from pejax.errors import RunNotFoundError
from pejax.evaluation import probe
from pejax.inference import predict
from pejax.runs import checkpoints, event_writers, probe_outputs, run_files


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


def probe_folder(run_folder: str, cfg=None, label: str | None = None) -> dict:
  """Probes the latest checkpoint of one run and writes the probe into its folder; returns
  the result."""
  model = predict.load(run_folder)
  cfg = cfg if cfg is not None else configuration.probe_config_of(model.config)
  configuration.validate_probe_config(cfg)
  label = label or os.path.basename(os.path.normpath(run_folder))
  logging.info('Probing %s (epoch %d) ...', run_folder, model.epoch)
  result = probe.probe_run(model.predictor, model.model_state, model.config, cfg)
  result.update(run=label, epoch=model.epoch, step=model.step)
  writer = event_writers.create_metric_writer(run_folder, just_logging=False)
  try:
    probe_outputs.write_probe(run_folder, result, label=label, writer=writer, step=model.step)
  finally:
    writer.close()
  return result


def probe_workdir(workdir: str, cfg=None) -> list[str]:
  """`--mode=probe` on a run's or a sweep's folder; returns the probe.json files written."""
  if cfg is not None:  # checked before the first run is loaded
    configuration.validate_probe_config(cfg)
  folders = trained_runs(workdir)
  curves = []
  for folder in folders:
    label = os.path.relpath(folder, workdir) if folder != workdir else None
    result = probe_folder(folder, cfg, label)
    curves.append({'label': result['run'], 'result': result})
  if folders != [workdir]:
    logging.info('Probe figure of the sweep: %s', probe_outputs.write_sweep_figure(workdir, curves))
  return [storage.join(folder, run_files.PROBE_FILE) for folder in folders]
