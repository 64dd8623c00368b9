"""Images in [0, 1] to label maps: the normalization a run was trained with (`Normalizer`) and
`Predictor` (normalize, PE, model, argmax), shared by the evaluation and by prediction.
"""

from __future__ import annotations

import dataclasses

from pejax.models import steps

NORMALIZATION_EPSILON = 1e-6


@dataclasses.dataclass(frozen=True)
class Normalizer:
  """Maps images in [0, 1] to the model's input scale, as the paper does.

  'dataset': (x − mean) / std with the training split's statistics (JSRT, chest phantom);
  'per_image': each image to zero mean and unit variance (ACDC, cardiac phantom).
  """
  kind: str
  mean: float = 0.0
  std: float = 1.0

  def __call__(self, images):
    if self.kind == 'per_image':
      mean = images.mean(axis=(1, 2, 3), keepdims=True)
      std = images.std(axis=(1, 2, 3), keepdims=True)
      return (images - mean) / (std + NORMALIZATION_EPSILON)
    return (images - self.mean) / (self.std + NORMALIZATION_EPSILON)


@dataclasses.dataclass(frozen=True)
class Predictor:
  """Label maps from images in [0, 1]: normalize, PE, model, argmax.

  Hashable and called as `predictor((state, pe_scale), images)`, so one compiled evaluation
  serves every state of the same architecture.
  """
  spec: steps.StepSpec
  normalizer: Normalizer

  def __call__(self, model_state, images):
    state, pe_scale = model_state
    return steps.predict(self.spec, state, self.normalizer(images), pe_scale)
