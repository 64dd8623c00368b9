"""The console of a run: one line when a dataset is built, none per split read of a built one."""

import logging

import tensorflow_datasets as tfds

from pejax import runtime
from pejax.data import datasets


def test_building_a_dataset_is_announced_once_with_its_duration(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  datasets.prepare('phantom_chest', image_size=8, data_dir=str(tmp_path))
  messages = [record.getMessage() for record in caplog.records]
  building = [m for m in messages if m.startswith('Building the phantom_chest dataset')]
  assert len(building) == 1 and str(tmp_path) in building[0] and 'version 2.0.0' in building[0]
  assert any(m.startswith('Built the phantom_chest dataset in') for m in messages)
  # Asking whether it is built warns of nothing (TFDS's own check warns of a missing folder).
  assert not any('dataset_info.json' in m for m in messages)
  caplog.clear()
  datasets.prepare('phantom_chest', image_size=8, data_dir=str(tmp_path))
  assert not any('Buil' in record.getMessage() for record in caplog.records)


def tfds_record(message: str, level: int = logging.INFO) -> logging.LogRecord:
  return logging.LogRecord('absl', level, tfds.core.dataset_builder.__file__, 1, message,
                           ('phantoms', '/data'), None)


def test_the_console_drops_tfds_lines_repeated_for_each_split_but_not_its_generating_line():
  quiet = runtime._QuietRepeats()
  assert not quiet.filter(tfds_record('Reusing dataset %s (%s)'))
  assert not quiet.filter(tfds_record('Load dataset info from %s'))
  assert quiet.filter(tfds_record('Generating dataset %s (%s)'))
  assert quiet.filter(tfds_record('Reusing dataset %s (%s)', logging.WARNING))
  own = logging.LogRecord('absl', logging.INFO, datasets.__file__, 1, 'Reusing dataset', (), None)
  assert quiet.filter(own)


def test_the_console_drops_clus_progress_notes_which_the_epoch_line_repeats():
  from clu.platform import local
  quiet = runtime._QuietRepeats()
  notes = logging.LogRecord('absl', logging.INFO, local.__file__, 41,
                            'Setting work unit notes: %s', ('2.4 steps/s',), None)
  assert not quiet.filter(notes)
  other = logging.LogRecord('absl', logging.INFO, local.__file__, 41, 'Something else', (), None)
  assert quiet.filter(other)
