"""The one-line errors of hostile inputs (issue 35, "Messages"): a disk that fills during
training, an unreachable Cloud Storage endpoint, a workdir path too long for the file system, an
nnU-Net dataset number that matches two folders, two dataset folders of one name in a sweep, and
a label value far outside the labels. Each ends the program with one last line,
`pejax: error: ...`, that names the file or object and what to do.

The two `main.py` tests share the phantom data (`data_dir`) and a compilation cache; nothing here
leaves 127.0.0.1 (the unreachable endpoint is a closed local port).
"""

import os
import re
import subprocess
import time

import numpy as np
import pytest
from ml_collections.config_flags import config_flags as config_flags_lib

from data_builders.nnunet import source
from pejax import cli, errors, storage
from pejax.errors import SettingError
from pejax.runs import folder as run_folder

from helpers import BUCKET, Process, REPO, command_line, free_port, tiny_run_config
from test_nnunet_source import save_nifti, volume_dataset


@pytest.fixture(scope='module', autouse=True)
def share_compilations(tmp_path_factory):
  Process.compilation_cache = str(tmp_path_factory.mktemp('xla_cache'))
  yield
  Process.compilation_cache = None


def last_line(text: str) -> str:
  lines = [line for line in text.splitlines() if line.strip()]
  return lines[-1] if lines else ''


def one_error_line_last(log: str) -> str:
  """The `pejax: error:` line, checked to be the log's only one, its last line, and to come
  after the last traceback (none of them may follow it)."""
  line = last_line(log)
  assert line.startswith('pejax: error: '), log[-3000:]
  assert log.count('pejax: error:') == 1, log[-3000:]
  return line


def user_error_line(function, *args, **kwargs) -> str:
  """The line an entry point ends with when `function(*args, **kwargs)` fails."""
  with pytest.raises(SystemExit) as exit_info:
    errors.exit_on_user_error(function)(*args, **kwargs)
  line = str(exit_info.value.code)
  assert line.startswith('pejax: error: ') and '\n' not in line, line
  return line


# ------------------------------------------------------------------------- 8. a disk that fills


@pytest.fixture
def small_disk(tmp_path):
  """A real 80 MiB file system (tmpfs), where the system lets this process mount one."""
  mount_point = tmp_path / 'small_disk'
  mount_point.mkdir()
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=80m', 'tmpfs', str(mount_point)],
                           capture_output=True)
  if mounted.returncode != 0:
    pytest.skip(f'cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}')
  yield mount_point
  subprocess.run(['umount', '-l', str(mount_point)], check=False)


def fill(folder):
  """Writes zeros into `folder` until its file system is full."""
  with open(os.path.join(folder, 'filler'), 'wb') as filler:
    block = bytes(2**20)
    try:
      while True:
        filler.write(block)
        filler.flush()
    except OSError:
      pass


def test_a_disk_that_fills_during_training_ends_in_one_line_naming_the_file(
    data_dir, small_disk, tmp_path):
  """The disk fills while a checkpoint is written: Orbax's background threads fail too, and
  their reports come before the line, without tracebacks."""
  workdir = small_disk / 'run'
  process = Process(command_line(data_dir, str(workdir), num_epochs=300, run_robustness=False),
                    tmp_path / 'full.log')
  process.wait_for(lambda: 'epoch   3/300' in process.log(), what='epoch 3')
  fill(small_disk)
  assert process.wait(timeout=120) == 1
  log = process.log()
  line = one_error_line_last(log)
  assert line.startswith('pejax: error: no space left on the disk of '), line
  assert f'{workdir}/' in line and 'run the same command again' in line, line
  assert 'a file being written' not in line, line
  # Orbax's threads log their failures without tracebacks; what may remain before the line are
  # TensorStore's callbacks into an event loop Orbax has closed, printed by its C++ code.
  assert set(raised(log)) <= {'RuntimeError: Event loop is closed'}, log[-3000:]


def test_a_workdir_on_a_full_disk_is_refused_at_start_saying_to_free_space(small_disk):
  fill(small_disk)
  with pytest.raises(errors.WorkdirError) as refused:
    run_folder.check_writable(str(small_disk / 'run'), 2**20)
  assert 'No space left on device' in str(refused.value)
  assert 'free some space' in str(refused.value) and 'permissions' not in str(refused.value)


def raised(log: str) -> list[str]:
  """The exception line of each traceback in `log` (other threads' log lines may come between)."""
  lines = log.splitlines()
  starts = [i for i, line in enumerate(lines) if line.startswith('Traceback (most recent call')]
  exception = re.compile(r'^[A-Za-z_][\w.]*(Error|Exception)\b')
  return [next((line for line in lines[start + 1:] if exception.match(line)), '')
          for start in starts]


# --------------------------------------------------------------- 9. an unreachable Cloud Storage


def unreachable_environment(tmp_path):
  """Every client pointed at a closed port of 127.0.0.1 (nothing listens there)."""
  url = f'http://127.0.0.1:{free_port()}'
  return {'STORAGE_EMULATOR_HOST': url, 'TENSORSTORE_GCS_HTTP_URL': url,
          'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator', 'NO_GCE_CHECK': 'true',
          'GOOGLE_APPLICATION_CREDENTIALS': '', 'CLOUDSDK_CONFIG': str(tmp_path / 'gcloud'),
          'PEJAX_DATA_CACHE': str(tmp_path / 'data_cache')}, url


