"""Datasets in nnU-Net's raw format: reading and checking the folder (`data_builders.nnunet.source`,
`planning`), the TFDS builder and the phantom export, on small real files (NIfTI written with
nibabel, PNG with Pillow) built into a temporary TFDS folder. No training.

Each bad input is refused with one SourceFileError / SettingError naming the file or setting,
before TFDS writes anything: the data_dir then holds no prepared dataset.
"""

import json
import os
import pathlib
import shutil

import nibabel
import numpy as np
import pytest
from PIL import Image

from data_builders.conventions import resize_image
from data_builders.nnunet import nnunet_dataset_builder as builder_lib
from data_builders.nnunet import phantom_export, planning, source
from data_builders.phantoms import phantom_generator, phantoms_dataset_builder as phantoms
from pejax.errors import SettingError, SourceFileError

SHAPE = (3, 10, 12)  # (z, y, x) of the small test volumes
SPACING = (6.0, 1.25, 1.5)  # (z, y, x) mm
SIZE = 16


# ------------------------------------------------------------------------------- writing files


def save_nifti(path, volume, spacing=SPACING, dtype=np.float32, origin=(0.0, 0.0, 0.0)):
  """A (z, y, x) volume as NIfTI (x, y, z) with voxel size spacing (z, y, x)."""
  affine = np.diag(list(spacing[::-1]) + [1.0])
  affine[:3, 3] = origin
  os.makedirs(os.path.dirname(path), exist_ok=True)
  nibabel.save(nibabel.Nifti1Image(np.transpose(volume, (2, 1, 0)).astype(dtype), affine), path)


