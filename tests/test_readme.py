"""README.md's commands and examples, run as a user runs them: from a fresh copy of the
checkout, with the README's relative paths, one after the other (the quick run first, then what
the README does with its run folder). Training commands run at reduced size (2 epochs, 32×32).

Every command the README shows is listed in RUN or SKIP below, so a command added to the README
without being run here, or one this test runs that the README no longer shows, fails the test.
"""

import csv
import os
import re
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, 'README.md')
REDUCED = ['--config.num_epochs=2', '--config.image_size=32']

# README command -> what this test runs for it (placeholders filled in, sizes reduced).
RUN = {
    'python main.py --config=configs/unet_pe.py:quick':
        ['python', 'main.py', '--config=configs/unet_pe.py:quick', *REDUCED],
    'pytest -q': ['python', '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                  'tests/test_encoding.py'],
    'python main.py --config=... --workdir=W --mode=evaluate':
        ['python', 'main.py', '--config=configs/unet_pe.py:quick',
         '--workdir=runs/unet_pe_quick', '--mode=evaluate', *REDUCED],
    'python main.py --mode=probe --workdir=runs/unet_pe_quick':
        ['python', 'main.py', '--mode=probe', '--workdir=runs/unet_pe_quick'],
    'python main.py --mode=probe --workdir=runs/unet_pe_quick --config=configs/unet_pe.py '
    '--config.probe.steps=500 --config.probe.num_images=32':
        ['python', 'main.py', '--mode=probe', '--workdir=runs/unet_pe_quick',
         '--config=configs/unet_pe.py', '--config.probe.steps=50', '--config.probe.num_images=4'],
    'python main.py --mode=predict --workdir=runs/unet_pe_quick --input=scans/ '
    '--input=a.png,b.nii.gz --output=predicted/':
        ['python', 'main.py', '--mode=predict', '--workdir=runs/unet_pe_quick', '--input=scans/',
         '--input=a.png,b.nii.gz', '--output=predicted/'],
    'python -m pejax.reporting --workdir=W': ['python', '-m', 'pejax.reporting', '--workdir=runs'],
    'python main.py --mode=report --workdir=W': ['python', 'main.py', '--mode=report',
                                                 '--workdir=runs'],
    'python -m pejax.data --dataset=phantoms --image_size=128 --picture=docs/phantoms.png':
        ['python', '-m', 'pejax.data', '--dataset=phantoms', '--image_size=32',
         '--picture=docs/phantoms.png'],
    'pejax --config=unet_pe:quick': ['pejax', '--config=unet_pe:quick', *REDUCED],
    'python main.py --config=configs/unet_pe.py:quick --config.dataset=phantom_cardiac '
    '--config.padding=reflect --config.pe_scale=10 --config.num_train_examples=10 '
    '--config.seed=1 --workdir=runs/cardiac_reflect_pe10':
        ['python', 'main.py', '--config=configs/unet_pe.py:quick',
         '--config.dataset=phantom_cardiac', '--config.padding=reflect', '--config.pe_scale=10',
         '--config.num_train_examples=10', '--config.seed=1',
         '--workdir=runs/cardiac_reflect_pe10', *REDUCED],
    # "Your own data", in its order.
    'python -m data_builders.nnunet.phantom_export --kind=cardiac --output=nnUNet_raw':
        ['python', '-m', 'data_builders.nnunet.phantom_export', '--kind=cardiac',
         '--output=nnUNet_raw', '--image_size=32', '--cases=16,4,4'],
    'python -m pejax.data --dataset=nnunet:nnUNet_raw/Dataset902_PhantomCardiac --image_size=64':
        ['python', '-m', 'pejax.data', '--dataset=nnunet:nnUNet_raw/Dataset902_PhantomCardiac',
         '--image_size=32'],
    'python main.py --config=configs/unet_pe.py:quick '
    '--config.dataset=nnunet:nnUNet_raw/Dataset902_PhantomCardiac --workdir=runs/own_data':
        ['python', 'main.py', '--config=configs/unet_pe.py:quick',
         '--config.dataset=nnunet:nnUNet_raw/Dataset902_PhantomCardiac', '--workdir=runs/own_data',
         *REDUCED],
    'python main.py --mode=predict --workdir=runs/own_data '
    '--input=nnUNet_raw/Dataset902_PhantomCardiac/imagesTs --output=runs/own_data/predicted':
        ['python', 'main.py', '--mode=predict', '--workdir=runs/own_data',
         '--input=nnUNet_raw/Dataset902_PhantomCardiac/imagesTs',
         '--output=runs/own_data/predicted'],
}
OWN_DATA = [command for command in RUN if 'nnUNet_raw' in command]
# README command -> why this test does not run it.
SKIP = {
    'python3 -m venv .venv': 'the install: .ci/run and tests/test_install.py',
    '. .venv/bin/activate': 'the install',
    'pip install -e .': 'the install', "pip install -e '.[test]'": 'the install',
    "pip install -e '.[build]'": 'the install', 'pip install .': 'the install',
    'pip install -U "jax[cuda13]"': 'a GPU install',
    'python -m pejax.data --dataset=jsrt --image_size=256 '
    '--manual_dir=$HOME/tensorflow_datasets/downloads/manual': 'needs the real JSRT files',
    'python -m pejax.data --dataset=acdc --image_size=256 '
    '--manual_dir=$HOME/tensorflow_datasets/downloads/manual': 'needs the real ACDC files',
    'tfds build data_builders/jsrt --config=size_256 '
    '--manual_dir=$HOME/tensorflow_datasets/downloads/manual': 'needs the real JSRT files',
    'tfds build data_builders/acdc --config=size_256 '
    '--manual_dir=$HOME/tensorflow_datasets/downloads/manual': 'needs the real ACDC files',
    'python -m pejax.data --dataset=jsrt --image_size=256 --data_dir=/tmp/tfds '
    '--manual_dir=...': 'needs the real JSRT files',
    'python main.py --config=configs/unet_pe.py --config.dataset=jsrt': 'needs the real JSRT files',
    'python main.py --config=configs/paper/laptop_all.py --workdir=runs/laptop':
        'needs JSRT and ACDC',
    'python main.py --config=configs/paper/all.py --workdir=runs/paper': 'needs JSRT and ACDC',
    'python main.py --config=configs/paper/phantom_all.py --workdir=runs/phantom_paper':
        'six hours; every sweep config runs in miniature in tests/test_sweep.py',
    'pejax --config=paper/phantom_all --workdir=runs/phantom_paper':
        'six hours; the console command runs above',
    'python benchmarks/gpu_check.py --out=gpu_check_results': 'needs a GPU',
    'python main.py --mode=probe --workdir=runs/phantom_encodings':
        'needs the phantom encodings sweep (about 75 minutes); probing a sweep folder runs in '
        'tests/test_probe.py',
    'python main.py --config=configs/unet_pe.py:quick --config.probe.enabled=True':
        'training that probes each run: tests/test_probe.py',
    'python main.py --config=configs/paper/phantom_encodings.py --workdir=runs/phantom_encodings':
        'about 75 minutes; every sweep config runs in miniature in tests/test_sweep.py',
    'python main.py --config=configs/paper/laptop_encodings.py --workdir=runs/laptop_encodings':
        'needs JSRT and ACDC',
    'python benchmarks/schedule_study.py --workdir=runs/schedule_study':
        '94 minutes; its chains run in tests/test_train.py',
    'gcloud storage cp -r /tmp/tfds/* gs://BUCKET/tfds/': 'Google Cloud',
    'gcloud auth application-default login': 'Google Cloud',
    'tensorboard --logdir runs': 'a server; its event files are read in tests/test_cloud.py',
    'python main.py --config=configs/paper/laptop_table1_fig2.py:nnunet:nnUNet_raw/'
    'Dataset902_PhantomCardiac --workdir=runs/own_data_table1':
        '24 runs; a paper sweep on an nnU-Net dataset expands and validates in '
        'tests/test_nnunet.py',
}
COMMAND = re.compile(r'^(python3? |pytest|pejax |pip |tfds |tensorboard|gcloud |\. \.venv)')


def readme_commands(text: str) -> list[str]:
  """The commands README.md shows: the lines of its code blocks (continuations joined, `&&`
  chains split, comments dropped) and its inline code, that start with a command."""
  found = []
  for language, body in re.findall(r'```(\w*)\n(.*?)```', text, re.S):
    if language == 'python':
      continue
    for line in body.replace('\\\n', ' ').splitlines():
      for part in line.split('&&'):
        part = ' '.join(part.split('#')[0].split()) if ' #' in part else ' '.join(part.split())
        if COMMAND.match(part) and 'for i in' not in part:
          found.append(part)
  for span in re.findall(r'`([^`\n]+)`', text):
    if COMMAND.match(span) and span.strip() not in ('python main.py', 'pejax', 'python'):
      found.append(' '.join(span.split()))
  return list(dict.fromkeys(found))


def readme_python_example(text: str, needle: str) -> str:
  return next(body for body in re.findall(r'```python\n(.*?)```', text, re.S) if needle in body)


def test_every_readme_command_is_run_or_has_a_reason_not_to_be():
  commands = readme_commands(open(README).read())
  unlisted = [c for c in commands if c not in RUN and c not in SKIP]
  assert not unlisted, f'README commands neither run nor skipped here: {unlisted}'
  gone = [c for c in list(RUN) + list(SKIP) if c not in commands]
  assert not gone, f'listed here but no longer in the README: {gone}'


@pytest.fixture
def fresh_checkout(tmp_path):
  """The checkout's files (tracked, and new ones git does not ignore), without runs or data."""
  listed = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout.splitlines()
  folder = tmp_path / 'pejax'
  for name in listed:
    source = os.path.join(REPO, name)
    if os.path.isfile(source):
      os.makedirs(folder / os.path.dirname(name), exist_ok=True)
      shutil.copy2(source, folder / name)
  return folder


def run(folder, command, expect=0):
  executable = {'python': sys.executable,
                'pejax': os.path.join(os.path.dirname(sys.executable), 'pejax')}
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  output = subprocess.run([executable.get(command[0], command[0]), *command[1:]], cwd=folder,
                          capture_output=True, text=True, timeout=900, env=env)
  log = output.stdout + output.stderr
  assert output.returncode == expect, f'{" ".join(command)}: exit {output.returncode}\n{log[-4000:]}'
  return log


def write_scans(folder, size=48):
  """Inputs for README's predict command: scans/ with two PNGs, a.png and b.nii.gz."""
  rng = np.random.default_rng(0)
  picture = lambda: (rng.random((size, size)) * 255).astype(np.uint8)
  os.makedirs(folder / 'scans')
  for name in ('scans/one.png', 'scans/two.png', 'a.png'):
    Image.fromarray(picture()).save(folder / name)
  nib.save(nib.Nifti1Image(rng.random((size, size, 3)).astype(np.float32), np.eye(4)),
           str(folder / 'b.nii.gz'))


@pytest.mark.slow
def test_readme_commands_and_examples_run_from_a_fresh_checkout(fresh_checkout):
  folder = fresh_checkout
  text = open(README).read()
  by_readme = dict(RUN)

  log = run(folder, by_readme['python main.py --config=configs/unet_pe.py:quick'])
  assert 'unet_pe_quick: Dice on the phantom_chest test split' in log
  run_folder = folder / 'runs' / 'unet_pe_quick'
  assert {'config.json', 'results.json', 'checkpoints', 'history.json'} <= set(
      os.listdir(run_folder))

  # The Python example, as written, with images of another size than the model's.
  example = readme_python_example(text, 'pejax.load(')
  preamble = ('import numpy as np\n'
              'images01 = np.random.default_rng(0).random((2, 48, 48)).astype(np.float32)\n')
  check = ('\nassert result.labels.shape == (2, 48, 48), result.labels.shape\n'
           'assert result.probabilities.shape == (2, 48, 48, 4)\n'
           'print("classes", model.class_names)\n')
  log = run(folder, ['python', '-c', preamble + example + check])
  assert "classes ['background', 'right_lung', 'left_lung', 'heart']" in log

  write_scans(folder)
  log = run(folder, by_readme['python main.py --mode=predict --workdir=runs/unet_pe_quick '
                             '--input=scans/ --input=a.png,b.nii.gz --output=predicted/'])
  with open(folder / 'predicted' / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  assert sorted(os.path.relpath(os.path.join(folder, row['input']), folder) for row in rows) == [
      'a.png', 'b.nii.gz', 'scans/one.png', 'scans/two.png']
  assert {row['status'] for row in rows} == {'ok'}

  log = run(folder, by_readme['python main.py --config=... --workdir=W --mode=evaluate'])
  assert 'Restored the checkpoints of epoch 2.' in log

  for command in ('python -m pejax.reporting --workdir=W',
                  'python main.py --mode=report --workdir=W'):
    run(folder, by_readme[command])
    assert 'from 1 finished run' in (folder / 'runs' / 'report.md').read_text()

  log = run(folder, by_readme['pejax --config=unet_pe:quick'])
  assert 'is finished; not retraining it' in log

  run(folder, by_readme['python -m pejax.data --dataset=phantoms --image_size=128 '
                        '--picture=docs/phantoms.png'])
  assert Image.open(folder / 'docs' / 'phantoms.png').size[0] > 100

  cardiac = [c for c in RUN if 'phantom_cardiac' in c][0]
  log = run(folder, by_readme[cardiac])
  assert 'Dice on the phantom_cardiac test split' in log

  log = run(folder, by_readme['pytest -q'])
  assert ' passed' in log


@pytest.mark.slow
def test_readme_commands_on_ones_own_data_run_from_a_fresh_checkout(fresh_checkout):
  folder = fresh_checkout
  export, build, train, predict = (RUN[command] for command in OWN_DATA)
  run(folder, export)
  log = run(folder, build)
  assert 'Dataset902_PhantomCardiac: train 16 cases / 128 slices' in log
  log = run(folder, train)
  assert 'Dice on the nnunet:nnUNet_raw/Dataset902_PhantomCardiac test split (32 images)' in log
  run(folder, predict)
  with open(folder / 'runs' / 'own_data' / 'predicted' / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 and {row['status'] for row in rows} == {'ok'}
  assert {row['intensity'] for row in rows} == {'nnunet'}
