"""Procedural chest-radiograph and cardiac-MRI phantoms in plain numpy.

Every phantom is drawn in two steps: `*_anatomy(rng, position_jitter)` draws one "patient"
(a dict of floats, independent of the image size), then `render_*(anatomy, size, noise_rng)`
evaluates that anatomy on the pixel centres of an S×S grid. The anatomy lives in continuous
coordinates x, y ∈ [-1, 1] (x to the image's right, y down), so the same patient can be rendered
at any resolution without resizing; only the per-pixel noise depends on S.

Position: the whole anatomy is translated by a random offset whose per-axis standard deviation
is `position_jitter` times the image side (truncated at 2.5 standard deviations so the anatomy
stays in view). Jitter 0 keeps every patient at the same place up to the patient's own
anatomical variation (size, shape and a small per-structure wobble).

Labels follow JSRT (chest: 1 right lung = image left, 2 left lung = image right, 3 heart, heart
drawn over the lungs) and ACDC (cardiac: 1 right-ventricle cavity, 2 myocardium, 3
left-ventricle cavity).

The chest phantom is built so that the two lungs are statistically alike up to a mirror image:
same shape distribution, same intensity and texture distribution, rib arcs whose local slopes
occur with both signs in each lung. Only position tells them apart, which is what the paper's
small-receptive-field CNN without positional encoding cannot see.

Calibration: how often each class is present, its area, the mean and spread of its centroid and
its intensity follow the real training splits the phantoms stand for (JSRT's 156 images and
ACDC's 1,344 slices, measured at 64×64); `tests/test_phantom_statistics.py` holds those targets.
"""

from __future__ import annotations

import numpy as np

CHEST = 'chest'
CARDIAC = 'cardiac'
KINDS = (CHEST, CARDIAC)

# Translation std as a fraction of the image side. Chest: the paper's averaged-mask baseline
# lands where it does on JSRT (0.8124). Cardiac: the LV's centroid spreads as in ACDC.
# (README has both.)
DEFAULT_POSITION_JITTER = {CHEST: 0.03, CARDIAC: 0.04}

# Truncation of the random translation, in standard deviations.
_MAX_SHIFT_STDS = 2.5


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  """x, y of the pixel centres of a size×size image in [-1, 1], each (size, size) float64."""
  centres = (2.0 * np.arange(size) + 1.0) / size - 1.0
  y, x = np.meshgrid(centres, centres, indexing='ij')
  return x, y


def _translation(rng: np.random.Generator, position_jitter: float) -> tuple[float, float]:
  """Whole-anatomy offset in grid units (the image side is 2 units)."""
  shift = np.clip(rng.normal(size=2), -_MAX_SHIFT_STDS, _MAX_SHIFT_STDS)
  return tuple(2.0 * position_jitter * shift)


def _random_waves(rng, count: int, min_frequency: float, max_frequency: float):
  """Parameters of an isotropic sum of plane waves (frequencies in cycles per grid unit)."""
  angle = rng.uniform(0.0, 2.0 * np.pi, count)
  frequency = rng.uniform(min_frequency, max_frequency, count)
  return {
      'kx': frequency * np.cos(angle),
      'ky': frequency * np.sin(angle),
      'phase': rng.uniform(0.0, 2.0 * np.pi, count),
      'amplitude': rng.normal(size=count) * np.sqrt(2.0 / count),
  }


def _smooth_field(waves, x, y) -> np.ndarray:
  """A smooth random field with unit variance (in expectation), defined at any resolution.

  x, y are a `pixel_grid`: x varies along columns only and y along rows only, so each plane
  wave cos(kx·x + ky·y + phase) splits into column and row factors; the field is then two
  small matrix products instead of a cosine per pixel and wave.
  """
  column_angle = 2.0 * np.pi * x[0][:, None] * waves['kx']  # (S, waves)
  row_angle = 2.0 * np.pi * y[:, 0][:, None] * waves['ky'] + waves['phase']
  amplitude = waves['amplitude']
  # einsum rather than `@`: multithreaded BLAS is slower than this on such small products.
  return (np.einsum('ik,jk->ij', np.cos(row_angle) * amplitude, np.cos(column_angle))
          - np.einsum('ik,jk->ij', np.sin(row_angle) * amplitude, np.sin(column_angle)))


