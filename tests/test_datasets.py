"""The dataset loader (built phantoms -> sorted arrays), its errors, and the plotting helpers."""

import importlib.util

import numpy as np
import pytest

from data_builders.phantoms import phantom_generator as generator
from pejax import errors
from pejax.data import datasets
from pejax import drawing

SIZE = 32


@pytest.fixture(scope='module')
def empty_data_dir(tmp_path_factory):
  """An empty TFDS folder (a Path) of this module's own, not conftest's `data_dir`, whose chest
  phantom is built already: here the loader builds the phantoms itself, from the generator."""
  return tmp_path_factory.mktemp('tensorflow_datasets')


@pytest.fixture(scope='module')
def chest_splits(empty_data_dir):
  return datasets.load_splits('phantom_chest', image_size=SIZE, data_dir=empty_data_dir)


def test_load_splits_returns_whole_sorted_splits_equal_to_the_generator(chest_splits):
  assert {split: len(arrays.ids) for split, arrays in chest_splits.items()} == {
      'train': 156, 'validation': 23, 'test': 68}
  for arrays in chest_splits.values():
    count = len(arrays.ids)
    assert arrays.images.shape == (count, SIZE, SIZE, 1) and arrays.images.dtype == np.float32
    assert arrays.labels.shape == (count, SIZE, SIZE) and arrays.labels.dtype == np.uint8
    assert list(arrays.ids) == sorted(arrays.ids) and len(set(arrays.ids)) == count
    assert 0.0 <= arrays.images.min() and arrays.images.max() <= 1.0
    assert set(np.unique(arrays.labels)) == {0, 1, 2, 3}
  test = chest_splits['test']
  jitter = generator.DEFAULT_POSITION_JITTER['chest']
  for index in (0, 41, 67):  # sorted order is generation order
    image, labels = generator.generate_example('chest', SIZE, jitter, 0, 'test', index)
    assert test.ids[index] == generator.example_id('chest', 'test', index)
    np.testing.assert_array_equal(test.images[index], image)
    np.testing.assert_array_equal(test.labels[index], labels)


def test_position_jitter_reaches_the_phantom_builder(empty_data_dir):
  arrays = datasets.load_split('phantom_cardiac', 'validation', image_size=SIZE,
                               position_jitter=0.0, data_dir=empty_data_dir)
  assert len(arrays.ids) == 192
  image, labels = generator.generate_example('cardiac', SIZE, 0.0, 0, 'validation', 7)
  np.testing.assert_array_equal(arrays.images[7], image)
  np.testing.assert_array_equal(arrays.labels[7], labels)
  assert (empty_data_dir / 'phantoms' / f'cardiac_{SIZE}_jitter0').is_dir()


def test_dataset_specs():
  assert set(datasets.DATASETS) == {'phantom_chest', 'phantom_cardiac', 'jsrt', 'acdc'}
  chest = datasets.dataset_spec('phantom_chest')
  assert chest.class_names == ('right_lung', 'left_lung', 'heart') and chest.num_classes == 4
  assert chest.normalization == 'dataset' and not chest.manual_download
  assert datasets.dataset_spec('acdc').normalization == 'per_image'
  assert datasets.dataset_spec('jsrt').manual_download
  with pytest.raises(ValueError, match="'acdc'.*'jsrt'.*'phantom_cardiac'.*'phantom_chest'"):
    datasets.dataset_spec('mnist')


@pytest.mark.parametrize('name, kwargs, message', [
    ('phantom_chest', dict(image_size=4), 'at least 8'),
    ('phantom_chest', dict(image_size=0), 'at least 8'),
    ('jsrt', dict(position_jitter=0.1), 'position_jitter'),
    ('acdc', dict(image_size=96), r'\(64, 128, 256\)'),
])
def test_invalid_settings_are_refused_before_building(name, kwargs, message, tmp_path):
  with pytest.raises(ValueError, match=message):
    datasets.load_split(name, 'train', data_dir=tmp_path, **kwargs)
  assert not any(tmp_path.iterdir())


def test_unknown_split_is_refused(tmp_path):
  with pytest.raises(ValueError, match='validation'):
    datasets.load_split('phantom_chest', 'val', image_size=SIZE, data_dir=tmp_path)


@pytest.mark.skipif(importlib.util.find_spec('data_builders.jsrt.jsrt_dataset_builder') is None,
                    reason='the JSRT builder (data_builders/jsrt) is not in this checkout yet')
def test_missing_real_data_raises_one_clear_error(tmp_path):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  with pytest.raises(errors.DatasetNotFoundError) as raised:
    datasets.load_split('jsrt', 'train', image_size=64, data_dir=tmp_path / 'data',
                        manual_dir=manual_dir)
  message = str(raised.value)
  assert "'jsrt'" in message and str(manual_dir) in message
  assert 'JPCLN001' in message  # the builder's download instructions


def test_colorize_and_overlay():
  labels = np.array([[0, 1], [2, 3]], np.uint8)
  colors = drawing.colorize_labels(labels)
  assert colors.shape == (2, 2, 3)
  np.testing.assert_array_equal(colors[0, 0], 0.0)
  assert len({tuple(c) for c in colors.reshape(-1, 3)}) == 4
  image = np.full((2, 2, 1), 0.5, np.float32)
  blended = drawing.overlay(image, labels, alpha=0.5)
  np.testing.assert_allclose(blended[0, 0], 0.5)  # background keeps the gray value
  np.testing.assert_allclose(blended[1, 1], 0.25 + 0.5 * drawing.CLASS_COLORS[3], rtol=1e-6)
  with pytest.raises(ValueError):
    drawing.colorize_labels(np.array([256]))


def test_the_image_panel_ends_in_a_legend_of_the_class_colours():
  images = np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype(np.float32)
  labels = np.zeros((2, 32, 32), np.uint8)  # no class colour in the images: only in the legend
  plain = drawing.label_panel(images, labels, labels, 2)
  panel = drawing.label_panel(images, labels, labels, 2, ('right_lung', 'left_lung', 'heart'))
  assert plain.shape == (64, 96, 3) and panel.dtype == np.uint8
  assert panel.shape == (64 + 4 * drawing.LEGEND_ROW_PIXELS, 96, 3)
  np.testing.assert_array_equal(panel[:64], plain)
  legend = panel[64:]
  legend_colours = {tuple(pixel) for pixel in legend.reshape(-1, 3)}
  for colour in (drawing.CLASS_COLORS[:4] * 255).astype(np.uint8):
    assert tuple(colour) in legend_colours
  # The names are dark text on white, right of the swatches.
  names = legend[:, drawing.LEGEND_ROW_PIXELS:]
  assert names.max() == 255 and names.min() < 100


def test_figure_to_array_and_example_grid(chest_splits):
  train = chest_splits['train']
  fig = drawing.example_grid([('chest', train.images[:3], train.labels[:3], ('a', 'b', 'c'))])
  pixels = drawing.figure_to_array(fig)
  assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[-1] == 3
  assert pixels.shape[0] > 100 and pixels.shape[1] > 300
  assert pixels.min() < 50 and pixels.max() > 200


def test_command_line_draws_a_picture(empty_data_dir, chest_splits, tmp_path):
  del chest_splits  # built already; the command reuses it
  picture = tmp_path / 'examples.png'
  datasets.main(['--dataset=phantom_chest', f'--image_size={SIZE}', f'--data_dir={empty_data_dir}',
                 f'--picture={picture}', '--num_examples=2'])
  assert picture.stat().st_size > 1000
