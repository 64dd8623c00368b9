"""pejax: how CNNs use absolute image position for segmentation (Murase et al.), in JAX/Flax NNX.

`pejax.load(path)` gives a trained model to predict with (`pejax.inference.predict`); importing
pejax itself loads nothing else. The package is grouped by role: `models` (the compute core),
`data`, `evaluation`, `runs` (the run folder's owner), `reporting` and `inference`, over a few
shared modules at the top (`errors`, `choices`, `configuration`, `sweep`, `storage`, `runtime`,
`drawing`); `cli` and `train` are the entry points.
"""

__version__ = "0.1.0"


def load(path):
  """The trained model of a run folder, its checkpoints/ folder or one checkpoint step folder,
  as a `pejax.inference.predict.Segmenter`: `load(path)(images01)` gives labels and
  probabilities."""
  from pejax.inference import predict  # JAX and the model code only when a model is loaded
  return predict.load(path)