def _soft_inside(level: np.ndarray, width: float) -> np.ndarray:
  """1 inside (level < 0), 0 outside, with a smooth edge about `width` wide."""
  return 0.5 - 0.5 * np.tanh(level / width)


def _shape_level(u, v, shape) -> np.ndarray:
  """Approximate signed distance of a perturbed superellipse, in grid units.

  u, v are coordinates in the shape's frame, already divided by its half axes; the boundary
  radius wobbles with a few low-order Fourier terms of the polar angle.
  """
  exponent = shape['exponent']
  radius = (np.abs(u) ** exponent + np.abs(v) ** exponent) ** (1.0 / exponent)
  angle = np.arctan2(v, u)
  boundary = np.ones_like(radius)
  wobble = zip(shape['fourier_amplitude'], shape['fourier_phase'])
  for order, (amplitude, phase) in enumerate(wobble, start=2):
    boundary = boundary + amplitude * np.cos(order * angle + phase)
  return (radius - boundary) * shape['scale']


def _random_outline(rng, exponent_range, wobble: float, orders: int = 3):
  return {
      'exponent': rng.uniform(*exponent_range),
      'fourier_amplitude': rng.normal(0.0, wobble, orders),
      'fourier_phase': rng.uniform(0.0, 2.0 * np.pi, orders),
  }


def _edge_width(size: int, anatomical: float) -> float:
  """Edge softness: the anatomy's own blur, never sharper than a pixel (2/size grid units)."""
  return max(anatomical, 1.0 / size)


# ----------------------------------------------------------------------------------------------
# Chest radiograph (posterior-anterior, displayed with lungs dark as radiologists read it).
# ----------------------------------------------------------------------------------------------


def _lung_anatomy(rng, patient_scale: float, inspiration: float, side: float):
  """One lung; `side` is -1 for the right lung (image left) and +1 for the left lung.

  `inspiration` stretches the lung's height about its apex: the diaphragm moves, the apex not.
  """
  half_height = 0.65 * patient_scale
  return {
      'side': side,
      'centre_x': side * 0.43 * patient_scale + rng.normal(0.0, 0.02),
      'centre_y': (-0.08 * patient_scale + (inspiration - 1.0) * half_height
                   + rng.normal(0.0, 0.02)),
      'half_width': 0.335 * patient_scale * rng.uniform(0.93, 1.07),
      'half_height': half_height * inspiration * rng.uniform(0.94, 1.06),
      'taper': rng.uniform(0.2, 0.35),  # narrower apex than base
      'costophrenic_drop': rng.uniform(0.1, 0.25),  # the base reaches lower laterally
      'dome': rng.uniform(0.08, 0.16),  # the diaphragm bulges up into the base
      'outline': _random_outline(rng, (2.2, 3.0), 0.025),
      'density_offset': rng.normal(0.0, 0.015),
      'rib_phase_offset': rng.normal(0.0, 0.05),
  }


