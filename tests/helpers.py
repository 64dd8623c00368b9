"""Helpers that several test modules use: paths, small run configs, `main.py` subprocesses,
damaged checkpoints, the Cloud Storage test bucket, a stand-in model for the robustness grid
and fake run folders for the report. (Fixtures shared by modules are in conftest.py.)"""

import glob
import os
import signal
import socket
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np

from pejax import configuration, storage
from pejax.data import datasets, input_pipeline
from pejax.evaluation import corruptions

# ------------------------------------------------------------------------------------ paths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, 'tests', 'reliability_worker.py')
IMAGE_SIZE = 32

# ------------------------------------------------------------------- small runs (in process)


def small_run_config(data_dir, **overrides):
  """The small CNN at width 8 on the whole 32×32 chest phantom: 4 epochs, evaluated every 2,
  one image panel, no robustness grid."""
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


def tiny_run_config(data_dir, **overrides):
  """The small CNN at width 4 on 60 training images of the 32×32 chest phantom: 4 epochs,
  evaluated every 2, no image panels, no robustness grid."""
  config = configuration.quick(configuration.base_config())
  config.update(dict(data_dir=data_dir, image_size=IMAGE_SIZE, model='cnn4', width=4,
                     num_epochs=4, num_train_examples=60, eval_every_epochs=2,
                     num_image_panels=0, run_robustness=False))
  for key, value in overrides.items():
    config[key] = value
  return config


def damage(checkpoint_folder):
  """Truncates the array data files of a checkpoint to half, as a failed disk or upload would
  leave them. (All of them: OCDBT keeps superseded data in some, whose loss goes unnoticed.)"""
  files = glob.glob(os.path.join(checkpoint_folder, '**', 'd', '*'), recursive=True)
  assert files
  for path in files:
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)


# ----------------------------------------------------------------- `main.py` subprocesses


def command_line(data_dir, workdir, *extra_flags, **settings):
  """`main.py` flags of the small run every subprocess test trains (robustness on a tiny grid)."""
  values = {'image_size': IMAGE_SIZE, 'model': 'cnn4', 'width': 4, 'num_epochs': 4,
            'num_train_examples': 60, 'eval_every_epochs': 2, 'num_image_panels': 0,
            'data_dir': data_dir, 'robustness.severities': '(1,)',
            'robustness.shifts': '(-2,0,2)'}
  values.update(settings)
  flags = ['--config=configs/cnn4_pe.py']
  flags += [f'--config.{name}={value}' for name, value in values.items()]
  return flags + [f'--workdir={workdir}', *extra_flags]


