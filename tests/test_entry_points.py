"""One policy at every entry point: a user's mistake or a bad file ends `main.py` (every mode),
`python -m pejax.data` and `python -m pejax.reporting` with one line on stderr,
`pejax: error: ...`, naming the file or setting, and exit status 1; a bug keeps its traceback.

The commands run as real subprocesses (their stderr is what a user sees); most fail before JAX
starts and take a few seconds. The training ones (a full disk, a damaged file) share a 32×32
chest phantom and an XLA compilation cache.
"""

import concurrent.futures
import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pejax import cli, configuration, errors
from pejax.data import datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SIZE = 32


def run_command(args, *, env=None, timeout=300) -> subprocess.CompletedProcess:
  environment = dict(os.environ, JAX_PLATFORMS='cpu', **(env or {}))
  return subprocess.run([sys.executable, *args], cwd=REPO, env=environment, capture_output=True,
                        text=True, timeout=timeout)


def error_line(done: subprocess.CompletedProcess, *, only_line: bool = True) -> str:
  """Checks the policy on a command that failed: exit status 1, no traceback, one
  `pejax: error:` line and it last (with `only_line`, the only line of stderr; otherwise log
  lines of a run that had started may come before it). Returns the error line."""
  lines = [line for line in done.stderr.splitlines() if line.strip()]
  shown = done.stderr[-4000:]
  assert done.returncode == 1, shown
  assert 'Traceback' not in done.stderr, shown
  assert lines and lines[-1].startswith('pejax: error: '), shown
  assert sum('pejax: error:' in line for line in lines) == 1, shown
  if only_line:
    assert len(lines) == 1, shown
  return lines[-1]


@pytest.fixture(scope='module')
def compilation_cache(tmp_path_factory):
  return {'PEJAX_COMPILATION_CACHE': str(tmp_path_factory.mktemp('xla_cache'))}


def train_flags(data_dir, workdir, *extra, **settings):
  """`main.py` flags of a small run: 2 epochs of the small CNN, a checkpoint and the training
  curve (history.json) after each, no robustness grid."""
  values = dict(image_size=IMAGE_SIZE, model='cnn4', width=4, num_epochs=2,
                num_train_examples=60, eval_every_epochs=1, checkpoint_every_epochs=1,
                num_image_panels=0, run_robustness=False, data_dir=data_dir)
  values.update(settings)
  return (['main.py', '--config=configs/cnn4_pe.py']
          + [f'--config.{name}={value}' for name, value in values.items()]
          + [f'--workdir={workdir}', *extra])


# ------------------------------------------------------------- 1, 2. flags and config files

BROKEN_CONFIGS = {
    'syntax.py': 'def get_config(:\n  pass\n',
    'raises.py': 'def get_config():\n  raise RuntimeError("the config cannot be made")\n',
    'imports.py': 'import no_such_module_here\n\n\ndef get_config():\n  pass\n',
}

