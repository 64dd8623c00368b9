"""Prediction on the files of a dataset in nnU-Net's raw format reads them as the model's training
data were read: the dataset's own reader (orientation, channels in one file, .bmp / .tif)."""

import json
import os
import shutil

import nibabel
import numpy as np
import pytest
from PIL import Image

import pejax
from helpers import small_run_config
from pejax import errors, train
from pejax.inference import predict as predict_lib

SIDE, SLICES = 16, 8
# Stored with x running from the patient's right to left: NibabelIOWithReorient flips x.
FLIPPED_X = np.diag([-1.5, 1.5, 10.0, 1.0])


def dice(predicted, truth, value):
  both = np.sum((predicted == value) & (truth == value))
  return 2 * both / max(1, np.sum(predicted == value) + np.sum(truth == value))


def blob_volume(seed):
  """(x, y, z) image and label: two identical bright squares at low x (label 1) and high x
  (label 2), on noise; only their position tells them apart."""
  rng = np.random.default_rng(seed)
  image = rng.normal(100.0, 5.0, (SIDE, SIDE, SLICES))
  label = np.zeros((SIDE, SIDE, SLICES), np.uint8)
  row = int(rng.integers(3, SIDE - 7))
  for value, column in ((1, int(rng.integers(1, 4))), (2, int(rng.integers(SIDE - 7, SIDE - 4)))):
    image[column:column + 4, row:row + 4] += 100.0
    label[column:column + 4, row:row + 4] = value
  return image.astype(np.float32), label


def write_blob_dataset(root, cases=20, reader='NibabelIOWithReorient', affine=FLIPPED_X):
  folder = os.path.join(root, 'Dataset777_Blobs')
  for sub in ('imagesTr', 'labelsTr'):
    os.makedirs(os.path.join(folder, sub))
  for index in range(cases):
    image, label = blob_volume(index)
    nibabel.save(nibabel.Nifti1Image(image, affine),
                 os.path.join(folder, 'imagesTr', f'blob_{index:03d}_0000.nii.gz'))
    nibabel.save(nibabel.Nifti1Image(label, affine),
                 os.path.join(folder, 'labelsTr', f'blob_{index:03d}.nii.gz'))
  description = {'channel_names': {'0': 'MRI'}, 'labels': {'background': 0, 'low_x': 1, 'high_x': 2},
                 'numTraining': cases, 'file_ending': '.nii.gz'}
  if reader:
    description['overwrite_image_reader_writer'] = reader
  with open(os.path.join(folder, 'dataset.json'), 'w') as f:
    json.dump(description, f)
  return folder


@pytest.fixture(scope='module')
def reoriented_run(data_dir, tmp_path_factory):
  """A small CNN with PE trained on volumes read with NibabelIOWithReorient."""
  folder = write_blob_dataset(str(tmp_path_factory.mktemp('raw')))
  workdir = str(tmp_path_factory.mktemp('run'))
  config = small_run_config(data_dir, dataset='nnunet:' + folder, image_size=SIDE, num_epochs=12,
                            eval_every_epochs=12, num_image_panels=0, learning_rate=3e-3)
  results = train.train_and_evaluate(config, workdir)
  return folder, workdir, results


@pytest.mark.slow
def test_a_reoriented_dataset_is_predicted_in_its_files_orientation(reoriented_run, tmp_path):
  folder, workdir, results = reoriented_run
  assert results['test']['dice'] > 0.9, results['test']
  case = os.path.join(folder, 'imagesTr', 'blob_000_0000.nii.gz')
  rows = predict_lib.predict_files(pejax.load(workdir), [case], str(tmp_path))
  written = nibabel.load(str(tmp_path / rows[0]['mask']))
  np.testing.assert_array_equal(written.affine, FLIPPED_X)
  mask = np.asarray(written.dataobj)
  truth = np.asarray(nibabel.load(os.path.join(folder, 'labelsTr', 'blob_000.nii.gz')).dataobj)
  assert dice(mask, truth, 1) > 0.9 and dice(mask, truth, 2) > 0.9, (dice(mask, truth, 1),
                                                                      dice(mask, truth, 2))


# ------------------------------------------------------------------------- 2-D natural images


def square_image(seed, channels):
  """(H, W, C) uint8 and its (H, W) label: a square of class 1 at low x, one of class 2 at high
  x, both bright in every channel, on noise."""
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 60, (SIDE, SIDE, channels))
  label = np.zeros((SIDE, SIDE), np.uint8)
  row = int(rng.integers(2, SIDE - 6))
  for value, column in ((1, int(rng.integers(1, 3))), (2, int(rng.integers(SIDE - 6, SIDE - 4)))):
    image[row:row + 4, column:column + 4] += 180
    label[row:row + 4, column:column + 4] = value
  return image.astype(np.uint8), label


