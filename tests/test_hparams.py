"""TensorBoard's HParams of a run: the settings and declared metrics in its event file."""

import glob
import os

import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import metadata, plugin_data_pb2

from pejax import train
from pejax.runs import hparams

from helpers import small_run_config

CLASS_NAMES = ('right_lung', 'left_lung', 'heart')


def read_events(workdir: str):
  """(HParams plugin data by tag, the tags of scalar summaries) of a run's event files."""
  plugin_data, scalar_tags = {}, set()
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        plugin = value.metadata.plugin_data
        if plugin.plugin_name == metadata.PLUGIN_NAME:
          plugin_data[value.tag] = plugin_data_pb2.HParamsPluginData.FromString(plugin.content)
        elif plugin.plugin_name == 'scalars':
          scalar_tags.add(value.tag)
  return plugin_data, scalar_tags


def session_values(plugin_data) -> dict:
  start = plugin_data[metadata.SESSION_START_INFO_TAG].session_start_info
  return {name: value.WhichOneof('kind') and getattr(value, value.WhichOneof('kind'))
          for name, value in start.hparams.items()}


@pytest.mark.slow
def test_a_run_declares_its_settings_and_metrics_to_tensorboard(data_dir, tmp_path):
  config = small_run_config(data_dir, num_epochs=1, run_robustness=True)
  config.robustness.severities = (5,)
  config.robustness.shifts = (-4, 0, 4)
  workdir = str(tmp_path / 'all')
  train.train_and_evaluate(config, workdir)
  plugin_data, scalar_tags = read_events(workdir)

  experiment = plugin_data[metadata.EXPERIMENT_TAG].experiment
  declared = [info.name.tag for info in experiment.metric_infos]
  assert {'test_dice', 'test_dice_heart', 'eval_dice', hparams.NOISE_DICE, hparams.NOISE_DROP,
          hparams.SHIFT_DICE} <= set(declared)
  assert declared == hparams.metric_tags(config, CLASS_NAMES)
  assert set(declared) <= scalar_tags, set(declared) - scalar_tags
  values = session_values(plugin_data)
  assert {info.name for info in experiment.hparam_infos} == set(values)
  assert values['num_train_examples'] == 'None' and values['position_jitter'] == 'None'
  assert values['model'] == 'cnn4' and values['learning_rate'] == pytest.approx(1e-3)
  assert values['use_pe'] is True and values['robustness.shifts'] == '[-4, 0, 4]'
  assert not {'data_dir', 'log_every_epochs', 'conv_impl'} & set(values)

  subset = small_run_config(data_dir, num_epochs=1, num_train_examples=5)
  train.train_and_evaluate(subset, str(tmp_path / 'subset'))
  plugin_data, scalar_tags = read_events(str(tmp_path / 'subset'))
  assert session_values(plugin_data)['num_train_examples'] == 5
  # Without the robustness grid no robustness summary is declared (or written).
  declared = {info.name.tag for info in plugin_data[metadata.EXPERIMENT_TAG].experiment.metric_infos}
  assert not any(tag.startswith('robustness') for tag in declared | scalar_tags)
  assert declared <= scalar_tags