FLAG_CASES = {  # name: (arguments after main.py, what the line must say)
    'unknown_setting': (['--config=configs/unet_pe.py:quick', '--config.num_epoch=1'],
                        '--config.num_epoch: no such setting in --config=configs/unet_pe.py:quick'
                        ' (did you mean --config.num_epochs?)'),
    'unknown_nested_setting': (['--config=configs/unet_pe.py:quick',
                                '--config.robustness.sever=1'],
                               '--config.robustness.sever: no such setting in --config=configs/'
                               'unet_pe.py:quick (did you mean --config.robustness.severities?)'),
    'unknown_group': (['--config=configs/unet_pe.py:quick', '--config.nothing.size=1'],
                      '--config.nothing.size: no such setting'),
    'wrong_type': (['--config=configs/unet_pe.py:quick', '--config.num_epochs=abc'],
                   "--config.num_epochs=abc: invalid literal for int() with base 10: 'abc'; "
                   'the setting is an int (20 in --config=configs/unet_pe.py:quick).'),
    'unknown_flag': (['--config=configs/unet_pe.py:quick', '--wokdir=runs/x'],
                     "Unknown command line flag 'wokdir'. Did you mean: workdir ?"),
    'missing_config': (['--config=configs/nope.py'],
                       "--config=configs/nope.py: no file 'configs/nope.py' and no config of "
                       'that name; pejax comes with cnn4, '),
    'unknown_variant': (['--config=configs/unet_pe.py:nosuch'],
                        "--config=configs/unet_pe.py:nosuch: config variant 'nosuch' is not "
                        'known'),
    'syntax_error': (['--config={tmp}/syntax.py'],
                     '--config={tmp}/syntax.py: the config file does not compile: invalid syntax '
                     '({tmp}/syntax.py, line 1); fix it.'),
    'get_config_raises': (['--config={tmp}/raises.py'],
                          '--config={tmp}/raises.py: the config file fails at line 2: '
                          'RuntimeError: the config cannot be made; fix it'),
    'config_imports_a_missing_module': (['--config={tmp}/imports.py'],
                                        '--config={tmp}/imports.py: the config file fails at '
                                        'line 1: ModuleNotFoundError: No module named '
                                        "'no_such_module_here'"),
    'predict_without_its_flags': (['--mode=predict'], '--mode=predict needs --workdir'),
}


@pytest.mark.parametrize('case', list(FLAG_CASES))
def test_a_wrong_flag_setting_or_config_file_is_one_line(case, quick_failures):
  """Before: 55 lines of ml_collections' traceback for an unknown setting, absl's two lines for
  a wrong value, 12 lines of traceback for a missing config file, tracebacks for broken ones."""
  folder, done = quick_failures[f'main.py {case}']
  line = error_line(done)
  assert line.startswith('pejax: error: ' + FLAG_CASES[case][1].format(tmp=folder)), line


def test_a_bug_in_pejax_code_run_by_a_config_file_keeps_its_traceback(tmp_path):
  (tmp_path / 'bug.py').write_text(
      'from pejax import configuration\n\n\ndef get_config():\n'
      '  return configuration.apply_variant(None, "quick")\n')
  done = run_command(['main.py', f'--config={tmp_path / "bug.py"}'], timeout=120)
  assert done.returncode != 0 and 'Traceback' in done.stderr, done.stderr[-3000:]
  assert 'pejax/configuration.py' in done.stderr


# --------------------------------------------------------------------- 4. the dataset command


def damaged_jsrt_download(root):
  """Every JSRT image and SCR mask the builder looks for, the first image it reads (JPCLN001)
  cut short: the builder finds them all, then fails on that one; the others are never read."""
  from data_builders.jsrt import jsrt_dataset_builder as jsrt
  (root / 'All247images').mkdir(parents=True)
  for image_id in jsrt.ALL_IDS:
    (root / 'All247images' / f'{image_id}.IMG').write_bytes(b'\0' * 100)
    for structure in ('right lung', 'left lung', 'heart'):
      (root / 'masks' / structure).mkdir(parents=True, exist_ok=True)
      (root / 'masks' / structure / f'{image_id}.gif').write_bytes(b'')
  return root / 'All247images' / f'{jsrt.TRAIN_IDS[0]}.IMG'


DATASET_CASES = {  # name: (arguments after `python -m pejax.data`, what the line must say)
    'empty_manual_folder': (['--dataset=jsrt', '--image_size=64', '--manual_dir={tmp}/empty',
                             '--data_dir={tmp}/data'],
                            "The 'jsrt' dataset is not prepared in {tmp}/data and its source "
                            'files were not found in the manual folder {tmp}/empty (JSRT: the '
                            'manual folder is missing or empty.'),
    'unknown_dataset': (['--dataset=nope'], "Unknown dataset 'nope'; expected one of"),
    'size_of_no_builder_config': (['--dataset=jsrt', '--image_size=96'],
                                  "'jsrt' has no image_size 96; expected one of (64, 128, 256)."),
    'size_not_a_number': (['--image_size=abc'],
                          "argument --image_size: invalid int value: 'abc' (python -m "
                          'pejax.data --help lists the options).'),
    'phantom_too_small': (['--dataset=phantoms', '--image_size=2', '--data_dir={tmp}/data'],
                          'image_size=2 is not allowed: phantom images are at least 8×8 '
                          'pixels.'),
    'unknown_option': (['--nope=1'], 'unrecognized arguments: --nope=1'),
}


