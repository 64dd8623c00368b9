"""Our numbers beside the paper's in the report's tables (Table 1, the small CNN of Sec. 3.2,
Table 2): the difference of the means, whether the paper's mean lies in our 95% interval over
seeds, and the scale of our runs beside the paper's.

Only a dataset of the paper is compared: a phantom's paper column is the number of the real
dataset it mimics (an analogue), and a difference to it would read as a reproduction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pejax import configuration
from pejax.reporting.aggregation import Setting
from pejax.reporting.paired_statistics import Stat

# The columns after a paper column of the dataset's own numbers.
VERSUS_PAPER = ('ours − paper', 'paper in our 95% interval')
# The paper's scale (Sec. 3: 256×256 images, U-Net of Table 3, batch 20, 100 epochs).
PAPER_SCALE = '256×256, width 64, 100 epochs (batch 20)'


def compares(dataset: str, source: str | None) -> bool:
  """Whether a table of `dataset` whose paper numbers are those of `source` (None: none) gets
  the columns of VERSUS_PAPER: only where they are the paper's numbers on this dataset."""
  return source is not None and source == dataset


def paper_number(value) -> tuple[str, float] | None:
  """(qualifier, number) of a paper value as `claims` holds it: qualifier '' where the paper
  prints the number ((mean, std) or a string such as '0.8124'), '≈' or '<' for the small CNN's
  approximate values ('≈ 0.5', '< 0.1'); None where the paper gives none."""
  if value is None:
    return None
  if not isinstance(value, str):
    return '', float(value[0])
  text = value.strip()
  qualifier = text[0] if text[:1] in ('≈', '<') else ''
  return qualifier, float(text[len(qualifier):])


def signed(value: float, digits: int) -> str:
  """'+0.0123' / '-0.0123' (a sign always; no '-0.0000')."""
  return f'{round(value, digits) + 0.0:+.{digits}f}'


def versus_paper(stat: Stat, value) -> list[str]:
  """The cells of VERSUS_PAPER for our `stat` over seeds and a paper value.

  A number: our mean minus it (4 digits) and 'yes' if it lies in our 95% interval, else 'no
  (paper below)' or 'no (paper above)' ('—' with fewer than 2 seeds). '≈ x': the difference
  to x, '≈'-marked, to 2 digits. '< x': whether our mean is below x. '—' where either side
  has no number."""
  paper = paper_number(value)
  if paper is None or not stat.n or not np.isfinite(stat.mean):
    return ['—', '—']
  qualifier, number = paper
  if qualifier == '<':
    return [f'ours < {number:g}: {"yes" if stat.mean < number else "no"}', 'n/a (approximate)']
  if qualifier == '≈':
    return [f'≈ {signed(stat.mean - number, 2)}', 'n/a (approximate)']
  if stat.n < 2 or not (np.isfinite(stat.low) and np.isfinite(stat.high)):
    inside = '—'
  elif number < stat.low:
    inside = 'no (paper below)'
  elif number > stat.high:
    inside = 'no (paper above)'
  else:
    inside = 'yes'
  return [signed(stat.mean - number, 4), inside]


def scale_label(settings: Mapping) -> str:
  """'64×64, width 16, 20 epochs', as the report's header names a part's scale."""
  size = settings.get('image_size')
  parts = [f'{size}×{size}' if size else None,
           f'width {settings.get("width")}' if 'width' in settings else None,
           f'{settings.get("num_epochs")} epochs' if 'num_epochs' in settings else None]
  return ', '.join(filter(None, parts))


def scale_note(settings: Sequence[Setting]) -> list[str]:
  """The line under a table with a paper column: the scale of its runs beside the paper's,
  with the optimizer steps per training-set size (ceil(images / batch) per epoch, as
  `pejax.train` counts them), e.g. 'Our runs: 64×64, width 16, 100 epochs (batch 8, 400 steps
  on 30 training images, 200 on 10); the paper: ...'."""
  labels = dict.fromkeys(scale_label(s.settings) for s in settings)
  steps, batches = {}, set()
  for setting in settings:
    batch, epochs = setting.settings.get('batch_size'), setting.settings.get('num_epochs')
    if batch and epochs:
      batches.add(batch)
      for count in setting.train_examples():
        steps[(count, batch)] = epochs * configuration.steps_per_epoch(count, batch)
  counted = sorted(steps.items(), reverse=True)  # the most training images first
  if len(batches) == 1:
    detail = ', '.join([f'batch {next(iter(batches))}']
                       + [f'{number} steps on {count} training images' if index == 0
                          else f'{number} on {count}'
                          for index, ((count, _), number) in enumerate(counted)])
  else:
    detail = ', '.join(f'{number} steps of batch {batch} on {count} training images'
                       for (count, batch), number in counted)
  ours = ' / '.join(labels) + (f' ({detail})' if detail else '')
  return [f'Our runs: {ours}; the paper: {PAPER_SCALE}.', '']
