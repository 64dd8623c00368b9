"""The procedural phantoms: values, anatomy, position jitter, determinism and the TFDS builder."""

import numpy as np
import pytest
from scipy import ndimage

from data_builders.phantoms import phantom_generator as generator
from data_builders.phantoms import phantoms_dataset_builder as builder_lib

SIZE = 64
COUNT = 32


def _centroids(labels, label_class):
  """(N, 2) x, y centroids of one class as fractions of the image side; NaN where absent."""
  size = labels.shape[-1]
  coordinates = (np.arange(size) + 0.5) / size
  mask = labels == label_class
  area = mask.sum(axis=(1, 2)).astype(float)
  with np.errstate(invalid='ignore'):
    x = (mask * coordinates[None, None, :]).sum(axis=(1, 2)) / area
    y = (mask * coordinates[None, :, None]).sum(axis=(1, 2)) / area
  return np.stack([x, y], axis=1)


def _anatomy_centroid_spread(kind, jitter):
  """Std (over examples) of the foreground centroid, averaged over x and y."""
  _, labels, _ = generator.generate_split(kind, SIZE, jitter, 0, 'train', COUNT)
  return float(np.nanstd(_centroids(labels > 0, True), axis=0).mean())  # NaN: no heart in slice


@pytest.fixture(scope='module')
def chest():
  images, labels, ids = generator.generate_split('chest', SIZE, 0.03, 0, 'train', COUNT)
  return images, labels, ids


@pytest.fixture(scope='module')
def cardiac():
  images, labels, ids = generator.generate_split('cardiac', SIZE, 0.04, 0, 'train', COUNT)
  return images, labels, ids


@pytest.mark.parametrize('kind', generator.KINDS)
def test_images_and_labels_have_the_documented_types_and_ranges(kind, chest, cardiac):
  images, labels, ids = chest if kind == 'chest' else cardiac
  assert images.shape == (COUNT, SIZE, SIZE, 1) and images.dtype == np.float32
  assert labels.shape == (COUNT, SIZE, SIZE) and labels.dtype == np.uint8
  assert images.min() >= 0.0 and images.max() <= 1.0
  assert images.std() > 0.1  # not a blank or saturated picture
  assert set(np.unique(labels)) == {0, 1, 2, 3}
  assert list(ids) == sorted(ids) and len(set(ids)) == COUNT


def test_every_chest_image_has_all_structures_on_the_expected_sides(chest):
  _, labels, _ = chest
  for label_class in (1, 2, 3):
    assert (labels == label_class).any(axis=(1, 2)).all()
  right_lung, left_lung, heart = (_centroids(labels, c) for c in (1, 2, 3))
  # Patient's right lung is on the image's left, as in a PA radiograph.
  assert (right_lung[:, 0] < 0.5).all() and (left_lung[:, 0] > 0.5).all()
  # Heart between the lungs, shifted to the image's right, and below the lungs' centres.
  assert ((heart[:, 0] > right_lung[:, 0]) & (heart[:, 0] < left_lung[:, 0])).all()
  assert (heart[:, 0] > 0.5).mean() > 0.8
  assert (heart[:, 1] > np.maximum(right_lung[:, 1], left_lung[:, 1])).all()


def test_the_two_lungs_look_alike(chest):
  """Same intensity statistics, and no left-right intensity trend inside either lung."""
  images, labels, _ = chest
  image = images[..., 0]
  for statistic in (np.mean, np.std):
    right, left = statistic(image[labels == 1]), statistic(image[labels == 2])
    assert abs(right - left) < 0.015, (statistic.__name__, right, left)
  # A local filter could tell the lungs apart from a gradient pointing to the midline.
  horizontal_gradient = np.zeros_like(image)
  horizontal_gradient[:, :, 1:-1] = 0.5 * (image[:, :, 2:] - image[:, :, :-2])
  for label_class in (1, 2):
    interior = np.stack([
        ndimage.binary_erosion(mask, iterations=3) for mask in labels == label_class])
    values = horizontal_gradient[interior]
    assert abs(values.mean()) < 0.05 * values.std()


def test_cardiac_structures_are_nested_and_the_rv_is_on_the_image_left(cardiac):
  _, labels, _ = cardiac
  # As in ACDC, a few slices lie beyond the apex, and the RV vanishes before the LV does.
  rv_present, myocardium_present, lv_present = (
      (labels == c).any(axis=(1, 2)) for c in (1, 2, 3))
  assert 0.8 < lv_present.mean() < 1.0
  assert (myocardium_present >= lv_present).all() and (lv_present >= rv_present).all()
  assert 0.6 < rv_present.mean() < lv_present.mean()
  rv, myocardium, lv = (_centroids(labels, c) for c in (1, 2, 3))
  assert (rv[rv_present, 0] < lv[rv_present, 0]).all()
  # The myocardium rings the LV: their centroids nearly coincide, and the LV touches no background.
  assert np.abs(myocardium[lv_present] - lv[lv_present]).max() < 0.03
  touches_background = np.stack([ndimage.binary_dilation(m) for m in labels == 3]) & (labels == 0)
  assert touches_background.sum() == 0