@pytest.mark.parametrize('case', list(DATASET_CASES))
def test_the_dataset_command_fails_in_one_line(case, quick_failures):
  """Before: 81 lines of TFDS's AssertionError for an empty manual folder, 13 to 33 lines of
  traceback for a wrong name or size, argparse's two lines for an option."""
  folder, done = quick_failures[f'pejax.data {case}']
  line = error_line(done)
  assert line.startswith('pejax: error: ' + DATASET_CASES[case][1].format(tmp=folder)), line


def test_a_damaged_jsrt_file_is_named_in_one_line_by_both_commands(tmp_path):
  """Through `python -m pejax.data` and through `main.py --config.dataset=jsrt` (before: a
  ValueError's traceback). TFDS's progress bars may come before the line."""
  damaged = damaged_jsrt_download(tmp_path / 'manual')
  expected = (f'pejax: error: JSRT: {damaged} has 100 bytes; a JSRT .IMG file is 2048x2048 '
              '16-bit big-endian pixels without header, 8388608 bytes. The file is truncated or '
              'not a JSRT image: download or unzip it again.')
  done = run_command(['-m', 'pejax.data', '--dataset=jsrt', '--image_size=64',
                      f'--manual_dir={tmp_path / "manual"}', f'--data_dir={tmp_path / "data"}'])
  assert error_line(done, only_line=False) == expected
  done = run_command(['main.py', '--config=configs/unet_pe.py:quick', '--config.dataset=jsrt',
                      '--config.image_size=64', f'--config.manual_dir={tmp_path / "manual"}',
                      f'--config.data_dir={tmp_path / "data2"}', f'--workdir={tmp_path / "run"}'])
  assert error_line(done, only_line=False) == expected


# ---------------------------------------------------------------------- 5. the report command

REPORT_CASES = {  # name: (--workdir, what the line must say)
    's3': ('s3://bucket/x', "--workdir='s3://bucket/x' is not allowed: pejax reads and writes "
           'local folders and gs:// buckets only, not s3://'),
    'file_url': ('file:///tmp/x', "--workdir='file:///tmp/x' is not allowed"),
    'missing_folder': ('{tmp}/nothing', '{tmp}/nothing does not exist or is not a folder.'),
    'no_finished_run': ('{tmp}', '{tmp} holds no finished run (no results.json below it).'),
}


@pytest.mark.parametrize('case', list(REPORT_CASES))
def test_the_report_command_fails_in_one_line(case, quick_failures):
  """Before: 24 lines of traceback for a workdir pejax cannot read, TensorFlow's 4 start-up lines
  before `pejax.reporting.report: ...` for a missing folder."""
  folder, done = quick_failures[f'pejax.reporting {case}']
  line = error_line(done)
  assert line.startswith('pejax: error: ' + REPORT_CASES[case][1].format(tmp=folder)), line


@pytest.fixture(scope='module')
def quick_failures(tmp_path_factory):
  """The result of every quick failing command above, by '<command> <case>': (the case's
  folder, the finished process). Two run at a time: each is mostly start-up."""
  commands = {}
  for command, prefix, cases in (('main.py', ['main.py'], FLAG_CASES),
                                 ('pejax.data', ['-m', 'pejax.data'], DATASET_CASES),
                                 ('pejax.reporting', ['-m', 'pejax.reporting'], REPORT_CASES)):
    for case, (arguments, _) in cases.items():
      folder = tmp_path_factory.mktemp(case)
      for name, text in BROKEN_CONFIGS.items():
        (folder / name).write_text(text)
      (folder / 'empty').mkdir()
      if command == 'pejax.reporting':
        arguments = [f'--workdir={arguments}']
      commands[f'{command} {case}'] = (folder, prefix + [a.format(tmp=folder) for a in arguments])
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    done = pool.map(lambda args: run_command(args, timeout=300), [a for _, a in commands.values()])
    return {name: (folder, result) for (name, (folder, _)), result in zip(commands.items(), done)}


