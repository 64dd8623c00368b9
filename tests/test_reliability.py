"""Reliability: bad settings, killed and resumed runs, numerical faults, multi-process runs and
the files a run writes (CPU, 32×32 chest phantoms, fixed seeds).

Runs that must survive a SIGKILL are real `main.py` processes; `reliability_worker.py` is
`main.py` with a pause at a named moment (a training step, a checkpoint write, the final
evaluation, the results write), so that the kill lands exactly there. The subprocesses share a
persistent XLA compilation cache of their own (PEJAX_COMPILATION_CACHE): a cached executable is
the one the same compilation would produce, and it saves most of each start-up.
"""

import errno
import glob
import os
import shutil
import threading
import time
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from pejax import cli, train
from pejax.data import input_pipeline
from pejax.evaluation import grid_results
from pejax.models import epochs
from pejax import storage
from pejax.runs import checkpoints, folder, run_files

from helpers import (Process, command_line, free_port, restored_epoch, run_killed_at,
                     tiny_run_config, trained_epochs)

# ------------------------------------------------------------------------------ subprocesses


@pytest.fixture(scope='session', autouse=True)
def share_compilations(tmp_path_factory):
  Process.compilation_cache = str(tmp_path_factory.mktemp('xla_cache'))
  yield
  Process.compilation_cache = None


def committed_checkpoints(workdir):
  folder = os.path.join(workdir, checkpoints.CHECKPOINT_FOLDER)
  return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def uncommitted_checkpoints(workdir):
  return glob.glob(os.path.join(workdir, checkpoints.CHECKPOINT_FOLDER, '*.orbax-checkpoint-tmp*'))


def outcome(workdir):
  """The numbers of a finished run that must not depend on how it was interrupted."""
  results = storage.read_json(os.path.join(workdir, run_files.RESULTS_FILE))
  grid = storage.read_json(os.path.join(workdir, 'robustness.json'))
  grid.pop('seconds')
  numbers = {key: results[key] for key in ('test', 'validation', 'test_averaged_mask',
                                           'validation_averaged_mask', 'epochs', 'steps')}
  return numbers, grid


@pytest.fixture(scope='module')
def uninterrupted(data_dir, tmp_path_factory):
  """An uninterrupted run of the same command, started now and awaited when first needed, so
  that it trains while a test's first interrupted run does."""
  folder = tmp_path_factory.mktemp('uninterrupted')
  workdir = str(folder / 'run')
  process = Process(command_line(data_dir, workdir), folder / 'run.log')
  cache = {}

  def result():
    if not cache:
      process.finish()
      cache['outcome'] = outcome(workdir)
    return cache['outcome']

  yield result
  process.kill()


# ------------------------------------------------------------------ 1. settings, before compute


BAD_SETTINGS = [
    (dict(padding='mirror'), r"config\.padding='mirror' is not allowed: use one of zeros, "
     r'reflect, replicate, circular, symmetric, valid'),
    (dict(model='resnet'), r"config\.model='resnet' is not allowed: use one of unet, cnn4"),
    (dict(dataset='mnist'), r"config\.dataset='mnist' is not allowed: use one of phantom_chest"),
    (dict(pe_scale=-1.0), r'config\.pe_scale=-1\.0 is not allowed: λ must be a number from 0 to '
     r'1e\+06'),
    (dict(pe_scale=float('inf')), r'config\.pe_scale=inf is not allowed: λ must be a number from '
     r'0 to 1e\+06 \(the paper goes to 256; larger coordinates overflow float32 activations\)'),
    (dict(pe_scale=1e308), r'config\.pe_scale=1e\+308 is not allowed'),
    (dict(pe_scale=float('nan')), r'config\.pe_scale=nan is not allowed'),
    (dict(position_jitter=float('inf')), r'config\.position_jitter=inf is not allowed: it is a '
     r'fraction of the image side, from 0 to 0\.5'),
    (dict(model='unet', image_size=40),
     r'config\.image_size=40 is not allowed: the U-Net halves the image 4 times, so the size '
     r'must be a positive multiple of 16'),
    (dict(image_size=4), r'config\.image_size=4 is not allowed: use a size ≥ 8'),
    (dict(dataset='jsrt', image_size=32), r'config\.image_size=32 is not allowed: the jsrt '
     r'builder is prepared at 64, 128, 256'),
    (dict(num_train_examples=0), r'config\.num_train_examples=0 is not allowed: use ≥ 1'),
    (dict(num_train_examples=157), r'config\.num_train_examples=157 is not allowed: the '
     r'training split of phantom_chest has 156 examples'),
    (dict(learning_rate=float('inf')), r'config\.learning_rate=inf is not allowed: it must be a '
     r'finite number > 0'),
    (dict(seed=-1), r'config\.seed=-1 is not allowed: use an integer ≥ 0'),
    (dict(num_epochs=0), r'config\.num_epochs=0 is not allowed: it must be ≥ 1'),
    ({'robustness.severities': (0, 6)}, r'robustness config: severities=\(0, 6\) is not '
     r'allowed; allowed: distinct integers in 1\.\.5'),
]


