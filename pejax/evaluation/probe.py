"""How much absolute position a trained network's features hold: the read-out probe of Islam et
al. 2020 ("How much position information do convolutional neural networks encode?").

The network is frozen. At each level — the U-Net's four encoder outputs (before pooling) and its
bottleneck, the small CNN's layers — a read-out (one 3×3 convolution to 2 channels, no hidden
layer) is trained with Adam, full batch, on the mean squared error against that level's
normalized coordinates x̂ = i/(W−1), ŷ = j/(H−1), then measured on held-out inputs: Spearman's
rank correlation (SPC, per input over its pixels, then the mean over inputs) and the mean
absolute error (MAE) of each axis. Two read-outs per level, by the inputs they see:

  images        trained on training-split images, measured on test-split images. The anatomy
                itself tells where it is, so this is an upper bound of what a read-out finds;
  content_free  trained on constant images and uniform noise, measured on other intensities
                (`constant`) and other noise images (`noise`), and on both (`content_free`):
                with no content to go by, whatever position is found the network adds itself
                (through its padding or the positional encoding).

Inputs go through the run's own normalizer and encoding (`steps.model_inputs`,
`steps.layer_coordinates`), as in prediction. The result is plain JSON (`pejax.evaluation.
probe_results` reads it); everything here is deterministic for given settings.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from scipy import stats

from pejax import configuration
from pejax.data import datasets, input_pipeline
from pejax.evaluation.probe_results import AXES, level_names
from pejax.models import layers, steps
from pejax.models.encoding import coordinate_channels
from pejax.models.predictor import Predictor

# The read-out pads by replicating its edge, not with zeros as Islam et al.'s PosENet does: a
# zero-padded read-out finds the border ring of a constant feature map by itself, and with it
# a position the network never had (its SPC on a torus — circular padding — would not be 0).
# Replicated edges keep a constant map constant, at every level's size (a 2×2 bottleneck too).
READOUT_PADDING = 'replicate'
# A prediction whose spread over the map (std) is below this fraction of the target's span
# (max − min, 1 for x̂ and ŷ) holds no position: its SPC is 0, not the ranks of rounding noise
# (and never NaN, as the correlation of a constant would be).
CONSTANT_TOLERANCE = 1e-4
# Images per forward pass of the frozen network: bounds the activations kept at once.
FEATURE_BATCH = 8
# Keeps channels that are constant over the read-out's training inputs (dead ReLUs) at 0.
FEATURE_STD_FLOOR = 1e-6


@functools.partial(jax.jit, static_argnums=0)
def _level_features(predictor: Predictor, model_state, images01):
  """The network's features at every level of a batch (float32, NHWC), in evaluation mode."""
  state, pe_scale = model_state
  spec = predictor.spec
  model = nnx.merge(spec.graphdef, state.params, state.batch_stats)
  inputs = steps.model_inputs(spec, predictor.normalizer(images01), pe_scale)
  levels = model.features(inputs, train=False, coords=steps.layer_coordinates(spec, pe_scale))
  return [level.astype(jnp.float32) for level in levels]


