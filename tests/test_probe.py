"""The position probe (`pejax.evaluation.probe`, `--mode=probe`): what it must find in networks
whose position information is known (an encoding at the input: all of it; circular padding
without one: none; zero padding: more with depth), and its files, TensorBoard scalars, report
section and errors on a small trained run.

The properties are measured on freshly initialized width-8 networks at 32×32 (what they state
holds for any weights); the files on a small CNN trained for 2 epochs with the probe enabled.
"""

import glob
import json
import os
import shutil

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from helpers import small_run_config
from pejax import configuration, probing, train
from pejax.errors import RunNotFoundError, SettingError, WorkdirBusyError
from pejax.evaluation import probe, probe_results
from pejax.models import spec as spec_lib
from pejax.models.predictor import Normalizer, Predictor
from pejax.reporting import report
from pejax.runs import run_files, run_lock
from test_entry_points import error_line, run_command

SIZE = 32
# About the chest phantom's statistics: noise and constants reach the network as its data would.
NORMALIZER = Normalizer('dataset', 0.5, 0.25)


def probe_initialized(model: str, padding: str, use_pe: bool, pe_scale: float = 1.0) -> dict:
  """The content-free probe of a freshly initialized width-8 network (seed 0), default
  settings."""
  config = configuration.base_config()
  config.update(model=model, padding=padding, use_pe=use_pe, pe_scale=pe_scale, width=8)
  spec, init_state = spec_lib.model_spec(config, num_classes=4)
  # The first network of a kind costs its initializers' compilations (the U-Net's ~15 s on 2
  # cores); later ones of the same shapes reuse them.
  model_state = (init_state(0), jnp.float32(configuration.pe_scale_of(config)))
  return probe.probe_network(Predictor(spec, NORMALIZER), model_state, model,
                             configuration.default_probe_config(), shape=(SIZE, SIZE, 1))


def spc(result: dict, kind: str, axis: str) -> np.ndarray:
  return np.array(probe_results.spc_curve(result, kind, axis)[1])


def test_an_encoding_at_the_input_is_read_out_at_the_first_level():
  # λ = 32: at λ = 1 the normalized noise (std ≈ 1.2 against the ramps' 0.3) blurs what a
  # random width-8 layer passes on (SPC 0.78–0.96 over seeds); the encoding itself is exact.
  result = probe_initialized('cnn4', 'zeros', use_pe=True, pe_scale=32.0)
  assert json.loads(json.dumps(result)) == result  # probe.json as computed
  first = result['levels'][0]
  assert (first['name'], first['height'], first['width'], first['channels']) == ('layer_1', 32, 32, 8)
  for axis in probe_results.AXES:
    assert first['content_free'][f'spc_{axis}'] >= 0.99, first
    assert first['content_free'][f'mae_{axis}'] < 0.05, first


def test_a_torus_has_no_absolute_position():
  """Circular padding without an encoding: a constant image gives constant features at every
  level, so no read-out finds position in them."""
  result = probe_initialized('unet', 'circular', use_pe=False)
  assert [level['name'] for level in result['levels']] == [
      'encoder_1', 'encoder_2', 'encoder_3', 'encoder_4', 'bottleneck']
  assert [level['height'] for level in result['levels']] == [32, 16, 8, 4, 2]
  for axis in probe_results.AXES:
    assert np.all(np.abs(spc(result, 'constant', axis)) < 0.05), result['levels']


def test_zero_padding_tells_the_border_more_clearly_with_depth():
  """Zero padding without an encoding: each level sees the border from further away."""
  result = probe_initialized('unet', 'zeros', use_pe=False)
  for axis in probe_results.AXES:
    curve = spc(result, 'content_free', axis)
    assert curve[-1] > curve[0] + 0.3, curve
    assert curve[0] > 0.1, curve  # the first level already sees the border ring


def test_spearman_is_zero_for_a_constant_prediction_and_never_nan():
  target = np.asarray(probe_results_targets())
  assert probe.spearman(target, target) == pytest.approx(1.0)
  assert probe.spearman(-target, target) == pytest.approx(-1.0)
  assert probe.spearman(np.full_like(target, 0.3), target) == 0.0
  nearly_constant = 0.3 + probe.CONSTANT_TOLERANCE / 10 * target
  assert probe.spearman(nearly_constant, target) == 0.0
  assert probe.spearman(target, np.zeros_like(target)) == 0.0  # a one-pixel-wide axis


