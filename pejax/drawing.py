"""Pictures of images and label maps: class colours, overlays, dataset example grids, the
TensorBoard image panels and prediction panels, and the figure canvas every figure of pejax is
drawn on (the robustness curves are in `pejax.evaluation.figures`).

Figures are made with `matplotlib.figure.Figure` on the Agg canvas (`new_figure`), not with
pyplot, so that nothing here depends on (or changes) the user's interactive backend, and saved
with `save_figure`.
"""

from __future__ import annotations

from collections.abc import Sequence

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
  from matplotlib import figure as mpl_figure

from pejax import storage

def _class_colors(count: int = 256) -> np.ndarray:
  """Black background, then the Okabe–Ito colours (distinguishable with colour-vision
  deficiencies), then evenly spaced hues for datasets of many classes."""
  okabe_ito = [[0.0, 0.0, 0.0], [0.0, 0.447, 0.698], [0.902, 0.624, 0.0], [0.0, 0.620, 0.451],
               [0.835, 0.369, 0.0], [0.337, 0.706, 0.914], [0.800, 0.475, 0.655],
               [0.941, 0.894, 0.259]]
  hues = (np.arange(count - len(okabe_ito)) * 0.618034) % 1.0  # golden-ratio steps
  extra = _hues_to_rgb(hues)
  return np.concatenate([np.array(okabe_ito), extra]).astype(np.float32)


def _hues_to_rgb(hues: np.ndarray) -> np.ndarray:
  """RGB of fully saturated, 85 %-bright colours of `hues` in [0, 1)."""
  sector = hues * 6.0
  rgb = np.clip(np.abs((sector[:, None] + np.array([0.0, 4.0, 2.0])) % 6.0 - 3.0) - 1.0, 0, 1)
  return 0.85 * rgb


# RGB in [0, 1] per class; class 0 (background) is black and is left uncoloured by `overlay`.
CLASS_COLORS = _class_colors()


def colorize_labels(labels) -> np.ndarray:
  """Label map (...) of ints in [0, 256) -> float32 RGB (..., 3) with `CLASS_COLORS`."""
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_COLORS)):
    raise ValueError(f'labels must lie in [0, {len(CLASS_COLORS)}), '
                     f'got [{labels.min()}, {labels.max()}].')
  return CLASS_COLORS[labels.astype(np.int64)]


def _gray_to_rgb(image) -> np.ndarray:
  """RGB of a gray image; of an image of several channels (nnU-Net datasets), its first."""
  image = np.asarray(image, np.float32)
  if image.ndim >= 3:
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
  # matplotlib only when a figure is drawn: overlays and label colours (prediction) need NumPy.
  from matplotlib import figure as mpl_figure
  from matplotlib.backends import backend_agg
  fig = mpl_figure.Figure(figsize=(width, height), dpi=dpi)
  backend_agg.FigureCanvasAgg(fig)
  return fig


def figure_to_array(fig: mpl_figure.Figure) -> np.ndarray:
  """Renders `fig` to uint8 RGB (H, W, 3), e.g. for an image summary."""
  canvas = fig.canvas
  from matplotlib.backends import backend_agg
  if not isinstance(canvas, backend_agg.FigureCanvasAgg):
    canvas = backend_agg.FigureCanvasAgg(fig)
  canvas.draw()
  return np.array(canvas.buffer_rgba())[..., :3]


def save_figure(fig: mpl_figure.Figure, path: str, palette_colors: int | None = None
                ) -> np.ndarray:
  """Writes `fig` as a PNG at `path` (atomically) and returns its RGB pixels.

  A palette of `palette_colors` keeps pictures of noisy images small (documentation pictures).
  """
  pixels = figure_to_array(fig)
  if palette_colors:
    from PIL import Image  # Pillow comes with matplotlib
    picture = Image.fromarray(pixels).quantize(palette_colors)
    storage.write_atomically(path, lambda f: picture.save(f, format='png', optimize=True),
                             mode='wb')
  else:
    storage.write_atomically(path, lambda f: fig.savefig(f, format='png'), mode='wb')
  return pixels


