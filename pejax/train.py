"""Training and evaluation: `train_and_evaluate(config, workdir)` for one run, `train_group` for
several runs that differ only in λ and/or seed, trained together as one vmapped program.

The training split lives on the device(s) as one row-sharded array; one epoch (shuffle, gather
batches by index, Adam steps) is one compiled `lax.scan`. The state is replicated and the batch
is sharded over the `data` axis of a mesh of every device of every process, so the same code
runs on one CPU, several GPUs or a multi-host TPU slice. A checkpoint is written every
`checkpoint_every_epochs` epochs; running the same command again continues from the latest one
and ends with the numbers of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers, periodic_actions
from jax.sharding import NamedSharding, PartitionSpec as P

from pejax import configuration, data, datasets, files, models, robustness, steps
from pejax import metrics as metrics_lib
from pejax.positional import input_channels

RESULTS_FILE = 'results.json'
CONFIG_FILE = 'config.json'
CHECKPOINT_FOLDER = 'checkpoints'


class NonFiniteLossError(RuntimeError):
  """Training produced a non-finite loss or gradient."""


class SettingsMismatchError(ValueError):
  """The workdir holds a run made with other settings."""


# ----------------------------------------------------------------------------- model and state


def model_spec(config: ml_collections.ConfigDict, num_classes: int):
  """The StepSpec of a config (graph definition, optimizer) and a function making its state.

  Configs that define the same model and optimizer get the same (equal) objects, so the runs
  of a sweep reuse each other's compiled programs instead of tracing them again.
  """
  return _model_spec(config.model, config.use_pe, config.width, config.padding, config.conv_impl,
                     config.compute_dtype, float(config.learning_rate), num_classes)


@functools.lru_cache(maxsize=16)
def _model_spec(model: str, use_pe: bool, width: int, padding: str, conv_impl: str,
                compute_dtype_name: str, learning_rate: float, num_classes: int):
  compute_dtype = jnp.bfloat16 if compute_dtype_name == 'bfloat16' else None

  def make_model(seed):
    # The number of PE channels does not depend on λ (any λ > 0 adds two).
    return models.create_model(
        model, in_channels=input_channels(1.0 if use_pe else None), num_classes=num_classes,
        width=width, padding=padding, conv_impl=conv_impl, dtype=compute_dtype, seed=seed)

  graphdef, _, _ = steps.split_model(jax.eval_shape(lambda: make_model(0)))
  spec = steps.StepSpec(graphdef=graphdef, optimizer=optax.adam(learning_rate),
                        num_classes=num_classes, use_pe=use_pe, compute_dtype=compute_dtype)

  def init_state(seed):
    parameter_key, data_key = jax.random.split(jax.random.key(seed))
    _, params, batch_stats = steps.split_model(make_model(parameter_key))
    return steps.init_train_state(spec, params, batch_stats, data_key)

  return spec, init_state


@functools.lru_cache(maxsize=16)
def _jitted_init(init_state, sharding):
  return jax.jit(init_state, out_shardings=sharding)


def count_parameters(params) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def pe_scale_of(config) -> float:
  return float(config.pe_scale) if config.use_pe else 0.0


# ------------------------------------------------------------------------------ compiled parts


def epoch_order(rng, epoch, example_ids, batch_size: int):
  """Rows of the training array (steps, batch) and loss weights of one epoch.

  A fresh permutation of this model's training examples (`example_ids`: all of the split, or
  a subset) per epoch from (rng, epoch). The last partial batch is filled with the first
  examples of the same permutation at loss weight 0: BatchNorm sees a full batch of real
  images, and each example contributes exactly once to the epoch's gradients.
  """
  num_examples = example_ids.shape[0]
  num_steps = -(-num_examples // batch_size)
  key = jax.random.fold_in(jax.random.wrap_key_data(rng), epoch)
  order = jnp.resize(jax.random.permutation(key, example_ids), num_steps * batch_size)
  weights = (jnp.arange(num_steps * batch_size) < num_examples).astype(jnp.float32)
  return order.reshape(num_steps, batch_size), weights.reshape(num_steps, batch_size)


def train_batch(spec: steps.StepSpec, batch_sharding, state: steps.TrainState, pe_scale, rows,
                weights, images, labels):
  """One step on the batch of training-array `rows`, gathered on the device."""
  batch_images = jax.lax.with_sharding_constraint(images[rows], batch_sharding)
  batch_labels = jax.lax.with_sharding_constraint(labels[rows], batch_sharding)
  return steps.train_step(spec, state, batch_images, batch_labels, weights, pe_scale)


def train_epoch_scan(spec: steps.StepSpec, batch_sharding, batch_size: int,
                     state: steps.TrainState, pe_scale, example_ids, images, labels):
  """One epoch as a single `lax.scan` over steps; returns the state and per-step metrics."""
  order, weights = epoch_order(state.rng, state.epoch, example_ids, batch_size)

  def step(state, batch):
    return train_batch(spec, batch_sharding, state, pe_scale, *batch, images, labels)

  state, step_metrics = jax.lax.scan(step, state, (order, weights))
  return state.replace(epoch=state.epoch + 1), step_metrics


class EpochRunner:
  """Runs one training epoch of one model, or of K stacked models (vmapped).

  `scan=True` compiles the epoch as one `lax.scan`; `scan=False` dispatches one compiled step
  per batch from Python (the data, the order and the gathering stay on the device, and
  dispatch is asynchronous). On XLA:CPU convolutions inside a scan run about 10× slower than
  the same step outside it (BENCHMARKS.md), so the loop is the default.
  """

  def __init__(self, spec, batch_sharding, batch_size: int, num_models: int, scan: bool):
    vmapped = (lambda fn, axes: jax.vmap(fn, in_axes=axes)) if num_models > 1 else (lambda fn, _: fn)
    self.scan = scan
    if scan:
      self._epoch = jax.jit(vmapped(functools.partial(
          train_epoch_scan, spec, batch_sharding, batch_size), (0, 0, 0, None, None)),
          donate_argnums=(0,))
    else:
      self._order = jax.jit(vmapped(functools.partial(epoch_order, batch_size=batch_size),
                                    (0, 0, 0)))
      self._step = jax.jit(vmapped(functools.partial(train_batch, spec, batch_sharding),
                                   (0, 0, 0, 0, None, None)), donate_argnums=(0,))
      self._next_epoch = jax.jit(lambda state: state.replace(epoch=state.epoch + 1),
                                 donate_argnums=(0,))
    self.num_models = num_models

  @classmethod
  @functools.lru_cache(maxsize=16)
  def shared(cls, spec, batch_sharding, batch_size: int, num_models: int, scan: bool):
    """One runner (with its compiled programs) per distinct setting, reused by later runs."""
    return cls(spec, batch_sharding, batch_size, num_models, scan)

  def __call__(self, state, pe_scale, example_ids, images, labels):
    if self.scan:
      return self._epoch(state, pe_scale, example_ids, images, labels)
    order, weights = self._order(state.rng, state.epoch, example_ids)
    step_axis = 1 if self.num_models > 1 else 0
    step_metrics = []
    for index in range(order.shape[step_axis]):
      rows = jnp.take(order, index, axis=step_axis)
      batch_weights = jnp.take(weights, index, axis=step_axis)
      state, metrics = self._step(state, pe_scale, rows, batch_weights, images, labels)
      step_metrics.append(metrics)
    stacked = jax.tree.map(lambda *m: jnp.stack(m, axis=step_axis), *step_metrics)
    return self._next_epoch(state), stacked


@dataclasses.dataclass(frozen=True)
class Predictor:
  """Label maps from images in [0, 1]: normalize, PE, model, argmax.

  Hashable and called as `predictor((state, pe_scale), images)`, so one compiled evaluation
  serves every state of the same architecture.
  """
  spec: steps.StepSpec
  normalizer: data.Normalizer

  def __call__(self, model_state, images):
    state, pe_scale = model_state
    return steps.predict(self.spec, state, self.normalizer(images), pe_scale)


def evaluate_batches(predictor: Predictor, model_state, images, labels, valid):
  """Summed `steps.eval_step` statistics over (batches, batch, ...) arrays, as one scan."""
  state, pe_scale = model_state

  def sums_of(batch):
    batch_images, batch_labels, batch_valid = batch
    return steps.eval_step(predictor.spec, state, predictor.normalizer(batch_images),
                           batch_labels, batch_valid, pe_scale)

  first = jax.tree.map(lambda x: x[0], (images, labels, valid))
  initial = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(sums_of, first))
  totals, _ = jax.lax.scan(
      lambda totals, batch: (jax.tree.map(jnp.add, totals, sums_of(batch)), None),
      initial, (images, labels, valid))
  return totals


def averaged_mask_sums(num_classes: int, train_labels, example_ids, labels, valid):
  """Dice statistics of the paper's baseline: the averaged training mask of this run's
  training examples, predicted for every image of (batches, batch, ...) `labels`."""
  mask = metrics_lib.averaged_mask(train_labels[example_ids], num_classes)
  sums = jax.vmap(lambda batch_labels, batch_valid: metrics_lib.dice_sums(
      jnp.broadcast_to(mask, batch_labels.shape), batch_labels, num_classes, valid=batch_valid))(
          labels, valid)
  return jax.tree.map(lambda x: x.sum(axis=0), sums)


# ------------------------------------------------------------------------------------ data


@dataclasses.dataclass
class EvalSplit:
  """A split batched for evaluation: (batches, batch, ...) arrays sharded on the batch axis."""
  images: jax.Array
  labels: jax.Array
  valid: jax.Array
  images01: np.ndarray       # host copy, (N, H, W, 1), for the robustness grid and panels
  labels_host: np.ndarray


def place_eval_split(split: datasets.SplitArrays, max_batch_size: int, mesh) -> EvalSplit:
  """Pads a split to whole batches (of at most `max_batch_size`, as few padded rows as the
  number of batches allows) and shards each batch over the devices."""
  count = len(split.images)
  batch_size = data.balanced_batch_size(count, max_batch_size, mesh.size)
  num_batches = max(1, -(-count // batch_size))
  total = num_batches * batch_size
  sharding = NamedSharding(mesh, P(None, 'data'))
  per_process = batch_size // jax.process_count()
  start = jax.process_index() * per_process

  def batched(array):
    padded = np.zeros((total,) + array.shape[1:], array.dtype)
    padded[:count] = array
    padded = padded.reshape((num_batches, batch_size) + array.shape[1:])
    local = padded[:, start:start + per_process]
    return jax.make_array_from_process_local_data(sharding, local, padded.shape)

  return EvalSplit(images=batched(split.images), labels=batched(split.labels.astype(np.int32)),
                   valid=batched(np.ones((count,), np.float32)), images01=split.images,
                   labels_host=split.labels)


@dataclasses.dataclass
class RunData:
  """Everything runs on one dataset share: splits on the device(s) and the normalization."""
  dataset: datasets.DatasetSpec
  train_images: jax.Array    # normalized, row-sharded, rows padded to the device count
  train_labels: jax.Array
  num_train: int             # real rows of the training arrays
  normalizer: data.Normalizer
  validation: EvalSplit
  test: EvalSplit


def data_settings(config) -> tuple:
  """The settings that decide which data a run sees (runs sharing them share `RunData`)."""
  return (config.dataset, config.image_size, config.position_jitter, config.data_dir,
          config.manual_dir, config.eval_batch_size)


def load_run_data(config, mesh) -> RunData:
  """Loads (building on first use) the dataset of `config` and places it on the devices.

  Normalization statistics come from the whole training split's images, also for runs on a
  subset of it (they need no labels, and runs of a sweep then see the same inputs).
  """
  spec = datasets.dataset_spec(config.dataset)
  load_kwargs = dict(image_size=config.image_size, data_dir=config.data_dir,
                     manual_dir=config.manual_dir)
  if config.position_jitter is not None:
    load_kwargs['position_jitter'] = config.position_jitter
  splits = datasets.load_splits(config.dataset, **load_kwargs)
  num_train = len(splits['train'].images)
  train_images = data.place_rows(splits['train'].images, mesh)
  normalizer = data.fit_normalizer(spec.normalization, train_images, num_train)
  train_images = jax.jit(normalizer, out_shardings=data.row_sharding(mesh))(train_images)
  eval_batch = -(-config.eval_batch_size // mesh.size) * mesh.size
  return RunData(dataset=spec, train_images=train_images,
                 train_labels=data.place_rows(splits['train'].labels.astype(np.int32), mesh),
                 num_train=num_train, normalizer=normalizer,
                 validation=place_eval_split(splits['validation'], eval_batch, mesh),
                 test=place_eval_split(splits['test'], eval_batch, mesh))


# ------------------------------------------------------------------------------------ runs


@dataclasses.dataclass
class Run:
  """One run of a group: its settings, its folder, its training examples and its outputs."""
  config: ml_collections.ConfigDict
  workdir: str
  example_ids: np.ndarray = None
  checkpoints: Any = None
  writer: Any = None

  @property
  def name(self) -> str:
    return os.path.basename(os.path.normpath(self.workdir))


def check_settings(workdir: str, config) -> bool:
  """True if the workdir already holds this run; raises if it holds a run with other settings."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return False
  stored = configuration.result_settings(files.read_json(path))
  current = configuration.result_settings(files.json_safe(config.to_dict()))
  differing = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
  if differing:
    details = '; '.join(f'{k}: {stored.get(k)!r} there, {current.get(k)!r} now' for k in differing)
    raise SettingsMismatchError(
        f'the workdir {workdir} holds a run with other settings ({details}). Use another '
        '--workdir, or delete that one to start over.')
  return True


