"""The phantoms' class statistics against those of the real training splits they stand for.

Targets: JSRT's 156 training images and ACDC's 1,344 training slices (70 subjects, ED and ES,
after the builder's per-volume scaling to [0, 1]), measured at 64×64 as the phantoms are here.
Per foreground class: the fraction of images where the class is present; over those images, its
area (fraction of the image) and its centroid (x = column / S, y = row / S, pixel indices as the
targets were measured), each as mean and standard deviation; and its mean intensity per image.
"""

import dataclasses

import numpy as np
import pytest

from data_builders.phantoms import phantom_generator as generator

SIZE = 64
# The chest's whole training split; for the cardiac phantom the first 400 slices of it, enough
# for every statistic to settle well within the tolerances.
COUNTS = {'chest': 156, 'cardiac': 400}

PRESENCE_TOLERANCE = 0.08  # absolute
AREA_TOLERANCE = 0.25  # relative to the target's mean area
CENTROID_TOLERANCE = 0.03  # fraction of the image side
SPREAD_FACTOR = 2.0  # standard deviations within this factor of the target's
CARDIAC_INTENSITY_TOLERANCE = 0.05  # absolute, on ACDC's [0, 1] scale


@dataclasses.dataclass(frozen=True)
class ClassTarget:
  present: float
  area: tuple[float, float]  # mean, sd
  x: tuple[float, float | None]  # mean, sd (None: only a range over classes is known)
  y: tuple[float, float | None]
  intensity: float | None = None  # None: only the ordering of the classes is comparable


# Classes 1, 2, 3: right lung, left lung, heart.
JSRT = {
    1: ClassTarget(1.0, (0.169, 0.031), (0.277, None), (0.419, None)),
    2: ClassTarget(1.0, (0.136, 0.028), (0.733, None), (0.397, None)),
    3: ClassTarget(1.0, (0.091, 0.015), (0.558, None), (0.611, None)),
}
# JSRT's centroid standard deviations, lowest and highest over the classes and both axes.
JSRT_CENTROID_SPREAD = (0.025, 0.053)

# Classes 1, 2, 3: RV cavity, myocardium, LV cavity.
ACDC = {
    1: ClassTarget(0.81, (0.0151, 0.0114), (0.369, 0.054), (0.495, 0.088), 0.465),
    2: ClassTarget(0.96, (0.0131, 0.0061), (0.466, 0.043), (0.485, 0.048), 0.273),
    3: ClassTarget(0.95, (0.0129, 0.0086), (0.466, 0.044), (0.485, 0.048), 0.573),
}
ACDC_BACKGROUND_INTENSITY = 0.220

TARGETS = {'chest': JSRT, 'cardiac': ACDC}
CLASSES = [(kind, label_class) for kind in TARGETS for label_class in (1, 2, 3)]


def class_statistics(images, labels, label_class):
  """Presence, area, centroid and intensity of one class, measured as the targets were."""
  size = labels.shape[-1]
  mask = labels == label_class
  area = mask.sum(axis=(1, 2))
  present = area > 0
  mask, area, image = mask[present], area[present], images[present, ..., 0]
  index = np.arange(size) / size
  x = (mask * index[None, None, :]).sum(axis=(1, 2)) / area
  y = (mask * index[None, :, None]).sum(axis=(1, 2)) / area
  return {
      'present': present.mean(),
      'area': area / size ** 2,
      'x': x,
      'y': y,
      'intensity': np.mean([values[inside].mean() for values, inside in zip(image, mask)]),
  }


def background_intensity(images, labels):
  return np.mean([image[..., 0][label == 0].mean() for image, label in zip(images, labels)])


@pytest.fixture(scope='module')
def training_splits():
  return {kind: generator.generate_split(kind, SIZE, generator.DEFAULT_POSITION_JITTER[kind], 0,
                                         'train', count)[:2]
          for kind, count in COUNTS.items()}


@pytest.fixture(scope='module')
def statistics(training_splits):
  return {(kind, label_class): class_statistics(*training_splits[kind], label_class)
          for kind, label_class in CLASSES}


def assert_spread(measured, target, what):
  low, high = target / SPREAD_FACTOR, target * SPREAD_FACTOR
  assert low <= measured <= high, f'{what}: sd {measured:.4f}, target {target:.4f}'


@pytest.mark.parametrize('kind, label_class', CLASSES)
def test_classes_are_present_as_often_as_in_the_real_data(kind, label_class, statistics):
  measured = statistics[kind, label_class]['present']
  target = TARGETS[kind][label_class].present
  assert abs(measured - target) <= PRESENCE_TOLERANCE, (measured, target)


@pytest.mark.parametrize('kind, label_class', CLASSES)
def test_class_areas_match_the_real_data(kind, label_class, statistics):
  area = statistics[kind, label_class]['area']
  target_mean, target_sd = TARGETS[kind][label_class].area
  assert abs(area.mean() / target_mean - 1.0) <= AREA_TOLERANCE, (area.mean(), target_mean)
  assert_spread(area.std(), target_sd, 'area')


@pytest.mark.parametrize('kind, label_class', CLASSES)
def test_class_centroids_match_the_real_data(kind, label_class, statistics):
  for axis in ('x', 'y'):
    centroid = statistics[kind, label_class][axis]
    target_mean, target_sd = getattr(TARGETS[kind][label_class], axis)
    assert abs(centroid.mean() - target_mean) <= CENTROID_TOLERANCE, (
        axis, centroid.mean(), target_mean)
    if target_sd is not None:
      assert_spread(centroid.std(), target_sd, axis)
    else:
      low, high = JSRT_CENTROID_SPREAD
      assert low / SPREAD_FACTOR <= centroid.std() <= high * SPREAD_FACTOR, (axis, centroid.std())


def test_cardiac_intensities_are_ordered_and_scaled_like_acdc(training_splits, statistics):
  """Background < myocardium < RV cavity < LV cavity, each near ACDC's value."""
  measured = [background_intensity(*training_splits['cardiac'])]
  measured += [statistics['cardiac', label_class]['intensity'] for label_class in (2, 1, 3)]
  targets = [ACDC_BACKGROUND_INTENSITY] + [ACDC[label_class].intensity for label_class in (2, 1, 3)]
  assert measured == sorted(measured), measured
  np.testing.assert_allclose(measured, targets, atol=CARDIAC_INTENSITY_TOLERANCE)


def test_chest_intensities_are_ordered_like_jsrt(training_splits, statistics):
  """Lungs < everything else < heart, as JSRT's (stored as 1 - v / 4095, lungs dark)."""
  lungs = max(statistics['chest', label_class]['intensity'] for label_class in (1, 2))
  rest = background_intensity(*training_splits['chest'])
  heart = statistics['chest', 3]['intensity']
  assert lungs < rest < heart, (lungs, rest, heart)
