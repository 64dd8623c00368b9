"""Example predictions of a run, for the report's pictures: one test image as the model saw it
clean, under the grid's strongest Gaussian noise and at its largest shift, with the true and the
predicted label maps of each.

The run folder's owner writes them (`pejax.runs.run_files.EXAMPLES_FILE`); the report puts
the runs of one dataset side by side. Every run of a dataset shows the same image (chosen
from the truth alone) and, under noise, the same noise as its robustness grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pejax.evaluation import robustness


def example_rows(table: Sequence[Mapping]) -> list[Mapping]:
  """Of the grid's conditions: clean, Gaussian noise at its top severity and the largest
  shift to the right / down (those the grid has)."""
  rows = [row for row in table if row['condition'] == 'clean']
  noise = [row for row in table if row['condition'] == 'gaussian_noise']
  if noise:
    rows.append(max(noise, key=lambda row: row['level']))
  shifts = [row for row in table if row['condition'].startswith('shift_') and row['shift'] > 0]
  if shifts:
    rows.append(max(shifts, key=lambda row: row['shift']))
  return rows


def example_image(labels: np.ndarray, num_classes: int) -> int:
  """The first test image in which every class appears (the first image if none has all)."""
  for position, label in enumerate(labels):
    if len(np.unique(label)) == num_classes:
      return position
  return 0


def collect(grid: robustness.GridOutput, split, cfg, num_classes: int) -> dict[str, np.ndarray]:
  """The examples of a grid evaluated with `keep_predictions` on the test `split`
  (`input_pipeline.EvalSplit`): per condition the input (float16, H×W×C), truth and
  prediction (uint8, H×W)."""
  if grid.predictions is None:
    raise ValueError('the robustness grid was evaluated without keep_predictions')
  position = example_image(split.host_labels, num_classes)
  rows = example_rows(grid.table)
  inputs, targets = [], []
  for row in rows:
    image, target = robustness.condition_inputs(
        split.host_images01[position:position + 1], split.host_labels[position:position + 1],
        [position], row, cfg)
    inputs.append(np.asarray(image[0], np.float16))
    targets.append(np.asarray(target[0], np.uint8))
  predictions = grid.predictions[[grid.table.index(row) for row in rows], position]
  return {'image_id': np.asarray(str(split.ids[position])),
          'conditions': np.asarray([row['condition'] for row in rows]),
          'levels': np.asarray([row['level'] for row in rows], np.int32),
          'inputs': np.stack(inputs), 'targets': np.stack(targets),
          'predictions': np.asarray(predictions, np.uint8)}