def is_finished(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, RESULTS_FILE))


def group_settings(config) -> dict:
  """Settings that must agree for runs to be trained together (all but seed and λ)."""
  settings = configuration.result_settings(files.json_safe(config.to_dict()))
  for name in ('seed', 'pe_scale', 'robustness'):
    settings.pop(name, None)
  return settings


def stack(trees):
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree, index: int):
  return jax.tree.map(lambda leaf: leaf[index], tree)


def label_panel(images01, labels, predictions, count: int):
  """Rows of (input | ground truth | prediction) for TensorBoard, uint8 (H·count, 3W, 3)."""
  from pejax import visualize  # matplotlib only when panels are drawn
  rows = []
  for image, truth, predicted in zip(images01[:count], labels[:count], predictions[:count]):
    gray = np.repeat(np.clip(image, 0, 1), 3, axis=-1)
    rows.append(np.concatenate([gray, visualize.colorize_labels(truth),
                                visualize.colorize_labels(predicted)], axis=1))
  return (np.concatenate(rows, axis=0) * 255).astype(np.uint8)


def dice_table(title: str, class_names, rows: dict[str, dict]) -> str:
  """A plain-text table of mean and per-class Dice, one row per entry of `rows`."""
  header = ['', 'dice'] + list(class_names)
  lines = [title, '  '.join(f'{h:>14}' for h in header)]
  for name, values in rows.items():
    cells = [values['dice']] + [values[f'dice_{c}'] for c in class_names]
    lines.append('  '.join([f'{name:>14}'] + [f'{v:14.4f}' for v in cells]))
  return '\n'.join(lines)