def chest_anatomy(rng: np.random.Generator, position_jitter: float) -> dict:
  """Draws one chest "patient": geometry, intensities and textures, independent of size."""
  centre_x, centre_y = _translation(rng, position_jitter)
  scale = rng.uniform(0.86, 1.1)
  inspiration = rng.uniform(0.85, 1.15)  # shared by both lungs, so they stay alike
  return {
      # As in JSRT, the lungs fill the upper film and the midline sits a little right of centre.
      'centre_x': centre_x + 0.02,
      'centre_y': centre_y - 0.08,
      'scale': scale,
      'lungs': [_lung_anatomy(rng, scale, inspiration, side) for side in (-1.0, 1.0)],
      'heart': {
          'centre_x': 0.13 * scale + rng.normal(0.0, 0.025),
          'centre_y': 0.33 * scale + rng.normal(0.0, 0.025),
          'half_width': 0.41 * scale * rng.uniform(0.88, 1.12),
          'half_height': 0.285 * scale * rng.uniform(0.88, 1.12),
          'angle': np.deg2rad(rng.uniform(15.0, 35.0)),  # apex down and to the image's right
          'outline': _random_outline(rng, (1.9, 2.3), 0.02, orders=2),
          'brightness': rng.uniform(0.0, 0.04),
      },
      'body': {
          'half_width': 0.9 * scale * rng.uniform(0.95, 1.05),
          'shoulder_y': -0.82 * scale + rng.normal(0.0, 0.03),
          'soft_tissue': rng.uniform(0.55, 0.66),
          'spine_brightness': rng.uniform(0.07, 0.12),
          'vertebra_period': rng.uniform(0.1, 0.13) * scale,
      },
      'lung_density': rng.uniform(0.2, 0.3),
      'vessel_waves': _random_waves(rng, 48, 3.0, 9.0),
      'vessel_contrast': rng.uniform(0.02, 0.04),
      'rib_period': 0.165 * scale * rng.uniform(0.92, 1.08),
      'rib_phase': rng.uniform(0.0, 1.0),
      'rib_curvature': rng.uniform(0.9, 1.4),
      'rib_contrast': rng.uniform(0.05, 0.09),
      'rib_sharpness': rng.uniform(3.0, 5.0),
      'clavicle_y': -0.72 * scale + rng.normal(0.0, 0.03),
      'clavicle_slope': rng.uniform(0.1, 0.25),
      'clavicle_contrast': rng.uniform(0.06, 0.1),
      'background_waves': _random_waves(rng, 12, 0.15, 0.7),
      'background_contrast': rng.uniform(0.02, 0.04),
      'gradient': rng.normal(0.0, 0.025, 2),
      'gain': rng.uniform(0.92, 1.08),
      'offset': rng.uniform(-0.03, 0.03),
      'gamma': rng.uniform(0.85, 1.15),
      'noise_std': rng.uniform(0.006, 0.016),
  }


def _lung_frame(x, y, lung, centre_x, centre_y):
  """Lateral (a, growing away from the midline) and downward (b) coordinates of a lung."""
  a = lung['side'] * (x - centre_x - lung['centre_x'])
  b = y - centre_y - lung['centre_y']
  return a, b


def _lung_level(a, b, lung) -> np.ndarray:
  a_normalized = np.clip(a / lung['half_width'], -1.0, 1.0)
  b_normalized = b / lung['half_height'] - 0.5 * lung['costophrenic_drop'] * a_normalized
  # Diaphragm dome: lift the base most in the middle of the lung, not at its corners.
  lower_half = np.clip(b_normalized, 0.0, None)
  b_normalized = b_normalized + lung['dome'] * (1.0 - a_normalized ** 2) * lower_half ** 2
  width = lung['half_width'] * (1.0 + lung['taper'] * np.clip(b_normalized, -1.0, 1.0))
  shape = dict(lung['outline'], scale=lung['half_width'])
  return _shape_level(a / width, b_normalized, shape)


