"""ACDC builder on fake files in the official NIfTI layout and the HDF5 copies' layouts.

100 tiny fake subjects: 1..70 as the official training folders (NIfTI + Info.cfg),
71..85 as HDF5 volumes and 86..100 as HDF5 slices, all with the same anatomy, so that
every format must decode to the same slices.
"""

import shutil

import h5py
import nibabel
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_builders import acdc
from data_builders.acdc import acdc_dataset_builder as acdc_lib
from pejax.data import datasets
from pejax.evaluation import per_case

CONFIG = 'size_64'
OUT = 64
HEIGHT, WIDTH = 10, 12  # in-plane size as displayed (NIfTI y, x): not square
NUM_SLICES = {'ED': 2, 'ES': 3}
FRAMES = {'ED': 1, 'ES': 12}
ZOOMS = (1.5, 1.25, 10.0)  # NIfTI voxel size (x, y, z) in mm
CLASS_NAMES = acdc_lib.CLASS_NAMES[1:]
INFO_CFG = 'ED: 1\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n'


def fake_volume(subject_number, phase, num_slices=None):
  """(image, label) as displayed, (Z, H, W): rows along NIfTI y, columns along x."""
  shape = (num_slices or NUM_SLICES[phase], HEIGHT, WIDTH)
  image = np.full(shape, 100, np.int16)
  label = np.zeros(shape, np.uint8)
  image[:, 0:2, 0:6] = 1000  # bright, wide and flat block at the top-left
  label[:, 0:2, 0:6] = 1
  image[:, 6:, 8:] = 500
  label[:, 6:, 8:] = 3
  label[0, 6:, 4:8] = 2  # myocardium on the first slice only
  image[:, 3:5, 0:3] = 100 + 8 * subject_number  # tells the subjects apart
  return image, label


def subject_marker(subject_number):
  """The marker's value after per-volume scaling (0.5/99.5 percentiles: 100 and 1000)."""
  return 8 * subject_number / 900


def save_nifti(path, display_volume):
  # NIfTI arrays are (x, y, z): the builder shows slice z as data[:, :, z].T.
  affine = np.diag(ZOOMS + (1.0,))
  nibabel.save(nibabel.Nifti1Image(np.transpose(display_volume, (2, 1, 0)), affine),
               str(path))


def save_h5(path, image, label):
  with h5py.File(path, 'w') as f:
    f.create_dataset('image', data=image.astype(np.float32))
    f.create_dataset('label', data=label)


def make_manual_dir(root):
  training = root / 'database' / 'training'
  h5_volumes = root / 'ACDC' / 'data'
  h5_slices = h5_volumes / 'slices'
  h5_slices.mkdir(parents=True)
  for number in range(1, 101):
    subject = f'patient{number:03d}'
    if number <= 70:  # the official download
      folder = training / subject
      folder.mkdir(parents=True)
      (folder / 'Info.cfg').write_text(INFO_CFG)
      (folder / 'MANDATORY_CITATION.md').write_text('Cite the ACDC paper.\n')
      for phase, frame in FRAMES.items():
        image, label = fake_volume(number, phase)
        save_nifti(folder / f'{subject}_frame{frame:02d}.nii.gz', image)
        save_nifti(folder / f'{subject}_frame{frame:02d}_gt.nii.gz', label)
      if number == 1:  # the 4-D cine volume is not used
        save_nifti(folder / f'{subject}_4d.nii.gz', np.zeros((3, 4, 5), np.int16))
    elif number <= 85:  # HDF5 volumes, ED/ES from frame numbers
      for phase, frame in FRAMES.items():
        save_h5(h5_volumes / f'{subject}_frame{frame:02d}.h5', *fake_volume(number, phase))
    else:  # HDF5 slices, numbered from 1
      for phase, frame in FRAMES.items():
        image, label = fake_volume(number, phase)
        for k in range(len(image)):
          save_h5(h5_slices / f'{subject}_frame{frame:02d}_slice_{k + 1}.h5',
                  image[k], label[k])
  # A third HDF5 frame: only Info.cfg tells ED and ES apart.
  save_h5(h5_volumes / 'patient071_frame05.h5', *fake_volume(71, 'ES', num_slices=4))
  (root / 'ACDC' / 'info' / 'patient071').mkdir(parents=True)
  (root / 'ACDC' / 'info' / 'patient071' / 'Info.cfg').write_text(INFO_CFG)
  # The challenge's test subjects are not part of the 100 training subjects.
  (root / 'database' / 'testing' / 'patient101').mkdir(parents=True)
  save_nifti(root / 'database' / 'testing' / 'patient101' / 'patient101_frame01.nii.gz',
             fake_volume(101, 'ED')[0])
  return root