def restore_common_epoch(runs: Sequence[Run], abstract_state):
  """The latest epoch every run of the group has a complete checkpoint of, and their states.

  Orbax writes a checkpoint to a temporary folder and renames it when complete, so a
  half-written checkpoint is never listed here.
  """
  common = None
  for run in runs:
    saved = set(run.checkpoints.all_steps())
    common = saved if common is None else common & saved
  if not common:
    return None, None
  epoch = max(common)
  states = [run.checkpoints.restore(epoch, args=ocp.args.StandardRestore(abstract_state))
            for run in runs]
  return epoch, states


@functools.partial(jax.jit, static_argnums=0)
def _evaluate_batches(predictor: Predictor, model_state, images, labels, valid):
  return evaluate_batches(predictor, model_state, images, labels, valid)


@functools.partial(jax.jit, static_argnums=0)
def _predict(predictor: Predictor, model_state, images):
  return predictor(model_state, images)


_averaged_mask_sums = jax.jit(averaged_mask_sums, static_argnums=0)


class Evaluator:
  """The evaluations of the runs of a group, compiled once per model and normalization (the
  jitted functions are module-level with the hashable predictor static, so later runs of a
  sweep reuse them)."""

  def __init__(self, spec: steps.StepSpec, run_data: RunData):
    self.predictor = Predictor(spec, run_data.normalizer)
    self.run_data = run_data

  def dice(self, state, pe_scale, split: EvalSplit) -> dict[str, float]:
    sums = jax.device_get(_evaluate_batches(self.predictor, (state, pe_scale), split.images,
                                            split.labels, split.valid))
    result = metrics_lib.finalize_dice(sums, self.run_data.dataset.class_names)
    result['loss'] = float(sums['loss_sum'] / sums['example_count'])
    return result

  def averaged_mask_dice(self, example_ids, split: EvalSplit) -> dict[str, float]:
    sums = _averaged_mask_sums(self.run_data.dataset.num_classes, self.run_data.train_labels,
                          jnp.asarray(example_ids), split.labels, split.valid)
    return metrics_lib.finalize_dice(jax.device_get(sums), self.run_data.dataset.class_names)

  def panel(self, state, pe_scale, count: int):
    split = self.run_data.validation
    count = min(count, len(split.images01))
    predictions = np.asarray(_predict(self.predictor, (state, pe_scale), split.images01[:count]))
    return label_panel(split.images01, split.labels_host, predictions, count)


