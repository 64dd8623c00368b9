"""Plotting helpers shared by the dataset pictures, reports and TensorBoard image summaries.

Figures are made with `matplotlib.figure.Figure` on the Agg canvas, not with pyplot, so that
nothing here depends on (or changes) the user's interactive backend.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.backends import backend_agg
from matplotlib import figure as mpl_figure
from matplotlib import patches

# RGB in [0, 1] per class; class 0 (background) is black and is left uncoloured by `overlay`.
# Colour-blind-safe hues (Okabe-Ito): blue, orange, bluish green.
CLASS_COLORS = np.array([
    [0.0, 0.0, 0.0],
    [0.0, 0.447, 0.698],
    [0.902, 0.624, 0.0],
    [0.0, 0.620, 0.451],
], np.float32)


def colorize_labels(labels) -> np.ndarray:
  """Label map (...) of ints in [0, 4) -> float32 RGB (..., 3) with `CLASS_COLORS`."""
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_COLORS)):
    raise ValueError(f'labels must lie in [0, {len(CLASS_COLORS)}), '
                     f'got [{labels.min()}, {labels.max()}].')
  return CLASS_COLORS[labels.astype(np.int64)]


def _gray_to_rgb(image) -> np.ndarray:
  image = np.asarray(image, np.float32)
  if image.ndim >= 3 and image.shape[-1] == 1:
    image = image[..., 0]
  return np.repeat(np.clip(image, 0.0, 1.0)[..., None], 3, axis=-1)


def overlay(image, labels, alpha: float = 0.45) -> np.ndarray:
  """Gray image (H, W) or (H, W, 1) in [0, 1] with foreground classes blended in: RGB (H, W, 3)."""
  rgb = _gray_to_rgb(image)
  labels = np.asarray(labels)
  if labels.shape != rgb.shape[:-1]:
    raise ValueError(f'image {rgb.shape[:-1]} and labels {labels.shape} differ in shape.')
  foreground = (labels > 0)[..., None]
  blended = (1.0 - alpha) * rgb + alpha * colorize_labels(labels)
  return np.where(foreground, blended, rgb).astype(np.float32)


def new_figure(width: float, height: float, dpi: int = 100) -> mpl_figure.Figure:
  """A figure drawn on an Agg canvas, independent of pyplot."""
  fig = mpl_figure.Figure(figsize=(width, height), dpi=dpi)
  backend_agg.FigureCanvasAgg(fig)
  return fig


def figure_to_array(fig: mpl_figure.Figure) -> np.ndarray:
  """Renders `fig` to uint8 RGB (H, W, 3), e.g. for an image summary."""
  canvas = fig.canvas
  if not isinstance(canvas, backend_agg.FigureCanvasAgg):
    canvas = backend_agg.FigureCanvasAgg(fig)
  canvas.draw()
  return np.array(canvas.buffer_rgba())[..., :3]


def save_png(fig: mpl_figure.Figure, path, palette_colors: int | None = 256) -> None:
  """Writes `fig` as a PNG; a palette of `palette_colors` keeps noisy images small."""
  from PIL import Image  # Pillow comes with matplotlib
  picture = Image.fromarray(figure_to_array(fig))
  if palette_colors:
    picture = picture.quantize(palette_colors)
  picture.save(path, optimize=True)


def example_grid(rows: Sequence[tuple[str, np.ndarray, np.ndarray, Sequence[str]]],
                 alpha: float = 0.45, tile_inches: float = 1.28,
                 dpi: int = 100) -> mpl_figure.Figure:
  """A figure with two rows per dataset: the images, then their masks over them, and a legend.

  Args:
    rows: (title, images (N, H, W[, 1]) in [0, 1], labels (N, H, W), foreground class names).
    alpha: opacity of the mask colours.
    tile_inches: side of one image tile; tile_inches * dpi = H shows the images pixel for pixel.
    dpi: resolution the figure is meant to be saved at.
  """
  gap, margin, title_height, legend_width = 0.05, 0.08, 0.28, 1.45
  columns = max(len(images) for _, images, _, _ in rows)
  width = 2 * margin + columns * tile_inches + (columns - 1) * gap + legend_width
  block_height = title_height + 2 * tile_inches + gap
  height = 2 * margin + len(rows) * block_height + (len(rows) - 1) * gap
  fig = new_figure(width, height, dpi)

  def add_tile(left, top):
    bottom = height - top - tile_inches
    axis = fig.add_axes((left / width, bottom / height, tile_inches / width, tile_inches / height))
    axis.set_xticks([])
    axis.set_yticks([])
    return axis

  for row, (title, images, labels, class_names) in enumerate(rows):
    block_top = margin + row * (block_height + gap)
    title_y = 1.0 - (block_top + 0.7 * title_height) / height
    fig.text(margin / width, title_y, title, fontsize=10, va='baseline')
    for column in range(len(images)):
      left = margin + column * (tile_inches + gap)
      image_top = block_top + title_height
      add_tile(left, image_top).imshow(_gray_to_rgb(images[column]), interpolation='nearest')
      mask_axis = add_tile(left, image_top + tile_inches + gap)
      mask_axis.imshow(overlay(images[column], labels[column], alpha), interpolation='nearest')
    legend = [patches.Patch(color=CLASS_COLORS[c], label=name)
              for c, name in enumerate(class_names, start=1)]
    mask_axis.legend(handles=legend, loc='center left', bbox_to_anchor=(1.08, 0.5), fontsize=9,
                     frameon=False)
  return fig
