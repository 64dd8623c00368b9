"""Training: `train_and_evaluate(config, workdir)` for one run, `train_group` for several runs
that differ only in λ and/or seed (trained together as one vmapped program), `train_sweep` for
a sweep config.

The training split lives on the device(s) as one row-sharded array (`input_pipeline`); each
step gathers its batch by index on the device. By default one compiled step per batch is
dispatched from Python (asynchronously); `config.scan_epoch` compiles the whole epoch as one
`lax.scan` instead, which is slower on XLA:CPU (BENCHMARKS.md). The state is replicated and the
batch is sharded over the `data` axis of a mesh of every device of every process, so the same
code runs on one CPU, several GPUs or a multi-host TPU slice. A checkpoint is written every
`checkpoint_every_epochs` epochs; running the same command again continues from the latest one
and ends with the numbers of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from clu import periodic_actions
from jax.sharding import NamedSharding, PartitionSpec as P

from pejax import configuration, storage, sweep
from pejax.data import datasets, identity, input_pipeline
from pejax.evaluation import convergence, probe
from pejax.evaluation.evaluator import Evaluator, dice_table
from pejax.models import epochs
from pejax.models.spec import count_parameters, model_spec
from pejax.runs import (checkpoints, event_writers, folder, hparams, outputs, probe_outputs,
                        provenance, run_files, run_lock)
from pejax.errors import NonFiniteLossError, RunNotFoundError, SettingError

# Models trained together in one program at most (memory grows with it). On XLA:CPU a vmapped
# convolution runs slower per model than separate ones (BENCHMARKS.md), so there runs are
# trained one at a time unless the config says otherwise.
DEFAULT_MODELS_PER_PROGRAM = {'cpu': 1}
DEFAULT_MODELS_PER_PROGRAM_ACCELERATOR = 12


def validate(config: ml_collections.ConfigDict) -> None:
  """Every check of a run's settings that needs no data: the settings, then the sizes its
  dataset's builder makes."""
  configuration.validate_config(config)
  datasets.check_image_size(config.dataset, config.image_size)
  datasets.check_locations(config.data_dir, config.manual_dir)


def itstime(epoch: int, every: int, total: int) -> bool:
  """The one rule for periodic work: every `every` epochs, and at the last epoch."""
  return epoch % every == 0 or epoch == total


@functools.lru_cache(maxsize=16)
def _jitted_init(init_state, sharding):
  return jax.jit(init_state, out_shardings=sharding)


# ------------------------------------------------------------------------------------ runs


@dataclasses.dataclass
class Run:
  """One run of a group: its settings, its folder, its training examples and its outputs."""
  config: ml_collections.ConfigDict
  workdir: str
  example_ids: np.ndarray = None
  checkpoints: Any = None
  writer: Any = None
  description: dict | None = None  # stored with each checkpoint (`provenance.model_description`)
  history: dict | None = None      # `run_files.HISTORY_FILE`'s curves, continued by training

  @property
  def name(self) -> str:
    return os.path.basename(os.path.normpath(self.workdir))


def train_group(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str], *,
                mesh=None, run_data: input_pipeline.RunData | None = None,
                evaluate_only: bool = False):
  """Trains runs that differ only in seed and/or λ together (vmapped), then evaluates each.

  Each run keeps its own workdir, checkpoints, TensorBoard logs and results.json, exactly as if
  it had been trained alone; finished runs must be filtered out by the caller. Each workdir is
  locked (`run_lock`) for the whole of it: a second training or evaluation stops at start.
  """
  first = configs[0]
  for config in configs:
    validate(config)
    if configuration.group_settings(config) != configuration.group_settings(first):
      raise SettingError('runs trained together may differ only in seed and pe_scale.')
  mesh = mesh or input_pipeline.make_mesh()
  # Data first (it may fail on an absent manual download): nothing in a workdir is touched yet.
  run_data = run_data or input_pipeline.load_run_data(first, mesh)
  configuration.validate_against_data(first, run_data.num_train)
  with run_lock.hold(workdirs):
    return _train_group(configs, workdirs, mesh=mesh, run_data=run_data,
                        evaluate_only=evaluate_only)