def finish_run(run: Run, state, evaluator: Evaluator, timings: dict) -> dict:
  """Final evaluation of one trained run; writes results.json (and robustness files)."""
  config = run.config
  run_data = evaluator.run_data
  class_names = run_data.dataset.class_names
  pe_scale = jnp.float32(pe_scale_of(config))
  is_writer = jax.process_index() == 0
  start = time.perf_counter()
  final = {'validation': evaluator.dice(state, pe_scale, run_data.validation),
           'test': evaluator.dice(state, pe_scale, run_data.test)}
  for name in ('validation', 'test'):
    final[f'{name}_averaged_mask'] = evaluator.averaged_mask_dice(run.example_ids,
                                                                  getattr(run_data, name))
  timings = dict(timings, eval_seconds=time.perf_counter() - start)
  final_step = int(state.step)
  run.writer.write_scalars(final_step, {f'test_{k}': v for k, v in final['test'].items()})
  results = {
      'config': config.to_dict(), 'dataset': config.dataset, 'class_names': list(class_names),
      'num_parameters': count_parameters(state.params), 'num_train_examples': len(run.example_ids),
      'epochs': int(state.epoch), 'steps': final_step, 'devices': jax.device_count(),
      'processes': jax.process_count(), 'platform': jax.devices()[0].platform,
      'jax_version': jax.__version__, 'normalization': dataclasses.asdict(run_data.normalizer),
      **final,
  }
  if config.run_robustness:
    grid = robustness.evaluate_robustness(
        evaluator.predictor, run_data.test.images01, run_data.test.labels_host.astype(np.int32),
        config.robustness, num_classes=run_data.dataset.num_classes, class_names=class_names,
        model_state=(state, pe_scale))
    timings['robustness_seconds'] = grid['seconds']
    results['robustness_file'] = 'robustness.json'
    if is_writer:
      robustness.write_robustness(grid, run.workdir)
      label = config.model + (f' PE λ={config.pe_scale:g}' if config.use_pe else ' no PE')
      curve = [{'label': label, 'result': grid}]
      images = {
          'robustness_corruptions': robustness.plot_corruptions(
              curve, os.path.join(run.workdir, 'robustness_corruptions.png'),
              references=[('averaged mask', final['test_averaged_mask']['dice'])]),
          'robustness_shifts': robustness.plot_shifts(
              curve, os.path.join(run.workdir, 'robustness_shifts.png')),
      }
      run.writer.write_images(final_step, {k: v[None] for k, v in images.items()})
  results['timings'] = timings
  if is_writer:
    files.write_json(os.path.join(run.workdir, RESULTS_FILE), results)
  run.writer.flush()
  logging.info('\n%s', dice_table(
      f'{run.name}: Dice on the {config.dataset} test split ({len(run_data.test.images01)} images)',
      class_names, {'model': final['test'], 'averaged mask': final['test_averaged_mask']}))
  return files.json_safe(results)


