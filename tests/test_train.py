"""End-to-end training tests on the chest phantom (CPU, fixed seeds)."""

import csv
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pejax import configuration, errors, input_pipeline, steps, train, workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def small_config(data_dir, **overrides):
  config = configuration.quick(configuration.base_config())
  config.data_dir = data_dir
  config.image_size = 32
  config.model = 'cnn4'
  config.width = 8
  config.num_epochs = 4
  config.eval_every_epochs = 2
  config.num_image_panels = 1
  config.run_robustness = False
  for key, value in overrides.items():
    config[key] = value
  return config


def test_resume_after_interruption_gives_the_uninterrupted_results(data_dir, tmp_path, monkeypatch):
  config = small_config(data_dir, run_robustness=True)
  config.robustness.shifts = (-2, 0, 2)
  uninterrupted = train.train_and_evaluate(config, str(tmp_path / 'uninterrupted'))

  calls = {'count': 0}
  original = train.EpochRunner.__call__

  def interrupt_in_third_epoch(self, *args, **kwargs):
    calls['count'] += 1
    if calls['count'] == 3:
      raise KeyboardInterrupt('simulated interruption after the epoch-2 checkpoint')
    return original(self, *args, **kwargs)

  workdir = str(tmp_path / 'interrupted')
  monkeypatch.setattr(train.EpochRunner, '__call__', interrupt_in_third_epoch)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, workdir_lib.RESULTS_FILE))
  assert sorted(os.listdir(os.path.join(workdir, workdir_lib.CHECKPOINT_FOLDER))) == ['1', '2']
  monkeypatch.setattr(train.EpochRunner, '__call__', original)
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

  # A finished run is not trained again: its results come back as they are.
  calls['count'] = 0
  monkeypatch.setattr(train.EpochRunner, '__call__', interrupt_in_third_epoch)
  again = train.train_and_evaluate(config, workdir)
  assert again['test'] == resumed['test'] and calls['count'] == 0


def test_workdir_outputs_and_evaluate_mode(data_dir, tmp_path):
  config = small_config(data_dir, num_epochs=2)
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
  manager = workdir_lib.checkpoint_manager(workdir, 2)
  described = manager.metadata(manager.latest_step()).custom_metadata
  assert described['config'] == configuration.settings_dict(config)
  assert described['normalization'] == results['normalization']
  assert described['class_names'] == ['background', 'right_lung', 'left_lung', 'heart']
  assert described['software'] == results['software']
  # Per-case metrics of the clean test split agree with the device's Dice.
  with open(os.path.join(workdir, workdir_lib.TEST_CASES_CSV)) as f:
    cases = list(csv.DictReader(f))
  assert len(cases) == 68 and cases[0]['id'] and cases[0]['distance_unit'] == 'px'
  assert {'hd95_heart', 'msd_left_lung', 'status_right_lung'} <= set(cases[0])
  summary = results['per_case']['test_cases']
  assert summary['dice_mean'] == pytest.approx(results['test']['dice'], abs=1e-6)

  trained_timings = results['timings']
  again = train.train_and_evaluate(config, workdir, evaluate_only=True)
  assert again['test'] == results['test']
  # --mode=evaluate keeps what training measured.
  stored = workdir_lib.read_results(workdir)
  assert len(trained_timings['epoch_seconds']) == 2
  for key in ('epoch_seconds', 'train_seconds', 'median_epoch_seconds'):
    assert stored.timings[key] == trained_timings[key], key
  assert stored.software == results['software'] and stored.evaluated_with


def test_other_settings_in_a_used_workdir_are_refused(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(small_config(data_dir, num_epochs=1), workdir)
  before = sorted(os.listdir(workdir))
  with pytest.raises(errors.SettingsMismatchError, match='learning_rate'):
    train.train_and_evaluate(small_config(data_dir, num_epochs=1, learning_rate=0.01), workdir)
  assert sorted(os.listdir(workdir)) == before


def test_subset_of_training_examples(data_dir, tmp_path):
  results = train.train_and_evaluate(small_config(data_dir, num_epochs=1, num_train_examples=5),
                                     str(tmp_path / 'run'))
  assert results['num_train_examples'] == 5 and results['steps'] == 1


@pytest.mark.parametrize('num_examples, batch_size, multiple, expected', [
    (5, 20, 1, 5), (10, 20, 1, 10), (10, 20, 4, 20), (7, 20, 1, 20), (20, 20, 1, 20),
    (156, 20, 1, 20), (1, 20, 1, 1)])
def test_training_batch_size(num_examples, batch_size, multiple, expected):
  assert input_pipeline.training_batch_size(num_examples, batch_size, multiple) == expected


def test_a_batch_filled_from_a_small_training_set_equals_the_set_alone():
  """What lets `training_batch_size` train 5 images in a batch of 5 instead of a filled 20."""
  config = small_config(None)  # the small CNN: three BatchNorm layers
  spec, init_state = train.model_spec(config, num_classes=4)
  # Plain gradient descent with step 1: the new parameters show the gradients themselves
  # (Adam's first step is about ±learning rate whatever the gradient's size).
  spec = dataclasses.replace(spec, optimizer=optax.sgd(1.0))
  state = init_state(0)
  state = state.replace(opt_state=spec.optimizer.init(state.params))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(5, 32, 32, 1)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 4, size=(5, 32, 32)), jnp.int32)
  rows, weights = train.epoch_order(state.rng, 0, jnp.arange(5), batch_size=20)
  train_step = jax.jit(steps.train_step, static_argnums=0)
  filled_state, filled = train_step(spec, state, images[rows[0]], labels[rows[0]], weights[0],
                                    jnp.float32(1.0))
  alone_state, alone = train_step(spec, state, images, labels, jnp.ones(5), jnp.float32(1.0))
  np.testing.assert_allclose(filled['loss'], alone['loss'], rtol=1e-5)
  np.testing.assert_allclose(filled['grad_norm'], alone['grad_norm'], rtol=1e-4)
  for new, reference in zip(jax.tree.leaves((filled_state.params, filled_state.batch_stats)),
                            jax.tree.leaves((alone_state.params, alone_state.batch_stats))):
    np.testing.assert_allclose(new, reference, rtol=1e-4, atol=1e-6)


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
  without = train.train_and_evaluate(small_config(data_dir, use_pe=False, **common),
                                     str(tmp_path / 'no_pe'))
  with_pe = train.train_and_evaluate(small_config(data_dir, use_pe=True, pe_scale=256.0, **common),
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
