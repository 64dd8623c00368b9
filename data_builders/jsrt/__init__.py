"""JSRT chest radiographs with SCR lung and heart masks (TFDS builder, manual download)."""

from .jsrt_dataset_builder import Builder

__all__ = ['Builder']