def write_natural_dataset(root, ending, channel_names, cases=10):
  """A 2-D dataset of `cases` images in `ending` files; several channel names are one colour
  file per case (`<case>_0000<ending>`), as nnU-Net's NaturalImage2DIO reads RGB."""
  folder = os.path.join(root, 'Dataset778_Squares')
  for sub in ('imagesTr', 'labelsTr'):
    os.makedirs(os.path.join(folder, sub))
  for index in range(cases):
    image, label = square_image(index, len(channel_names))
    Image.fromarray(image if len(channel_names) > 1 else image[..., 0]).save(
        os.path.join(folder, 'imagesTr', f'sq_{index:03d}_0000{ending}'))
    Image.fromarray(label).save(os.path.join(folder, 'labelsTr', f'sq_{index:03d}{ending}'))
  with open(os.path.join(folder, 'dataset.json'), 'w') as f:
    json.dump({'channel_names': {str(c): name for c, name in enumerate(channel_names)},
               'labels': {'background': 0, 'left': 1, 'right': 2}, 'numTraining': cases,
               'file_ending': ending}, f)
  return folder


def train_tiny(data_dir, folder, workdir):
  config = small_run_config(data_dir, dataset='nnunet:' + folder, image_size=SIDE, num_epochs=2,
                            eval_every_epochs=2, num_image_panels=0)
  train.train_and_evaluate(config, str(workdir))
  return pejax.load(str(workdir))


@pytest.mark.slow
def test_an_rgb_dataset_predicts_its_colour_files(data_dir, tmp_path):
  folder = write_natural_dataset(str(tmp_path / 'raw'), '.png', ('R', 'G', 'B'))
  model = train_tiny(data_dir, folder, tmp_path / 'run')
  assert model.image_channels == 3
  images = os.path.join(folder, 'imagesTr')
  rows = predict_lib.predict_files(model, [images], str(tmp_path / 'out'))
  assert len(rows) == 10 and all(row['status'] == 'ok' for row in rows), rows[0]
  mask = np.asarray(Image.open(tmp_path / 'out' / rows[0]['mask']))
  assert mask.shape == (SIDE, SIDE)
  # A gray file is refused with what the model takes, never advice to edit the training data.
  gray = str(tmp_path / 'gray.png')
  Image.fromarray(np.zeros((SIDE, SIDE), np.uint8)).save(gray)
  with pytest.raises(errors.InputFileError) as refused:
    predict_lib.predict_files(model, [gray], str(tmp_path / 'gray_out'))
  assert 'the model takes 3 channels (R, G, B): give one colour image' in str(refused.value)
  assert 'fix channel_names' not in str(refused.value)


@pytest.mark.slow
@pytest.mark.parametrize('ending', ['.bmp', '.tif'])
def test_bmp_and_tif_datasets_predict_a_folder_and_a_file_named_alone(data_dir, tmp_path, ending):
  folder = write_natural_dataset(str(tmp_path / 'raw'), ending, ('zscore',), cases=6)
  model = train_tiny(data_dir, folder, tmp_path / 'run')
  images = os.path.join(folder, 'imagesTr')
  rows = predict_lib.predict_files(model, [images], str(tmp_path / 'folder'))
  assert len(rows) == 6 and all(row['status'] == 'ok' for row in rows)
  named = os.path.join(images, f'sq_000_0000{ending}')
  rows = predict_lib.predict_files(model, [named], str(tmp_path / 'named'))
  assert rows[0]['status'] == 'ok' and rows[0]['input'] == named
  assert (tmp_path / 'named' / 'sq_000_0000_labels.png').exists()


@pytest.mark.slow
def test_a_checkpoint_written_before_the_reader_was_recorded(reoriented_run, tmp_path):
  """Its dataset.json names the reader where the training folder is still found; else it is
  refused, never read in a guessed orientation."""
  folder, workdir, _ = reoriented_run
  model = pejax.load(workdir)
  del model.nnunet_inputs['reader']
  assert model.nnunet_reader == 'NibabelIOWithReorient'  # from the run's results.json
  case = os.path.join(folder, 'imagesTr', 'blob_001_0000.nii.gz')
  predict_lib.predict_files(model, [case], str(tmp_path / 'found'))
  copied = pejax.load(shutil.copytree(os.path.join(workdir, 'checkpoints'), tmp_path / 'alone'))
  del copied.nnunet_inputs['reader']
  copied.config.dataset = 'nnunet:' + str(tmp_path / 'moved' / 'Dataset777_Blobs')
  with pytest.raises(errors.CheckpointError, match=r'before pejax recorded the nnU-Net reader .* '
                     r'no dataset.json of its training data is found at .*moved.* Put the dataset'):
    predict_lib.predict_files(copied, [case], str(tmp_path / 'refused'))
  assert not (tmp_path / 'refused' / 'blob_001_0000_labels.nii.gz').exists()
