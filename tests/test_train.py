"""End-to-end training tests on the chest phantom (CPU, fixed seeds)."""

import csv
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pejax import configuration, errors, train
from pejax.data import input_pipeline
from pejax.evaluation import evaluator
from pejax.models import epochs, steps
from pejax.models import spec as spec_lib
from pejax.runs import checkpoints, run_files

from helpers import damage, small_run_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_resume_after_interruption_gives_the_uninterrupted_results(data_dir, tmp_path, monkeypatch):
  config = small_run_config(data_dir, run_robustness=True)
  config.robustness.shifts = (-2, 0, 2)
  uninterrupted = train.train_and_evaluate(config, str(tmp_path / 'uninterrupted'))

  calls = {'count': 0}
  original = epochs.EpochRunner.__call__

  def interrupt_in_third_epoch(self, *args, **kwargs):
    calls['count'] += 1
    if calls['count'] == 3:
      raise KeyboardInterrupt('simulated interruption after the epoch-2 checkpoint')
    return original(self, *args, **kwargs)

  workdir = str(tmp_path / 'interrupted')
  monkeypatch.setattr(epochs.EpochRunner, '__call__', interrupt_in_third_epoch)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, run_files.RESULTS_FILE))
  assert sorted(os.listdir(os.path.join(workdir, checkpoints.CHECKPOINT_FOLDER))) == ['1', '2']
  monkeypatch.setattr(epochs.EpochRunner, '__call__', original)
  resumed = train.train_and_evaluate(config, workdir)

  assert resumed['epochs'] == uninterrupted['epochs'] == 4
  assert resumed['steps'] == uninterrupted['steps']
  for key in ('test', 'validation', 'test_averaged_mask'):
    assert resumed[key] == uninterrupted[key], key
  with open(os.path.join(workdir, 'robustness.json')) as f:
    resumed_grid = json.load(f)
  with open(os.path.join(str(tmp_path / 'uninterrupted'), 'robustness.json')) as f:
    uninterrupted_grid = json.load(f)
  resumed_grid.pop('seconds'), uninterrupted_grid.pop('seconds')
  assert resumed_grid == uninterrupted_grid
  # The averaged-mask baseline under the same shifts: the mask stays, labels move.
  mask = uninterrupted_grid['averaged_mask']
  assert list(mask['shift_x']) == ['-2', '0', '2'] and mask['shift_x']['0'] == mask['clean']
  assert mask['clean']['dice'] == pytest.approx(uninterrupted['test_averaged_mask']['dice'],
                                                rel=1e-5)
  assert mask['shift_x']['2']['dice'] < mask['clean']['dice']

  # The training curve continues across the interruption as if there had been none.
  def history(folder):  # its curves, less the times
    curves = run_files.read_history(folder, config.num_epochs)
    return {name: curves[name] for name in ('train_loss', 'eval_dice')}
  assert history(workdir) == history(str(tmp_path / 'uninterrupted'))
  assert [epoch for epoch, _ in run_files.read_history(workdir, 4)['epoch_seconds']] == [1, 2, 3, 4]
  assert [epoch for epoch, _ in history(workdir)['train_loss']] == [1, 2, 3, 4]
  # Every eval_every_epochs (2), and the convergence rule's boundary epoch (3 of 4).
  assert [epoch for epoch, _ in resumed['validation_history']] == [2, 3, 4]
  assert resumed['convergence'] == uninterrupted['convergence']
  assert resumed['convergence']['converged'] in (True, False)

  # The schedule study's continuation: a finished 2-epoch run, copied and trained on to 4
  # epochs, is the 4-epoch run (the learning rate does not depend on the schedule).
  study = load_benchmark('schedule_study')
  short = str(tmp_path / 'two_epochs')
  train.train_and_evaluate(small_run_config(data_dir, run_robustness=True, num_epochs=2,
                                            robustness=config.robustness), short)
  continued = str(tmp_path / 'continued')
  study.continue_from(short, continued, config)
  assert not run_files.is_finished(continued)
  extended = train.train_and_evaluate(config, continued)
  for key in ('test', 'validation', 'steps'):
    assert extended[key] == uninterrupted[key], key
  # The 2-epoch run also evaluated its own boundary epoch, 1; the shared epochs agree.
  assert dict(map(tuple, extended['validation_history'])) == dict(
      [(1, pytest.approx(extended['validation_history'][0][1]))]
      + list(map(tuple, uninterrupted['validation_history'])))

  # A finished run is not trained again: its results come back as they are.
  calls['count'] = 0
  monkeypatch.setattr(epochs.EpochRunner, '__call__', interrupt_in_third_epoch)
  again = train.train_and_evaluate(config, workdir)
  assert again['test'] == resumed['test'] and calls['count'] == 0