def _class_patches(class_names: Sequence[str]) -> list:
  """Legend entries of the foreground classes (class 1 first) in their `CLASS_COLORS`."""
  from matplotlib import patches
  return [patches.Patch(color=CLASS_COLORS[c], label=name)
          for c, name in enumerate(class_names, start=1)]


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
    mask_axis.legend(handles=_class_patches(class_names), loc='center left',
                     bbox_to_anchor=(1.08, 0.5), fontsize=9, frameon=False)
  return fig


LEGEND_ROW_PIXELS = 14


def legend_strip(class_names: Sequence[str], width: int) -> np.ndarray:
  """A white strip with one row per class, background first: its colour and its name.

  float32 RGB (LEGEND_ROW_PIXELS · (1 + len(class_names)), width, 3). The swatches are painted
  into the pixels, so they hold exactly the colours of `colorize_labels`.
  """
  names = ('background',) + tuple(class_names)
  row = LEGEND_ROW_PIXELS
  height, dpi = row * len(names), 100
  fig = new_figure(width / dpi, height / dpi, dpi)
  for index, name in enumerate(names):
    fig.text((row + 2) / width, 1.0 - (index + 0.5) * row / height, name, fontsize=7,
             va='center', color='black')
  pixels = figure_to_array(fig)[:height, :width]
  strip = np.ones((height, width, 3), np.float32)
  strip[:pixels.shape[0], :pixels.shape[1]] = pixels / 255.0
  for index in range(len(names)):
    strip[index * row + 2:(index + 1) * row - 2, 2:row - 2] = CLASS_COLORS[index]
  return strip


def label_panel(images01, labels, predictions, count: int,
                class_names: Sequence[str] = ()) -> np.ndarray:
  """Rows of (input | ground truth | prediction) for TensorBoard, and below them a legend of
  the foreground `class_names` (`legend_strip`, none without names): uint8 RGB (H·count +
  legend, 3W, 3)."""
  rows = []
  for image, truth, predicted in zip(images01[:count], labels[:count], predictions[:count]):
    rows.append(np.concatenate([_gray_to_rgb(image), colorize_labels(truth),
                                colorize_labels(predicted)], axis=1))
  if class_names:
    rows.append(legend_strip(class_names, rows[0].shape[1]))
  return (np.concatenate(rows, axis=0) * 255).astype(np.uint8)


def plot_predictions(path: str, title: str, row_titles: Sequence[str], inputs, targets,
                     predictions: Sequence[tuple[str, np.ndarray]], class_names: Sequence[str],
                     alpha: float = 0.45, tile_inches: float = 1.3) -> np.ndarray:
  """One row per condition: the input, the truth over it, then each model's prediction over
  it, with a legend of the classes. Saves a PNG at `path`, returns its RGB pixels.

  Args:
    inputs: (rows, H, W[, 1]) images in [0, 1]; targets: (rows, H, W) true label maps.
    predictions: (column title, (rows, H, W) label maps) per model.
  """
  columns = [('input', None), ('truth', targets)] + list(predictions)
  label_width = 1.3
  fig = new_figure(label_width + tile_inches * len(columns),
                   0.45 + tile_inches * len(row_titles) + 0.35)
  grid = fig.add_gridspec(len(row_titles), len(columns), left=label_width / fig.get_figwidth(),
                          right=0.995, top=1 - 0.45 / fig.get_figheight(),
                          bottom=0.35 / fig.get_figheight(), wspace=0.04, hspace=0.04)
  for row, row_title in enumerate(row_titles):
    for column, (column_title, labels) in enumerate(columns):
      axis = fig.add_subplot(grid[row, column])
      axis.set_xticks([])
      axis.set_yticks([])
      picture = (_gray_to_rgb(inputs[row]) if labels is None
                 else overlay(inputs[row], labels[row], alpha))
      axis.imshow(picture, interpolation='nearest')
      if row == 0:
        axis.set_title(column_title, fontsize=9)
      if column == 0:
        axis.set_ylabel(row_title, fontsize=9, rotation=0, ha='right', va='center')
  fig.suptitle(title, fontsize=10, y=1 - 0.08 / fig.get_figheight(), va='top')
  fig.legend(handles=_class_patches(class_names), loc='lower center', ncol=len(class_names),
             fontsize=8, frameon=False)
  return save_figure(fig, path)