def probe_results_targets():
  """x̂ of a 4×6 map."""
  return np.broadcast_to(np.arange(6) / 5, (4, 6))


@pytest.mark.parametrize('name, value', [
    ('steps', 0), ('learning_rate', -1.0), ('num_images', 0), ('noise_images', -1),
    ('intensities', (0.5, 2.0)), ('held_out_intensities', (0.2,)), ('seed', -1),
    ('enabled', 'yes')])
def test_bad_probe_settings_are_named(name, value):
  # As a run's recorded config or a config file's own ConfigDict may hold them.
  cfg = ml_collections.ConfigDict(dict(configuration.default_probe_config().to_dict(),
                                       **{name: value}))
  with pytest.raises(SettingError, match=rf'config\.probe\.{name}='):
    configuration.validate_probe_config(cfg)


# ------------------------------------------------------------------ a trained run's files


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
  """A small CNN with PE trained for 2 epochs with the probe enabled (small probe settings);
  its folder and the probe training wrote."""
  config = small_run_config(data_dir, num_epochs=2, eval_every_epochs=2, num_train_examples=60)
  config.probe.update(enabled=True, num_images=4, noise_images=4, steps=100)
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(config, workdir)
  return workdir, run_files.read_probe(workdir)


def scalar_tags(workdir: str) -> set[str]:
  return {value.tag for path in glob.glob(os.path.join(workdir, 'events.out.tfevents*'))
          for event in tf.compat.v1.train.summary_iterator(path) for value in event.summary.value}


def test_probe_mode_writes_what_training_wrote_and_the_report_shows_it(trained):
  workdir, during_training = trained
  assert during_training is not None, 'config.probe.enabled did not probe the run'
  assert [level['name'] for level in during_training['levels']] == ['layer_1', 'layer_2', 'layer_3']
  assert during_training['inputs'] == {
      'images': {'train': 4, 'images': 4},
      'content_free': {'train': 10, 'constant': 5, 'noise': 4}}
  for name in (run_files.PROBE_FILE, run_files.PROBE_FIGURE):
    os.remove(os.path.join(workdir, name))

  done = run_command(['main.py', '--mode=probe', f'--workdir={workdir}'])
  assert done.returncode == 0, done.stderr[-3000:]
  result = run_files.read_probe(workdir)
  # The run's own settings (from its checkpoint), and the same numbers as in training.
  assert result['settings']['steps'] == 100 and result['settings']['num_images'] == 4
  assert (result['run'], result['epoch']) == (os.path.basename(workdir), 2)
  for level, trained_level in zip(result['levels'], during_training['levels']):
    for kind in probe_results.KINDS:
      assert set(level[kind]) == {'spc_x', 'spc_y', 'mae_x', 'mae_y'}
      for name, value in level[kind].items():
        assert -1 <= value <= 1 and np.isfinite(value)
        assert value == pytest.approx(trained_level[kind][name], abs=2e-3), (kind, name)
  assert os.path.getsize(os.path.join(workdir, run_files.PROBE_FIGURE)) > 1000
  tags = scalar_tags(workdir)
  assert {'probe_content_free_spc_x/level_1', 'probe_images_mae_y/level_3',
          'probe_noise_spc_y/level_2'} <= tags

  text = open(report.write_report(workdir)).read()
  section = text[text.index('## Position information (probe)'):]
  # One row per (setting, level): the mean over the setting's probed seeds (here one).
  assert '| phantom_chest, cnn4, zeros, PE λ=1, 60 images | 1 (layer_1) | 32×32 |' in section, \
      section
  figure = section.split('](')[1].split(')')[0]
  assert os.path.getsize(os.path.join(workdir, figure)) > 1000


