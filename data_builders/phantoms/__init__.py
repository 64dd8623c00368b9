"""Procedural chest-radiograph and cardiac-MRI segmentation phantoms (TFDS builder `phantoms`)."""