def render_chest(anatomy: dict, size: int, noise_rng: np.random.Generator):
  """Renders a chest phantom: image (size, size) float32 in [0, 1], labels (size, size) uint8."""
  x, y = pixel_grid(size)
  cx, cy = anatomy['centre_x'], anatomy['centre_y']
  scale = anatomy['scale']
  edge = _edge_width(size, 0.012)
  body = anatomy['body']

  # Body outline: a boxy superellipse that narrows to the neck above the shoulders.
  above_shoulders = _soft_inside(y - cy - body['shoulder_y'], 0.08)
  body_half_width = body['half_width'] * (1.0 - 0.6 * above_shoulders)
  body_y = (y - cy - 0.25 * scale) / (1.35 * scale)
  body_level = (np.abs(x - cx) / body_half_width) ** 4 + body_y ** 4 - 1.0
  body_soft = _soft_inside(body_level * 0.25, edge * 2.0)
  relative_x = (x - cx) / body['half_width']
  density = body_soft * (body['soft_tissue'] + 0.08 * (1.0 - relative_x ** 2))

  # Spine and mediastinum: a bright central column with faint vertebral banding.
  spine = _soft_inside(np.abs(x - cx) - 0.085 * scale, edge * 1.5) * body_soft
  vertebrae = 0.5 + 0.5 * np.cos(2.0 * np.pi * (y - cy) / body['vertebra_period'])
  density += spine * (body['spine_brightness'] + 0.02 * vertebrae)
  trachea = (_soft_inside(np.abs(x - cx) - 0.03 * scale, edge)
             * _soft_inside(y - cy + 0.3 * scale, 0.05))
  density -= 0.07 * trachea * body_soft

  heart = anatomy['heart']
  cos_angle, sin_angle = np.cos(heart['angle']), np.sin(heart['angle'])
  hx, hy = x - cx - heart['centre_x'], y - cy - heart['centre_y']
  heart_u = (cos_angle * hx + sin_angle * hy) / heart['half_width']
  heart_v = (-sin_angle * hx + cos_angle * hy) / heart['half_height']
  heart_shape = dict(heart['outline'], scale=heart['half_height'])
  heart_level = _shape_level(heart_u, heart_v, heart_shape)
  heart_soft = _soft_inside(heart_level, edge)

  vessels = _smooth_field(anatomy['vessel_waves'], x, y)
  labels = np.zeros((size, size), np.uint8)
  for lung_class, lung in enumerate(anatomy['lungs'], start=1):
    a, b = _lung_frame(x, y, lung, cx, cy)
    level = _lung_level(a, b, lung)
    lung_soft = _soft_inside(level, edge)
    labels[level < 0.0] = lung_class
    # Air makes the lung dark. The lung replaces (rather than darkens) the body's thickness
    # profile, so no intensity gradient inside a lung points to the midline: a local filter
    # must not be able to tell which side of the body it is looking at.
    b_normalized = np.clip(b / lung['half_height'], -1.0, 1.0)
    lung_density = anatomy['lung_density'] + lung['density_offset'] + 0.05 * b_normalized
    lung_density = lung_density + anatomy['vessel_contrast'] * vessels
    lung_weight = lung_soft * (1.0 - heart_soft)
    density = density * (1.0 - lung_weight) + lung_density * lung_weight

    # Posterior ribs: arches with their apex over the lung centre, so each lung shows both slopes.
    side_mask = _soft_inside(-lung['side'] * (x - cx), edge)
    rib_coordinate = ((b - anatomy['rib_curvature'] * a ** 2) / anatomy['rib_period']
                      - anatomy['rib_phase'] - lung['rib_phase_offset'])
    ribs = (0.5 + 0.5 * np.cos(2.0 * np.pi * rib_coordinate)) ** anatomy['rib_sharpness']
    away_from_spine = np.clip((np.abs(x - cx) - 0.05 * scale) / (0.05 * scale), 0.0, 1.0)
    below_lung = _soft_inside(lung['half_height'] * 0.9 - b, 0.1)
    rib_weight = (side_mask * away_from_spine * body_soft
                  * (0.3 + 0.7 * lung_soft) * (1.0 - 0.7 * below_lung))
    density += anatomy['rib_contrast'] * rib_weight * ribs

    # Clavicle: a band crossing the apex, rising laterally.
    lateral = lung['side'] * (x - cx)
    clavicle_centre = (cy + anatomy['clavicle_y']
                       - anatomy['clavicle_slope'] * (lateral - 0.4 * scale))
    clavicle = np.exp(-((y - clavicle_centre) / (0.035 * scale)) ** 2)
    clavicle_extent = (np.clip((lateral - 0.06 * scale) / 0.08, 0.0, 1.0)
                       * _soft_inside(lateral - 0.8 * scale, 0.05))
    density += anatomy['clavicle_contrast'] * side_mask * clavicle_extent * clavicle * body_soft

  density += heart_soft * heart['brightness'] * body_soft
  labels[heart_level < 0.0] = 3

  density += anatomy['background_contrast'] * _smooth_field(anatomy['background_waves'], x, y)
  density += anatomy['gradient'][0] * x + anatomy['gradient'][1] * y
  image = anatomy['offset'] + anatomy['gain'] * density
  image = image + noise_rng.normal(0.0, anatomy['noise_std'], image.shape)
  image = np.clip(image, 0.0, 1.0) ** anatomy['gamma']
  return image.astype(np.float32), labels