# -------------------------------------------------------------- 6, 7. a full disk, bad files

# `main.py` with a disk that fills up at the `count`-th write of `name` under `folder`: the
# write's fsync fails with ENOSPC, as a full disk's does, with no file name in the error.
FULL_DISK = '''
import errno, os, runpy, sys
folder, name, count = os.environ['PEJAX_TEST_FULL_DISK'].split('|')
real_fsync, seen = os.fsync, []
def fsync(descriptor):
  path = os.readlink(f'/proc/self/fd/{descriptor}')
  if path.startswith(folder) and os.path.basename(path).startswith(f'.{name}.'):
    seen.append(path)
    if len(seen) == int(count):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  return real_fsync(descriptor)
os.fsync = fsync
sys.argv[0] = 'main.py'
runpy.run_path('main.py', run_name='__main__')
'''


@pytest.fixture(scope='module')
def full_disk_run(data_dir, compilation_cache, tmp_path_factory):
  """A run whose disk is full when it writes its training curve after epoch 2 (of 2): its
  workdir, right after the failure, and the command's result."""
  if not os.path.isdir('/proc/self/fd'):
    pytest.skip('needs /proc/self/fd to tell which file is being written')
  workdir = tmp_path_factory.mktemp('full') / 'run'
  flags = train_flags(data_dir, workdir)
  done = run_command(['-c', FULL_DISK, *flags[1:]], env=dict(
      compilation_cache, PEJAX_TEST_FULL_DISK=f'{workdir}|history.json|2'))
  kept = tmp_path_factory.mktemp('full_copy') / 'run'
  shutil.copytree(workdir, kept)
  return workdir, kept, done


def test_a_full_disk_is_one_line_naming_the_file_and_the_run_resumes(
    full_disk_run, data_dir, compilation_cache):
  """Before: the OSError's traceback (with TensorFlow's and Orbax's lines around it), its only
  file name the temporary one."""
  workdir, _, done = full_disk_run
  line = error_line(done, only_line=False)
  assert line == (f'pejax: error: no space left on the disk of {workdir}/history.json (No space '
                  'left on device): free some space there, or choose another folder, and run the '
                  'same command again; a training run resumes from its last checkpoint.')
  # What was there before the failed write is intact, and no temporary is left.
  with open(workdir / 'history.json') as f:
    assert [epoch for epoch, _ in json.load(f)['train_loss']] == [1]
  with open(workdir / 'config.json') as f:
    assert json.load(f)['num_epochs'] == 2
  leftovers = [name for _, _, names in os.walk(workdir) for name in names
               if name.endswith('.tmp')]
  assert leftovers == [] and '1' in os.listdir(workdir / 'checkpoints')
  done = run_command(train_flags(data_dir, workdir), env=compilation_cache)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'Restored the checkpoints of epoch' in done.stderr
  with open(workdir / 'results.json') as f:
    assert json.load(f)['epochs'] == 2


def test_a_damaged_config_json_is_one_line_naming_it(data_dir, compilation_cache, tmp_path):
  """A workdir whose config.json was cut short (no checkpoint records the settings either).
  Before: json's traceback."""
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text('{"dataset": "phantom_ch')
  done = run_command(train_flags(data_dir, workdir), env=compilation_cache)
  line = error_line(done, only_line=False)
  assert line.startswith(f'pejax: error: {workdir}/config.json is damaged and cannot be read '
                         '('), line


def test_a_damaged_results_json_does_not_stop_an_evaluation(full_disk_run, data_dir,
                                                            compilation_cache):
  """--mode=evaluate of a run with checkpoints whose results.json is damaged: the evaluation
  writes it anew (a damaged results.json is read as none); a failure would be one line."""
  _, kept, _ = full_disk_run
  (kept / 'results.json').write_text('{"config": {"da')
  done = run_command(train_flags(data_dir, kept, '--mode=evaluate'), env=compilation_cache)
  if done.returncode != 0:
    assert 'results.json' in error_line(done, only_line=False)
  else:
    with open(kept / 'results.json') as f:
      assert json.load(f)['epochs'] == 2


