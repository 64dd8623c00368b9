"""Images in [0, 1] to label maps: the normalization a run was trained with (`Normalizer`) and
`Predictor` (normalize, PE, model, argmax), shared by the evaluation and by prediction.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from pejax.models import steps

NORMALIZATION_EPSILON = 1e-6
CHANNEL_STD_FLOOR = 1e-8


@dataclasses.dataclass(frozen=True)
class Normalizer:
  """Maps images in [0, 1] to the model's input scale.

  'dataset': (x − mean) / std with the training split's statistics (JSRT, chest phantom, as the
  paper does); 'per_image': each image to zero mean and unit variance (ACDC, cardiac phantom);
  'channels': each image channel by its own rule, `channels` holding one (kind, mean, std) per
  channel, kind 'fixed' ((x − mean) / std) or 'per_image' (datasets in nnU-Net's format, whose
  channel names choose the rule).
  """
  kind: str
  mean: float = 0.0
  std: float = 1.0
  channels: tuple[tuple[str, float, float], ...] = ()

  def __post_init__(self):
    # Read back from JSON as lists; tuples keep the normalizer hashable (a static argument).
    object.__setattr__(self, 'channels', tuple(
        (str(kind), float(mean), float(std)) for kind, mean, std in self.channels))

  def __call__(self, images):
    if self.kind == 'channels':
      # As nnU-Net divides: by the std floored at CHANNEL_STD_FLOOR, not by std + ε, which
      # would be off by ε / std (0.4 % for a raw 'noNorm' channel of range 4000).
      return jnp.concatenate([
          _per_image(images[..., c:c + 1], floor=CHANNEL_STD_FLOOR) if kind == 'per_image'
          else (images[..., c:c + 1] - mean) / max(std, CHANNEL_STD_FLOOR)
          for c, (kind, mean, std) in enumerate(self.channels)], axis=-1)
    if self.kind == 'per_image':
      return _per_image(images)
    return (images - self.mean) / (self.std + NORMALIZATION_EPSILON)


def _per_image(images, floor: float | None = None):
  mean = images.mean(axis=(1, 2, 3), keepdims=True)
  std = images.std(axis=(1, 2, 3), keepdims=True)
  scale = std + NORMALIZATION_EPSILON if floor is None else jnp.maximum(std, floor)
  return (images - mean) / scale


@dataclasses.dataclass(frozen=True)
class Predictor:
  """Label maps from images in [0, 1]: normalize, PE, model, argmax.

  Hashable and called as `predictor((state, pe_scale), images)`, so one compiled evaluation
  serves every state of the same architecture; `change` (`encoding.EncodingChange`) changes
  the coordinate channels while the images stay.
  """
  spec: steps.StepSpec
  normalizer: Normalizer

  @property
  def uses_encoding(self) -> bool:
    return self.spec.use_pe

  def __call__(self, model_state, images, change=None):
    state, pe_scale = model_state
    return steps.predict(self.spec, state, self.normalizer(images), pe_scale, change)