# ----------------------------------------------------------------------------------------------
# Cardiac MRI, short-axis cine slice (bright blood), RV on the image's left as in ACDC.
# ----------------------------------------------------------------------------------------------


def cardiac_anatomy(rng: np.random.Generator, position_jitter: float) -> dict:
  """Draws one cardiac slice: patient, slice level (base to apex) and phase (ED or ES)."""
  centre_x, centre_y = _translation(rng, position_jitter)
  scale = rng.uniform(0.85, 1.15)  # body size and field of view vary between patients
  heart_scale = scale * rng.uniform(0.85, 1.15)
  # 0 at the base, 1 at the apex; a few slices lie beyond the apex and miss the heart.
  level = rng.uniform(0.0, 1.035)
  end_systole = rng.uniform() < 0.5
  # The epicardium narrows to a point at the apex; the cavity is what the wall leaves inside it,
  # so the last slices before the apex are a myocardial cap without a cavity.
  apex_shrink = np.sqrt(max(1.0 - level ** 2, 0.0))
  outer_radius = 0.225 * heart_scale * apex_shrink * (0.87 if end_systole else 1.0)
  wall = 0.063 * heart_scale * (1.35 if end_systole else 1.0) * (1.0 - 0.6 * level)
  rv_extent = max(0.0, 1.0 - level / 0.85) ** 0.35 * (0.75 if end_systole else 1.0)
  # The short-axis plane is planned per patient, so the RV's direction from the LV varies
  # between patients, and it turns from anterior at the base to inferior towards the apex;
  # it stays on the image's left.
  rv_turn = rng.normal(0.0, 0.7) + 1.5 * (level - 0.5)
  rv_angle = np.pi + np.clip(rv_turn, -1.2, 1.2)
  return {
      # The field of view is centred on the heart, so the thorax sits to the image's left.
      'centre_x': centre_x - 0.15,
      'centre_y': centre_y + 0.035,
      'scale': scale,
      'body_half_width': 1.15 * scale,  # the thorax fills the field of view
      'body_half_height': 1.0 * scale,
      'fat_thickness': rng.uniform(0.03, 0.07) * scale,
      'lv_centre_x': 0.1 * scale + rng.normal(0.0, 0.03),
      'lv_centre_y': -0.05 * scale + rng.normal(0.0, 0.03),
      'outer_radius': outer_radius,
      'lv_aspect': rng.uniform(0.88, 1.12),
      'lv_angle': rng.uniform(0.0, np.pi),
      'lv_outline': _random_outline(rng, (1.9, 2.2), 0.03),
      'wall': wall,
      'rv_angle': rv_angle,
      'rv_extent': rv_extent,
      'rv_outline': _random_outline(rng, (1.9, 2.3), 0.04),
      'papillary': 0.2 < level < 0.75,
      'papillary_angle': rng.uniform(0.0, 2.0 * np.pi),
      'blood': rng.uniform(0.72, 0.88),
      # Trabeculations and the thin crescent's partial volume make the RV cavity darker.
      'rv_blood': rng.uniform(0.7, 0.9),
      'myocardium': rng.uniform(0.2, 0.3),
      'tissue': rng.uniform(0.32, 0.42),
      'fat': rng.uniform(0.65, 0.8),
      'epicardial_fat': rng.uniform(0.4, 0.6),
      'lung': rng.uniform(0.03, 0.08),
      'liver': rng.uniform(0.38, 0.48),
      'liver_top': rng.uniform(0.1, 0.35) * scale,
      'chest_muscle': rng.uniform(0.03, 0.08) * scale,
      'blobs': _cardiac_look_alikes(rng, scale),
      'texture_waves': _random_waves(rng, 32, 2.0, 8.0),
      'texture_contrast': rng.uniform(0.02, 0.05),
      'bias_direction': rng.uniform(0.0, 2.0 * np.pi),
      'bias_strength': rng.uniform(0.05, 0.2),
      'bias_waves': _random_waves(rng, 8, 0.15, 0.6),
      # ACDC's per-volume percentile scaling leaves the blood pool near 0.6, not at 1.
      'gain': rng.uniform(0.72, 0.88),
      'noise_std': rng.uniform(0.015, 0.035),
  }


