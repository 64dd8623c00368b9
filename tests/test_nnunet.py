"""The paper's experiments on a dataset in nnU-Net's raw format: copies of the phantoms written
as nnU-Net folders (2-D PNG cases, 3-D NIfTI volumes, several channels, other class counts) are
built, trained, evaluated, predicted and reported like the native datasets."""

import json
import os

import numpy as np
import pytest
from ml_collections.config_flags import config_flags

from data_builders.nnunet import phantom_export
from helpers import IMAGE_SIZE, small_run_config
from pejax import configuration, errors, sweep, train
from pejax.data import datasets
from pejax.models import predictor, spec
from pejax.reporting import report

# A copy and its native phantom differ in one thing only where a channel name selects another
# normalization than the native builder's (the chest copy: per-image z-score, the native chest
# phantom: the training split's mean and std); training is otherwise the same computation.
CHEST_DICE_TOLERANCE = 0.03
# The cardiac copy is normalized as its native phantom (per image): the same inputs up to float
# rounding of the per-volume [0, 1] window, which per-image z-scoring undoes.
CARDIAC_DICE_TOLERANCE = 0.005


def _tiny(data_dir, dataset, **overrides):
  return small_run_config(data_dir, dataset=dataset, **overrides)


def _nnunet(folder):
  return 'nnunet:' + folder


@pytest.fixture(scope='module')
def chest_copy(tmp_path_factory):
  """The 32×32 chest phantom, every split, as 2-D 16-bit PNG cases (channel 'zscore')."""
  return phantom_export.write_phantom_dataset(
      'chest', str(tmp_path_factory.mktemp('raw')), image_size=IMAGE_SIZE)


def test_a_chest_copy_reproduces_the_native_phantom(data_dir, chest_copy, tmp_path):
  native = train.train_and_evaluate(_tiny(data_dir, 'phantom_chest'), str(tmp_path / 'native'))
  copy = train.train_and_evaluate(_tiny(data_dir, _nnunet(chest_copy)), str(tmp_path / 'copy'))
  # The same labels in the same splits: the same averaged mask, to the last digit.
  assert copy['test_averaged_mask'] == pytest.approx(native['test_averaged_mask'], abs=1e-9)
  assert copy['num_train_examples'] == native['num_train_examples'] == 156
  assert abs(copy['test']['dice'] - native['test']['dice']) < CHEST_DICE_TOLERANCE
  assert copy['class_names'] == native['class_names']
  assert copy['dataset_source'] == os.path.abspath(chest_copy)
  assert copy['normalization']['kind'] == 'channels'


def test_a_cardiac_copy_of_nifti_volumes_reproduces_the_native_phantom(data_dir, tmp_path):
  folder = phantom_export.write_phantom_dataset('cardiac', str(tmp_path / 'raw'),
                                                image_size=IMAGE_SIZE)
  config = dict(image_size=IMAGE_SIZE, num_epochs=2)
  native = train.train_and_evaluate(_tiny(data_dir, 'phantom_cardiac', **config),
                                    str(tmp_path / 'native'))
  copy = train.train_and_evaluate(_tiny(data_dir, _nnunet(folder), **config),
                                  str(tmp_path / 'copy'))
  assert copy['test_averaged_mask'] == pytest.approx(native['test_averaged_mask'], abs=1e-9)
  assert abs(copy['test']['dice'] - native['test']['dice']) < CARDIAC_DICE_TOLERANCE
  # Cases are volumes with a spacing in mm: per-volume rows as ACDC's.
  volumes = open(tmp_path / 'copy' / 'test_volumes.csv').read().splitlines()
  assert len(volumes) == 1 + 384 // 8
  assert 'mm' in volumes[1]


def test_two_channels_and_two_classes_train_predict_and_report(data_dir, tmp_path):
  folder = phantom_export.write_phantom_dataset(
      'chest', str(tmp_path / 'raw'), image_size=IMAGE_SIZE, channels=2, foreground_classes=2,
      split_sizes={'train': 24, 'validation': 6, 'test': 8})
  names = [name for name in json.load(open(os.path.join(folder, 'dataset.json')))['labels']]
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(_tiny(data_dir, _nnunet(folder), num_epochs=2), workdir)
  assert results['class_names'] == names[1:] and len(names) == 3
  assert {f'dice_{name}' for name in names[1:]} <= set(results['test'])
  # The small CNN's first convolution sees 2 image channels and 2 PE channels: 9 · width
  # weights more than with one image channel.
  assert results['num_parameters'] == _parameters(image_channels=2, classes=3)
  assert _parameters(image_channels=2, classes=3) - _parameters(image_channels=1, classes=3) == 9 * 8

  import pejax
  from pejax.inference import predict
  model = pejax.load(workdir)
  assert model.image_channels == 2
  case = sorted(name for name in os.listdir(os.path.join(folder, 'imagesTs'))
                if name.endswith('_0000.png'))[0]
  output = str(tmp_path / 'predicted')
  rows = predict.predict_files(model, [os.path.join(folder, 'imagesTs')], output)
  assert len(rows) == 8 and all(row['status'] == 'ok' for row in rows)  # channel 1 read with 0
  assert rows[0]['intensity'] == 'nnunet' and case in rows[0]['input']

  text = open(report.write_report(workdir)).read()
  title = os.path.basename(folder)
  assert f'{title}: a dataset in nnU-Net\'s raw format, from {os.path.abspath(folder)}' in text
  assert '| paper' not in text
  for name in names[1:]:
    assert name in text