def train_group(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str], *,
                mesh=None, run_data: RunData | None = None, evaluate_only: bool = False):
  """Trains runs that differ only in seed and/or λ together (vmapped), then evaluates each.

  Each run keeps its own workdir, checkpoints, TensorBoard logs and results.json, exactly as if
  it had been trained alone; finished runs must be filtered out by the caller.
  """
  first = configs[0]
  mesh = mesh or data.make_mesh()
  for config in configs:
    configuration.validate_config(config, mesh.size)
    if group_settings(config) != group_settings(first):
      raise ValueError('runs trained together may differ only in seed and pe_scale.')
  # Data first (it may fail on an absent manual download): nothing in a workdir is touched yet.
  run_data = run_data or load_run_data(first, mesh)
  configuration.validate_against_data(first, run_data.num_train)
  runs = [Run(config, workdir) for config, workdir in zip(configs, workdirs)]
  started = [check_settings(run.workdir, run.config) for run in runs]
  if evaluate_only and not all(started):
    missing = [run.workdir for run, s in zip(runs, started) if not s]
    raise FileNotFoundError(f'--mode=evaluate: no run in {", ".join(missing)}; train it first.')

  spec, init_state = model_spec(first, run_data.dataset.num_classes)
  replicated = data.replicated(mesh)
  init = _jitted_init(init_state, replicated)
  initial = [init(run.config.seed) for run in runs]
  num_params = count_parameters(initial[0].params)
  is_writer = jax.process_index() == 0
  checkpoint_bytes = 4 * (num_params * 3 + 1024) * (first.max_checkpoints_to_keep + 1)
  for run, was_started in zip(runs, started):
    run.example_ids = data.training_subset(run_data.num_train, run.config.num_train_examples,
                                           run.config.seed)
    files.check_writable(run.workdir, checkpoint_bytes + 64 * 2**20)
    if is_writer and not was_started:
      files.write_json(os.path.join(run.workdir, CONFIG_FILE), run.config.to_dict())
    run.checkpoints = ocp.CheckpointManager(
        os.path.abspath(os.path.join(run.workdir, CHECKPOINT_FOLDER)),
        # A process killed while writing leaves an uncommitted temporary folder (never read,
        # never renamed): delete such leftovers instead of letting them fill the disk.
        options=ocp.CheckpointManagerOptions(max_to_keep=first.max_checkpoints_to_keep,
                                             create=True, cleanup_tmp_directories=True))
    run.writer = metric_writers.create_default_writer(run.workdir, just_logging=not is_writer)

  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, initial[0])
  restored_epoch, restored = restore_common_epoch(runs, abstract)
  if restored is not None:
    states = restored
    logging.info('Restored the checkpoints of epoch %d.', restored_epoch)
  elif evaluate_only:
    raise FileNotFoundError('--mode=evaluate: no checkpoint in '
                            f'{", ".join(run.checkpoints.directory.as_posix() for run in runs)}.')
  else:
    states = initial
    for run in runs:
      if is_writer:
        run.writer.write_hparams({k: v for k, v in files.json_safe(run.config.to_dict()).items()
                                  if isinstance(v, (int, float, str, bool))})
  del initial

  evaluator = Evaluator(spec, run_data)
  timings = {'epoch_seconds': []}
  try:
    if not evaluate_only:
      states, timings = _train_epochs(runs, states, spec, run_data, mesh, evaluator,
                                      restored_epoch)
  finally:
    # Also on an interruption (Ctrl-C, an error): let a checkpoint being written complete.
    for run in runs:
      run.checkpoints.wait_until_finished()
  results = [finish_run(run, state, evaluator, timings) for run, state in zip(runs, states)]
  for run in runs:
    run.writer.close()
    run.checkpoints.close()
  return results


