"""pejax: how CNNs use absolute image position for segmentation (Murase et al.), in JAX/Flax NNX."""

__version__ = "0.1.0"