def _train_group(configs, workdirs, *, mesh, run_data, evaluate_only):
  first = configs[0]
  runs = [Run(config, workdir) for config, workdir in zip(configs, workdirs)]
  started = [folder.check_settings(run.workdir, run.config) for run in runs]
  if evaluate_only:
    folder.require_runs([run.workdir for run in runs], started)
  for run in runs:
    identity.check_splits(run.workdir, folder.recorded_data(run.workdir), run_data.data_record)

  spec, init_state = model_spec(first, run_data.dataset.num_classes,
                                run_data.dataset.image_channels)
  replicated = input_pipeline.replicated(mesh)
  init = _jitted_init(init_state, replicated)
  initial = [init(run.config.seed) for run in runs]
  num_params = count_parameters(initial[0].params)
  is_writer = jax.process_index() == 0
  checkpoint_bytes = 4 * (num_params * 3 + 1024) * (first.max_checkpoints_to_keep + 1)
  for run, was_started in zip(runs, started):
    run.example_ids = input_pipeline.training_subset(run_data.num_train, run.config.num_train_examples,
                                           run.config.seed)
    folder.check_writable(run.workdir, checkpoint_bytes + 64 * 2**20)
    if is_writer and not was_started:
      folder.write_config(run.workdir, run.config)
    # A new run, a run recorded before data.json, a dataset folder that moved: as used now.
    if is_writer and run_files.read_data_record(run.workdir) != run_data.data_record:
      run_files.write_data_record(run.workdir, run_data.data_record)
    run.checkpoints = checkpoints.manager(run.workdir, first.max_checkpoints_to_keep)
    run.description = provenance.model_description(
        configuration.settings_dict(run.config), ('background',) + run_data.dataset.class_names,
        dataclasses.asdict(run_data.normalizer), run_data.dataset.image_channels,
        run_data.nnunet_inputs, identity.compact(run_data.data_record))
    run.writer = event_writers.create_metric_writer(run.workdir, just_logging=not is_writer)

  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, initial[0])
  restored_epoch, restored = checkpoints.restore_common(
      [run.checkpoints for run in runs], abstract, resume=not evaluate_only)
  for run in runs:
    run.history = run_files.read_history(run.workdir, restored_epoch)
  if restored is not None:
    states = restored
    logging.info('Restored the checkpoints of epoch %d.', restored_epoch)
    if evaluate_only and restored_epoch < first.num_epochs:
      logging.warning('The run%s in %s trained %d of %d epochs: its results.json is marked '
                      'partial ("finished": false); the training command continues it.',
                      's' if len(runs) > 1 else '', ', '.join(workdirs), restored_epoch,
                      first.num_epochs)
  elif evaluate_only:
    raise RunNotFoundError('--mode=evaluate: no checkpoint in '
                            f'{", ".join(run.checkpoints.directory.as_posix() for run in runs)}.')
  else:
    states = initial
    for run in runs:
      if is_writer:
        hparams.write_hparams(run.writer, run.config, run_data.dataset.class_names)
  del initial

  evaluator = Evaluator(spec, run_data)
  timings = {}
  try:
    if not evaluate_only:
      states, timings = _train_epochs(runs, states, spec, run_data, mesh, evaluator,
                                      restored_epoch)
  finally:
    # Also on an interruption (Ctrl-C, an error): let a checkpoint being written complete.
    for run in runs:
      run.checkpoints.wait_until_finished()
  # --mode=evaluate keeps what training measured (its timings, its software) in results.json.
  trained = [run_files.read_results_or_none(run.workdir) if evaluate_only else None
             for run in runs]
  results = [_evaluate_and_write(run, state, evaluator, timings, previous)
             for run, state, previous in zip(runs, states, trained)]
  for run in runs:
    run.writer.close()
    run.checkpoints.close()
  return results


def check_data_source(workdir: str, config) -> None:
  """Refuses, before its data are built or read, a dataset source that is not the one the run
  in `workdir` was trained on (`identity.check_source`; `train_group`'s callers check it, and
  `_train_group` checks the splits once the data are read)."""
  recorded = folder.recorded_data(workdir)
  if recorded is not None and 'splits' not in recorded:  # not data.json's full record
    logging.warning('%s is missing; the run is checked against the data its checkpoint or '
                    'results.json records, and the file is written again.',
                    storage.join(workdir, run_files.DATA_FILE))
  identity.check_source(workdir, recorded, config.dataset)