def with_settings(config, settings):
  for key, value in settings.items():
    if '.' in key:
      group, name = key.split('.')
      config[group][name] = value
    else:
      config[key] = value
  return config


@pytest.mark.parametrize('settings,message', BAD_SETTINGS,
                         ids=[next(iter(s)) + '=' + str(next(iter(s.values())))
                              for s, _ in BAD_SETTINGS])
def test_bad_settings_stop_before_any_compute(data_dir, tmp_path, monkeypatch, settings, message):
  monkeypatch.setattr(train, 'model_spec', forbidden('building a model'))
  workdir = str(tmp_path / 'run')
  config = with_settings(tiny_run_config(data_dir), settings)
  with pytest.raises(SystemExit, match='pejax: error: ' + message):
    cli.run(config, workdir)
  assert not os.path.exists(workdir)


def forbidden(what):
  def fail(*args, **kwargs):
    raise AssertionError(f'{what} must not happen')
  return fail


def snapshot(folder):
  """Every file under `folder` with its modification time and a hash of its contents."""
  state = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        state[os.path.relpath(path, folder)] = (os.path.getmtime(path), hash(f.read()))
  return state


def test_a_finished_run_is_never_overwritten_by_other_settings(data_dir, tmp_path, monkeypatch):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_run_config(data_dir, num_epochs=1), workdir)
  before = snapshot(workdir)
  monkeypatch.setattr(input_pipeline, 'load_run_data', forbidden('loading data'))
  with pytest.raises(SystemExit, match=r"pejax: error: the workdir .*run holds a run with other "
                     r"settings \(learning_rate: 0\.001 there, 0\.01 now\)"):
    cli.run(tiny_run_config(data_dir, num_epochs=1, learning_rate=0.01), workdir)
  assert snapshot(workdir) == before


@pytest.mark.slow
def test_bad_settings_on_the_command_line(data_dir, tmp_path):
  """A few of the above through `main.py`: one clear line, exit code 1, no workdir."""
  cases = {  # name: (settings, environment, message)
      'size': (dict(dataset='jsrt', image_size=96), None, 'config.image_size=96 is not allowed: '
               'the jsrt builder is prepared at 64, 128, 256'),
      'severity': ({'robustness.severities': '(1,6)'}, None, 'robustness config: '
                   'severities=(1, 6) is not allowed; allowed: distinct integers in 1..5'),
  }
  processes = {name: Process(command_line(data_dir, str(tmp_path / name), **settings),
                             tmp_path / f'{name}.log', env=env)
               for name, (settings, env, _) in cases.items()}
  for name, (_, _, message) in cases.items():
    assert processes[name].wait() == 1, processes[name].log()[-2000:]
    log = processes[name].log()
    assert f'pejax: error: {message}' in log, log[-2000:]
    assert 'Traceback' not in log
    assert not os.path.exists(tmp_path / name)


# ------------------------------------------------------------------------- 2. kill and resume