def build(manual_dir, data_dir, config=CONFIG):
  builder = acdc.Builder(config=config, data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def as_str(value):
  return value.decode() if isinstance(value, bytes) else str(value)


def read_split(builder, split):
  """What the project's loader does: all records of a split, sorted by id."""
  source = builder.as_data_source(split)
  return sorted((source[i] for i in range(len(source))), key=lambda r: as_str(r['id']))


@pytest.fixture(scope='module')
def manual_dir(tmp_path_factory):
  return make_manual_dir(tmp_path_factory.mktemp('acdc_manual'))


@pytest.fixture(scope='module')
def built(manual_dir, tmp_path_factory):
  builder = build(manual_dir, tmp_path_factory.mktemp('acdc_data'))
  return builder, {s: read_split(builder, s) for s in ('train', 'validation', 'test')}


@pytest.fixture
def broken_copy(manual_dir, tmp_path):
  """A copy of the fake download that a test may damage."""
  return shutil.copytree(manual_dir, tmp_path / 'manual')


def test_splits_by_subject_fixed_and_stratified():
  splits = acdc_lib.SPLIT_SUBJECTS
  assert {k: len(v) for k, v in splits.items()} == {'train': 70, 'validation': 10, 'test': 20}
  subjects = [s for split in splits.values() for s in split]
  assert len(set(subjects)) == 100 and set(subjects) == set(acdc_lib.ALL_SUBJECTS)
  assert acdc_lib.split_recipe() == splits  # the literal lists follow the recipe
  for first in range(1, 101, 20):  # 14/2/4 of each group of 20
    group = {f'patient{i:03d}' for i in range(first, first + 20)}
    assert [len(group & set(splits[s])) for s in ('train', 'validation', 'test')] == [
        14, 2, 4]


def test_build_and_read_back_with_array_record(built):
  builder, records = built
  assert builder.is_prepared()
  for split, subjects in acdc_lib.SPLIT_SUBJECTS.items():
    split_records = records[split]
    assert builder.info.splits[split].num_examples == 5 * len(subjects)
    assert sorted({as_str(r['subject']) for r in split_records}) == list(subjects)
    expected_ids = sorted(f'{s}_{phase}_slice{k:02d}' for s in subjects
                          for phase in ('ED', 'ES') for k in range(NUM_SLICES[phase]))
    assert [as_str(r['id']) for r in split_records] == expected_ids
  record = records['train'][0]
  assert record['image'].shape == (OUT, OUT, 1) and record['image'].dtype == np.float32
  assert record['label'].shape == (OUT, OUT) and record['label'].dtype == np.uint8
  assert isinstance(record['slice_index'], (int, np.integer))
  # A new builder on the same data_dir, with the default (ArrayRecord) format.
  reopened = acdc.Builder(config=CONFIG, data_dir=builder.data_dir_root)
  assert reopened.is_prepared() and len(reopened.as_data_source('test')) == 100


def test_phases_and_slice_indices(built):
  _, records = built
  for record in (r for split in records.values() for r in split):
    subject, phase, index = (as_str(record['subject']), as_str(record['phase']),
                             int(record['slice_index']))
    assert as_str(record['id']) == f'{subject}_{phase}_slice{index:02d}'
    assert 0 <= index < NUM_SLICES[phase]  # patient071's 4-slice frame05 is unused


def test_decoded_values_and_orientation_in_every_format(built):
  _, records = built
  for record in (r for split in records.values() for r in split):
    image, label = record['image'][..., 0], record['label']
    number = int(as_str(record['subject'])[-3:])
    # The flat block (2 rows, 6 columns) stays flat: no transposition, no flip.
    assert np.all(label[:11, :31] == 1) and label[20, 5] == 0
    assert np.allclose(image[:9, :28], 1.0, atol=1e-5)
    assert np.all(label[40:, 44:] == 3)
    assert np.allclose(image[45:, 48:], 400 / 900, atol=1e-5)
    assert np.allclose(image[22:28, :13], subject_marker(number), atol=1e-5)
    assert image.min() >= 0.0 and image.max() <= 1.0
    has_myocardium = int(record['slice_index']) == 0
    assert (2 in label) == has_myocardium
    assert set(np.unique(label)) <= {0, 1, 2, 3}


def test_spacing_after_the_resize_from_the_nifti_header(built):
  _, records = built
  nifti_spacing = (ZOOMS[2], ZOOMS[1] * HEIGHT / OUT, ZOOMS[0] * WIDTH / OUT)
  for record in (r for split in records.values() for r in split):
    spacing = np.asarray(record['spacing'])
    assert spacing.shape == (3,) and spacing.dtype == np.float32
    if int(as_str(record['subject'])[-3:]) <= 70:  # official NIfTI files
      np.testing.assert_allclose(spacing, nifti_spacing, rtol=1e-6)
    else:  # HDF5 copies carry no voxel size
      assert np.all(np.isnan(spacing))


def test_per_volume_3d_metrics_of_the_test_split(built):
  """3-D Dice and HD95 per structure and volume, on the built fake NIfTI and HDF5 volumes, with
  answers known by construction and Dice checked against a direct NumPy computation."""
  builder, _ = built
  source = datasets._read_split(builder, 'test')
  predictions = source.labels.copy()
  predictions[source.slice_indices == 0] = np.where(
      predictions[source.slice_indices == 0] == 3, 0, predictions[source.slice_indices == 0])
  right_ventricle = source.labels == 1
  predictions[right_ventricle] = 0
  predictions[np.roll(right_ventricle, 1, axis=1)] = 1  # one row down
  rows = per_case.volume_rows(predictions, source, CLASS_NAMES)
  assert len(rows) == 2 * len(acdc_lib.TEST_SUBJECTS)
  row_mm = ZOOMS[1] * HEIGHT / OUT
  for row in rows:
    members = (source.subjects == row['subject']) & (source.phases == row['phase'])
    truth, predicted = source.labels[members] == 3, predictions[members] == 3
    direct = 2 * np.sum(truth & predicted) / (truth.sum() + predicted.sum())
    assert row['dice_left_ventricle'] == pytest.approx(direct, abs=1e-12)
    # The LV is gone from slice 0: 1 of 2 slices found at ED, 2 of 3 at ES.
    assert row['dice_left_ventricle'] == pytest.approx({'ED': 2 / 3, 'ES': 0.8}[row['phase']])
    assert row['num_slices'] == NUM_SLICES[row['phase']]
    from_nifti = int(row['subject'][-3:]) <= 70
    assert row['distance_unit'] == ('mm' if from_nifti else 'px')
    assert row['hd95_right_ventricle'] == pytest.approx(row_mm if from_nifti else 1.0)
    assert row['status_myocardium'] == 'ok' and row['dice_myocardium'] == 1.0
  summaries = per_case.phase_summaries(rows)
  assert set(summaries) == {'ED', 'ES'}
  assert summaries['ES']['dice_left_ventricle_mean'] == pytest.approx(0.8)


def test_scale_intensities_clips_outliers():
  volume = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
  volume[0, 0, 0] = 1e6  # one outlier must not squash the rest
  scaled = acdc_lib.scale_intensities(volume)
  low, high = np.percentile(volume, [0.5, 99.5])
  assert scaled.min() == 0.0 and scaled.max() == 1.0
  assert np.isclose(scaled[5, 0, 0], (500 - low) / (high - low))
  assert not acdc_lib.scale_intensities(np.full((2, 3, 3), 7.0)).any()


def test_missing_manual_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match='manual folder is missing or empty'):
    build(tmp_path / 'not_there', tmp_path / 'data')