def _parameters(*, image_channels, classes):
  import jax
  config = _tiny(None, 'phantom_chest')
  _, init_state = spec.model_spec(config, classes, image_channels)
  return spec.count_parameters(jax.eval_shape(init_state, 0).params)


def test_six_classes_in_3d_volumes_train_end_to_end(data_dir, tmp_path):
  folder = phantom_export.write_phantom_dataset(
      'cardiac', str(tmp_path / 'raw'), image_size=IMAGE_SIZE, foreground_classes=6,
      split_sizes={'train': 64, 'validation': 16, 'test': 16})
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(_tiny(data_dir, _nnunet(folder), num_epochs=1), workdir)
  names = list(json.load(open(os.path.join(folder, 'dataset.json')))['labels'])[1:]
  assert results['class_names'] == names and len(names) == 6
  assert {f'dice_{name}' for name in names} <= set(results['test'])

  # A test volume predicted from its file: a NIfTI mask of the volume's shape.
  import nibabel
  import pejax
  from pejax.inference import predict
  case = sorted(os.listdir(os.path.join(folder, 'imagesTs')))[0]
  rows = predict.predict_files(pejax.load(workdir), [os.path.join(folder, 'imagesTs', case)],
                               str(tmp_path / 'predicted'))
  mask = nibabel.load(str(tmp_path / 'predicted' / rows[0]['mask']))
  assert mask.shape == nibabel.load(os.path.join(folder, 'imagesTs', case)).shape
  assert rows[0]['slices'] == 8 and f'ml_{names[0]}' in rows[0]

  text = open(report.write_report(workdir)).read()
  assert all(f'Dice {name}' in text for name in names)


def test_the_normalizer_of_channels_applies_each_channels_rule():
  images = np.random.default_rng(0).uniform(size=(2, 8, 8, 2)).astype(np.float32)
  normalizer = predictor.Normalizer('channels', channels=[['fixed', 0.5, 0.25],
                                                          ['per_image', 0.0, 1.0]])
  out = np.asarray(normalizer(images))
  np.testing.assert_allclose(out[..., 0], (images[..., 0] - 0.5) / 0.25, rtol=1e-6)
  second = images[..., 1]
  expected = (second - second.mean(axis=(1, 2), keepdims=True)) / second.std(axis=(1, 2),
                                                                              keepdims=True)
  np.testing.assert_allclose(out[..., 1], expected, rtol=1e-5, atol=1e-5)
  assert hash(normalizer) == hash(predictor.Normalizer(**json.loads(json.dumps(
      {'kind': 'channels', 'mean': 0.0, 'std': 1.0, 'channels': normalizer.channels}))))


def test_a_paper_sweep_runs_on_a_dataset_of_ones_own_by_one_argument(chest_copy):
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs',
                      'paper', 'phantom_table1_fig2.py')
  config = config_flags._ConfigFileParser(name='config').parse(f'{path}:{_nnunet(chest_copy)}')
  runs = sweep.expand(config)
  assert len(runs) == 12
  assert {run.dataset for _, run in runs} == {_nnunet(chest_copy)}
  assert all('nnunet' not in name and '/' not in name for name, _ in runs)
  for _, run in runs:
    configuration.validate_config(run)


@pytest.mark.parametrize('dataset, message', [
    ('nnunet:', 'config.dataset'),
    ('nnunet:Dataset999_Missing', 'nnUNet_raw'),
    ('nnunet:/no/such/Dataset001_X', '/no/such/Dataset001_X'),
])
def test_a_dataset_setting_that_names_no_folder_is_refused(dataset, message, monkeypatch):
  monkeypatch.delenv('nnUNet_raw', raising=False)
  config = configuration.base_config()
  config.dataset = dataset
  with pytest.raises(errors.SettingError, match=message):
    configuration.validate_config(config)
    datasets.dataset_spec(dataset)