@pytest.mark.slow
def test_runs_killed_at_four_moments_resume_to_the_uninterrupted_numbers(
    data_dir, tmp_path, uninterrupted):
  """One workdir, SIGKILLed four times at chosen moments, then run to the end: every resume
  starts from the last committed checkpoint and the end result is bit for bit the same."""
  workdir = str(tmp_path / 'run')
  flags = command_line(data_dir, workdir)

  # 1. During a training step of epoch 3. Checkpoints are written in the background, so the
  # one of epoch 2 may or may not be committed yet.
  log = run_killed_at('train_step:3:2', flags, tmp_path, 'step')
  assert restored_epoch(log) is None and trained_epochs(log) == [1, 2]
  committed = committed_checkpoints(workdir)
  assert committed in ([1], [1, 2])
  assert not os.path.exists(os.path.join(workdir, run_files.RESULTS_FILE))

  # 2. While the checkpoint of epoch 3 is written (in Orbax's temporary folder, uncommitted).
  log = run_killed_at('checkpoint_write:3', flags, tmp_path, 'checkpoint')
  assert restored_epoch(log) == max(committed)
  assert trained_epochs(log)[:3 - max(committed)] == list(range(max(committed) + 1, 4))
  assert committed_checkpoints(workdir) == [1, 2]
  assert len(uncommitted_checkpoints(workdir)) == 1

  # 3. During the final evaluation: the half-written checkpoint was not read, and is deleted
  # even though this time (checkpoints every 2 epochs, a setting that may change on resuming)
  # no checkpoint of epoch 3 replaces it.
  log = run_killed_at('final_evaluation', flags + ['--config.checkpoint_every_epochs=2'],
                      tmp_path, 'evaluation')
  assert restored_epoch(log) == 2 and trained_epochs(log) == [3, 4]
  assert committed_checkpoints(workdir) == [2, 4]
  assert uncommitted_checkpoints(workdir) == []
  assert not os.path.exists(os.path.join(workdir, run_files.RESULTS_FILE))

  # 4. While results.json is written (the robustness files are already there): the half
  # written file is a temporary one beside it, and the run does not count as finished.
  log = run_killed_at('results_write', flags, tmp_path, 'results')
  assert restored_epoch(log) == 4 and trained_epochs(log) == []
  assert os.path.exists(os.path.join(workdir, 'robustness.json'))
  assert not os.path.exists(os.path.join(workdir, run_files.RESULTS_FILE))
  assert len(glob.glob(os.path.join(workdir, f'.{run_files.RESULTS_FILE}.*.tmp'))) == 1

  # The same command once more finishes the run with the uninterrupted run's numbers.
  log = Process(flags, tmp_path / 'last.log').finish()
  assert restored_epoch(log) == 4 and trained_epochs(log) == []
  assert outcome(workdir) == uninterrupted()

  # A finished run is not trained or evaluated again: nothing in the workdir changes.
  before = snapshot(workdir)
  log = Process(flags + ['--verbose'], tmp_path / 'again.log').finish()
  assert 'is finished; not retraining it' in log
  assert restored_epoch(log) is None and trained_epochs(log) == []
  # It returned before loading any data (--verbose shows TFDS's line of each split read).
  assert 'Reusing dataset' not in log
  assert snapshot(workdir) == before, 'a finished run was touched'


@pytest.mark.slow
def test_run_killed_when_its_log_reaches_epoch_two_resumes_to_the_same_numbers(
    data_dir, tmp_path, uninterrupted):
  """The plain `main.py`, killed as soon as it logs epoch 2: wherever the kill lands (before
  epoch 1's checkpoint is committed in the background, while writing epoch 2's, or training
  epoch 3), the same command ends as if uninterrupted."""
  workdir = str(tmp_path / 'run')
  flags = command_line(data_dir, workdir)
  process = Process(flags, tmp_path / 'killed.log')
  process.wait_for(lambda: 'epoch   2/4' in process.log(), what='epoch 2 in the log')
  process.kill()
  committed = committed_checkpoints(workdir)
  assert max(committed, default=0) <= 3
  log = Process(flags, tmp_path / 'resumed.log').finish()
  # From the latest committed checkpoint, or from the start if none was committed yet.
  assert restored_epoch(log) == (max(committed) if committed else None)
  assert trained_epochs(log) == list(range(max(committed, default=0) + 1, 5))
  assert outcome(workdir) == uninterrupted()


