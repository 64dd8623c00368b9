"""JSRT + SCR builder on fake files in the official layouts and byte formats.

The 247 raw images keep the real format (16-bit big-endian, no header) and count, at a
small size: the builder's RAW_IMAGE_SIZE and MASK_SIZE are patched for the module.
"""

import shutil

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from data_builders import jsrt
from data_builders.jsrt import jsrt_dataset_builder as jsrt_lib

RAW_SIZE = 128  # official 2048
MASK_SIZE = 64  # official 1024
CONFIG = 'size_64'
OUT = 64

# Fake anatomy in output pixels (masks are at the output size, so labels are exact).
RIGHT_LUNG = (slice(16, 48), slice(8, 30))  # image left = patient's right
LEFT_LUNG = (slice(16, 48), slice(34, 56))
HEART = (slice(36, 52), slice(24, 40))  # overlaps both lungs
PNG_8BIT_ID, PNG_16BIT_ID, PNG_MASK_ID = 'JPCNN005', 'JPCNN010', 'JPCLN004'


def raw_value(image_id):
  """A distinct background value per image, to tell the examples apart."""
  return 100 + 10 * jsrt_lib.ALL_IDS.index(image_id)


def expected_label():
  label = np.zeros((OUT, OUT), np.uint8)
  label[RIGHT_LUNG], label[LEFT_LUNG], label[HEART] = 1, 2, 3
  return label


def write_raw(path, values):
  path.write_bytes(values.astype('>u2').tobytes())


def write_mask(path, region):
  mask = np.zeros((MASK_SIZE, MASK_SIZE), np.uint8)
  mask[region] = 255
  Image.fromarray(mask).save(path)


def make_manual_dir(root):
  """JSRT zip (All247images/*.IMG) and SCR zip (fold1/, fold2/ masks/<structure>/)."""
  images = root / 'All247images'
  images.mkdir(parents=True)
  (images / 'CLNDAT_EN.txt').write_text('clinical data, not used\n')
  scale = RAW_SIZE // OUT
  for n, image_id in enumerate(jsrt_lib.ALL_IDS):
    values = np.full((RAW_SIZE, RAW_SIZE), raw_value(image_id), np.uint16)
    values[:8 * scale, :8 * scale] = 4095  # dark on film: stored as 0, top-left
    values[-8 * scale:, -8 * scale:] = 0  # stored as 1, bottom-right
    if image_id == PNG_8BIT_ID:  # a converted copy, displayed as is (no inversion)
      Image.fromarray(np.full((RAW_SIZE, RAW_SIZE), 51, np.uint8)).save(
          images / f'{image_id}.png')
    elif image_id == PNG_16BIT_ID:
      Image.fromarray(np.full((RAW_SIZE, RAW_SIZE), 13107, np.uint16)).save(
          images / f'{image_id}.IMG.png')
    else:
      write_raw(images / f'{image_id}.IMG', values)
    fold = root / 'scr' / ('fold1' if n % 2 else 'fold2') / 'masks'
    for folder, region in (('right lung', RIGHT_LUNG), ('left lung', LEFT_LUNG),
                           ('heart', HEART)):
      if image_id == PNG_MASK_ID:  # a circulated copy: underscores and PNG
        (fold / folder.replace(' ', '_')).mkdir(parents=True, exist_ok=True)
        write_mask(fold / folder.replace(' ', '_') / f'{image_id}.png', region)
      else:
        (fold / folder).mkdir(parents=True, exist_ok=True)
        write_mask(fold / folder / f'{image_id}.gif', region)
    if n < 3:  # clavicles exist in SCR and are ignored, even when wrong-sized
      (fold / 'right clavicle').mkdir(parents=True, exist_ok=True)
      Image.fromarray(np.zeros((5, 5), np.uint8)).save(
          fold / 'right clavicle' / f'{image_id}.gif')
  return root