def test_fewer_subjects_than_expected(broken_copy, tmp_path):
  shutil.rmtree(broken_copy / 'database' / 'training' / 'patient042')
  with pytest.raises(FileNotFoundError,
                     match=r'found 99 of the 100 .*patient042.*allow_missing_subjects'):
    build(broken_copy, tmp_path / 'data')


def test_explicit_option_builds_from_fewer_subjects(manual_dir, tmp_path):
  partial = tmp_path / 'manual'
  config = acdc_lib.AcdcConfig(name='size_64_partial', image_size=64,
                               allow_missing_subjects=True)
  for subject in ('patient001', 'patient018'):  # train, validation
    shutil.copytree(manual_dir / 'database' / 'training' / subject, partial / subject)
  with pytest.raises(FileNotFoundError, match='none of the test subjects'):
    build(partial, tmp_path / 'data_no_test', config=config)
  shutil.copytree(manual_dir / 'database' / 'training' / 'patient002',
                  partial / 'patient002')  # test
  builder = build(partial, tmp_path / 'data', config=config)
  assert {s: builder.info.splits[s].num_examples for s in ('train', 'validation', 'test')
          } == {'train': 5, 'validation': 5, 'test': 5}
  with pytest.raises(FileNotFoundError, match='found 3 of the 100'):
    build(partial, tmp_path / 'data_default')


