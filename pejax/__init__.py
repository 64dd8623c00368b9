"""pejax: how CNNs use absolute image position for segmentation (Murase et al.), in JAX/Flax NNX.

`pejax.load(path)` gives a trained model to predict with (`pejax.inference.predict`); importing pejax
itself loads no JAX.
"""

__version__ = "0.1.0"


def load(path):
  """The trained model of a run folder, its checkpoints/ folder or one checkpoint step folder,
  as a `pejax.inference.predict.Segmenter`: `load(path)(images01)` gives labels and probabilities."""
  from pejax.inference import predict
  return predict.load(path)