# ------------------------------------------------------------------------ 3. numerical faults


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
    data_dir, tmp_path, monkeypatch):
  original = epochs.EpochRunner.__call__
  calls = {'epochs': 0}

  def poisoned_in_epoch_3(self, state, pe_scale, example_ids, images, labels):
    calls['epochs'] += 1
    if calls['epochs'] == 3:
      images = images * np.float32(np.nan)
    return original(self, state, pe_scale, example_ids, images, labels)

  monkeypatch.setattr(epochs.EpochRunner, '__call__', poisoned_in_epoch_3)
  workdir = str(tmp_path / 'run')
  config = tiny_run_config(data_dir)
  with pytest.raises(SystemExit) as error:
    cli.run(config, workdir)
  message = str(error.value)
  # 60 examples in batches of 20: 3 steps per epoch, so epoch 3 starts at step 7.
  assert message.startswith('pejax: error: run: non-finite loss or gradient at step 7 (epoch 3, '
                            'step 1 of the epoch; loss=nan'), message
  assert 'training stopped, the last good checkpoint (epoch 2) is kept in' in message
  assert calls['epochs'] == 3  # nothing trained after the bad epoch
  assert committed_checkpoints(workdir) == [1, 2]
  assert not os.path.exists(os.path.join(workdir, run_files.RESULTS_FILE))
  # The kept checkpoint is the good state of epoch 2.
  manager = ocp.CheckpointManager(os.path.join(workdir, checkpoints.CHECKPOINT_FOLDER))
  state = manager.restore(2)
  assert int(state['step']) == 6 and int(state['epoch']) == 2
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state['params']))
  manager.close()