def _evaluate_and_write(run, state, evaluator, timings, trained) -> dict[str, Any]:
  """The final evaluation of one run of the group, written into its folder by its owner
  (`outputs.write_evaluation`); returns its results.json."""
  evaluation = evaluator.evaluate_run(state, run.config, run.example_ids)
  facts = dict(
      num_parameters=count_parameters(state.params), num_train_examples=len(run.example_ids),
      epochs=int(state.epoch), steps=int(state.step), devices=jax.device_count(),
      processes=jax.process_count(), platform=jax.devices()[0].platform,
      jax_version=jax.__version__, normalization=dataclasses.asdict(evaluator.run_data.normalizer),
      dataset_source=evaluator.run_data.dataset.source)
  results = outputs.write_evaluation(run.workdir, run.config, evaluation, facts,
                                     writer=run.writer, timings=timings, trained=trained,
                                     history=run.history,
                                     write_files=jax.process_index() == 0)
  logging.info('\n%s', dice_table(
      f'{run.name}: Dice on the {run.config.dataset} test split ({evaluation.test_count} images)',
      evaluation.class_names, {'model': evaluation.scores['test'],
                               'averaged mask': evaluation.scores['test_averaged_mask']}))
  logging.info('%s: %s.', run.name, convergence.describe(results.convergence))
  if run.config.probe.enabled:
    _probe(run, state, evaluator)
  return results.to_json()


def _probe(run, state, evaluator) -> None:
  """The position probe of a trained run (config.probe.enabled), into its folder and writer."""
  model_state = (state, jnp.float32(configuration.pe_scale_of(run.config)))
  result = probe.probe_run(evaluator.predictor, model_state, run.config, run.config.probe)
  result.update(run=run.name, epoch=int(state.epoch), step=int(state.step))
  if jax.process_index() == 0:
    probe_outputs.write_probe(run.workdir, result, label=run.name, writer=run.writer,
                              step=int(state.step))
  logging.info('%s: position probe written (%s, %.0f s).', run.name, run_files.PROBE_FILE,
               result['seconds'])


def _train_epochs(runs, states, spec, run_data, mesh, evaluator, restored_epoch):
  """The epoch loop of a group: one compiled (vmapped when K > 1) epoch, logs, checkpoints."""
  config = runs[0].config
  num_models = len(runs)
  num_examples = len(runs[0].example_ids)
  batch_size, rows_per_step = input_pipeline.training_batch_size(
      num_examples, config.batch_size, mesh.size)
  members = epochs.Members(num_models)
  run_epoch = epochs.EpochRunner.shared(spec, NamedSharding(mesh, P('data')), batch_size,
                                        rows_per_step, members, bool(config.scan_epoch))
  state = members.stack(states)
  pe_scales = members.stack([jnp.float32(configuration.pe_scale_of(run.config)) for run in runs])
  example_ids = members.stack([jnp.asarray(run.example_ids) for run in runs])

  steps_per_epoch = configuration.steps_per_epoch(num_examples, batch_size)
  start_epoch = restored_epoch or 0
  last_checkpoint = restored_epoch
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=config.num_epochs * steps_per_epoch, writer=runs[0].writer)
  logging.info('Training %d × %s on %s: %d examples, %d steps/epoch of %d (%d rows), %d devices, '
               'epochs %d..%d.', num_models, config.model, config.dataset, num_examples,
               steps_per_epoch, batch_size, rows_per_step, mesh.size, start_epoch + 1,
               config.num_epochs)
  # A resumed run's timings cover its epochs before the interruption too (history.json).
  earlier = runs[0].history
  epoch_seconds = [seconds for _, seconds in earlier['epoch_seconds']]
  earlier_seconds = earlier['train_seconds'][-1][1] if earlier['train_seconds'] else 0.0
  train_start = time.perf_counter()
  for epoch in range(start_epoch + 1, config.num_epochs + 1):
    epoch_start = time.perf_counter()
    state, step_metrics = run_epoch(state, pe_scales, example_ids, run_data.train_images,
                                    run_data.train_labels)
    step_metrics = jax.device_get(step_metrics)
    seconds = time.perf_counter() - epoch_start
    epoch_seconds.append(seconds)
    train_seconds = earlier_seconds + time.perf_counter() - train_start
    step = epoch * steps_per_epoch
    report_progress(step)
    evaluate_now = (itstime(epoch, config.eval_every_epochs, config.num_epochs)
                    or epoch == convergence.boundary_epoch(config.num_epochs))
    save_now = itstime(epoch, config.checkpoint_every_epochs, config.num_epochs)
    for k, run in enumerate(runs):
      run_metrics = members.member(step_metrics, k)
      if not np.all(run_metrics['finite']):
        _raise_non_finite(run, run_metrics, epoch, steps_per_epoch, last_checkpoint)
      train_loss = float(np.mean(run_metrics['loss']))
      run.history['train_loss'].append([epoch, train_loss])
      run.history['epoch_seconds'].append([epoch, seconds])
      run.history['train_seconds'].append([epoch, train_seconds])
      if itstime(epoch, config.log_every_epochs, config.num_epochs):
        run.writer.write_scalars(step, {
            'train_loss': train_loss, 'train_grad_norm': float(np.mean(run_metrics['grad_norm'])),
            'learning_rate': config.learning_rate, 'epoch': epoch, 'epoch_seconds': seconds})
      line = f'epoch {epoch:3d}/{config.num_epochs}  step {step:6d}  train_loss {train_loss:.4f}'
      run_state = members.member(state, k)
      if evaluate_now:
        line += _validate(run, run_state, evaluator, run_data.validation, step, epoch)
      prefix = f'{run.name}: ' if num_models > 1 else ''
      logging.info('%s%s  (%.1fs, %s)', prefix, line, seconds,
                   _pace(epoch_seconds, num_examples * num_models, config.num_epochs - epoch))
      if save_now:
        run.checkpoints.save(epoch, args=ocp.args.StandardSave(run_state),
                             custom_metadata=run.description)
      if (save_now or evaluate_now) and jax.process_index() == 0:
        run_files.write_history(run.workdir, run.history)
      run.writer.flush()
    if save_now:
      last_checkpoint = epoch
  timings = {'epoch_seconds': epoch_seconds,
             'train_seconds': earlier_seconds + time.perf_counter() - train_start}
  if epoch_seconds:
    timings['median_epoch_seconds'] = float(np.median(epoch_seconds))
  return members.unstack(state), timings