def test_probe_mode_without_a_trained_run_is_one_line_and_writes_nothing(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  # (After the line on JAX's start, as for any command that started.)
  line = error_line(run_command(['main.py', '--mode=probe', f'--workdir={empty}']),
                    only_line=False)
  assert line.startswith(f'pejax: error: --mode=probe: {empty} holds no trained run'), line
  assert 'train one first' in line
  assert os.listdir(empty) == []
  line = error_line(run_command(['main.py', '--mode=probe']))
  assert line.startswith('pejax: error: --mode=probe needs --workdir'), line
  assert os.listdir(tmp_path) == ['empty']


def test_probe_mode_on_a_sweep_folder_probes_every_run_with_the_given_settings(trained,
                                                                                tmp_path):
  workdir, _ = trained
  sweep = tmp_path / 'sweep'
  for name in ('run_a', 'run_b'):
    shutil.copytree(workdir, sweep / name)
    os.remove(sweep / name / run_files.PROBE_FILE)
  (sweep / 'unfinished').mkdir()   # no trained run below it: not probed, no error
  cfg = configuration.default_probe_config()
  cfg.update(steps=20, num_images=2, noise_images=2)
  written = probing.probe_workdir(str(sweep), cfg)
  assert sorted(os.path.relpath(path, sweep) for path in written) == [
      os.path.join('run_a', run_files.PROBE_FILE), os.path.join('run_b', run_files.PROBE_FILE)]
  for name in ('run_a', 'run_b'):
    assert run_files.read_probe(str(sweep / name))['settings']['steps'] == 20
  assert os.path.getsize(sweep / run_files.PROBE_FIGURE) > 1000


# ------------------------------------------------------- a probe describes the trained network


def copied_run(trained, tmp_path) -> str:
  workdir, _ = trained
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  return copy


def test_probe_mode_refuses_an_unfinished_run_and_writes_nothing(trained, tmp_path):
  workdir = copied_run(trained, tmp_path)
  os.remove(os.path.join(workdir, run_files.PROBE_FILE))
  results = json.load(open(os.path.join(workdir, run_files.RESULTS_FILE)))
  results['epochs'] = 1  # as --mode=evaluate of an interrupted run leaves it
  json.dump(results, open(os.path.join(workdir, run_files.RESULTS_FILE), 'w'))
  with pytest.raises(RunNotFoundError, match=r'is not finished \(it trained 1 of 2 epochs\)'):
    probing.probe_workdir(workdir)
  assert not os.path.exists(os.path.join(workdir, run_files.PROBE_FILE))


def test_probe_mode_waits_for_no_training_it_refuses_a_locked_run(trained, tmp_path):
  workdir = copied_run(trained, tmp_path)
  lock = run_lock.RunLock(workdir)
  lock.acquire()  # as a training of the run holds it
  try:
    with pytest.raises(WorkdirBusyError):
      probing.probe_workdir(workdir)
  finally:
    lock.release()


def test_a_run_whose_probe_was_not_written_is_unfinished_and_probed_again(trained, data_dir,
                                                                          tmp_path):
  workdir = copied_run(trained, tmp_path)
  config = small_run_config(data_dir, num_epochs=2, eval_every_epochs=2, num_train_examples=60)
  config.probe.update(enabled=True, num_images=4, noise_images=4, steps=100)
  assert run_files.is_finished(workdir, config)
  os.remove(os.path.join(workdir, run_files.PROBE_FILE))  # as a kill -9 during the probe
  assert not run_files.is_finished(workdir, config)
  assert not run_files.is_finished(workdir)  # its own settings enable the probe too
  train.train_and_evaluate(config, workdir)  # the same command again
  probed = run_files.read_probe(workdir)
  assert probed['step'] == run_files.read_results(workdir).steps == trained[1]['step']
  assert run_files.is_finished(workdir, config)


def test_the_report_shows_no_probe_of_another_step_as_the_runs(trained, tmp_path):
  workdir = copied_run(trained, tmp_path)
  path = os.path.join(workdir, run_files.PROBE_FILE)
  stale = dict(json.load(open(path)), step=3)
  json.dump(stale, open(path, 'w'))
  text = open(report.write_report(workdir)).read()
  section = text[text.index('## Position information (probe)'):]
  assert '| 1 (layer_1) |' not in section
  assert 'its probe.json describes step 3, the trained network is step' in section
  os.remove(path)  # the probe enabled, none written: named too
  text = open(report.write_report(workdir)).read()
  assert 'its probe is enabled but was not written' in text