# ------------------------------------------------------------------ 8. the dataset's barrier


class FakeProcesses:
  """jax.process_count/process_index and the collective step of `multihost_utils`, as process
  `index` of two sees them; `sent` is what process 0 broadcasts (it is what every process
  receives)."""

  def __init__(self, monkeypatch, index, sent=None):
    import jax
    from jax.experimental import multihost_utils
    self.calls, self.sent = [], sent
    monkeypatch.setattr(jax, 'process_count', lambda: 2)
    monkeypatch.setattr(jax, 'process_index', lambda: index)
    monkeypatch.setattr(multihost_utils, 'broadcast_one_to_all', self.broadcast)
    monkeypatch.setattr(multihost_utils, 'sync_global_devices', self.sync)

  def broadcast(self, value):
    self.calls.append('broadcast')
    if self.sent is None:
      self.sent = np.array(value)
    return self.sent

  def sync(self, name):
    self.calls.append('sync')


def failing_prepare(error):
  def prepare(name, **kwargs):
    raise error
  return prepare


def test_process_zero_reaches_the_barrier_whatever_fails_and_the_others_stop(monkeypatch):
  """Before, a non-PejaxError on process 0 skipped the barrier: the other processes waited
  until the distributed timeout. Process 0 now raises its own error (a bug keeps it) after the
  collective step; process 1 stops with process 0's message."""
  bug = RuntimeError('a bug while building')
  zero = FakeProcesses(monkeypatch, 0)
  monkeypatch.setattr(datasets, 'prepare', failing_prepare(bug))
  with pytest.raises(RuntimeError) as raised:
    datasets.prepare_shared('phantom_chest', image_size=8)
  assert raised.value is bug and zero.calls == ['broadcast']
  one = FakeProcesses(monkeypatch, 1, sent=zero.sent)
  monkeypatch.setattr(datasets, 'prepare', failing_prepare(AssertionError('not called')))
  with pytest.raises(errors.OtherProcessError, match="process 0 could not prepare the "
                     "'phantom_chest' dataset, so this process stops too: RuntimeError: a bug "
                     'while building'):
    datasets.prepare_shared('phantom_chest', image_size=8)
  assert one.calls == ['broadcast']
  # A user's error on process 0 reaches the others as its one line.
  zero = FakeProcesses(monkeypatch, 0)
  monkeypatch.setattr(datasets, 'prepare', failing_prepare(errors.DatasetNotFoundError(
      'the manual folder /m is empty.\nPut the files there.')))
  with pytest.raises(errors.DatasetNotFoundError):
    datasets.prepare_shared('jsrt', image_size=64)
  FakeProcesses(monkeypatch, 1, sent=zero.sent)
  with pytest.raises(errors.OtherProcessError, match=r'stops too: the manual folder /m is '
                     r'empty\. Put the files there\.$'):
    datasets.prepare_shared('jsrt', image_size=64)
  # Nothing failed: one collective step, no error.
  FakeProcesses(monkeypatch, 0)
  monkeypatch.setattr(datasets, 'prepare', lambda name, **kwargs: None)
  datasets.prepare_shared('phantom_chest', image_size=8)


def test_the_training_path_reaches_the_barrier_when_process_zero_has_a_bug(monkeypatch):
  from pejax.data import input_pipeline
  zero = FakeProcesses(monkeypatch, 0)
  monkeypatch.setattr(datasets, 'prepare', failing_prepare(RuntimeError('a bug')))
  config = configuration.quick(configuration.base_config())
  with pytest.raises(RuntimeError, match='a bug'):
    input_pipeline.load_run_data(config, mesh=None)
  assert zero.calls


# ----------------------------------------------------------------------- 9. a sweep's start


