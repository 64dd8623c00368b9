"""The writer of the position probe (`pejax.evaluation.probe`): a run's probe.json, probe.png
and TensorBoard scalars and figure, and a sweep's figure with one line per run."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from pejax import storage
from pejax.evaluation import probe_results
from pejax.runs import run_files


def write_probe(workdir: str, result: Mapping, *, label: str, writer, step: int) -> str:
  """Writes a run's probe into its folder and its TensorBoard writer (the run's own, at the
  step of the probed checkpoint); returns probe.json's path."""
  path = storage.join(workdir, run_files.PROBE_FILE)
  storage.write_json(path, dict(result))
  pixels = probe_results.plot_probe([{'label': label, 'result': result}],
                                    os.path.join(workdir, run_files.PROBE_FIGURE),
                                    title=f'Position read out of {label}')
  writer.write_scalars(step, probe_results.scalars(result))
  writer.write_images(step, {'probe': pixels[None]})
  writer.flush()
  return path


def write_sweep_figure(workdir: str, curves: Sequence[Mapping]) -> str:
  """The sweep's probe.png: SPC per level, one line per run (`curves`: {'label', 'result'})."""
  path = os.path.join(workdir, run_files.PROBE_FIGURE)
  probe_results.plot_probe(curves, path, title=f'Position read out of the runs of '
                           f'{os.path.basename(os.path.normpath(workdir))}')
  return path