@pytest.mark.parametrize('kind', generator.KINDS)
def test_anatomy_varies_between_patients(kind, chest, cardiac):
  _, labels, _ = chest if kind == 'chest' else cardiac
  for label_class in (1, 2, 3):
    areas = (labels == label_class).sum(axis=(1, 2))
    assert len(np.unique(areas)) > COUNT // 2
    assert areas.std() > 0.05 * areas.mean()


@pytest.mark.parametrize('kind', generator.KINDS)
def test_position_jitter_moves_the_anatomy(kind):
  spreads = [_anatomy_centroid_spread(kind, jitter) for jitter in (0.0, 0.05, 0.15)]
  assert spreads[0] < 0.3 * spreads[2], spreads
  assert spreads[0] < spreads[1] < spreads[2], spreads
  # With jitter 0 only the patient's own variation is left: under two pixels at 64x64.
  assert spreads[0] < 0.03, spreads


@pytest.mark.parametrize('kind', generator.KINDS)
def test_examples_are_deterministic_and_seeded_per_split_and_index(kind):
  def example(seed=0, split='train', index=3, size=SIZE):
    return generator.generate_example(kind, size, 0.04, seed, split, index)

  first_image, first_labels = example()
  second_image, second_labels = example()
  np.testing.assert_array_equal(first_image, second_image)
  np.testing.assert_array_equal(first_labels, second_labels)
  assert not np.array_equal(first_image, example(seed=1)[0])
  assert not np.array_equal(first_image, example(split='test')[0])
  assert not np.array_equal(first_image, example(index=4)[0])
  # An example does not depend on how many others the split has.
  images_3, _, _ = generator.generate_split(kind, 32, 0.04, 0, 'validation', 3)
  images_5, _, _ = generator.generate_split(kind, 32, 0.04, 0, 'validation', 5)
  np.testing.assert_array_equal(images_3, images_5[:3])


@pytest.mark.parametrize('kind', generator.KINDS)
def test_anatomy_is_resolution_independent(kind):
  """The same patient rendered at two sizes: labels agree after block-averaging."""
  _, small = generator.generate_example(kind, 32, 0.04, 0, 'train', 0)
  _, large = generator.generate_example(kind, 128, 0.04, 0, 'train', 0)
  for label_class in (1, 2, 3):
    small_fraction = (small == label_class).mean()
    large_fraction = (large == label_class).mean()
    assert abs(small_fraction - large_fraction) < 0.1 * max(large_fraction, 1e-3) + 0.002
  one_hot = large[..., None] == np.arange(4)
  downsampled = one_hot.reshape(32, 4, 32, 4, 4).mean(axis=(1, 3)).argmax(-1)
  assert (downsampled == small).mean() > 0.97


def test_make_config_names_settings_and_reuses_predefined_configs():
  assert builder_lib.make_config('chest', 64) is builder_lib.Builder.builder_configs['chest_64']
  config = builder_lib.make_config('cardiac', 32, position_jitter=0.1, train_size=5,
                                   validation_size=2, test_size=3, seed=7)
  assert config.name == 'cardiac_32_jitter0p1_n5-2-3_seed7'
  settings = (config.kind, config.image_size, config.position_jitter, config.seed)
  assert settings == ('cardiac', 32, 0.1, 7)
  default = builder_lib.PhantomConfig(name='mine', kind='cardiac', image_size=48)
  assert default.position_jitter == generator.DEFAULT_POSITION_JITTER['cardiac']
  assert default.split_size('train') == builder_lib.DEFAULT_SPLIT_SIZES['cardiac']['train']
  with pytest.raises(ValueError, match='kind'):
    builder_lib.PhantomConfig(name='bad', kind='brain')
  with pytest.raises(ValueError, match='position_jitter'):
    builder_lib.make_config('chest', 64, position_jitter=-0.1)
  assert sorted(builder_lib.Builder.builder_configs) == sorted(
      f'{kind}_{size}' for kind in ('chest', 'cardiac') for size in (64, 128, 256))


def test_builder_writes_array_records_equal_to_the_generator(tmp_path):
  config = builder_lib.make_config('chest', 32, position_jitter=0.05, train_size=6,
                                   validation_size=2, test_size=3, seed=1)
  builder = builder_lib.Builder(config=config, data_dir=tmp_path)
  builder.download_and_prepare(file_format='array_record')
  assert builder.info.name == 'phantoms'
  assert {split: info.num_examples for split, info in builder.info.splits.items()} == {
      'train': 6, 'validation': 2, 'test': 3}
  source = builder.as_data_source('validation')
  records = sorted((source[i] for i in range(len(source))), key=lambda record: record['id'])
  for index, record in enumerate(records):
    image, labels = generator.generate_example('chest', 32, 0.05, 1, 'validation', index)
    assert record['id'].decode() == generator.example_id('chest', 'validation', index)
    assert record['image'].dtype == np.float32 and record['image'].shape == (32, 32, 1)
    assert record['label'].dtype == np.uint8 and record['label'].shape == (32, 32)
    np.testing.assert_array_equal(record['image'], image)
    np.testing.assert_array_equal(record['label'], labels)