class Process:
  """A `main.py` (or worker) subprocess whose output goes to a log file."""

  compilation_cache = None  # a folder, set by a test module's `share_compilations` fixture

  def __init__(self, flags, log_path, *, script='main.py', env=None):
    self.log_path = str(log_path)
    environment = dict(os.environ, JAX_PLATFORMS='cpu', **(env or {}))
    if self.compilation_cache:
      environment['PEJAX_COMPILATION_CACHE'] = self.compilation_cache
    with open(self.log_path, 'w') as log:
      self.popen = subprocess.Popen([sys.executable, script, *flags], cwd=REPO, env=environment,
                                    stdout=log, stderr=subprocess.STDOUT)

  @property
  def pid(self):
    return self.popen.pid

  def log(self) -> str:
    with open(self.log_path, errors='replace') as f:
      return f.read()

  def wait(self, timeout=300) -> int:
    try:
      return self.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      raise AssertionError(f'still running after {timeout} s:\n{self.log()[-3000:]}') from None

  def finish(self, timeout=300) -> str:
    """Waits for a successful exit; returns the log."""
    code = self.wait(timeout)
    assert code == 0, f'exit code {code}:\n{self.log()[-3000:]}'
    return self.log()

  def kill(self):
    if self.popen.poll() is None:
      os.kill(self.popen.pid, signal.SIGKILL)
    self.popen.wait()

  def wait_for(self, condition, timeout=180, what='the expected moment'):
    """Polls `condition()` until true; fails if the process exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
      if self.popen.poll() is not None:
        raise AssertionError(f'exited ({self.popen.returncode}) before {what}:\n'
                             f'{self.log()[-3000:]}')
      if time.monotonic() > deadline:
        self.kill()
        raise AssertionError(f'no {what} after {timeout} s:\n{self.log()[-3000:]}')
      time.sleep(0.05)


def run_killed_at(moment, flags, tmp_path, name, env=None):
  """Runs the worker until it pauses at `moment`, then SIGKILLs it; returns its log."""
  marker = tmp_path / f'{name}.paused'
  process = Process(flags, tmp_path / f'{name}.log', script=WORKER,
                    env={'PEJAX_TEST_PAUSE_AT': moment, 'PEJAX_TEST_PAUSE_MARKER': str(marker),
                         **(env or {})})
  process.wait_for(marker.exists, what=f'pause at {moment}')
  process.kill()
  assert process.popen.returncode == -signal.SIGKILL
  return process.log()


def restored_epoch(log):
  marker = 'Restored the checkpoints of epoch '
  if marker not in log:
    return None
  return int(log.split(marker)[-1].split('.')[0])


def trained_epochs(log):
  return [int(line.split('epoch')[1].split('/')[0]) for line in log.splitlines()
          if ' epoch ' in line and 'train_loss' in line and 'train.py' in line]


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


# ------------------------------------------------------------------- Cloud Storage emulator
# The server and the bucket are conftest.py's fixtures `emulator`, `bucket` and `in_process`.

BUCKET = 'pejax-test'


def names_under(bucket, prefix):
  return sorted(blob.name[len(prefix):] for blob in bucket.list_blobs(prefix=prefix))


# ---------------------------------------------------------- robustness grid, without a model

CHEST_CLASSES = ['right_lung', 'left_lung', 'heart']
NUM_IMAGES = 10  # of make_split, IMAGE_SIZE × IMAGE_SIZE


def threshold_predict(images):
  """A position-aware stand-in for a model: intensity bands, class 3 only in the left half."""
  classes = jnp.clip((images[..., 0] * 4).astype(jnp.int32), 0, 3)
  left = jnp.arange(images.shape[2]) < images.shape[2] // 2
  return jnp.where((classes == 3) & ~left, 2, classes)


def make_split(seed=0):
  rng = np.random.default_rng(seed)
  # Smooth images, so that blur and noise change predictions gradually.
  noise = rng.random((NUM_IMAGES, IMAGE_SIZE, IMAGE_SIZE, 1)).astype(np.float32)
  images = np.asarray(corruptions.gaussian_blur(noise, 1.5)) * 1.6 - 0.3
  images = np.clip(images, 0, 1).astype(np.float32)
  # Ground truth from slightly different bands: clean Dice is high but not 1.
  labels = np.asarray(threshold_predict(jnp.asarray(images) * 1.05), np.uint8)
  return images, labels


def small_robustness_config(**overrides):
  """The default robustness grid settings, with `overrides`."""
  cfg = configuration.default_robustness_config()
  for name, value in overrides.items():
    cfg[name] = value
  return cfg


def placed(images, labels, batch_size=4):
  """The split as the grid gets it: on the device, in equal batches (10 images in batches of 4:
  the last batch is padded and masked)."""
  ids = np.array([f'{i:03d}' for i in range(len(images))])
  return input_pipeline.place_eval_split(datasets.SplitArrays(images, labels, ids), batch_size)


# ------------------------------------------------------------------ fake runs for the report

CARDIAC_CLASSES = ['right_ventricle', 'myocardium', 'left_ventricle']
CLASSES = {'jsrt': CHEST_CLASSES, 'phantom_chest': CHEST_CLASSES,
           'phantom_cardiac': CARDIAC_CLASSES}
# Per-class Dice = image Dice + these offsets: their mean is the image Dice.
CLASS_OFFSETS = (0.01, -0.01, 0.0)
SEED_OFFSETS = {3: (-0.01, 0.0, 0.01), 2: (-0.01, 0.01)}
SHIFTS = range(-16, 17, 2)
AVERAGED_MASK = 0.81


def dice_dict(value, classes):
  return {'dice': value, **{f'dice_{c}': value + o for c, o in zip(classes, CLASS_OFFSETS)}}


def robustness_result(clean, noise_drop, shift_drop, classes, encoding_drop=None):
  """The layout of `robustness.evaluate_robustness`: noise Dice falls linearly to
  `clean - noise_drop` at severity 5, shift Dice to `clean - shift_drop` at ±16 px; with
  `encoding_drop` the encoding conditions: Dice falls to `clean - encoding_drop` at ±16 px
  of the encoding alone, and is `clean - 2 * encoding_drop` with the encoding removed."""
  result = {'clean': dice_dict(clean, classes)}
  for name, drop in (('gaussian_noise', noise_drop), ('shot_noise', noise_drop),
                     ('gaussian_blur', 0.02)):
    result[name] = {str(s): dice_dict(clean - drop * s / 5, classes) for s in range(1, 6)}
  result['shift_x'] = {str(k): dice_dict(clean - shift_drop * abs(k) / 16, classes)
                       for k in SHIFTS}
  result['parameters'] = {
      'batch_size': 8, 'gaussian_noise': {'1': 0.04, '2': 0.08, '3': 0.12, '4': 0.15, '5': 0.18},
      'shot_noise': {'1': 250.0, '2': 100.0, '3': 50.0, '4': 30.0, '5': 15.0},
      'gaussian_blur': {'1': 0.5, '2': 0.75, '3': 1.0, '4': 1.25, '5': 1.5},
      'image_shape': [64, 64, 1], 'num_images': 9, 'seed': 0, 'shift_axis': 'x',
      'shift_fill': 'zeros', 'shift_x': list(SHIFTS)}
  if encoding_drop is not None:
    result['encoding_shift_x'] = {str(k): dice_dict(clean - encoding_drop * abs(k) / 16, classes)
                                  for k in SHIFTS}
    result['encoding_removed'] = {'0': dice_dict(clean - 2 * encoding_drop, classes)}
    result['parameters']['encoding_shift_x'] = list(SHIFTS)
  result['seconds'] = 1.0
  return result


def results_json(*, clean=0.9, **fields):
  """A complete results.json of a finished run (test Dice `clean`), with `fields` replaced."""
  config = fields.get('config', {})
  classes = fields.get('class_names', CLASSES.get(config.get('dataset'), CHEST_CLASSES))
  return {
      'class_names': classes, 'config': config, 'dataset': config.get('dataset', 'jsrt'),
      'devices': 1, 'epochs': config.get('num_epochs', 100), 'jax_version': '0.10.2',
      'normalization': {'kind': 'dataset', 'mean': 0.5, 'std': 0.25}, 'num_parameters': 5204,
      'num_train_examples': config.get('num_train_examples') or 30, 'platform': 'cpu',
      'processes': 1, 'steps': 6,
      'test': dict(dice_dict(clean, classes), loss=0.1),
      'validation': dict(dice_dict(clean, classes), loss=0.1),
      'test_averaged_mask': dice_dict(AVERAGED_MASK, classes),
      'validation_averaged_mask': dice_dict(AVERAGED_MASK, classes),
      **fields}


def write_run(folder, *, clean, noise_drop=0.1, shift_drop=0.1, robustness=True, converged=True,
              encoding_drop=None, **overrides):
  config = configuration.quick(configuration.base_config())
  for name, value in overrides.items():
    config[name] = value
  config = configuration.json_safe(config.to_dict())
  classes = CLASSES[config['dataset']]
  results = results_json(
      clean=clean, config=config,
      timings={'train_seconds': 36.0, 'median_epoch_seconds': 1.0},
      convergence={'converged': converged, 'gain': 0.0 if converged else 0.05})
  storage.write_json(os.path.join(folder, 'config.json'), config)
  if robustness:
    results['robustness_file'] = 'robustness.json'
    storage.write_json(os.path.join(folder, 'robustness.json'),
                       robustness_result(clean, noise_drop, shift_drop, classes, encoding_drop))
  storage.write_json(os.path.join(folder, 'results.json'), results)


def write_setting(root, name, clean, seeds=3, pe=None, unconverged_seeds=(), **kwargs):
  """Seeds of one setting; seed i's Dice is `clean` + SEED_OFFSETS[seeds][i]."""
  pe_settings = {'use_pe': False} if pe is None else {'use_pe': True, 'pe_scale': pe}
  for seed, offset in enumerate(SEED_OFFSETS[seeds]):
    write_run(os.path.join(root, f'{name}_seed{seed}'), clean=clean + offset, seed=seed,
              converged=seed not in unconverged_seeds, **pe_settings, **kwargs)


def block(text, start):
  """The report's text from the line starting with `start` to the next bold title."""
  index = text.index(start)
  end = text.find('\n**', index + len(start))
  return text[index:] if end < 0 else text[index:end]