def build(manual_dir, data_dir):
  builder = jsrt.Builder(config=CONFIG, data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def read_split(builder, split):
  """What the project's loader does: all records of a split, sorted by id."""
  source = builder.as_data_source(split)
  records = [source[i] for i in range(len(source))]
  return sorted(records, key=lambda r: as_str(r['id']))


def as_str(value):
  return value.decode() if isinstance(value, bytes) else str(value)


@pytest.fixture(scope='module', autouse=True)
def small_official_sizes():
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(jsrt_lib.Builder, 'RAW_IMAGE_SIZE', RAW_SIZE)
    patch.setattr(jsrt_lib.Builder, 'MASK_SIZE', MASK_SIZE)
    yield


@pytest.fixture(scope='module')
def manual_dir(tmp_path_factory):
  return make_manual_dir(tmp_path_factory.mktemp('jsrt_manual'))


@pytest.fixture(scope='module')
def built(manual_dir, tmp_path_factory):
  builder = build(manual_dir, tmp_path_factory.mktemp('jsrt_data'))
  return builder, {s: read_split(builder, s) for s in ('train', 'validation', 'test')}


@pytest.fixture
def broken_copy(manual_dir, tmp_path):
  """A copy of the fake download that a test may damage."""
  return shutil.copytree(manual_dir, tmp_path / 'manual')


def test_splits_are_fixed_disjoint_and_complete():
  splits = jsrt_lib.SPLIT_IDS
  assert {k: len(v) for k, v in splits.items()} == {
      'train': 156, 'validation': 23, 'test': 68}
  all_ids = [i for ids in splits.values() for i in ids]
  assert len(set(all_ids)) == 247 and set(all_ids) == set(jsrt_lib.ALL_IDS)
  # The literal lists are what the documented recipe generates.
  assert jsrt_lib.split_recipe() == splits


def test_build_and_read_back_with_array_record(built):
  builder, records = built
  assert builder.is_prepared()
  assert builder.builder_config.image_size == OUT
  for split, ids in jsrt_lib.SPLIT_IDS.items():
    assert [as_str(r['id']) for r in records[split]] == list(ids)
    assert builder.info.splits[split].num_examples == len(ids)
  record = records['train'][0]
  assert record['image'].shape == (OUT, OUT, 1) and record['image'].dtype == np.float32
  assert record['label'].shape == (OUT, OUT) and record['label'].dtype == np.uint8
  # A new builder on the same data_dir, with the default (ArrayRecord) format.
  reopened = jsrt.Builder(config=CONFIG, data_dir=builder.data_dir_root)
  assert reopened.is_prepared() and len(reopened.as_data_source('test')) == 68


def test_raw_values_orientation_and_inversion(built):
  _, records = built
  for record in records['test'][:5] + records['train'][:5]:
    image = record['image'][..., 0]
    expected = 1.0 - raw_value(as_str(record['id'])) / 4095.0
    assert np.allclose(image[:8, :8], 0.0)  # raw 4095 top-left: dark
    assert np.allclose(image[-8:, -8:], 1.0)  # raw 0 bottom-right: bright
    assert np.allclose(image[20:40, 20:40], expected, atol=1e-6)


def test_png_copies_are_scaled_by_dtype_max_without_inversion(built):
  _, records = built
  by_id = {as_str(r['id']): r for split in records.values() for r in split}
  assert np.allclose(by_id[PNG_8BIT_ID]['image'], 51 / 255, atol=1e-6)
  assert np.allclose(by_id[PNG_16BIT_ID]['image'], 13107 / 65535, atol=1e-6)


def test_class_map_left_lung_and_heart_over_lungs(built):
  _, records = built
  label = expected_label()
  for split in records.values():
    for record in split:  # includes the PNG masks in right_lung/ folders
      np.testing.assert_array_equal(record['label'], label)
  assert label[30, 45] == 2  # patient's left lung: right half of the image
  assert label[40, 28] == 3 and label[40, 36] == 3  # heart wins both overlaps


def test_resize_label_invents_no_label():
  label = np.zeros((8, 8), np.uint8)
  label[:, 4:] = 3  # a 0|3 edge: averaging would give 1 or 2, area argmax never does
  small = jsrt_lib.resize_label(label, 3)
  assert set(np.unique(small)) <= {0, 3}


def test_missing_manual_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match='manual folder is missing or empty'):
    build(tmp_path / 'not_there', tmp_path / 'data')


def test_fewer_images_than_expected(broken_copy, tmp_path):
  (broken_copy / 'All247images' / 'JPCLN007.IMG').unlink()
  with pytest.raises(FileNotFoundError, match=r'found 246 of the 247.*JPCLN007'):
    build(broken_copy, tmp_path / 'data')


def test_image_without_one_of_its_masks(broken_copy, tmp_path):
  next(broken_copy.rglob('heart/JPCNN042.gif')).unlink()
  with pytest.raises(FileNotFoundError,
                     match=r'JPCNN042\.IMG has no "heart" mask.*masks/heart/JPCNN042'):
    build(broken_copy, tmp_path / 'data')


def test_truncated_raw_image(broken_copy, tmp_path):
  first = jsrt_lib.TRAIN_IDS[0]
  path = broken_copy / 'All247images' / f'{first}.IMG'
  path.write_bytes(path.read_bytes()[:-100])
  with pytest.raises(ValueError, match=rf'{first}\.IMG has {RAW_SIZE**2 * 2 - 100} bytes'):
    build(broken_copy, tmp_path / 'data')


def test_byte_swapped_raw_image(broken_copy, tmp_path):
  first = jsrt_lib.TRAIN_IDS[0]
  path = broken_copy / 'All247images' / f'{first}.IMG'
  path.write_bytes(np.full(RAW_SIZE * RAW_SIZE, 1000, '<u2').tobytes())
  with pytest.raises(ValueError, match=rf'{first}\.IMG holds values up to .* not a big-endian'):
    build(broken_copy, tmp_path / 'data')


def test_mask_of_the_wrong_size(broken_copy, tmp_path):
  first = jsrt_lib.TRAIN_IDS[0]
  path = next(broken_copy.rglob(f'left lung/{first}.gif'))
  Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)
  with pytest.raises(ValueError, match=rf'left lung/{first}\.gif is 32x32 .* {MASK_SIZE}x'):
    build(broken_copy, tmp_path / 'data')


def test_failed_build_leaves_no_dataset(broken_copy, tmp_path):
  # Train and validation are written before the broken test image is reached.
  broken = jsrt_lib.TEST_IDS[-1]
  (broken_copy / 'All247images' / f'{broken}.IMG').write_bytes(b'\0' * 10)
  data_dir = tmp_path / 'data'
  with pytest.raises(ValueError, match=rf'{broken}\.IMG has 10 bytes'):
    build(broken_copy, data_dir)
  builder = jsrt.Builder(config=CONFIG, data_dir=data_dir, file_format='array_record')
  assert not builder.is_prepared()
  assert not builder.data_path.exists()
