"""TensorBoard event files of a run: CLU's writer, uploading to a bucket for a gs:// workdir."""

from __future__ import annotations

import os
import shutil
import tempfile

from clu import metric_writers

from pejax import storage

def create_metric_writer(workdir: str, just_logging: bool):
  """CLU's writer of a run's TensorBoard events (process 0; the others write nothing).

  CLU writes events through TensorFlow's gfile, whose GCS client cannot be pointed at another
  endpoint (so no test could run it against an emulator). For a workdir in a bucket the events
  are written to a local folder instead, and every flush uploads the event files that grew,
  each whole as one object (as gfile's own GCS writer does on a flush): a run on a VM that
  is deleted keeps its events up to its last flush (every epoch)."""
  if just_logging:
    # Only process 0 writes; the console shows pejax's own line per epoch, not CLU's.
    return metric_writers.MultiWriter([])
  if not storage.is_remote(workdir):
    return _summary_writer(workdir)
  return _UploadingWriter(workdir)


def _summary_writer(folder: str):
  return metric_writers.AsyncWriter(metric_writers.SummaryWriter(folder))


class _UploadingWriter(metric_writers.MultiWriter):
  """CLU's TensorBoard writer on a local folder whose event files are uploaded to a bucket."""

  def __init__(self, workdir: str):
    self._workdir = workdir
    self._local = tempfile.mkdtemp(prefix='pejax-events-')
    self._uploaded: dict[str, int] = {}
    super().__init__([_summary_writer(self._local)])

  def _upload(self) -> None:
    for name, size in storage.file_sizes(self._local).items():
      if self._uploaded.get(name) != size:
        with open(os.path.join(self._local, name), 'rb') as f:
          storage.write_object(storage.join(self._workdir, name), f.read())
        self._uploaded[name] = size

  def flush(self) -> None:
    super().flush()
    self._upload()

  def close(self) -> None:
    super().close()
    self._upload()
    shutil.rmtree(self._local, ignore_errors=True)
