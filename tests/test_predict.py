"""A trained model on one's own files: `pejax.load` and `--mode=predict` give the labels of the
evaluation, from the run folder or a checkpoint copied alone, for PNG, NIfTI and DICOM."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import nibabel
import numpy as np
import pytest
from PIL import Image

import pejax
from pejax import cli, configuration, errors, train
from pejax.data import datasets
from pejax.evaluation import surface_distance
from pejax.inference import predict as predict_lib
from pejax.runs import run_files

from helpers import BUCKET, damage, names_under

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32
CLASS_NAMES = ['right_lung', 'left_lung', 'heart']
# Test images a chest model is asked for: a few, as a user would export them.
COUNT = 6


@pytest.fixture(scope='module')
def run(data_dir, tmp_path_factory):
  """A small trained U-Net with PE (2 epochs at 32²) and the chest phantom's test split."""
  config = configuration.quick(configuration.base_config())
  config.update(data_dir=data_dir, image_size=SIZE, width=4, num_epochs=2, run_robustness=False,
                num_image_panels=0)
  workdir = str(tmp_path_factory.mktemp('run'))
  results = train.train_and_evaluate(config, workdir)
  test = datasets.load_split('phantom_chest', 'test', image_size=SIZE, data_dir=data_dir)
  with open(os.path.join(workdir, run_files.TEST_CASES_CSV)) as f:
    cases = {row['id']: row for row in csv.DictReader(f)}
  return workdir, results, test, cases


def image_dice(labels, truth):
  return surface_distance.case_metrics(labels, truth, 4, CLASS_NAMES)['dice']


def check_evaluation_labels(labels, run, count):
  """Per-image Dice of `labels` equals the Dice the run's own evaluation wrote per image."""
  _, _, test, cases = run
  for index in range(count):
    expected = float(cases[test.ids[index]]['dice'])
    assert image_dice(labels[index], test.labels[index]) == pytest.approx(expected, abs=1e-12)