def level_features(predictor: Predictor, model_state, images01: np.ndarray) -> list[jax.Array]:
  """Every level's features of `images01` (N, H, W, C) in [0, 1], computed once."""
  count = len(images01)
  # Whole batches (the last one filled up with zero images): one compiled network for all.
  padded = np.zeros((-(-count // FEATURE_BATCH) * FEATURE_BATCH,) + images01.shape[1:],
                    np.float32)
  padded[:count] = images01
  batches = [_level_features(predictor, model_state, padded[start:start + FEATURE_BATCH])
             for start in range(0, len(padded), FEATURE_BATCH)]
  return [jnp.concatenate(level)[:count] for level in zip(*batches)]


def readout(params, features):
  """The read-out's (N, H, W, 2) prediction of (x̂, ŷ) from (N, H, W, C) features."""
  padded = layers.pad_spatial(features, 1, READOUT_PADDING)
  convolve = layers.conv_primitive('auto')
  return convolve(padded, params['weights'], (1, 1), 'VALID',
                  dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + params['bias']


@functools.partial(jax.jit, static_argnames='num_steps')
def fit_readout(features, targets, learning_rate, *, num_steps: int):
  """The read-out after `num_steps` full-batch Adam steps on the MSE against `targets` (H, W,
  2), from zero weights (the problem is convex: no seed needed)."""
  params = {'weights': jnp.zeros((3, 3, features.shape[-1], 2), jnp.float32),
            'bias': jnp.zeros((2,), jnp.float32)}
  optimizer = optax.adam(learning_rate)
  loss = lambda p: jnp.mean(jnp.square(readout(p, features) - targets))

  def step(carry, _):
    params, opt_state = carry
    updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), length=num_steps)
  return params


def spearman(prediction: np.ndarray, target: np.ndarray) -> float:
  """Spearman's rank correlation of two maps over their pixels (ties ranked by their mean); 0
  where the prediction or the target is constant (`CONSTANT_TOLERANCE`)."""
  prediction, target = prediction.ravel().astype(np.float64), target.ravel().astype(np.float64)
  span = float(target.max() - target.min())
  if span == 0 or prediction.std() <= CONSTANT_TOLERANCE * span:
    return 0.0
  return float(np.corrcoef(stats.rankdata(prediction), stats.rankdata(target))[0, 1])


def scores(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
  """SPC (per input, then the mean over inputs) and MAE of each axis of (N, H, W, 2)
  predictions against (H, W, 2) targets."""
  result = {}
  for index, axis in enumerate(AXES):
    result[f'spc_{axis}'] = float(np.mean([spearman(p[..., index], targets[..., index])
                                           for p in predictions]))
    result[f'mae_{axis}'] = float(np.mean(np.abs(predictions[..., index] - targets[..., index])))
  return result


def content_free_images(cfg, shape: tuple[int, ...], held_out: bool) -> dict[str, np.ndarray]:
  """Constant images at the training (or held-out) intensities and uniform-noise images from
  the training (or held-out) stream of `cfg.seed`, of `shape` (H, W, C) each."""
  intensities = np.asarray(cfg.held_out_intensities if held_out else cfg.intensities, np.float32)
  rng = np.random.default_rng((cfg.seed, int(held_out)))
  inputs = {'constant': np.broadcast_to(intensities[:, None, None, None],
                                        (len(intensities),) + tuple(shape)),
            'noise': rng.random((cfg.noise_images,) + tuple(shape), dtype=np.float32)}
  return {name: images for name, images in inputs.items() if len(images)}


def _groups(cfg, images, shape) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
  """Each read-out's training inputs and the held-out sets it is measured on, by the name of
  the read-out (which is also measured on all its sets together)."""
  fit, held_out = (content_free_images(cfg, shape, held) for held in (False, True))
  groups = {'content_free': (np.concatenate(list(fit.values())), held_out)}
  if images is not None:
    train01, test01 = images
    groups = {'images': (train01, {'images': test01}), **groups}
  return groups


def probe_network(predictor: Predictor, model_state, model: str, cfg,
                  images: tuple[np.ndarray, np.ndarray] | None = None,
                  shape: tuple[int, int, int] | None = None) -> dict[str, Any]:
  """The probe of a frozen network (`model_state` = (state, λ)) of kind `model`; `images`:
  (training, test) images in [0, 1], or None to probe content-free inputs of `shape` (H, W, C)
  only. Returns the JSON of probe.json less the run's own facts."""
  start = time.perf_counter()
  shape = shape or images[1].shape[1:]
  groups = _groups(cfg, images, shape)
  levels: list[dict[str, Any]] = []
  for group, (fit, held_out) in groups.items():
    fit_features = level_features(predictor, model_state, fit)
    measured = {name: level_features(predictor, model_state, inputs)
                for name, inputs in held_out.items()}
    names = level_names(model, len(fit_features))
    for index, features in enumerate(fit_features):
      _, height, width, channels = features.shape
      if len(levels) <= index:
        levels.append(dict(level=index + 1, name=names[index], height=height, width=width,
                           channels=channels))
      targets = coordinate_channels(height, width, 1.0)
      # Standardized with the training inputs' statistics: Adam's few hundred steps then
      # converge alike at every level, whatever its activations' scale.
      mean = features.mean(axis=(0, 1, 2))
      std = features.std(axis=(0, 1, 2)) + FEATURE_STD_FLOOR
      params = fit_readout((features - mean) / std, targets, jnp.float32(cfg.learning_rate),
                           num_steps=int(cfg.steps))
      predictions = {name: np.asarray(readout(params, (held[index] - mean) / std))
                     for name, held in measured.items()}
      predictions.setdefault(group, np.concatenate(list(predictions.values())))
      for name, predicted in predictions.items():
        levels[index][name] = scores(predicted, np.asarray(targets))
  inputs = {group: {'train': len(fit), **{name: len(x) for name, x in held_out.items()}}
            for group, (fit, held_out) in groups.items()}
  # The settings the numbers depend on ('enabled' only says when training probes).
  settings = {name: value for name, value in configuration.settings_dict(cfg).items()
              if name != 'enabled'}
  return dict(model=model, levels=levels, inputs=inputs,
              settings=dict(settings, readout_padding=READOUT_PADDING,
                            constant_tolerance=CONSTANT_TOLERANCE),
              seconds=time.perf_counter() - start)


def probe_images(config, cfg) -> tuple[np.ndarray, np.ndarray]:
  """(training, test) images in [0, 1] of a run's dataset: `cfg.num_images` of each split (or
  all it has), drawn with `cfg.seed`, in the splits' order."""
  chosen = []
  for split in ('train', 'test'):
    images = datasets.load_split(config.dataset, split,
                                 **input_pipeline.load_arguments(config)).images
    rng = np.random.default_rng((cfg.seed, len(chosen)))
    rows = np.sort(rng.choice(len(images), min(cfg.num_images, len(images)), replace=False))
    chosen.append(np.asarray(images[rows], np.float32))
  return chosen[0], chosen[1]


def probe_run(predictor: Predictor, model_state, config, cfg) -> dict[str, Any]:
  """The probe of a trained run of `config` (its dataset's images and content-free inputs),
  with the probe settings `cfg`."""
  return probe_network(predictor, model_state, config.model, cfg, probe_images(config, cfg))