_CARDIAC_LUNG_CENTRES = ((-0.45, -0.05), (0.55, -0.1))


def _cardiac_look_alikes(rng, scale: float, count_range=(3, 8)) -> np.ndarray:
  """Bright vessels and bowel loops, some with a dark wall, away from the heart.

  Real slices are full of blood-bright and muscle-grey structures; without them a local filter
  could find the ventricles by brightness alone. Rows: x, y, radius, brightness, wall.
  """
  blobs = []
  for _ in range(rng.integers(*count_range, endpoint=True)):
    for _ in range(20):  # rejection sampling, bounded so the stream stays deterministic
      bx, by = rng.uniform(-0.85, 0.85) * scale, rng.uniform(-0.6, 0.7) * scale
      inside_body = (bx / 0.9) ** 2 + (by / 0.7) ** 2 < 0.7 * scale ** 2
      away_from_heart = np.hypot(bx - 0.1 * scale, by + 0.05 * scale) > 0.5 * scale
      outside_lungs = all(
          ((bx - lx * scale) / (0.3 * scale)) ** 2 + ((by - ly * scale) / (0.42 * scale)) ** 2 > 1.2
          for lx, ly in _CARDIAC_LUNG_CENTRES)
      if inside_body and away_from_heart and outside_lungs:
        break
    radius, brightness = rng.uniform(0.025, 0.08) * scale, rng.uniform(0.75, 1.05)
    blobs.append([bx, by, radius, brightness, rng.uniform(0.0, 0.035) * scale])
  return np.array(blobs)