def _validate(run, run_state, evaluator, validation, step: int, epoch: int) -> str:
  """One run's validation Dice at `epoch`, to TensorBoard (with the image panel) and its history;
  returns its part of the console line."""
  pe_scale = jnp.float32(configuration.pe_scale_of(run.config))
  scores = evaluator.dice(run_state, pe_scale, validation)
  run.writer.write_scalars(step, {f'eval_{name}': v for name, v in scores.items()})
  run.history['eval_dice'].append([epoch, scores['dice']])
  if run.config.num_image_panels and jax.process_index() == 0:
    run.writer.write_images(step, {'eval_examples': evaluator.panel(
        run_state, pe_scale, run.config.num_image_panels)[None]})
  return f'  eval_dice {scores["dice"]:.4f}  eval_loss {scores["loss"]:.4f}'


def _pace(epoch_seconds: list[float], images_per_epoch: int, epochs_left: int) -> str:
  """Images per second and the run's remaining training time, from the epochs so far (the
  first one, which compiles, only while it is the only one)."""
  recent = epoch_seconds[1:] or epoch_seconds
  per_epoch = sum(recent) / len(recent)
  left = round(per_epoch * epochs_left)
  return f'{images_per_epoch / per_epoch:.0f} images/s, ETA {left // 60}:{left % 60:02d}'