def _train_epochs(runs, states, spec, run_data, mesh, evaluator, restored_epoch):
  """The epoch loop of a group: one compiled (vmapped when K > 1) epoch, logs, checkpoints."""
  config = runs[0].config
  num_models = len(runs)
  num_examples = len(runs[0].example_ids)
  batch_size = data.training_batch_size(num_examples, config.batch_size, mesh.size)
  run_epoch = EpochRunner.shared(spec, NamedSharding(mesh, P('data')), batch_size, num_models,
                                 bool(config.scan_epoch))
  if num_models > 1:
    state = stack(states)
    pe_scales = jnp.asarray([pe_scale_of(run.config) for run in runs], jnp.float32)
    example_ids = jnp.asarray(np.stack([run.example_ids for run in runs]))
  else:
    state = states[0]
    pe_scales = jnp.float32(pe_scale_of(config))
    example_ids = jnp.asarray(runs[0].example_ids)
  member = (lambda tree, k: unstack(tree, k)) if num_models > 1 else (lambda tree, k: tree)

  steps_per_epoch = -(-num_examples // batch_size)
  start_epoch = restored_epoch or 0
  last_checkpoint = restored_epoch
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=config.num_epochs * steps_per_epoch, writer=runs[0].writer)
  logging.info('Training %d × %s on %s: %d examples, %d steps/epoch, %d devices, epochs %d..%d.',
               num_models, config.model, config.dataset, num_examples, steps_per_epoch,
               mesh.size, start_epoch + 1, config.num_epochs)
  timings = {'epoch_seconds': []}
  train_start = time.perf_counter()
  for epoch in range(start_epoch + 1, config.num_epochs + 1):
    epoch_start = time.perf_counter()
    state, step_metrics = run_epoch(state, pe_scales, example_ids, run_data.train_images,
                                    run_data.train_labels)
    step_metrics = jax.device_get(step_metrics)
    seconds = time.perf_counter() - epoch_start
    timings['epoch_seconds'].append(seconds)
    step = epoch * steps_per_epoch
    report_progress(step)
    evaluate_now = epoch % config.eval_every_epochs == 0 or epoch == config.num_epochs
    save_now = epoch % config.checkpoint_every_epochs == 0 or epoch == config.num_epochs
    for k, run in enumerate(runs):
      run_metrics = member(step_metrics, k)
      if not np.all(run_metrics['finite']):
        _raise_non_finite(run, run_metrics, epoch, steps_per_epoch, last_checkpoint)
      train_loss = float(np.mean(run_metrics['loss']))
      if epoch % config.log_every_epochs == 0 or epoch == config.num_epochs:
        run.writer.write_scalars(step, {
            'train_loss': train_loss, 'train_grad_norm': float(np.mean(run_metrics['grad_norm'])),
            'learning_rate': config.learning_rate, 'epoch': epoch, 'epoch_seconds': seconds})
      line = f'epoch {epoch:3d}/{config.num_epochs}  step {step:6d}  train_loss {train_loss:.4f}'
      run_state = member(state, k)
      if evaluate_now:
        pe_scale = jnp.float32(pe_scale_of(run.config))
        scores = evaluator.dice(run_state, pe_scale, run_data.validation)
        run.writer.write_scalars(step, {f'eval_{name}': v for name, v in scores.items()})
        line += f'  eval_dice {scores["dice"]:.4f}  eval_loss {scores["loss"]:.4f}'
        if run.config.num_image_panels and jax.process_index() == 0:
          run.writer.write_images(step, {'eval_examples': evaluator.panel(
              run_state, pe_scale, run.config.num_image_panels)[None]})
      prefix = f'{run.name}: ' if num_models > 1 else ''
      logging.info('%s%s  (%.1fs)', prefix, line, seconds)
      if save_now:
        run.checkpoints.save(epoch, args=ocp.args.StandardSave(run_state))
      run.writer.flush()
    if save_now:
      last_checkpoint = epoch
  timings['train_seconds'] = time.perf_counter() - train_start
  if timings['epoch_seconds']:
    timings['median_epoch_seconds'] = float(np.median(timings['epoch_seconds']))
  return [member(state, k) for k in range(num_models)], timings


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
  configuration.validate_config(config, jax.device_count())
  if is_finished(workdir) and not evaluate_only and check_settings(workdir, config):
    logging.info('The run in %s is finished; not retraining it (results.json).', workdir)
    return files.read_json(os.path.join(workdir, RESULTS_FILE))
  return train_group([config], [workdir], evaluate_only=evaluate_only)[0]


# Errors that mean "fix the settings or the environment", reported without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, OSError, NonFiniteLossError)


def run(config: ml_collections.ConfigDict, workdir: str, *, evaluate_only: bool = False):
  """What `main.py` calls: one run or a sweep; errors the user can fix as one clear line."""
  from pejax import sweep
  try:
    if sweep.is_sweep(config):
      return sweep.run_sweep(config, workdir, evaluate_only=evaluate_only)
    return train_and_evaluate(config, workdir, evaluate_only=evaluate_only)
  except USER_ERRORS + (datasets.DatasetNotFoundError,) as error:
    logging.error('%s: %s', type(error).__name__, error)
    raise SystemExit(f'pejax: error: {error}') from None