def test_subject_without_info_cfg(broken_copy, tmp_path):
  (broken_copy / 'database' / 'training' / 'patient003' / 'Info.cfg').unlink()
  with pytest.raises(FileNotFoundError,
                     match=r'patient003 has no Info.cfg: expected .*patient003/Info.cfg'):
    build(broken_copy, tmp_path / 'data')


def test_subject_without_ground_truth(broken_copy, tmp_path):
  (broken_copy / 'database' / 'training' / 'patient004' / 'patient004_frame12_gt.nii.gz'
   ).unlink()
  with pytest.raises(FileNotFoundError,
                     match=r'patient004 has no ground truth for its ES frame 12.*'
                     r'patient004_frame12_gt\.nii\.gz'):
    build(broken_copy, tmp_path / 'data')


def test_hdf5_without_labels(broken_copy, tmp_path):
  path = broken_copy / 'ACDC' / 'data' / 'patient072_frame01.h5'
  with h5py.File(path, 'w') as f:
    f.create_dataset('image', data=np.zeros((2, HEIGHT, WIDTH), np.float32))
  with pytest.raises(ValueError, match=r'patient072_frame01\.h5 has datasets \[.image.\]'):
    build(broken_copy, tmp_path / 'data')


def test_unreadable_nifti(broken_copy, tmp_path):
  path = broken_copy / 'database' / 'training' / 'patient001' / 'patient001_frame01.nii.gz'
  path.write_bytes(path.read_bytes()[:40])
  with pytest.raises(ValueError,
                     match=r'cannot read .*patient001_frame01\.nii\.gz as a NIfTI volume'):
    build(broken_copy, tmp_path / 'data')


def test_label_outside_0_to_3(broken_copy, tmp_path):
  path = broken_copy / 'database' / 'training' / 'patient001' / 'patient001_frame12_gt.nii.gz'
  label = fake_volume(1, 'ES')[1]
  label[1, 5, 5] = 7
  save_nifti(path, label)
  with pytest.raises(ValueError, match=r'patient001_frame12_gt\.nii\.gz contains values 7'):
    build(broken_copy, tmp_path / 'data')


def test_failed_build_leaves_no_dataset(broken_copy, tmp_path):
  # Train and validation are written before the broken test subject is reached.
  broken = acdc_lib.TEST_SUBJECTS[-1]
  assert int(broken[-3:]) > 85  # an HDF5-slices subject
  next((broken_copy / 'ACDC' / 'data' / 'slices').glob(f'{broken}_frame12_slice_2.h5')
       ).write_bytes(b'not hdf5')
  data_dir = tmp_path / 'data'
  with pytest.raises(ValueError, match=rf'cannot read .*{broken}_frame12_slice_2\.h5'):
    build(broken_copy, data_dir)
  builder = acdc.Builder(config=CONFIG, data_dir=data_dir, file_format='array_record')
  assert not builder.is_prepared()
  assert not builder.data_path.exists()