def load_benchmark(name):
  """A script of benchmarks/ as a module."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'benchmarks', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow
def test_a_damaged_checkpoint_is_passed_over_for_the_previous_one(data_dir, tmp_path, monkeypatch,
                                                                  caplog):
  caplog.set_level('WARNING')
  config = small_run_config(data_dir)
  uninterrupted = train.train_and_evaluate(config, str(tmp_path / 'uninterrupted'))
  workdir = str(tmp_path / 'damaged')
  checkpoint_folder = os.path.join(workdir, checkpoints.CHECKPOINT_FOLDER)

  def interrupt(*args, **kwargs):
    raise KeyboardInterrupt('simulated interruption after the last checkpoint, before results')

  with monkeypatch.context() as patch:
    patch.setattr(evaluator.Evaluator, 'evaluate_run', interrupt)
    with pytest.raises(KeyboardInterrupt):
      train.train_and_evaluate(config, workdir)
  shutil.copytree(checkpoint_folder, str(tmp_path / 'copy'))

  # Every checkpoint damaged: an error naming both, and nothing deleted.
  damage(os.path.join(checkpoint_folder, '3'))
  damage(os.path.join(checkpoint_folder, '4'))
  with pytest.raises(errors.CheckpointError, match=r'no checkpoint can be restored: .*checkpoints/4 '
                     r'\(ValueError: .*\); .*checkpoints/3 \(ValueError: .*\)\. Restore them'):
    train.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(checkpoint_folder)) == ['3', '4']

  # The latest damaged: a warning naming it, and the run resumes from epoch 3 to the same end.
  shutil.rmtree(os.path.join(checkpoint_folder, '3'))
  shutil.copytree(str(tmp_path / 'copy' / '3'), os.path.join(checkpoint_folder, '3'))
  caplog.clear()
  resumed = train.train_and_evaluate(config, workdir)
  warnings = [r.getMessage() for r in caplog.records if 'Cannot restore' in r.getMessage()]
  assert len(warnings) == 1 and 'checkpoints/4 (ValueError: ' in warnings[0], warnings
  for key in ('test', 'validation', 'test_averaged_mask', 'epochs', 'steps'):
    assert resumed[key] == uninterrupted[key], key
  # Epoch 4 was written again: evaluating it gives the same numbers.
  evaluated = train.train_and_evaluate(config, workdir, evaluate_only=True)
  assert evaluated['test'] == uninterrupted['test']

  # Evaluating never falls back to an older epoch.
  damage(os.path.join(checkpoint_folder, '4'))
  with pytest.raises(errors.CheckpointError, match=r'--mode=evaluate: the latest checkpoint '
                     r'cannot be restored: .*checkpoints/4 \(ValueError'):
    train.train_and_evaluate(config, workdir, evaluate_only=True)

  # The latest missing its item folder (a partial copy): it is named, and the intact one before
  # it is restored, as for a damaged one.
  shutil.rmtree(os.path.join(checkpoint_folder, '4', 'default'))
  os.remove(os.path.join(workdir, run_files.RESULTS_FILE))
  caplog.clear()
  resumed = train.train_and_evaluate(config, workdir)
  warnings = [r.getMessage() for r in caplog.records if 'Cannot restore' in r.getMessage()]
  assert len(warnings) == 1 and 'checkpoints/4 (KeyError: ' in warnings[0], warnings
  assert resumed['test'] == uninterrupted['test']


def test_workdir_outputs_and_evaluate_mode(data_dir, tmp_path):
  config = small_run_config(data_dir, num_epochs=2)
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(config, workdir)
  names = os.listdir(workdir)
  assert any(name.startswith('events.out.tfevents') for name in names)
  assert {'config.json', 'results.json', 'checkpoints'} <= set(names)
  assert set(results['test']) == {'dice', 'dice_right_lung', 'dice_left_lung', 'dice_heart', 'loss'}
  assert 0.0 <= results['test']['dice'] <= 1.0
  assert results['num_train_examples'] == 156
  assert results['software']['jax'] == jax.__version__ and results['software']['pejax']
  assert results['software']['flax'] and results['software']['orbax-checkpoint']
  # The checkpoint describes itself: settings, normalization, classes, software.
  manager = checkpoints.manager(workdir, 2)
  described = manager.metadata(manager.latest_step()).custom_metadata
  assert described['config'] == configuration.settings_dict(config)
  assert described['normalization'] == results['normalization']
  assert described['class_names'] == ['background', 'right_lung', 'left_lung', 'heart']
  assert described['software'] == results['software']
  # Per-case metrics of the clean test split agree with the device's Dice.
  with open(os.path.join(workdir, run_files.TEST_CASES_CSV)) as f:
    cases = list(csv.DictReader(f))
  assert len(cases) == 68 and cases[0]['id'] and cases[0]['distance_unit'] == 'px'
  assert {'hd95_heart', 'msd_left_lung', 'status_right_lung'} <= set(cases[0])
  summary = results['per_case']['test_cases']
  assert summary['dice_mean'] == pytest.approx(results['test']['dice'], abs=1e-6)

  trained_timings = results['timings']
  again = train.train_and_evaluate(config, workdir, evaluate_only=True)
  assert again['test'] == results['test']
  # --mode=evaluate keeps what training measured.
  stored = run_files.read_results(workdir)
  assert len(trained_timings['epoch_seconds']) == 2
  for key in ('epoch_seconds', 'train_seconds', 'median_epoch_seconds'):
    assert stored.timings[key] == trained_timings[key], key
  assert stored.software == results['software'] and stored.evaluated_with


def test_other_settings_in_a_used_workdir_are_refused(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(small_run_config(data_dir, num_epochs=1), workdir)
  before = sorted(os.listdir(workdir))
  with pytest.raises(errors.SettingsMismatchError, match='learning_rate'):
    train.train_and_evaluate(small_run_config(data_dir, num_epochs=1, learning_rate=0.01), workdir)
  assert sorted(os.listdir(workdir)) == before


def test_subset_of_training_examples(data_dir, tmp_path):
  results = train.train_and_evaluate(small_run_config(data_dir, num_epochs=1, num_train_examples=5),
                                     str(tmp_path / 'run'))
  assert results['num_train_examples'] == 5 and results['steps'] == 1


@pytest.mark.parametrize('num_examples, batch_size, num_devices, expected', [
    (5, 20, 1, (5, 5)), (10, 20, 1, (10, 10)), (10, 20, 4, (10, 12)), (7, 20, 1, (7, 7)),
    (20, 20, 1, (20, 20)), (156, 20, 1, (20, 20)), (156, 20, 8, (20, 24)), (1, 20, 8, (1, 8))])
def test_training_batch_size(num_examples, batch_size, num_devices, expected):
  assert input_pipeline.training_batch_size(num_examples, batch_size, num_devices) == expected


def test_an_epoch_trains_each_example_once_in_batches_filled_at_weight_zero():
  rows, weights = epochs.epoch_order(jax.random.key_data(jax.random.key(0)), 3, jnp.arange(156),
                                    batch_size=20, rows_per_step=24)
  rows, weights = np.asarray(rows), np.asarray(weights)
  assert rows.shape == weights.shape == (8, 24)
  assert weights.sum(axis=1).tolist() == [20] * 7 + [16]
  assert sorted(rows[weights == 1].tolist()) == list(range(156))
  # The rows at weight 0 repeat examples of their own step (no extra data is gathered).
  for step_rows, step_weights in zip(rows, weights):
    assert set(step_rows[step_weights == 0]) <= set(step_rows[:20])


def test_a_batch_filled_at_weight_zero_equals_its_examples_alone():
  """7 images filled up to 20 rows (repeated unevenly): loss, gradients and BatchNorm
  statistics of the 7 alone, as for a partial last batch or a batch rounded up to the devices."""
  config = small_run_config(None)  # the small CNN: three BatchNorm layers
  spec, init_state = spec_lib.model_spec(config, num_classes=4)
  # Plain gradient descent with step 1: the new parameters show the gradients themselves
  # (Adam's first step is about ±learning rate whatever the gradient's size).
  spec = dataclasses.replace(spec, optimizer=optax.sgd(1.0))
  state = init_state(0)
  state = state.replace(opt_state=spec.optimizer.init(state.params))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(7, 32, 32, 1)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 4, size=(7, 32, 32)), jnp.int32)
  rows, weights = epochs.epoch_order(state.rng, 0, jnp.arange(7), batch_size=7, rows_per_step=20)
  assert weights[0].tolist() == [1.0] * 7 + [0.0] * 13
  train_step = jax.jit(steps.train_step, static_argnums=0)
  filled_state, filled = train_step(spec, state, images[rows[0]], labels[rows[0]], weights[0],
                                    jnp.float32(1.0))
  alone_state, alone = train_step(spec, state, images[rows[0, :7]], labels[rows[0, :7]],
                                  jnp.ones(7), jnp.float32(1.0))
  np.testing.assert_allclose(filled['loss'], alone['loss'], rtol=1e-5)
  np.testing.assert_allclose(filled['grad_norm'], alone['grad_norm'], rtol=1e-4)
  for new, reference in zip(jax.tree.leaves((filled_state.params, filled_state.batch_stats)),
                            jax.tree.leaves((alone_state.params, alone_state.batch_stats))):
    np.testing.assert_allclose(new, reference, rtol=1e-4, atol=1e-6)


PAPER_BATCH_SCRIPT = textwrap.dedent('''
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from pejax import configuration
    from pejax.data import input_pipeline
    from pejax.models import epochs
    from pejax.models import spec as spec_lib
    config = configuration.base_config()
    config.update(dict(image_size=32, model='unet', width=4))
    spec, init_state = spec_lib.model_spec(config, num_classes=4)
    rng = np.random.default_rng(0)
    num_examples = 56  # steps of 20, 20 and 16 examples
    images = rng.normal(size=(num_examples, 32, 32, 1)).astype(np.float32)
    labels = rng.integers(0, 4, size=(num_examples, 32, 32)).astype(np.int32)

    def two_epochs(devices):
      mesh = Mesh(np.asarray(devices), ('data',))
      batch_size, rows = input_pipeline.training_batch_size(num_examples, 20, mesh.size)
      run_epoch = epochs.EpochRunner(spec, NamedSharding(mesh, P('data')), batch_size, rows,
                                     epochs.Members(1), False)
      state = jax.jit(init_state, out_shardings=input_pipeline.replicated(mesh))(0)
      data = [input_pipeline.place_rows(array, mesh) for array in (images, labels)]
      metrics = []
      for _ in range(2):
        state, epoch_metrics = run_epoch(state, jnp.float32(1.0), jnp.arange(num_examples), *data)
        metrics.append(epoch_metrics)
      return rows, jax.device_get((state, metrics))

    one_rows, (one, one_metrics) = two_epochs(jax.devices()[:1])
    eight_rows, (eight, eight_metrics) = two_epochs(jax.devices())
    def largest(a, b):
      return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                 for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    print(json.dumps({
        'devices': jax.device_count(), 'rows': [one_rows, eight_rows],
        'loss': largest([m['loss'] for m in one_metrics], [m['loss'] for m in eight_metrics]),
        'grad_norm': largest([m['grad_norm'] for m in one_metrics],
                             [m['grad_norm'] for m in eight_metrics]),
        'params': largest(one.params, eight.params),
        'batch_stats': largest(one.batch_stats, eight.batch_stats),
        'loss_scale': float(np.mean(one_metrics[0]['loss'])),
        'grad_norm_scale': float(np.mean(one_metrics[0]['grad_norm']))}))
''')


@pytest.mark.slow
def test_the_paper_batch_on_eight_devices_trains_as_on_one():
  """Batch 20 on 8 devices: 24 rows per step, 4 at weight 0; 6 steps (the third of each epoch
  has 16 examples) give the loss, gradient norm, parameters and BatchNorm statistics of 1 device."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  output = subprocess.run([sys.executable, '-c', PAPER_BATCH_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=900, cwd=REPO)
  assert output.returncode == 0, output.stderr[-3000:]
  largest = json.loads(output.stdout.strip().splitlines()[-1])
  assert largest['devices'] == 8 and largest['rows'] == [20, 24]
  # Only the order of float reductions differs. Observed: loss 2e-7, gradient norm 1e-7 (an
  # AVX-512 CPU) to 1.3e-5 (an AVX2 CPU, whose XLA:CPU convolutions sum in another order; the
  # norm itself is 0.35), BatchNorm statistics 1e-6, parameters 2e-5 (Adam divides tiny
  # gradients by their own size); with the filler rows in BatchNorm's statistics these were
  # 2e-3, 5e-2, 8e-2 and 1e-2.
  assert largest['loss'] < 1e-5 and largest['grad_norm'] < 1e-4 * largest['grad_norm_scale'], largest
  assert largest['batch_stats'] < 1e-5 and largest['params'] < 1e-4, largest