def render_cardiac(anatomy: dict, size: int, noise_rng: np.random.Generator):
  """Renders a cardiac phantom: image (size, size) float32 in [0, 1], labels (size, size) uint8."""
  x, y = pixel_grid(size)
  cx, cy, scale = anatomy['centre_x'], anatomy['centre_y'], anatomy['scale']
  edge = _edge_width(size, 0.008)

  # Thorax cross-section: subcutaneous fat ring, muscle and organs, dark lungs, spine, aorta.
  bx = (x - cx) / anatomy['body_half_width']
  by = (y - cy - 0.05 * scale) / anatomy['body_half_height']
  body_level = (np.sqrt(bx ** 2 + by ** 2) - 1.0) * anatomy['body_half_height']
  body = _soft_inside(body_level, edge)
  fat = body * (1.0 - _soft_inside(body_level + anatomy['fat_thickness'], edge))
  image = body * anatomy['tissue'] + fat * (anatomy['fat'] - anatomy['tissue'])
  for lung_x, lung_y in _CARDIAC_LUNG_CENTRES:
    lung_u = (x - cx - lung_x * scale) / (0.3 * scale)
    lung_v = (y - cy - lung_y * scale) / (0.42 * scale)
    lung_level = np.sqrt(lung_u ** 2 + lung_v ** 2) - 1.0
    lung = _soft_inside(lung_level * 0.3 * scale, edge * 2.0)
    image += lung * (anatomy['lung'] - anatomy['tissue'])
  # Liver: below its top edge and left of an oblique line, in the image's lower left.
  liver_level = np.maximum(anatomy['liver_top'] - (y - cy),
                           (x - cx + 0.05 * scale) - 0.4 * (y - cy))
  image += _soft_inside(liver_level, edge * 2.0) * body * (anatomy['liver'] - anatomy['tissue'])
  spine_level = np.hypot(x - cx, y - cy - 0.5 * scale) - 0.11 * scale
  image += _soft_inside(spine_level, edge) * (0.12 - anatomy['tissue'])
  image += _soft_inside(spine_level + 0.025 * scale, edge) * 0.2
  aorta_level = np.hypot(x - cx - 0.17 * scale, y - cy - 0.36 * scale) - 0.055 * scale
  image += _soft_inside(aorta_level, edge) * (anatomy['blood'] - anatomy['tissue'])
  # Chest-wall muscle: a band of myocardium-grey just inside the fat.
  muscle_inner_level = body_level + anatomy['fat_thickness'] + anatomy['chest_muscle']
  outer_body = body * (1.0 - _soft_inside(muscle_inner_level, edge))
  image += np.clip(outer_body - fat, 0.0, 1.0) * (anatomy['myocardium'] - image)
  for bx, by, radius, brightness, wall in anatomy['blobs']:
    distance = np.hypot(x - cx - bx, y - cy - by)
    if wall > 0.01 * scale:
      image += _soft_inside(distance - radius - wall, edge) * (anatomy['myocardium'] - image)
    image += _soft_inside(distance - radius, edge) * (brightness * anatomy['blood'] - image)

  # Left ventricle: a perturbed ellipse of myocardium; the cavity is its inward offset by the wall.
  lv_x, lv_y = cx + anatomy['lv_centre_x'], cy + anatomy['lv_centre_y']
  outer = anatomy['outer_radius']
  if outer > 0.0:
    cos_angle, sin_angle = np.cos(anatomy['lv_angle']), np.sin(anatomy['lv_angle'])
    dx, dy = x - lv_x, y - lv_y
    u = (cos_angle * dx + sin_angle * dy) / (outer * anatomy['lv_aspect'])
    v = (-sin_angle * dx + cos_angle * dy) / (outer / anatomy['lv_aspect'])
    epicardium_level = _shape_level(u, v, dict(anatomy['lv_outline'], scale=outer))
  else:  # beyond the apex
    epicardium_level = np.full_like(x, np.inf)
  endocardium_level = epicardium_level + anatomy['wall']

  # Right ventricle: an ellipse beside the LV, minus the LV and septum, leaves a crescent.
  # Its inner edge stays inside the LV's epicardium so that the crescent abuts the septum.
  rv_cos, rv_sin = np.cos(anatomy['rv_angle']), np.sin(anatomy['rv_angle'])
  rv_extent = max(anatomy['rv_extent'], 1e-3)
  rv_distance = (0.65 + 0.8 * rv_extent) * outer
  rv_x = lv_x + rv_distance * rv_cos
  rv_y = lv_y + rv_distance * rv_sin
  rv_unit = max(outer, 1e-3)
  radial = ((x - rv_x) * rv_cos + (y - rv_y) * rv_sin) / (0.8 * rv_unit * rv_extent)
  tangential = (-(x - rv_x) * rv_sin + (y - rv_y) * rv_cos) / (1.3 * rv_unit * rv_extent ** 0.5)
  rv_shape_level = _shape_level(radial, tangential,
                                dict(anatomy['rv_outline'], scale=rv_unit * 0.6))
  if anatomy['rv_extent'] <= 0.0 or outer <= 0.0:
    rv_shape_level = np.full_like(x, np.inf)
  rv_level = np.maximum(rv_shape_level, -epicardium_level)
  rv_wall_level = np.maximum(rv_shape_level - 0.025 * scale, -epicardium_level)

  heart_tissue = _soft_inside(np.minimum(epicardium_level, rv_wall_level) - 0.02 * scale, edge * 2)
  image += heart_tissue * (anatomy['epicardial_fat'] - image)  # fat around the heart
  heart_muscle = _soft_inside(np.minimum(epicardium_level, rv_wall_level), edge)
  image += heart_muscle * (anatomy['myocardium'] - image)
  image += _soft_inside(rv_level, edge) * (anatomy['rv_blood'] * anatomy['blood'] - image)
  image += _soft_inside(endocardium_level, edge) * (anatomy['blood'] - image)
  cavity_radius = max(outer - anatomy['wall'], 0.0)
  if anatomy['papillary'] and cavity_radius > 0.0:
    for offset in (0.0, 1.9):
      angle = anatomy['papillary_angle'] + offset
      px = lv_x + 0.55 * cavity_radius * np.cos(angle)
      py = lv_y + 0.55 * cavity_radius * np.sin(angle)
      muscle = _soft_inside(np.hypot(x - px, y - py) - 0.2 * cavity_radius, edge)
      image += muscle * (anatomy['myocardium'] - image) * 0.8

  image += anatomy['texture_contrast'] * _smooth_field(anatomy['texture_waves'], x, y) * body
  # Coil sensitivity: a smooth multiplicative bias field.
  direction = anatomy['bias_direction']
  bias = 1.0 + anatomy['bias_strength'] * (np.cos(direction) * x + np.sin(direction) * y)
  bias += 0.05 * _smooth_field(anatomy['bias_waves'], x, y)
  image = anatomy['gain'] * image * bias
  # Magnitude images have Rician noise: the modulus of a complex Gaussian around the signal.
  real = image + noise_rng.normal(0.0, anatomy['noise_std'], image.shape)
  imaginary = noise_rng.normal(0.0, anatomy['noise_std'], image.shape)
  image = np.clip(np.hypot(real, imaginary), 0.0, 1.0)

  labels = np.zeros((size, size), np.uint8)
  labels[rv_level < 0.0] = 1
  labels[(epicardium_level < 0.0) & (endocardium_level >= 0.0)] = 2
  labels[endocardium_level < 0.0] = 3
  return image.astype(np.float32), labels


