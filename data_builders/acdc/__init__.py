"""ACDC cine-MRI ED/ES slices with RV, myocardium and LV labels (TFDS builder, manual download)."""

from .acdc_dataset_builder import Builder

__all__ = ['Builder']