def save_png(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def write_json(path, value):
  with open(path, 'w') as file:
    json.dump(value, file)


def fake_label(shape, seed):
  """Blocks of classes 1 and 2 at a place that depends on the seed."""
  label = np.zeros(shape, np.uint8)
  shift = seed % 3
  label[..., 2 + shift:6 + shift, 1:5] = 1
  label[..., 5:9, 6 + shift:10] = 2
  return label


def volume_dataset(root, num_cases=5, channel_names=('MRI', 'T2'), name='Dataset001_Test',
                   shape=SHAPE, spacing=SPACING, channel_values=None):
  """A 3-D dataset of `num_cases` training cases; channel_values(case, channel) -> volume."""
  folder = os.path.join(root, name)
  rng = np.random.default_rng(len(channel_names))
  for index in range(num_cases):
    case = f'case_{index:03d}'
    for c, channel_name in enumerate(channel_names):
      volume = (channel_values(index, channel_name) if channel_values
                else rng.normal(100 * (c + 1), 20, shape))
      save_nifti(f'{folder}/imagesTr/{case}_{c:04d}.nii.gz', volume, spacing)
    save_nifti(f'{folder}/labelsTr/{case}.nii.gz', fake_label(shape, index), spacing, np.uint8)
  write_json(f'{folder}/dataset.json', {
      'channel_names': {str(c): n for c, n in enumerate(channel_names)},
      'labels': {'background': 0, 'first': 1, 'second': 2},
      'numTraining': num_cases, 'file_ending': '.nii.gz'})
  return folder


def png_dataset(root, num_cases=4, name='Dataset002_Flat'):
  folder = os.path.join(root, name)
  rng = np.random.default_rng(0)
  for index in range(num_cases):
    save_png(f'{folder}/imagesTr/img_{index}_0000.png',
             rng.integers(0, 255, (12, 14), dtype=np.uint8))
    save_png(f'{folder}/labelsTr/img_{index}.png', fake_label((12, 14), index))
  write_json(f'{folder}/dataset.json', {
      'channel_names': {'0': 'zscore'}, 'labels': {'background': 0, 'a': 1, 'b': 2},
      'numTraining': num_cases, 'file_ending': '.png'})
  return folder


def edit_json(folder, name='dataset.json', **changes):
  path = os.path.join(folder, name)
  with open(path) as file:
    value = json.load(file)
  value.update(changes)
  write_json(path, value)


def build(folder, data_dir, size=SIZE):
  builder = builder_lib.make_builder(folder, size, data_dir=str(data_dir))
  builder.download_and_prepare(file_format='array_record')
  return builder


def read_split(builder, split):
  """{id: record} of a split (records come back shuffled)."""
  data = builder.as_data_source(split)
  return {r['id'].decode(): r for r in (data[i] for i in range(len(data)))}


def nothing_built(data_dir) -> bool:
  files = [p for p in pathlib.Path(data_dir).rglob('*') if p.is_file()]
  return not [p for p in files if 'dataset_info.json' in p.name or 'array_record' in p.name]


# ------------------------------------------------------------------------- dataset.json, folder


def test_description_orders_channels_and_classes_by_their_numbers(tmp_path):
  folder = volume_dataset(tmp_path)
  edit_json(folder, channel_names={'1': 'ADC', '0': 'T2'},
            labels={'second': 2, 'background': 0, 'first': 1})
  description = source.read_description(folder)
  assert description.channel_names == ('T2', 'ADC')
  assert description.class_names == ('background', 'first', 'second')
  assert (description.ndim, description.reader, description.num_training) == (3, 'NibabelIO', 5)
  assert description.name == 'Dataset001_Test' and description.folder == folder
  assert source.read_description(png_dataset(tmp_path)).ndim == 2


def test_resolve_folder_takes_paths_and_names_in_nnunet_raw(tmp_path, monkeypatch):
  folder = volume_dataset(tmp_path)
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv('HOME', str(tmp_path))
  monkeypatch.setenv('nnUNet_raw', str(tmp_path))
  for argument in (folder, './Dataset001_Test', '~/Dataset001_Test', 'Dataset001_Test', '1'):
    assert source.resolve_folder(argument) == folder
  with pytest.raises(SettingError, match='Dataset009_None does not exist.*nnUNet_raw='):
    source.resolve_folder('Dataset009_None')
  with pytest.raises(SettingError, match='folder .*/nowhere does not exist'):
    source.resolve_folder('./nowhere')
  with pytest.raises(SettingError, match=f'dataset.json is a file: name the dataset by its folder.*'
                                         f'\\({folder} if it is that one\\)'):
    source.resolve_folder('./Dataset001_Test/dataset.json')
  monkeypatch.delenv('nnUNet_raw')
  with pytest.raises(SettingError, match=r"set nnUNet_raw=.* or give the folder's path"):
    source.resolve_folder('Dataset001_Test')


# ------------------------------------------------------------------------------- bad inputs


def _remove(path):
  os.remove(path)


def _truncate(path):
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:len(data) // 2])


TR = 'imagesTr/case_001_0000.nii.gz'
LABEL = 'labelsTr/case_001.nii.gz'
BAD_INPUTS = {
    # name: (change to a good 2-channel volume dataset, pattern the message must match)
    'no dataset.json': (lambda f: _remove(f'{f}/dataset.json'), 'dataset.json does not exist'),
    'dataset.json not JSON': (lambda f: open(f'{f}/dataset.json', 'w').write('{"labels": '),
                              'dataset.json is not valid JSON'),
    'no file_ending': (lambda f: _drop_key(f, 'file_ending'), 'dataset.json has no file_ending'),
    'image without label': (lambda f: _remove(f'{f}/{LABEL}'),
                            f'case_001_0000.nii.gz has no label file: expected .*{LABEL}'),
    'label without image': (
        lambda f: shutil.copy(f'{f}/{LABEL}', f'{f}/labelsTr/case_009.nii.gz'),
        'labelsTr/case_009.nii.gz has no image: expected .*imagesTr/case_009_0000.nii.gz'),
    'missing channel file': (lambda f: _remove(f'{f}/imagesTr/case_002_0001.nii.gz'),
                             'imagesTr/case_002_0001.nii.gz is missing'),
    'shape mismatch': (lambda f: save_nifti(f'{f}/{LABEL}', np.zeros((3, 10, 11)), dtype=np.uint8),
                       rf'{TR} is \(12, 10, 3\) but .*{LABEL} is \(11, 10, 3\)'),
    'spacing mismatch': (
        lambda f: save_nifti(f'{f}/{LABEL}', fake_label(SHAPE, 1), (6.0, 1.25, 1.6), np.uint8),
        f'{TR} and .*{LABEL} differ in voxel size'),
    'affine mismatch': (
        lambda f: save_nifti(f'{f}/{LABEL}', fake_label(SHAPE, 1), dtype=np.uint8,
                             origin=(0.0, 5.0, 0.0)),
        f'{TR} and .*{LABEL} differ in affine'),
    'channel spacing mismatch': (
        lambda f: save_nifti(f'{f}/imagesTr/case_001_0001.nii.gz', np.ones(SHAPE), (5, 1.25, 1.5)),
        f'{TR} and .*case_001_0001.nii.gz differ in voxel size'),
    'stray label values': (
        lambda f: save_nifti(f'{f}/{LABEL}', fake_label(SHAPE, 1) * 3, dtype=np.uint8),
        f'{LABEL} holds the values 3, 6, which are not labels of dataset.json'),
    '4-D NIfTI': (lambda f: nibabel.save(nibabel.Nifti1Image(np.zeros((12, 10, 3, 2)), np.eye(4)),
                                         f'{f}/{TR}'),
                  f'{TR} has shape \\(12, 10, 3, 2\\): nnU-Net keeps one channel'),
    'truncated file': (lambda f: _truncate(f'{f}/{TR}'), f'cannot read .*{TR} as a NIfTI volume'),
    'numTraining': (lambda f: edit_json(f, numTraining=7),
                    'numTraining is 7 but imagesTr holds 5 cases: fix numTraining'),
    'too few cases': (lambda f: _keep_cases(f, 2), 'has 2 labelled cases; pejax needs at least 3'),
    'region-based labels': (
        lambda f: edit_json(f, labels={'background': 0, 'whole': [1, 2], 'core': 2}),
        'region-based labels are not supported; give each class one integer value'),
    'ignore label': (lambda f: edit_json(f, labels={'background': 0, 'a': 1, 'b': 2, 'ignore': 3}),
                     'does not support nnU-Net\'s ignore label'),
    'label values with a gap': (lambda f: edit_json(f, labels={'background': 0, 'a': 1, 'b': 3}),
                                r'dataset.json: the label values are \[0, 1, 3\]'),
    'labels of nnU-Net v1': (lambda f: edit_json(f, labels={'0': 'background', '1': 'a'}),
                             "nnU-Net v1's layout"),
    'unsupported ending': (lambda f: edit_json(f, file_ending='.mha'),
                           'does not read MetaImage .*Convert the images and labels to .nii.gz'),
    '3-D TIFF': (lambda f: edit_json(f, file_ending='.tiff'), r"3-D TIFF \(nnU-Net's Tiff3DIO\)"),
    'unknown reader': (lambda f: edit_json(f, overwrite_image_reader_writer='Tiff3DIO'),
                       "overwrite_image_reader_writer is 'Tiff3DIO'.*convert"),
    'splits name an unknown case': (
        lambda f: write_json(f'{f}/splits_final.json', [{'train': ['case_000', 'case_404'],
                                                         'val': ['case_001']}]),
        "splits_final.json names the case 'case_404', which is not in imagesTr"),
    'image size': (lambda f: None, 'image_size=4 is not allowed'),
}


def _drop_key(folder, key):
  with open(f'{folder}/dataset.json') as file:
    value = json.load(file)
  del value[key]
  write_json(f'{folder}/dataset.json', value)


def _keep_cases(folder, count):
  for index in range(count, 5):
    for path in pathlib.Path(folder).rglob(f'case_{index:03d}*'):
      path.unlink()
  edit_json(folder, numTraining=count)


@pytest.mark.parametrize('name', BAD_INPUTS)
def test_a_bad_input_is_one_error_naming_it_and_nothing_is_built(name, tmp_path):
  folder = volume_dataset(tmp_path / 'raw')
  change, pattern = BAD_INPUTS[name]
  change(folder)
  data_dir = tmp_path / 'tfds'
  with pytest.raises((SourceFileError, SettingError), match=pattern) as raised:
    build(folder, data_dir, size=4 if name == 'image size' else SIZE)
  assert '\n' not in str(raised.value)
  assert nothing_built(data_dir)


def test_a_png_that_is_not_a_png_is_named(tmp_path):
  folder = png_dataset(tmp_path / 'raw')
  open(f'{folder}/imagesTr/img_2_0000.png', 'wb').write(b'GIF89a not a png at all')
  with pytest.raises(SourceFileError, match='cannot read .*img_2_0000.png as an image'):
    build(folder, tmp_path / 'tfds')
  assert nothing_built(tmp_path / 'tfds')


# ------------------------------------------------------------------------------- reading files


def test_natural_images_give_gray_or_three_colour_channels(tmp_path):
  description = source.Description(str(tmp_path), 'x', ('R', 'G', 'B'), ('bg', 'a'), '.png', 1, 2,
                                   'NaturalImage2DIO')
  rgba = np.random.default_rng(0).integers(0, 255, (5, 7, 4), dtype=np.uint8)
  save_png(f'{tmp_path}/rgba_0000.png', rgba)
  image, spacing, geometry = source.read_case_image([f'{tmp_path}/rgba_0000.png'], description)
  assert image.shape == (3, 5, 7) and spacing is None and geometry.shape == (5, 7)
  np.testing.assert_array_equal(image, np.moveaxis(rgba[..., :3], -1, 0))  # alpha dropped
  sixteen = np.arange(35, dtype=np.uint16).reshape(5, 7) * 1000
  save_png(f'{tmp_path}/gray_0000.png', sixteen)
  Image.fromarray(sixteen.astype(np.uint8)).save(f'{tmp_path}/gray_0001.bmp')
  gray = dict(description.__dict__, channel_names=('a', 'b'), file_ending='.png')
  image, _, _ = source.read_case_image([f'{tmp_path}/gray_0000.png'] * 2,
                                       source.Description(**gray))
  np.testing.assert_array_equal(image[0], sixteen)  # 16-bit values as stored
  with pytest.raises(SourceFileError, match=r'gray_0000.png hold 1 channels but dataset.json '
                                            r'lists 2 .*gray_0001.png is missing'):
    source.read_case_image([f'{tmp_path}/gray_0000.png'], source.Description(**gray))


def test_reorienting_reader_reads_the_canonical_orientation(tmp_path):
  volume = np.random.default_rng(0).normal(size=SHAPE)
  path = f'{tmp_path}/v_0000.nii.gz'
  affine = np.diag([-1.5, 1.25, 6.0, 1.0])  # x flipped: not RAS
  nibabel.save(nibabel.Nifti1Image(np.transpose(volume, (2, 1, 0)), affine), path)
  description = source.Description(str(tmp_path), 'x', ('MRI',), ('bg', 'a'), '.nii.gz', 1, 3,
                                   'NibabelIOWithReorient')
  image, spacing, _ = source.read_case_image([path], description)
  np.testing.assert_allclose(image[0], volume[:, :, ::-1])
  assert spacing == SPACING


# ----------------------------------------------------------------------------------- slicing


def test_slicing_axis_is_the_largest_median_spacing_ties_first():
  assert source.slicing_axis([(10, 1.5, 1.5), (8, 1.4, 1.4), (1, 1, 1)]) == 0
  assert source.slicing_axis([(1.0, 1.0, 3.0)]) == 2
  assert source.slicing_axis([(2.0, 2.0, 1.0), (2.0, 2.0, 1.0)]) == 0  # a tie: the first
  assert source.slicing_axis([(0.5, 0.8, 0.8), (0.5, 1, 1)]) == 1
  assert source.slicing_axis([(1.0, 0.5, 3.0)], shapes=[(4, 1, 9)]) == 1  # one voxel thick


def test_slices_follow_simpleitk_order_and_carry_their_spacing():
  volume = np.arange(np.prod(SHAPE), dtype=np.float64).reshape(SHAPE)[..., None] / 1000
  for axis, rows, columns in ((0, 1, 2), (1, 0, 2), (2, 0, 1)):
    pieces = list(source.slices_of(volume, 8, axis=axis, spacing=SPACING))
    assert len(pieces) == SHAPE[axis]
    assert pieces[1].shape == (SHAPE[rows], SHAPE[columns])
    assert pieces[1].spacing == pytest.approx(
        (SPACING[axis], SPACING[rows] * SHAPE[rows] / 8, SPACING[columns] * SHAPE[columns] / 8))
    np.testing.assert_allclose(pieces[1].image[..., 0],
                               resize_image(np.take(volume[..., 0], 1, axis=axis), 8), atol=1e-6)


def test_a_dataset_with_x_spacing_largest_is_sliced_along_x(tmp_path):
  folder = volume_dataset(tmp_path / 'raw', channel_names=('rescale_to_0_1',),
                          spacing=(1.0, 1.25, 4.0))
  builder = build(folder, tmp_path / 'tfds')
  metadata = builder_lib.read_metadata(builder)
  assert metadata['slicing_axis'] == 2
  # Written beside the ArrayRecord files and read back by a fresh builder.
  assert (builder.data_path / 'metadata.json').exists()
  assert list(builder.data_path.glob('nnunet-train.array_record-*'))
  fresh = builder_lib.make_builder(folder, SIZE, data_dir=str(tmp_path / 'tfds'))
  assert fresh is not builder and builder_lib.read_metadata(fresh) == metadata
  assert set(builder_lib.METADATA_KEYS) <= set(metadata)
  records = read_split(builder, 'train')
  case = metadata['splits']['train'][0]
  assert sorted(records) == sorted(f'{c}_slice{k:03d}' for c in metadata['splits']['train']
                                   for k in range(SHAPE[2]))
  record = records[f'{case}_slice005']
  assert record['subject'].decode() == case and record['slice_index'] == 5
  np.testing.assert_allclose(record['spacing'], (4.0, 1.0 * 3 / SIZE, 1.25 * 10 / SIZE))
  raw = nibabel.load(f'{folder}/imagesTr/{case}_0000.nii.gz').get_fdata()  # (x, y, z)
  plane = raw[5].T  # rows along z, columns along y
  expected = resize_image((plane - raw.min()) / (raw.max() - raw.min()), SIZE)
  np.testing.assert_allclose(record['image'][..., 0], expected, atol=1e-6)


# ---------------------------------------------------------------------------- normalization

SCHEME_CHANNELS = ('CT', 'nonorm', 'rescale_to_0_1', 'rgb_to_0_1', 'zscore', 'T2')


def scheme_values(case, name):
  rng = np.random.default_rng(case * 10 + SCHEME_CHANNELS.index(name))
  shape = (SHAPE[0], SIZE, SIZE)
  if name == 'CT':
    return rng.integers(-1000, 1500, shape)
  if name == 'rgb_to_0_1':
    return rng.integers(0, 256, shape)
  return rng.normal(50 * case, 30 + 10 * case, shape)


def reference(name, raw, train_foreground, every_case):
  """nnU-Net's normalized input of a raw (z, y, x) case, from the rules' definitions; for
  z-score channels per 2-D slice, as pejax's per-image rule."""
  if name == 'CT':
    low, high = np.percentile(train_foreground, [0.5, 99.5])
    return (np.clip(raw, low, high) - train_foreground.mean()) / train_foreground.std()
  if name == 'nonorm':
    return raw
  if name == 'rescale_to_0_1':
    return (raw - raw.min()) / (raw.max() - raw.min())
  if name == 'rgb_to_0_1':
    return raw / 255.0
  return (raw - raw.mean(axis=(1, 2), keepdims=True)) / raw.std(axis=(1, 2), keepdims=True)


def normalized(stored, record):
  if record['kind'] == 'per_image':
    return (stored - stored.mean()) / stored.std()
  return (stored - record['mean']) / record['std']


def test_each_scheme_gives_back_nnunets_normalized_input(tmp_path):
  shape = (SHAPE[0], SIZE, SIZE)  # in-plane at the stored size: no resizing
  folder = volume_dataset(tmp_path / 'raw', num_cases=6, channel_names=SCHEME_CHANNELS,
                          shape=shape, channel_values=scheme_values)
  builder = build(folder, tmp_path / 'tfds')
  metadata = builder_lib.read_metadata(builder)
  records = metadata['normalization']
  assert [r['scheme'] for r in records] == ['CT', 'noNorm', 'rescale_to_0_1', 'rgb_to_0_1',
                                            'zscore', 'zscore']
  assert [r['kind'] for r in records] == ['fixed'] * 4 + ['per_image'] * 2
  raws = {case: np.stack([nibabel.load(f'{folder}/imagesTr/{case}_{c:04d}.nii.gz').get_fdata()
                          .transpose(2, 1, 0) for c in range(len(SCHEME_CHANNELS))])
          for case in sorted(sum(metadata['splits'].values(), []))}
  labels = {case: fake_label(shape, int(case[-3:])) for case in raws}
  foreground = np.concatenate([raws[c][0][labels[c] > 0] for c in metadata['splits']['train']])
  for split in planning.SPLITS:
    for example_id, record in read_split(builder, split).items():
      case, k = example_id[:8], int(example_id[-3:])
      image = record['image']
      assert image.min() >= 0 and image.max() <= 1
      for c, name in enumerate(SCHEME_CHANNELS):
        expected = reference(name, raws[case][c], foreground, raws)[k]
        got = normalized(image[..., c].astype(np.float64), records[c])
        np.testing.assert_allclose(got, expected, atol=2e-5 * max(1, np.abs(expected).max()),
                                   err_msg=f'{name} {example_id}')
      # Prediction's path: the same window applied to the raw case anew.
      again = source.unit_range(np.moveaxis(raws[case], 0, -1), records)[k]
      np.testing.assert_allclose(again, image, atol=1e-6)


def test_fixed_records_commute_with_the_resize_and_constant_channels_are_zero():
  rng = np.random.default_rng(3)
  raw = rng.normal(40, 25, (2, 16, 16, 1))
  record = source.channel_record('CT', low=10, high=80, mean=45, std=20)
  stored = next(source.slices_of(source.unit_range(raw, [record]), 8, axis=0)).image[..., 0]
  expected = resize_image((np.clip(raw[0, ..., 0], 10, 80) - 45) / 20, 8)
  np.testing.assert_allclose(normalized(stored, record), expected, atol=1e-5)
  constant = source.unit_range(np.full((4, 4, 3), 7.0), [
      source.channel_record('rescale_to_0_1'), source.channel_record('zscore'),
      source.channel_record('noNorm', low=7, high=7)])
  assert not constant.any()


# ---------------------------------------------------------------------------------- splits


def test_seeded_splits_without_splits_file_or_test_labels(tmp_path):
  folder = volume_dataset(tmp_path / 'raw', num_cases=10, channel_names=('MRI',),
                          shape=(1, 8, 8))
  os.makedirs(f'{folder}/imagesTs')  # images without labelsTs are not used
  shutil.copy(f'{folder}/imagesTr/case_000_0000.nii.gz', f'{folder}/imagesTs/new_0000.nii.gz')
  metadata = builder_lib.read_metadata(build(folder, tmp_path / 'tfds', size=8))
  ids = [f'case_{i:03d}' for i in range(10)]
  test = sorted(ids[i] for i in np.random.default_rng(0).permutation(10)[:2])
  rest = sorted(set(ids) - set(test))
  validation = [rest[np.random.default_rng(1).permutation(8)[0]]]
  assert metadata['splits'] == {'train': sorted(set(rest) - set(validation)),
                                'validation': validation, 'test': test}
  assert 'seeded' in metadata['split_rule']


def test_splits_file_in_nnunet_preprocessed_and_labelled_test_cases(tmp_path, monkeypatch):
  folder = volume_dataset(tmp_path / 'raw', num_cases=6, channel_names=('MRI',), shape=(1, 8, 8))
  for case in ('case_004', 'case_005'):  # to imagesTs / labelsTs
    for sub, name in (('images', f'{case}_0000.nii.gz'), ('labels', f'{case}.nii.gz')):
      os.makedirs(f'{folder}/{sub}Ts', exist_ok=True)
      os.rename(f'{folder}/{sub}Tr/{name}', f'{folder}/{sub}Ts/{name}')
  shutil.copy(f'{folder}/imagesTs/case_004_0000.nii.gz', f'{folder}/imagesTs/nolabel_0000.nii.gz')
  edit_json(folder, numTraining=4)
  preprocessed = tmp_path / 'preprocessed' / 'Dataset001_Test'
  preprocessed.mkdir(parents=True)
  write_json(preprocessed / 'splits_final.json', [
      {'train': ['case_000', 'case_003'], 'val': ['case_001', 'case_002']},
      {'train': ['case_001'], 'val': ['case_000']}])
  monkeypatch.setenv('nnUNet_preprocessed', str(tmp_path / 'preprocessed'))
  metadata = builder_lib.read_metadata(build(folder, tmp_path / 'tfds', size=8))
  assert metadata['splits'] == {'train': ['case_000', 'case_003'],
                                'validation': ['case_001', 'case_002'],
                                'test': ['case_004', 'case_005']}
  assert str(preprocessed / 'splits_final.json') in metadata['split_rule']


def test_a_changed_file_is_a_new_config_built_again(tmp_path):
  folder = volume_dataset(tmp_path / 'raw', num_cases=4, channel_names=('MRI',), shape=(1, 8, 8))
  first = build(folder, tmp_path / 'tfds', size=8)
  changed = np.ones((1, 8, 8), np.uint8)
  save_nifti(f'{folder}/labelsTr/case_000.nii.gz', changed, dtype=np.uint8)
  assert source.fingerprint(folder) != first.builder_config.fingerprint
  second = build(folder, tmp_path / 'tfds', size=8)
  assert second.builder_config.name != first.builder_config.name
  assert second.builder_config.name.startswith('dataset001_test_8_')
  split = next(s for s, ids in builder_lib.read_metadata(second)['splits'].items()
               if 'case_000' in ids)
  assert (read_split(second, split)['case_000_slice000']['label'] == 1).all()
  assert not (read_split(first, split)['case_000_slice000']['label'] == 1).all()  # kept


# ------------------------------------------------------------------------- the phantom export


def native(kind, split, index, size):
  image, label = phantom_generator.generate_example(
      kind, size, phantoms.DEFAULT_POSITION_JITTER[kind], 0, split, index)
  return image[..., 0].astype(np.float64), label


def zscored(image):
  return (image - image.mean()) / image.std()


def test_chest_copy_reproduces_the_native_splits_and_images(tmp_path):
  sizes = {'train': 4, 'validation': 2, 'test': 2}
  folder = phantom_export.write_phantom_dataset('chest', tmp_path / 'raw', image_size=32,
                                                split_sizes=sizes)
  builder = build(folder, tmp_path / 'tfds', size=32)
  metadata = builder_lib.read_metadata(builder)
  number = 0
  for split in planning.SPLITS:
    records = read_split(builder, split)
    assert sorted(records) == metadata['splits'][split]
    for index, case in enumerate(sorted(records)):
      number += 1
      assert case == f'chest_{number:04d}'
      image, label = native('chest', split, index, 32)
      stored = records[case]['image'][..., 0].astype(np.float64)
      np.testing.assert_array_equal(records[case]['label'], label)
      # 16-bit PNG, then the per-case min-max of 'zscore': exact up to the 16-bit rounding.
      quantized = np.round(image * 65535)
      np.testing.assert_allclose(
          stored, (quantized - quantized.min()) / (quantized.max() - quantized.min()), atol=1e-6)
      np.testing.assert_allclose(zscored(stored), zscored(image), atol=2e-3)


def test_cardiac_copy_stacks_native_slices_along_z(tmp_path):
  sizes = {'train': 8, 'validation': 4, 'test': 3}
  folder = phantom_export.write_phantom_dataset('cardiac', tmp_path / 'raw', image_size=32,
                                                split_sizes=sizes, slices_per_case=4)
  volume = nibabel.load(f'{folder}/imagesTr/heart_0001_0000.nii.gz')
  assert volume.header.get_zooms() == (1.5, 1.5, 10.0) and volume.shape == (32, 32, 4)
  builder = build(folder, tmp_path / 'tfds', size=32)
  metadata = builder_lib.read_metadata(builder)
  assert metadata['slicing_axis'] == 0 and metadata['ndim'] == 3
  assert metadata['splits'] == {'train': ['heart_0001', 'heart_0002'],
                                'validation': ['heart_0003'], 'test': ['heart_0004']}
  for split in planning.SPLITS:
    records = read_split(builder, split)
    assert len(records) == sizes[split]
    for position, case in enumerate(metadata['splits'][split]):
      natives = [native('cardiac', split, 4 * position + k, 32) for k in range(4)]
      natives = natives[:sizes[split] - 4 * position]
      low = min(image.min() for image, _ in natives)
      high = max(image.max() for image, _ in natives)
      for k, (image, label) in enumerate(natives):
        record = records[f'{case}_slice{k:03d}']
        np.testing.assert_array_equal(record['label'], label)
        stored = record['image'][..., 0].astype(np.float64)
        np.testing.assert_allclose(stored, (image - low) / (high - low), atol=1e-6)
        np.testing.assert_allclose(zscored(stored), zscored(image), atol=1e-4)
        np.testing.assert_allclose(record['spacing'], (10.0, 1.5, 1.5))


@pytest.mark.parametrize('foreground_classes, names', [
    (1, ('background', 'foreground')),
    (2, ('background', 'ventricle_cavities', 'myocardium')),
    (5, ('background', 'right_ventricle_image_left', 'myocardium_image_left', 'left_ventricle',
         'right_ventricle_image_right', 'myocardium_image_right')),
    (6, ('background', 'right_ventricle_image_left', 'myocardium_image_left',
         'left_ventricle_image_left', 'right_ventricle_image_right', 'myocardium_image_right',
         'left_ventricle_image_right')),
])
def test_export_remaps_classes_and_adds_a_second_channel(tmp_path, foreground_classes, names):
  folder = phantom_export.write_phantom_dataset(
      'cardiac', tmp_path, image_size=16, channels=2, foreground_classes=foreground_classes,
      split_sizes={'train': 4, 'validation': 2, 'test': 2}, slices_per_case=2)
  description = source.read_description(folder)
  assert description.class_names == names
  assert description.channel_names == ('MRI', 'inverted')
  case = planning.find_cases(description)[0]['heart_0001']
  image, _, geometry = source.read_case_image(case.image_paths, description)
  label = source.read_case_label(case.label_path, description, geometry, case.image_paths[0])
  np.testing.assert_allclose(image[1], 1 - image[0], atol=1e-6)
  natives = [native('cardiac', 'train', k, 16)[1] for k in range(2)]
  remap, _ = phantom_export.class_map('cardiac', foreground_classes)
  np.testing.assert_array_equal(label, np.stack([remap(n) for n in natives]))
  assert label.max() < len(names)


def test_export_command_line(tmp_path, capsys):
  phantom_export.main(['--kind=chest', f'--output={tmp_path}', '--image_size=16',
                       '--cases=3,1,2', '--foreground_classes=2'])
  folder = tmp_path / phantom_export.DATASET_NAMES['chest']
  assert f'Wrote {folder}' in capsys.readouterr().out
  description = json.loads((folder / 'dataset.json').read_text())
  assert description['numTraining'] == 4 and description['file_ending'] == '.png'
  assert description['labels'] == {'background': 0, 'lungs': 1, 'heart': 2}
  assert len(os.listdir(folder / 'imagesTs')) == 2
  with pytest.raises(SystemExit, match='^pejax: error: .*already exists'):
    phantom_export.main(['--kind=chest', f'--output={tmp_path}'])
  with pytest.raises(SystemExit, match='^pejax: error: .*--cases=3: give TRAIN,VALIDATION,TEST'):
    phantom_export.main(['--kind=chest', f'--output={tmp_path}/other', '--cases=3'])