# ----------------------------------------------------------------------------------------------
# Seeding: one independent stream per (kind, seed, split, example index).
# ----------------------------------------------------------------------------------------------

_SPLIT_STREAMS = {'train': 0, 'validation': 1, 'test': 2}


def example_rngs(kind: str, seed: int, split: str, index: int):
  """Independent generators for the anatomy and for the pixel noise of one example.

  Keyed by the example's index, so an example does not depend on the split's size, and the
  anatomy stream does not depend on the image size.
  """
  key = [KINDS.index(kind), seed, _SPLIT_STREAMS[split], index]
  anatomy_seed, noise_seed = np.random.SeedSequence(key).spawn(2)
  return np.random.default_rng(anatomy_seed), np.random.default_rng(noise_seed)


def generate_example(kind: str, size: int, position_jitter: float, seed: int, split: str,
                     index: int):
  """One example: image (size, size, 1) float32 in [0, 1] and labels (size, size) uint8."""
  anatomy_rng, noise_rng = example_rngs(kind, seed, split, index)
  if kind == CHEST:
    image, labels = render_chest(chest_anatomy(anatomy_rng, position_jitter), size, noise_rng)
  elif kind == CARDIAC:
    image, labels = render_cardiac(cardiac_anatomy(anatomy_rng, position_jitter), size, noise_rng)
  else:
    raise ValueError(f'Unknown phantom kind {kind!r}; expected one of {KINDS}.')
  return image[..., None], labels


def example_id(kind: str, split: str, index: int) -> str:
  """Zero-padded so that ids sort in example order."""
  return f'{kind}-{split}-{index:05d}'


def generate_split(kind: str, size: int, position_jitter: float, seed: int, split: str, count: int):
  """A whole split as arrays: images (N, S, S, 1), labels (N, S, S), ids (N,)."""
  images = np.zeros((count, size, size, 1), np.float32)
  labels = np.zeros((count, size, size), np.uint8)
  for index in range(count):
    images[index], labels[index] = generate_example(kind, size, position_jitter, seed, split, index)
  ids = np.array([example_id(kind, split, index) for index in range(count)])
  return images, labels, ids
