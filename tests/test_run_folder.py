"""The run folder under a hostile user: one process at a time, finished means trained to the
end, settings read from the checkpoint when config.json is gone, damaged files of pejax's own
(CPU, 32×32 chest phantom, the small CNN at width 4)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pejax import errors, train
from pejax.models import epochs
from pejax import storage
from pejax.runs import run_files, run_lock

from helpers import REPO, WORKER, Process, command_line, tiny_run_config, trained_epochs


def interrupted_run(config, workdir, monkeypatch, after_epoch):
  """Trains `config` in `workdir` and interrupts it after `after_epoch` epochs."""
  original = epochs.EpochRunner.__call__
  calls = {'count': 0}

  def interrupt(self, *args, **kwargs):
    calls['count'] += 1
    if calls['count'] > after_epoch:
      raise KeyboardInterrupt('simulated interruption')
    return original(self, *args, **kwargs)

  with monkeypatch.context() as patch:
    patch.setattr(epochs.EpochRunner, '__call__', interrupt)
    with pytest.raises(KeyboardInterrupt):
      train.train_and_evaluate(config, workdir)


# ------------------------------------------------------------------------------------- lock


def test_a_run_folder_is_locked_by_one_holder_and_released_on_exit(tmp_path):
  workdir = str(tmp_path / 'run')
  first = run_lock.RunLock(workdir)
  first.acquire()
  with pytest.raises(errors.WorkdirBusyError, match=rf'the workdir {workdir} is in use by pid '
                     rf'{os.getpid()} on host .+, since .+: .+\. One training or evaluation of a '
                     r'run folder at a time'):
    run_lock.RunLock(workdir).acquire()
  first.release()
  assert not os.path.exists(workdir)  # a folder made for the lock alone is removed again
  os.makedirs(workdir)
  first = run_lock.RunLock(workdir)
  first.acquire()
  first.release()
  assert os.listdir(workdir) == []  # no lock file is left behind
  second = run_lock.RunLock(workdir)
  second.acquire()
  second.release()

  # A holder killed with SIGKILL leaves its file, not its lock.
  holder = subprocess.Popen(
      [sys.executable, '-c', textwrap.dedent(f"""
          import sys, time
          sys.path.insert(0, {REPO!r})
          from pejax.runs import run_lock
          run_lock.RunLock({workdir!r}).acquire()
          print('held', flush=True)
          time.sleep(600)""")], stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == 'held'
  with pytest.raises(errors.WorkdirBusyError, match=rf'pid {holder.pid} on host'):
    run_lock.RunLock(workdir).acquire()
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  assert os.listdir(workdir) == [run_lock.LOCK_FILE]
  third = run_lock.RunLock(workdir)
  third.acquire()
  third.release()


@pytest.mark.slow
def test_a_second_training_or_evaluation_stops_at_start_naming_the_first(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  flags = command_line(data_dir, workdir)
  marker = tmp_path / 'paused'
  first = Process(flags, tmp_path / 'first.log', script=WORKER,
                  env={'PEJAX_TEST_PAUSE_AT': 'train_step:2:1', 'PEJAX_TEST_PAUSE_MARKER':
                       str(marker)})
  first.wait_for(marker.exists, what='the pause in epoch 2')
  before = sorted(os.listdir(workdir))
  for name, extra in [('second', []), ('evaluate', ['--mode=evaluate'])]:
    second = Process(flags + extra, tmp_path / f'{name}.log')
    assert second.wait() == 1
    lines = [line for line in second.log().splitlines() if line.startswith('pejax: error:')]
    assert len(lines) == 1 and 'Traceback' not in second.log(), second.log()[-3000:]
    assert lines[0].startswith(f'pejax: error: the workdir {workdir} is in use by pid '
                               f'{first.pid} on host '), lines
    assert trained_epochs(second.log()) == []
  assert sorted(os.listdir(workdir)) == before
  # The holder is killed: the next command takes the folder over and finishes the run.
  first.kill()
  log = Process(flags, tmp_path / 'resumed.log').finish()
  assert trained_epochs(log)[-1] == 4
  assert run_files.is_finished(workdir)
  assert run_lock.LOCK_FILE not in os.listdir(workdir)


# ------------------------------------------------------------------------ finished, partial


def test_evaluating_an_interrupted_run_writes_results_marked_partial(data_dir, tmp_path,
                                                                      monkeypatch, caplog):
  caplog.set_level('WARNING')
  config = tiny_run_config(data_dir)
  workdir = str(tmp_path / 'sweep' / 'run')
  interrupted_run(config, workdir, monkeypatch, after_epoch=2)
  partial = train.train_and_evaluate(config, workdir, evaluate_only=True)
  assert partial['epochs'] == 2 and partial['finished'] is False
  assert any('trained 2 of 4 epochs: its results.json is marked partial' in r.getMessage()
             for r in caplog.records)
  assert storage.read_json(os.path.join(workdir, 'results.json'))['finished'] is False
  assert not run_files.is_finished(workdir)
  runs, unfinished = run_files.scan_runs(str(tmp_path / 'sweep'))
  assert runs == [] and unfinished == ['run']

  # The training command continues it instead of taking it as done.
  finished = train.train_and_evaluate(config, workdir)
  assert (finished['epochs'], finished['finished']) == (4, True)
  assert run_files.is_finished(workdir)
  # The timings cover every epoch, also those before the interruption.
  assert len(finished['timings']['epoch_seconds']) == 4
  assert finished['timings']['train_seconds'] >= sum(finished['timings']['epoch_seconds'])
  runs, unfinished = run_files.scan_runs(str(tmp_path / 'sweep'))
  assert [run.name for run in runs] == ['run'] and unfinished == []


# ------------------------------------------------------------ config.json and results.json


def test_the_checkpoint_tells_the_settings_when_config_json_is_missing_or_damaged(
    data_dir, tmp_path, caplog):
  config = tiny_run_config(data_dir, num_epochs=2, pe_scale=1.0)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  config_path = os.path.join(workdir, 'config.json')
  stored = storage.read_json(config_path)
  other = tiny_run_config(data_dir, num_epochs=2, pe_scale=10.0)
  for damage in ('missing', 'damaged'):
    if damage == 'missing':
      os.remove(config_path)
    else:
      with open(config_path, 'w') as f:
        f.write('{"dataset": "phantom_ch')
    with pytest.raises(errors.SettingsMismatchError, match=r'holds a run with other settings '
                       r'\(pe_scale: 1\.0 there, 10\.0 now\)'):
      train.train_and_evaluate(other, workdir, evaluate_only=True)
    caplog.clear()
    evaluated = train.train_and_evaluate(config, workdir, evaluate_only=True)
    assert evaluated['config']['pe_scale'] == 1.0
    assert f'{config_path} is {damage}; the settings of the run there are read from its newest ' \
           'checkpoint' in caplog.text
    assert storage.read_json(config_path) == stored  # written again


def test_a_damaged_config_json_without_a_checkpoint_is_named(data_dir, tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text('{"dataset": ')
  with pytest.raises(SystemExit, match=rf'pejax: error: {workdir}/config\.json is damaged and '
                     r'cannot be read \(.+\); restore it from a copy, or delete it\. No '
                     r'checkpoint of the run records its settings\.$'):
    from pejax import cli
    cli.run(tiny_run_config(data_dir), str(workdir))


def test_a_damaged_results_json_is_evaluated_again(data_dir, tmp_path, caplog):
  """Cut short, or of another version (fields missing): warned about, the run evaluated again."""
  config = tiny_run_config(data_dir, num_epochs=2)
  workdir = str(tmp_path / 'run')
  first = train.train_and_evaluate(config, workdir)
  results_path = os.path.join(workdir, 'results.json')
  other_version = json.dumps({'config': first['config'], 'epochs': 2, 'test': first['test']})
  for text, warning in (('{"config": {"num_ep', f'Skipping {results_path}: it cannot be read'),
                        (other_version, f'{results_path} is damaged and cannot be read (it has '
                                        'no dataset, class_names, num_parameters')):
    for mode in ('train', 'evaluate'):
      with open(results_path, 'w') as f:
        f.write(text)
      assert not run_files.is_finished(workdir)
      caplog.clear()
      again = train.train_and_evaluate(config, workdir, evaluate_only=mode == 'evaluate')
      assert warning in caplog.text
      assert again['test'] == first['test'] and again['epochs'] == 2
      assert json.loads(open(results_path).read())['finished'] is True


def test_a_damaged_history_is_warned_about_and_the_run_continues(data_dir, tmp_path,
                                                                  monkeypatch, caplog):
  config = tiny_run_config(data_dir)
  workdir = str(tmp_path / 'run')
  interrupted_run(config, workdir, monkeypatch, after_epoch=2)
  history_path = os.path.join(workdir, run_files.HISTORY_FILE)
  with open(history_path, 'w') as f:
    f.write('{"train_loss": [[1, 0.9], [2, ')
  caplog.set_level('WARNING')
  finished = train.train_and_evaluate(config, workdir)
  assert f'Skipping {history_path}: it cannot be read' in caplog.text
  assert finished['finished'] is True
  # The curve restarts at the resumed epochs; the run's numbers do not depend on it.
  assert [epoch for epoch, _ in run_files.read_history(workdir, 4)['train_loss']] == [3, 4]