def test_absurd_learning_rate_stops_at_the_first_non_finite_step(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  with pytest.raises(SystemExit, match=r'pejax: error: run: non-finite loss or gradient at step '
                     r'\d+ .*no checkpoint had been written yet\. Lower config\.learning_rate '
                     r'\(now 1e\+30\)'):
    cli.run(tiny_run_config(data_dir, learning_rate=1e30), workdir)
  assert committed_checkpoints(workdir) == []
  assert not os.path.exists(os.path.join(workdir, run_files.RESULTS_FILE))


# ----------------------------------------------------------------------------- 4. multi-process


def start_two_processes(flags, tmp_path, name, env=None):
  address = f'127.0.0.1:{free_port()}'
  return [Process(flags + [f'--coordinator_address={address}', '--num_processes=2',
                           f'--process_id={index}'], tmp_path / f'{name}{index}.log', env=env)
          for index in range(2)]


def test_each_process_places_only_its_rows(monkeypatch):
  """`input_pipeline.place_rows` hands JAX only the rows of this process's devices (two processes with
  one device each, simulated)."""
  rows = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
  placed = {}
  mesh = types.SimpleNamespace(size=2)
  monkeypatch.setattr(input_pipeline, 'row_sharding', lambda mesh: None)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  for index in range(2):
    monkeypatch.setattr(jax, 'process_index', lambda index=index: index)
    monkeypatch.setattr(jax, 'make_array_from_process_local_data',
                        lambda sharding, local, shape, index=index: placed.update(
                            {index: (local, shape)}))
    input_pipeline.place_rows(rows, mesh)
  assert placed[0][1] == placed[1][1] == (8, 3)
  np.testing.assert_array_equal(placed[0][0], rows[:4])
  np.testing.assert_array_equal(placed[1][0], np.concatenate([rows[4:], np.zeros((1, 3))]))


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_two_devices(data_dir, tmp_path):
  """With the robustness grid and image panels on; the pair's dataset is not built yet:
  process 0 builds it while process 1 waits, then both read it."""
  settings = dict(num_epochs=2, eval_every_epochs=1, num_image_panels=2)
  single = Process(command_line(data_dir, str(tmp_path / 'single'), **settings),
                   tmp_path / 'single.log',
                   env={'XLA_FLAGS': '--xla_force_host_platform_device_count=2'})
  workdir = str(tmp_path / 'shared')
  pair = start_two_processes(command_line(str(tmp_path / 'tfds'), workdir, **settings),
                             tmp_path, 'process')
  for process in pair + [single]:
    process.finish()
  assert 'Generating dataset' in pair[0].log() and 'Generating dataset' not in pair[1].log()
  one = storage.read_json(str(tmp_path / 'single' / run_files.RESULTS_FILE))
  two = storage.read_json(os.path.join(workdir, run_files.RESULTS_FILE))
  assert (one['devices'], one['processes'], two['devices'], two['processes']) == (2, 1, 2, 2)
  for split in ('test', 'validation', 'test_averaged_mask'):
    for key, value in one[split].items():
      assert two[split][key] == pytest.approx(value, abs=1e-5), (split, key)
  grids = [storage.read_json(os.path.join(folder, 'robustness.json'))
           for folder in (str(tmp_path / 'single'), workdir)]
  rows = [{(row['condition'], row['level']): row['dice'] for row in grid_results.result_rows(grid)}
          for grid in grids]
  assert rows[1].keys() == rows[0].keys() and len(rows[0]) > 3
  for key, value in rows[0].items():
    assert rows[1][key] == pytest.approx(value, abs=1e-5), key
  # Only process 0 writes: one TensorBoard file (named after its process id) with the panels,
  # one results.json, the grid's files and figures; the workdir token is gone.
  events = glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  assert [name.split('.')[-3] for name in events] == [str(pair[0].pid)], events
  assert sorted(name for name in os.listdir(workdir) if not name.startswith('events.')) == [
      'checkpoints', 'config.json', 'data.json', 'examples.npz', 'history.json', 'results.json',
      'robustness.csv', 'robustness.json',
      'robustness_cases.csv', 'robustness_corruptions.png', 'robustness_shifts.png',
      'test_cases.csv']
  with open(events[0], 'rb') as f:
    assert b'eval_examples' in f.read()   # the image panels
  assert 'Dice on the phantom_chest test split' in pair[1].log()  # process 1 ran to the end


@pytest.mark.slow
def test_processes_that_do_not_share_the_workdir_all_stop_at_start(data_dir, tmp_path):
  """Each process given a folder of its own (as the default runs/... on each host's own disk
  would be): all stop before training, with one clear line."""
  flags = command_line(data_dir, '{workdir}')
  address = f'127.0.0.1:{free_port()}'
  pair = [Process([flag.format(workdir=tmp_path / f'own{index}') for flag in flags]
                  + [f'--coordinator_address={address}', '--num_processes=2',
                     f'--process_id={index}'], tmp_path / f'own{index}.log')
          for index in range(2)]
  for index, process in enumerate(pair):
    assert process.wait() == 1, process.log()[-2000:]
    log = process.log()
    assert (f'pejax: error: the workdir {tmp_path / f"own{index}"} is not one folder shared by '
            'all processes: process 1 of 2 cannot see what process 0 writes there. Give every '
            'process the same --workdir in a bucket (gs://...) or on a file system that every '
            'machine mounts') in log, log[-2000:]
    assert 'Traceback' not in log and trained_epochs(log) == []
  assert os.listdir(tmp_path / 'own0') == [] and not os.path.exists(tmp_path / 'own1')


@pytest.mark.slow
def test_a_killed_process_makes_the_other_exit_with_an_error(data_dir, tmp_path):
  timeout = 8
  pair = start_two_processes(
      command_line(data_dir, str(tmp_path / 'run'), num_epochs=500, run_robustness=False),
      tmp_path, 'process', env={'PEJAX_DISTRIBUTED_TIMEOUT_SECONDS': str(timeout)})
  try:
    pair[0].wait_for(lambda: 'epoch   2/500' in pair[0].log(), what='epoch 2 in the log')
    pair[1].kill()
    killed = time.monotonic()
    code = pair[0].wait(timeout=60)
    waited = time.monotonic() - killed
  finally:
    for process in pair:
      process.kill()
  assert code != 0, pair[0].log()[-2000:]
  assert waited < 2 * timeout, f'the survivor needed {waited:.0f} s to stop'
  log = pair[0].log()
  assert ('pejax: error:' in log or 'JAX distributed service detected fatal errors' in log), \
      log[-2000:]


# ------------------------------------------------------------------------------ 5. disk, files


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
  path = str(tmp_path / 'results.json')
  storage.write_json(path, {'dice': 0.9})

  # json.dump has written part of the new file when it meets something it cannot encode.
  with pytest.raises(TypeError):
    storage.write_json(path, {'dice': 0.5, 'zzz': object()})
  assert storage.read_json(path) == {'dice': 0.9}
  assert os.listdir(tmp_path) == ['results.json']

  def interrupted(handle):
    handle.write('{"dice": 0.')
    raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    storage.write_atomically(path, interrupted)
  assert storage.read_json(path) == {'dice': 0.9}
  assert os.listdir(tmp_path) == ['results.json']

  def full_disk(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(os, 'replace', full_disk)
  with pytest.raises(OSError, match='No space left'):
    storage.write_json(path, {'dice': 0.5})
  assert storage.read_json(path) == {'dice': 0.9}
  assert os.listdir(tmp_path) == ['results.json']


def make_read_only(folder, monkeypatch):
  """Makes `folder` refuse new files: by chmod where that binds (not for root, who may write
  anyway), otherwise by refusing, at the system call, to create anything under it."""
  os.makedirs(folder)
  if os.geteuid() != 0:
    os.chmod(folder, 0o555)  # pytest's clean-up makes it writable again to delete it
    return
  real_open, real_mkdir = os.open, os.mkdir

  def refuse(path):
    if os.path.abspath(path).startswith(str(folder)):
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

  def open_read_only(path, flags, *args, **kwargs):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
      refuse(path)
    return real_open(path, flags, *args, **kwargs)

  def mkdir_read_only(path, *args, **kwargs):
    refuse(path)
    return real_mkdir(path, *args, **kwargs)

  monkeypatch.setattr(os, 'open', open_read_only)
  monkeypatch.setattr(os, 'mkdir', mkdir_read_only)


def test_a_workdir_that_is_a_file_is_refused_as_such(tmp_path):
  (tmp_path / 'run').write_text('not a folder')
  with pytest.raises(OSError, match=rf'the workdir {tmp_path / "run"} is a file, not a folder; '
                     r'choose another --workdir or move the file away\.'):
    folder.check_writable(str(tmp_path / 'run'), 0)


@pytest.mark.parametrize('where', ['in_a_read_only_folder', 'read_only', 'under_a_file'])
def test_an_unwritable_workdir_is_refused(tmp_path, monkeypatch, where):
  if where == 'under_a_file':
    (tmp_path / 'file').write_text('not a folder')
    workdir = tmp_path / 'file' / 'run'
  elif where == 'in_a_read_only_folder':
    make_read_only(tmp_path / 'parent', monkeypatch)
    workdir = tmp_path / 'parent' / 'run'
  else:
    make_read_only(tmp_path / 'run', monkeypatch)
    workdir = tmp_path / 'run'
  with pytest.raises(OSError, match=rf'the workdir {workdir} is not writable \(.+\); choose '
                     r'another --workdir or fix its permissions\.'):
    folder.check_writable(str(workdir), 0)
  assert not os.path.exists(workdir) or os.listdir(workdir) == []


def test_processes_sharing_a_workdir_probe_it_without_disturbing_each_other(tmp_path):
  workdir = str(tmp_path / 'run')
  errors = []

  def probe_many_times():
    try:
      for _ in range(200):
        folder.check_writable(workdir, 0)
    except OSError as error:
      errors.append(error)

  probes = [threading.Thread(target=probe_many_times) for _ in range(4)]
  for probe in probes:
    probe.start()
  for probe in probes:
    probe.join()
  assert errors == [] and os.listdir(workdir) == []


@pytest.mark.parametrize('fault', ['read_only', 'full'])
def test_an_unwritable_or_full_workdir_fails_before_training(data_dir, tmp_path, monkeypatch,
                                                             fault):
  monkeypatch.setattr(epochs.EpochRunner, '__call__', forbidden('training'))
  workdir = tmp_path / 'run'
  if fault == 'read_only':
    make_read_only(workdir, monkeypatch)
    message = rf'the workdir {workdir} is not writable \(Permission denied\)'
  else:
    real_disk_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, 'disk_usage',
                        lambda path: real_disk_usage(path)._replace(free=2**20))
    message = (rf'the workdir {workdir} has 1 MiB free but this run needs about \d+ MiB for '
               r'checkpoints and logs; free some space or choose another --workdir\.')
  with pytest.raises(SystemExit, match='pejax: error: ' + message):
    cli.run(tiny_run_config(data_dir), str(workdir))
  assert not os.path.exists(workdir) or os.listdir(workdir) == []