def test_a_sweep_starts_with_its_runs_and_the_values_it_varies(tmp_path):
  """Before: `Workdir ... (all settings in its config.json): dataset=phantom_chest, ...`, the
  base config's values, for a sweep that varies them and has no config.json."""
  done = run_command(['main.py', '--config=configs/paper/phantom_all.py',
                      f'--workdir={tmp_path / "sweep"}', '--shard=first'], timeout=120)
  line = error_line(done, only_line=False)
  assert line.startswith('pejax: error: --shard=first is not allowed: use I/N'), line
  start = [line for line in done.stderr.splitlines() if 'cli.py' in line]
  assert len(start) == 1 and start[0].split('] ', 1)[1].startswith(
      f'Sweep in {tmp_path / "sweep"}: 96 runs, each in a folder of its own with its '
      'config.json, over dataset=phantom_chest,phantom_cardiac; model=unet,cnn4; '), start
  assert 'seed=0,1,2' in start[0] and 'all settings in its config.json' not in start[0]


def test_the_start_line_of_one_run_is_unchanged():
  from pejax import configuration
  config = configuration.base_config()
  assert cli.start_line(config, 'runs/x') == (
      'Workdir runs/x (all settings in its config.json): '
      + ', '.join(f'{name}={config[name]}' for name in configuration.SHOWN_SETTINGS))


# -------------------------------------------------------------- the translation, in process


def raised(function):
  try:
    function()
  except Exception as error:  # noqa: BLE001  the error itself is what is tested
    return error
  raise AssertionError('nothing was raised')


def test_library_errors_that_pejax_knows_become_its_errors(tmp_path):
  def write_atomically(path):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  full = errors.translate(raised(lambda: write_atomically('/runs/x/results.json')))
  # A function of this test file is not pejax's code: without a file name, none is named.
  assert isinstance(full, errors.DiskError) and 'a file being written' in str(full)
  for code, start in ((errno.EROFS, '/r is on a read-only file system'),
                      (errno.EACCES, 'permission denied for /r'),
                      (errno.EEXIST, '/r already exists and is in the way')):
    translated = errors.translate(OSError(code, os.strerror(code), '/r'))
    assert str(translated).startswith(start), translated
  # Wrapped by a library (TFDS re-raises with `from`; TensorStore says it in words).
  wrapped = RuntimeError('Failed to finalize writing')
  wrapped.__cause__ = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), '/d/x.array_record')
  assert '/d/x.array_record' in str(errors.translate(wrapped))
  words = ValueError('FAILED_PRECONDITION: Error writing local file "/ck/1/d/x": [OS error 28: '
                     'No space left on device]')
  assert 'no space left on the disk of /ck/1/d/x' in str(errors.translate(words))
  tfds_error = AssertionError('Manual directory /m does not exist or is empty. Create it.')
  assert str(errors.translate(tfds_error)).startswith(
      'the manual folder /m does not exist or is empty: put the downloaded files')
  # A damaged JSON file named by the pejax function that read it.
  (tmp_path / 'results.json').write_text('{"a": ')
  from pejax import storage
  damaged = errors.translate(raised(lambda: storage.read_json(str(tmp_path / 'results.json'))))
  assert str(damaged).startswith(f'{tmp_path}/results.json is damaged and cannot be read')
  # Bugs stay bugs.
  assert errors.translate(raised(lambda: json.loads('{'))) is None
  assert errors.translate(KeyError('x')) is None
  assert errors.translate(OSError(errno.ENOENT, 'No such file', '/x')) is None
  # A user's error that a bug's handling hid is the bug.
  bug = TypeError('cleanup failed')
  bug.__context__ = errors.SettingError('x')
  assert errors.translate(bug) is None


def test_the_wrapper_prints_one_line_and_lets_bugs_through():
  @errors.exit_on_user_error
  def user_error():
    raise errors.DatasetNotFoundError('not prepared.\nPut the files:\n  1. here')

  with pytest.raises(SystemExit, match=r'^pejax: error: not prepared\. Put the files: 1\. here$'):
    user_error()

  @errors.exit_on_user_error
  def bug():
    raise ZeroDivisionError('bug')

  with pytest.raises(ZeroDivisionError):
    bug()