def _raise_non_finite(run, run_metrics, epoch, steps_per_epoch, last_checkpoint):
  bad = int(np.argmin(run_metrics['finite']))
  global_step = (epoch - 1) * steps_per_epoch + bad + 1
  run.checkpoints.wait_until_finished()
  kept = (f'the last good checkpoint (epoch {last_checkpoint}) is kept in '
          f'{run.checkpoints.directory}' if last_checkpoint is not None
          else 'no checkpoint had been written yet')
  raise NonFiniteLossError(
      f'{run.name}: non-finite loss or gradient at step {global_step} (epoch {epoch}, step '
      f'{bad + 1} of the epoch; loss={run_metrics["loss"][bad]}, gradient norm='
      f'{run_metrics["grad_norm"][bad]}); training stopped, {kept}. Lower '
      f'config.learning_rate (now {run.config.learning_rate}) or check the data.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       evaluate_only: bool = False) -> dict[str, Any]:
  """Trains (or continues) the run of `config` in `workdir`, evaluates it, writes results.json.

  Returns the results. A finished run is not retrained: its results are returned as they are
  (with `evaluate_only=True` the latest checkpoint is evaluated again instead).
  """
  folder.check_location(workdir)
  # Before the settings' checks, which would only say that a recorded folder is missing.
  check_data_source(workdir, config)
  validate(config)
  run_lock.check_shared(workdir)
  if (run_files.is_finished(workdir, config) and not evaluate_only
      and folder.check_settings(workdir, config)):
    logging.info('The run in %s is finished; not retraining it (results.json).', workdir)
    return run_files.read_results(workdir).to_json()
  return train_group([config], [workdir], evaluate_only=evaluate_only)[0]


def train_sweep(config: ml_collections.ConfigDict, workdir: str, *, evaluate_only: bool = False,
                shard: tuple[int, int] | None = None) -> list[str]:
  """Runs every unfinished run of a sweep config under `workdir`, then writes the report.

  Runs that can share a program (`sweep.plan_programs`) are trained together; the dataset of
  consecutive programs is loaded and placed once. `shard=(I, N)` runs only shard I's share of
  the sweep (`sweep.shard_runs`), for N processes sharing the workdir. Returns the run folders
  (of the shard).
  """
  platform = jax.devices()[0].platform
  configured = config.get('max_models_per_program')
  models_per_program = int(configured or DEFAULT_MODELS_PER_PROGRAM.get(
      platform, DEFAULT_MODELS_PER_PROGRAM_ACCELERATOR))
  every_run = sweep.expand(config)
  # Shards are cut from programs of the accelerators' size (or the config's) on every kind of
  # device, so that shards on CPUs and on accelerators agree on them.
  shard_unit = int(configured or DEFAULT_MODELS_PER_PROGRAM_ACCELERATOR)
  runs = sweep.shard_runs(every_run, *shard, shard_unit) if shard else every_run
  mesh = input_pipeline.make_mesh()
  folder.check_location(workdir)
  # Everything is checked before any compute: settings, and that no finished run would be
  # overwritten by a run with other settings.
  for name, run_config in every_run:
    check_data_source(os.path.join(workdir, name), run_config)
    try:
      validate(run_config)
    except SettingError as error:
      raise SettingError(f'sweep run {name}: {error}') from None
    folder.check_settings(os.path.join(workdir, name), run_config)
  run_lock.check_shared(workdir)
  finished = {name for name, run_config in runs
              if run_files.is_finished(os.path.join(workdir, name), run_config)}
  pending = [(n, c) for n, c in runs if (n in finished) == evaluate_only]
  total = len(runs)
  logging.info('Sweep %s%s: %d runs, %d finished, %d to %s%s.', workdir,
               f' shard {shard[0]}/{shard[1]}' if shard else '', total, len(finished),
               len(pending), 'evaluate' if evaluate_only else 'run',
               f' ({total - len(finished)} unfinished runs are not evaluated: train them first)'
               if evaluate_only and total > len(finished) else '')
  # Progress counts the runs this command has to do: all of them to train, the finished ones
  # to evaluate.
  done, total = (0, len(pending)) if evaluate_only else (len(finished), total)
  programs = sweep.plan_programs(pending, models_per_program)
  start = time.perf_counter()
  finished_here = 0
  loaded: dict[tuple, input_pipeline.RunData] = {}
  for index, program in enumerate(programs, 1):
    names = [name for name, _ in program]
    logging.info('Sweep program %d/%d: %s (runs done %d/%d)', index, len(programs),
                 ', '.join(names), done, total)
    key = configuration.data_settings(program[0][1])
    if key not in loaded:
      loaded.clear()  # keep one dataset on the device at a time
      loaded[key] = input_pipeline.load_run_data(program[0][1], mesh)
    train_group([c for _, c in program], [os.path.join(workdir, n) for n in names],
                mesh=mesh, run_data=loaded[key], evaluate_only=evaluate_only)
    done += len(program)
    finished_here += len(program)
    elapsed = time.perf_counter() - start
    eta = elapsed / finished_here * (len(pending) - finished_here)
    logging.info('Sweep: runs done %d/%d, %.0fs elapsed, ETA %.0fs (%s).', done, total, elapsed,
                 eta, time.strftime('%H:%M:%S', time.localtime(time.time() + eta)))
  if jax.process_index() == 0:
    _write_report(workdir, [name for name, _ in every_run], shard)
  return [os.path.join(workdir, name) for name, _ in runs]


def _write_report(workdir: str, names: Sequence[str], shard: tuple[int, int] | None) -> None:
  """The sweep's report; a shard writes it only once every run of the sweep is finished.

  Each shard checks after its own runs' results are written, so the last shard to finish sees
  every run finished; shards finishing together may both write it, which the atomic writes of
  the report and its figures make harmless.
  """
  from pejax.reporting import report  # the report reads every run back from the folder
  waiting = [name for name in names if not run_files.is_finished(os.path.join(workdir, name))]
  if shard and waiting:
    logging.info('Shard %d/%d done; runs of the sweep not finished yet: %d (%s). The last '
                 'shard to finish writes the report, or: python -m pejax.reporting --workdir=%s',
                 *shard, len(waiting), ', '.join(waiting[:5]) + (', ...' if len(waiting) > 5 else ''),
                 workdir)
    return
  logging.info('Report: %s', report.write_report(workdir))
