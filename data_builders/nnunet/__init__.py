"""Any dataset in nnU-Net's raw format (v2) as pejax's 2-D examples (TFDS builder `nnunet`).

`source` (reading, checking, intensities, slicing) and `planning` (the first pass over a dataset)
need no TensorFlow; `nnunet_dataset_builder` is the TFDS builder and `phantom_export` writes the
phantoms in this format. Nothing is imported here, so that prediction imports `source` without
TFDS; `Builder` is loaded on first use.
"""

__all__ = ['Builder']


def __getattr__(name):
  if name == 'Builder':
    from .nnunet_dataset_builder import Builder
    return Builder
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
