"""The one table of what each setting is for (`configuration.ROLES`) and the views read off it."""

import pytest

from pejax import configuration, errors, sweep


def test_every_setting_has_a_role_and_every_role_a_setting():
  assert set(configuration.ROLES) == set(configuration.base_config())


def test_the_views_follow_the_table():
  config = configuration.base_config()
  assert set(configuration.NON_RESULT_SETTINGS) == {
      'log_every_epochs', 'eval_every_epochs', 'checkpoint_every_epochs',
      'max_checkpoints_to_keep', 'num_image_panels', 'data_dir', 'manual_dir', 'eval_batch_size',
      'conv_impl', 'probe'}
  result = configuration.result_settings(config)
  assert 'seed' in result and 'robustness' in result and 'conv_impl' not in result
  assert configuration.data_settings(config) == (
      'phantom_chest', 256, None, None, None, 32)  # dataset, size, jitter, dirs, eval batch
  group = configuration.group_settings(config)
  assert set(result) - set(group) == {'seed', 'pe_scale', 'robustness'}
  key = configuration.setting_key(config)
  assert set(result) - set(key) == {'seed', 'run_robustness'}
  assert set(configuration.EXPERIMENT_AXES) == {
      'dataset', 'model', 'padding', 'use_pe', 'pe_scale', 'pe_kind', 'pe_layers', 'pe_bands',
      'num_train_examples', 'position_jitter'}
  assert configuration.SHOWN_SETTINGS[:4] == ('dataset', 'model', 'use_pe', 'pe_scale')


def test_a_setting_key_ignores_lambda_without_pe():
  a, b = configuration.base_config(), configuration.base_config()
  for config, scale in ((a, 1.0), (b, 10.0)):
    config.use_pe, config.pe_scale = False, scale
  assert configuration.setting_key(a) == configuration.setting_key(b)
  a.use_pe = b.use_pe = True
  assert configuration.setting_key(a) != configuration.setting_key(b)


def test_run_names_take_their_prefixes_from_the_table():
  assert sweep.run_name({'dataset': 'acdc', 'model': 'cnn4', 'num_train_examples': 5,
                         'position_jitter': 0.1, 'num_epochs': 40, 'seed': 2,
                         'use_pe': True, 'pe_scale': 10.0}) == 'acdc_cnn4_epochs40_n5_pe10_jitter0.1_seed2'
  assert sweep.run_name({'width': 8}) == 'width8'  # no prefix in the table: the setting's name


def test_a_run_recorded_before_the_encoding_settings_resumes_as_the_papers_encoding():
  config = configuration.base_config()
  recorded = configuration.settings_dict(config)
  for name in ('pe_kind', 'pe_bands', 'pe_layers'):
    del recorded[name]
  assert configuration.result_settings(recorded) == configuration.result_settings(config)
  config.pe_kind = 'centered'
  assert configuration.result_settings(recorded) != configuration.result_settings(config)


def test_the_encodings_settings_count_in_a_setting_only_where_they_mean_something():
  a, b = configuration.base_config(), configuration.base_config()
  a.pe_bands = 8
  assert configuration.setting_key(a) == configuration.setting_key(b)  # linear has no bands
  a.pe_kind = b.pe_kind = 'fourier'
  assert configuration.setting_key(a) != configuration.setting_key(b)
  a.use_pe = b.use_pe = False
  a.pe_layers = 'all'
  assert configuration.setting_key(a) == configuration.setting_key(b)


@pytest.mark.parametrize('name, value', [('pe_kind', 'sinusoidal'), ('pe_layers', 'every'),
                                         ('pe_bands', 0), ('pe_bands', 17)])
def test_a_bad_encoding_setting_is_refused(name, value):
  config = configuration.base_config()
  config[name] = value
  with pytest.raises(errors.SettingError, match=f'config.{name}='):
    configuration.validate_config(config)