@pytest.mark.slow
def test_load_predicts_the_evaluation_labels_for_any_batch(run):
  workdir, results, test, _ = run
  model = pejax.load(workdir)
  assert model.class_names == ('background', *CLASS_NAMES) and model.image_size == SIZE
  assert model.normalizer.mean == results['normalization']['mean']
  prediction = model(test.images)
  assert prediction.labels.shape == (len(test.ids), SIZE, SIZE)
  np.testing.assert_allclose(prediction.probabilities.sum(axis=-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(prediction.labels, prediction.probabilities.argmax(axis=-1))
  check_evaluation_labels(prediction.labels, run, len(test.ids))
  # Batches of any size, and one (H, W) image, give the same labels.
  np.testing.assert_array_equal(model(test.images[:5], batch_size=2).labels,
                                prediction.labels[:5])
  np.testing.assert_array_equal(model(test.images[3, ..., 0]).labels[0], prediction.labels[3])
  with pytest.raises(ValueError, match=r'intensities in \[0, 1\] \(these run from'):
    model(test.images * 255)  # raw values are refused, not clipped into nonsense
  summary = surface_distance.summarize(
      surface_distance.case_metrics(p, t, 4, CLASS_NAMES)
      for p, t in zip(prediction.labels, test.labels))
  assert summary['dice_mean'] == pytest.approx(results['test']['dice'], abs=1e-6)


@pytest.mark.slow
def test_other_sizes_are_resized_to_the_model_and_back(run):
  workdir, _, test, _ = run
  model = pejax.load(workdir)
  at_model_size = model(test.images[:4]).labels
  larger = np.repeat(np.repeat(test.images[:4, ..., 0], 3, axis=1), 2, axis=2)  # 96 x 64
  prediction = model(larger)
  assert prediction.labels.shape == (4, 3 * SIZE, 2 * SIZE)
  assert prediction.probabilities.shape == (4, 3 * SIZE, 2 * SIZE, 4)
  agreement = np.mean(prediction.labels[:, 1::3, ::2] == at_model_size)
  assert agreement > 0.95, agreement


@pytest.mark.slow
def test_a_checkpoint_copied_alone_loads_and_predicts(run, tmp_path):
  workdir, _, test, _ = run
  expected = pejax.load(workdir)(test.images).labels
  latest = max(os.listdir(os.path.join(workdir, 'checkpoints')), key=int)
  step_copy = shutil.copytree(os.path.join(workdir, 'checkpoints', latest), tmp_path / 'step')
  folder_copy = shutil.copytree(os.path.join(workdir, 'checkpoints'), tmp_path / 'ckpts')
  for copy in (step_copy, folder_copy):
    model = pejax.load(str(copy))
    assert model.epoch == 2
    np.testing.assert_array_equal(model(test.images).labels, expected)
  with pytest.raises(errors.RunNotFoundError, match='no pejax checkpoint'):
    pejax.load(str(tmp_path))


@pytest.mark.slow
def test_a_checkpoint_that_does_not_describe_its_model_is_refused(run, tmp_path):
  """Orbax's own checkpoints carry no description of the model: pejax.load names the step and
  says why, rather than guessing the settings from files around it."""
  workdir = run[0]
  copy = shutil.copytree(workdir, tmp_path / 'undescribed')
  latest = max(os.listdir(copy / 'checkpoints'), key=int)
  metadata_file = copy / 'checkpoints' / latest / '_CHECKPOINT_METADATA'
  metadata = json.loads(metadata_file.read_text())
  metadata.pop('custom_metadata')
  metadata_file.write_text(json.dumps(metadata))
  with pytest.raises(errors.CheckpointError, match=rf'checkpoints/{latest}: the checkpoint does not '
                     r'describe its model .* Load a checkpoint of a pejax run\.'):
    pejax.load(str(copy))


@pytest.mark.slow
def test_loading_a_model_loads_no_tensorflow_tfds_or_tensorboard(run):
  """`import pejax; pejax.load(...)` in a fresh interpreter, as a user's script does."""
  workdir = run[0]
  code = ('import sys, numpy as np, pejax\n'
          f'model = pejax.load({str(workdir)!r})\n'
          'model(np.zeros((1, 32, 32), np.float32))\n'
          'print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=300, check=True)
  loaded = set(done.stdout.split())
  assert 'jax' in loaded and 'orbax' in loaded
  assert not loaded & {'tensorflow', 'tensorflow_datasets', 'tensorboard', 'clu', 'matplotlib'}


def save_png(path, image01, bits):
  scale = 2 ** bits - 1
  values = np.round(image01 * scale).astype(np.uint16 if bits == 16 else np.uint8)
  Image.fromarray(values).save(path)


@pytest.mark.slow
def test_predict_mode_round_trip_png_and_nifti(run, tmp_path):
  workdir, _, test, _ = run
  inputs = tmp_path / 'scans'
  inputs.mkdir()
  images = test.images[:COUNT, ..., 0]
  for index in range(COUNT):
    save_png(inputs / f'{test.ids[index]}.png', images[index], 16)
  # The same images as one volume: slice z is data[:, :, z].T.
  affine = np.diag([0.7, 0.8, 5.0, 1.0])
  volume = nibabel.Nifti1Image(np.transpose(images, (2, 1, 0)), affine)
  volume.header['descrip'] = b'scanner X'
  nibabel.save(volume, str(inputs / 'volume.nii.gz'))
  (inputs / 'notes.txt').write_text('not an image')  # in a folder: skipped, not an error
  output = tmp_path / 'out'
  rows = cli.predict(workdir, [str(inputs)], str(output), intensity='as_is')
  assert len(rows) == COUNT + 1 and all(row['status'] == 'ok' for row in rows)

  png_labels = np.stack([np.asarray(Image.open(output / f'{test.ids[i]}_labels.png'))
                         for i in range(COUNT)])
  assert Image.open(output / f'{test.ids[0]}_labels.png').mode == 'P'
  check_evaluation_labels(png_labels, run, COUNT)
  written = nibabel.load(str(output / 'volume_labels.nii.gz'))
  np.testing.assert_array_equal(written.affine, nibabel.load(str(inputs / 'volume.nii.gz')).affine)
  assert written.shape == volume.shape and written.get_data_dtype() == np.uint8
  assert written.header['descrip'].tobytes().startswith(b'pejax labels')
  nifti_labels = np.transpose(np.asarray(written.dataobj), (2, 1, 0))
  check_evaluation_labels(nifti_labels, run, COUNT)
  assert (output / 'volume_overlay.png').exists()
  with open(output / 'predictions.csv') as f:
    listed = {os.path.basename(row['input']): row for row in csv.DictReader(f)}
  assert listed['volume.nii.gz']['slices'] == str(COUNT)
  assert listed['volume.nii.gz']['spacing_mm'] == '5 x 0.8 x 0.7'
  assert float(listed['volume.nii.gz']['ml_heart']) == pytest.approx(
      np.sum(nifti_labels == 3) * 0.7 * 0.8 * 5.0 / 1000)
  assert listed[f'{test.ids[0]}.png']['intensity'] == 'as_is'


@pytest.mark.slow
def test_predict_command_names_a_bad_file_and_writes_the_others(run, tmp_path):
  workdir, _, test, _ = run
  save_png(tmp_path / 'good.png', test.images[0, ..., 0], 8)
  (tmp_path / 'broken.nii.gz').write_bytes(b'not a nifti')
  output = tmp_path / 'out'
  command = [sys.executable, 'main.py', '--mode=predict', f'--workdir={workdir}',
             f'--input={tmp_path / "broken.nii.gz"},{tmp_path / "good.png"}',
             f'--input={tmp_path / "missing.dcm"}', f'--output={output}']
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 1
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith('pejax: error: 2 of 3 inputs could not be predicted'), last
  assert 'broken.nii.gz: cannot be read as nifti' in last and 'missing.dcm: no such file' in last
  assert (output / 'good_labels.png').exists() and (output / 'good_overlay.png').exists()
  with open(output / 'predictions.csv') as f:
    statuses = [row['status'] for row in csv.DictReader(f)]
  assert statuses == ['error', 'ok', 'error']


@pytest.fixture(scope='module')
def model(run):
  return pejax.load(run[0])


def read_rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
def test_files_predict_cannot_take_are_named_and_the_others_written(run, model, tmp_path):
  _, _, test, _ = run
  inputs = tmp_path / 'scans'
  inputs.mkdir()
  save_png(inputs / 'good.png', test.images[0, ..., 0], 8)
  volume = np.transpose(test.images[:3, ..., 0], (2, 1, 0)).copy()
  volume[4, 5, 1] = np.nan  # one bad voxel
  nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), str(inputs / 'holes.nii.gz'))
  Image.fromarray(np.zeros((40, 1), np.uint8)).save(inputs / 'line.png')
  nibabel.save(nibabel.Nifti1Image(np.zeros((SIZE, SIZE, 2, 3), np.float32), np.eye(4)),
               str(inputs / 'cine.nii.gz'))
  output = tmp_path / 'out'
  with pytest.raises(errors.InputFileError, match=r'^3 of 4 inputs could not be predicted') as raised:
    predict_lib.predict_files(model, [str(inputs)], str(output))
  message = str(raised.value)
  assert 'holes.nii.gz: 1 of 3,072 values are not finite' in message
  assert 'line.png: 1 x 40 pixels' in message and 'cine.nii.gz: a NIfTI of shape' in message
  rows = {os.path.basename(row['input']): row for row in read_rows(output / 'predictions.csv')}
  assert {name: row['status'] for name, row in rows.items()} == {
      'cine.nii.gz': 'error', 'good.png': 'ok', 'holes.nii.gz': 'error', 'line.png': 'error'}
  assert rows['holes.nii.gz']['error'].endswith('predict it again.')
  assert sorted(os.listdir(output)) == ['good_labels.png', 'good_overlay.png', 'predictions.csv']
  with pytest.raises(ValueError, match=r'1 of 3,072 image values are not finite'):
    model(volume.T)


@pytest.mark.slow
def test_predicting_again_into_an_output_folder_inside_the_inputs_predicts_the_inputs(run, model,
                                                                                     tmp_path):
  _, _, test, _ = run
  inputs = tmp_path / 'scans'
  inputs.mkdir()
  for index in range(2):
    save_png(inputs / f'{test.ids[index]}.png', test.images[index, ..., 0], 8)
  expected = [str(inputs / f'{test.ids[index]}.png') for index in range(2)]
  for output in (inputs / 'predicted', inputs / 'predicted', inputs, inputs):
    predict_lib.predict_files(model, [str(inputs)], str(output))
    assert [row['input'] for row in read_rows(output / 'predictions.csv')] == expected
  assert len(os.listdir(inputs / 'predicted')) == 5


@pytest.mark.slow
def test_an_output_that_is_a_file_or_not_a_folder_pejax_writes_is_refused_before_predicting(
    model, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  save_png(tmp_path / 'a.png', np.zeros((SIZE, SIZE)), 8)
  (tmp_path / 'taken.csv').write_text('a file\n')
  with pytest.raises(errors.SettingError, match=r'--output=.*taken\.csv is a file, not a folder'):
    predict_lib.predict_files(model, [str(tmp_path / 'a.png')], str(tmp_path / 'taken.csv'))
  for output, scheme in (('s3://bucket/out', 's3'), ('file:///tmp/out', 'file')):
    with pytest.raises(errors.SettingError, match=rf"--output='{output}' is not allowed: pejax reads "
                       rf'and writes local folders and gs:// buckets only, not {scheme}://'):
      predict_lib.predict_files(model, [str(tmp_path / 'a.png')], output)
  assert sorted(os.listdir(tmp_path)) == ['a.png', 'taken.csv']


@pytest.mark.slow
def test_predict_writes_into_a_bucket(run, model, bucket, in_process,
                                      tmp_path, monkeypatch):
  _, _, test, _ = run
  monkeypatch.chdir(tmp_path)
  save_png(tmp_path / 'a.png', test.images[0, ..., 0], 8)
  rows = predict_lib.predict_files(model, [str(tmp_path / 'a.png')], f'gs://{BUCKET}/predicted')
  assert rows[0]['status'] == 'ok'
  assert names_under(bucket, 'predicted/') == ['a_labels.png', 'a_overlay.png', 'predictions.csv']
  listed = bucket.blob('predicted/predictions.csv').download_as_text().splitlines()
  assert len(listed) == 2 and listed[1].startswith(f'{tmp_path / "a.png"},ok,png,')
  assert os.listdir(tmp_path) == ['a.png']  # no local folder named gs:


@pytest.mark.slow
def test_a_damaged_checkpoint_is_named_with_its_cause(run, tmp_path):
  workdir = run[0]
  latest = max(os.listdir(os.path.join(workdir, 'checkpoints')), key=int)
  for damaged, message in [
      ('default', r'{step}: the checkpoint is incomplete \(its folder default/ is missing\)'),
      ('arrays', r'{step}: the checkpoint cannot be restored \(ValueError: .*\)'),
      ('metadata', r'{step}: the checkpoint cannot be restored: its _CHECKPOINT_METADATA is not '
                   r'JSON \(JSONDecodeError: .*\)')]:
    copy = shutil.copytree(workdir, tmp_path / damaged)
    step = copy / 'checkpoints' / latest
    if damaged == 'default':
      shutil.rmtree(step / 'default')
    elif damaged == 'arrays':
      damage(step / 'default')
    else:
      (step / '_CHECKPOINT_METADATA').write_text('{"item_handlers": {"default": "orb')
    pattern = message.format(step=re.escape(str(step)))
    for path in (copy, step):
      with pytest.raises(errors.CheckpointError, match=pattern + r'\. Restore it from a copy'):
        pejax.load(str(path))


@pytest.mark.slow
def test_load_warns_about_nothing(run, caplog):
  caplog.set_level('WARNING')
  pejax.load(run[0])
  assert not [record for record in caplog.records if record.levelname == 'WARNING'], caplog.text


@pytest.mark.slow
def test_a_folder_follows_links_to_folders_once_and_a_link_cycle_ends(run, model, tmp_path):
  _, _, test, _ = run
  inputs, elsewhere = tmp_path / 'scans', tmp_path / 'elsewhere'
  (inputs / 'own').mkdir(parents=True)
  elsewhere.mkdir()
  save_png(inputs / 'own' / 'a.png', test.images[0, ..., 0], 8)
  save_png(elsewhere / 'b.png', test.images[1, ..., 0], 8)
  (inputs / 'linked').symlink_to(elsewhere, target_is_directory=True)
  (inputs / 'own' / 'back_up').symlink_to(inputs, target_is_directory=True)  # a cycle
  (elsewhere / 'again').symlink_to(elsewhere, target_is_directory=True)  # another
  rows = predict_lib.predict_files(model, [str(inputs)], str(tmp_path / 'out'))
  assert [row['input'] for row in rows] == [str(inputs / 'linked' / 'b.png'),
                                            str(inputs / 'own' / 'a.png')]
  assert all(row['status'] == 'ok' for row in rows)