def test_an_unreachable_bucket_ends_at_once_in_one_line_naming_it(data_dir, tmp_path):
  """Training and the probe, at the same time."""
  env, url = unreachable_environment(tmp_path)
  workdir = f'gs://{BUCKET}/run'
  processes = [Process(flags, tmp_path / f'{mode}.log', env=env) for mode, flags in (
      ('train', command_line(data_dir, workdir)), ('probe', ['--mode=probe', f'--workdir={workdir}']))]
  for process in processes:
    assert process.wait(timeout=120) == 1
    log = process.log()
    seconds = seconds_since_first_line(log, os.path.getmtime(process.log_path))
    line = one_error_line_last(log)
    assert f'gs://{BUCKET}/' in line and url in line, line
    assert 'cannot be reached' in line and 'network' in line and 'credentials' in line, line
    assert 'does not exist' not in line and 'Traceback' not in log, log[-3000:]
    assert seconds < 30, f'{seconds:.0f} s:\n{log[-3000:]}'


def seconds_since_first_line(log: str, end: float) -> float:
  """From the log's first line (absl's time of day, once the libraries are imported: the start-up
  on a busy machine does not count) to `end` (a time.time())."""
  first = re.match(r'^[IWEF]\d{4} (\d\d):(\d\d):(\d\d\.\d+)', log)
  assert first, log[:2000]
  started = int(first.group(1)) * 3600 + int(first.group(2)) * 60 + float(first.group(3))
  ended = time.localtime(end)
  ended_seconds = ended.tm_hour * 3600 + ended.tm_min * 60 + ended.tm_sec + end % 1
  return (ended_seconds - started) % 86400  # across midnight too


def test_an_unreachable_bucket_is_named_by_every_storage_call(tmp_path, monkeypatch):
  _, url = unreachable_environment(tmp_path)
  monkeypatch.setenv('STORAGE_EMULATOR_HOST', url)
  folder = f'gs://{BUCKET}/somewhere'
  for call in (storage.exists, storage.isdir, storage.file_sizes,
               lambda location: list(storage.walk(location)),
               lambda location: storage.write_object(f'{location}/a.json', b'{}')):
    line = user_error_line(call, folder)
    assert folder in line and url in line, line


# --------------------------------------------------------------------- 10. a path too long


@pytest.mark.parametrize('shape', ['long_path', 'long_name'])
def test_a_workdir_too_long_for_the_file_system_is_refused_at_once(data_dir, tmp_path, shape):
  if shape == 'long_path':  # 4,024 characters, in names the file system takes
    workdir = str(tmp_path) + ('/' + 'd' * 99) * ((4024 - len(str(tmp_path))) // 100)
  else:
    workdir = str(tmp_path / ('n' * 300) / 'run')
  start = time.monotonic()
  with pytest.raises(SystemExit) as exit_info:
    cli.run(tiny_run_config(data_dir), workdir)
  line = str(exit_info.value.code)
  assert time.monotonic() - start < 10
  assert line.startswith('pejax: error: --workdir=') and '\n' not in line, line
  expected = ('is too long' if shape == 'long_path' else
              'has a name of 300 bytes; the file system takes names of at most 255')
  assert expected in line and 'choose a shorter --workdir' in line, line
  assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- 11. an ambiguous dataset number


def test_a_dataset_number_matching_two_folders_names_both(tmp_path, monkeypatch):
  for name in ('Dataset712_A', 'Dataset712_B', 'Dataset071_C'):
    (tmp_path / name).mkdir()
  monkeypatch.setenv('nnUNet_raw', str(tmp_path))
  line = user_error_line(source.resolve_folder, '712')
  assert 'Dataset712_A' in line and 'Dataset712_B' in line and 'Dataset071_C' not in line, line
  assert 'give the full name' in line and 'does not exist' not in line, line
  line = user_error_line(source.resolve_folder, '713')
  assert f'no folder Dataset713_* in nnUNet_raw={tmp_path}' in line, line


# -------------------------------------------------------- 12. two dataset folders of one name


def test_two_dataset_folders_of_one_name_in_a_sweep_are_named(tmp_path):
  first, second = tmp_path / 'a' / 'Dataset001_X', tmp_path / 'b' / 'Dataset001_X'
  path = os.path.join(REPO, 'configs', 'paper', 'laptop_all.py')
  config = config_flags_lib._ConfigFileParser(name='config').parse(
      f'{path}:nnunet:{first},nnunet:{second}')
  with pytest.raises(SystemExit) as exit_info:
    cli.run(config, str(tmp_path / 'sweep'))
  line = str(exit_info.value.code)
  assert line.startswith('pejax: error: sweep: ') and '\n' not in line, line
  assert str(first) in line and str(second) in line and 'same settings' not in line, line
  assert 'rename one of them' in line, line
  assert not os.path.exists(tmp_path / 'sweep')


def test_runs_of_the_same_settings_are_named_as_such(tmp_path):
  from pejax import configuration, sweep
  config = configuration.quick(configuration.base_config())
  config.sweep = [{'seed': 1}, {'seed': 1}]
  with pytest.raises(SettingError, match=r"sweep: two runs have the same settings \(\{'seed': 1\}"):
    sweep.expand(config)


# ------------------------------------------------------------- 13. a label value far off the labels


@pytest.mark.parametrize('value,shown', [(1e30, '1e+30'), (-3.0, '-3'), (300.0, '300')])
def test_a_label_value_far_off_the_labels_is_shown_as_in_the_file(tmp_path, value, shown):
  folder = volume_dataset(tmp_path, num_cases=1)
  label = np.zeros((3, 10, 12), np.float32)
  label[1, 2, 3] = value
  path = os.path.join(folder, 'labelsTr', 'case_000.nii.gz')
  save_nifti(path, label)
  line = user_error_line(source.read_case_label, path, source.read_description(folder))
  assert f'{path} holds the values {shown}, which are not labels of dataset.json' in line, line
  assert '-9223372036854775808' not in line