MULTI_DEVICE_SCRIPT = textwrap.dedent('''
    import json, sys
    import jax
    from pejax import configuration, train
    config = configuration.quick(configuration.base_config())
    config.update(dict(data_dir=sys.argv[1], image_size=32, model='unet', width=4, num_epochs=2,
                       eval_every_epochs=2, num_image_panels=0, run_robustness=False, batch_size=8))
    results = train.train_and_evaluate(config, sys.argv[2])
    print(json.dumps({'devices': jax.device_count(), 'test': results['test'],
                      'validation': results['validation']}))
''')


def run_with_devices(count, data_dir, workdir):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={count}',
             JAX_PLATFORMS='cpu')
  output = subprocess.run([sys.executable, '-c', MULTI_DEVICE_SCRIPT, data_dir, workdir], env=env,
                          capture_output=True, text=True, timeout=900, cwd=REPO)
  assert output.returncode == 0, output.stderr[-3000:]
  return json.loads(output.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_four_devices_give_the_one_device_results(data_dir, tmp_path):
  one = run_with_devices(1, data_dir, str(tmp_path / 'one'))
  four = run_with_devices(4, data_dir, str(tmp_path / 'four'))
  assert (one['devices'], four['devices']) == (1, 4)
  # Only the order of floating-point reductions (BatchNorm statistics, gradients) differs, which
  # after 32 steps moves the loss by ~1e-4 and flips a few pixels' labels.
  for split in ('test', 'validation'):
    assert four[split]['loss'] == pytest.approx(one[split]['loss'], rel=2e-3), split
    for key, value in one[split].items():
      assert four[split][key] == pytest.approx(value, abs=1e-2), (split, key)


@pytest.mark.slow
def test_positional_encoding_lets_the_small_cnn_tell_the_lungs_apart(data_dir, tmp_path):
  """Paper Sec. 3.2 on the chest phantom: PE wins by a clear margin, above the averaged mask."""
  common = dict(image_size=64, width=16, num_epochs=30, eval_every_epochs=30)
  without = train.train_and_evaluate(small_run_config(data_dir, use_pe=False, **common),
                                     str(tmp_path / 'no_pe'))
  with_pe = train.train_and_evaluate(small_run_config(data_dir, use_pe=True, pe_scale=256.0, **common),
                                     str(tmp_path / 'pe'))
  margin = with_pe['test']['dice'] - without['test']['dice']
  assert margin >= 0.15, (with_pe['test'], without['test'])
  assert with_pe['test']['dice'] > with_pe['test_averaged_mask']['dice']
  # Without PE the lungs, which look alike, are where it fails.
  lungs_without = np.mean([without['test']['dice_right_lung'], without['test']['dice_left_lung']])
  lungs_with = np.mean([with_pe['test']['dice_right_lung'], with_pe['test']['dice_left_lung']])
  assert lungs_with - lungs_without > 0.15


@pytest.mark.slow
def test_quick_unet_segments_the_chest_phantom(data_dir, tmp_path):
  config = configuration.quick(configuration.base_config())
  config.data_dir = data_dir
  config.run_robustness = False
  results = train.train_and_evaluate(config, str(tmp_path / 'unet'))
  assert results['test']['dice'] > 0.9, results['test']


@pytest.mark.parametrize('kind, layers', [('fourier', 'all'), ('radial', 'input')])
def test_other_encodings_train_and_load_as_they_were_evaluated(kind, layers, data_dir, tmp_path):
  import pejax
  from pejax.data import datasets
  from pejax.models import dice
  workdir = str(tmp_path / 'run')
  config = small_run_config(data_dir, num_epochs=2, pe_kind=kind, pe_layers=layers, pe_bands=2,
                            pe_scale=2.0, run_robustness=True)
  config.robustness.severities = ()
  config.robustness.shifts = (0, 4)
  results = train.train_and_evaluate(config, workdir)
  assert results['config']['pe_kind'] == kind and results['config']['pe_layers'] == layers
  _, init_state = spec_lib.build('cnn4', True, 8, 'zeros', 'xla', 'float32', 1e-3, 4, 1, kind, 2,
                                 layers)
  assert results['num_parameters'] == spec_lib.count_parameters(
      jax.eval_shape(init_state, 0).params)  # the run built the encoding it was asked for
  # The model pejax.load rebuilds from the checkpoint predicts what the evaluation scored.
  test = datasets.load_split('phantom_chest', 'test', image_size=32, data_dir=data_dir)
  labels = pejax.load(workdir)(test.images).labels
  sums = jax.device_get(dice.dice_sums(jnp.asarray(labels), jnp.asarray(test.labels), 4))
  assert dice.finalize_dice(sums)['dice'] == pytest.approx(results['test']['dice'], abs=1e-6)
  # The grid's encoding conditions reach the channels wherever they enter: unshifted is the
  # clean evaluation to the bit, removed is another model input.
  with open(os.path.join(workdir, 'robustness.json')) as f:
    grid = json.load(f)
  assert grid['encoding_shift_x']['0'] == grid['clean']
  assert grid['encoding_removed']['0'] != grid['clean']
