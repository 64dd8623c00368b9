"""Sweeps: expansion, grouping, vmapped training equal to separate runs, resumability."""

import glob
import os

import pytest
from ml_collections.config_flags import config_flags as config_flags_lib

from pejax import configuration, sweep, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def tiny(config, data_dir):
  config.data_dir = data_dir
  config.image_size = 32
  config.width = 4
  config.num_epochs = 2
  config.eval_every_epochs = 2
  config.num_image_panels = 0
  config.run_robustness = False
  config.batch_size = 10
  return config


def test_product_union_and_names():
  runs = sweep.union(
      sweep.product(model=['unet'], pe=sweep.pe_settings([None, 256]), seed=[0, 1]),
      sweep.product(model=['unet'], pe=sweep.pe_settings([None]), seed=[0]))
  assert len(runs) == 4
  assert runs[0] == {'model': 'unet', 'use_pe': False, 'seed': 0}
  names = [sweep.run_name(r) for r in runs]
  assert names == ['unet_seed0_nope', 'unet_seed1_nope', 'unet_pe256_seed0', 'unet_pe256_seed1']
  assert 'pe256' in sweep.run_name({'use_pe': True, 'pe_scale': 256.0})
  assert sweep.run_name({'num_train_examples': None}) == 'nall'


def test_grouping_puts_only_seed_and_lambda_variants_together():
  base = configuration.base_config()
  base.sweep = sweep.product(model=['unet', 'cnn4'], pe=sweep.pe_settings([None, 1.0, 10.0]),
                             seed=[0, 1])
  programs = sweep.plan_programs(sweep.expand(base), models_per_program=12)
  sizes = sorted(len(p) for p in programs)
  # Per model: the no-PE runs (1 input channel) and the PE runs (3 channels) are separate shapes.
  assert sizes == [2, 2, 4, 4]
  for program in programs:
    assert len({(c.model, c.use_pe) for _, c in program}) == 1
  assert len(sweep.plan_programs(sweep.expand(base), models_per_program=3)) == 6


def test_runs_of_the_same_model_share_their_compiled_programs():
  base = configuration.quick(configuration.base_config())
  other_seed_and_scale = configuration.quick(configuration.base_config())
  other_seed_and_scale.update(seed=3, pe_scale=256.0)
  spec, init_state = train.model_spec(base, num_classes=4)
  assert train.model_spec(other_seed_and_scale, num_classes=4) == (spec, init_state)
  for change in ({'learning_rate': 0.01}, {'width': 8}, {'use_pe': False}, {'padding': 'reflect'},
                 {'model': 'cnn4'}, {'compute_dtype': 'bfloat16'}):
    other = configuration.quick(configuration.base_config())
    other.update(change)
    assert train.model_spec(other, num_classes=4)[0] != spec, change
  assert train.model_spec(base, num_classes=2)[0] != spec


def test_unknown_setting_in_a_sweep_is_refused():
  base = configuration.base_config()
  base.sweep = [{'pe_sclae': 1.0}]
  with pytest.raises(ValueError, match="'pe_sclae'"):
    sweep.expand(base)


@pytest.mark.slow
def test_models_trained_together_equal_separate_runs(data_dir, tmp_path):
  configs = []
  for seed, scale in ((0, 1.0), (1, 256.0), (2, 10.0)):
    config = tiny(configuration.base_config(), data_dir)
    config.model = 'cnn4'
    config.seed = seed
    config.pe_scale = scale
    configs.append(config)
  together = train.train_group(configs, [str(tmp_path / f'together{i}') for i in range(3)])
  for i, config in enumerate(configs):
    alone = train.train_and_evaluate(config, str(tmp_path / f'alone{i}'))
    for split in ('test', 'validation'):
      for key, value in alone[split].items():
        assert together[i][split][key] == pytest.approx(value, abs=1e-4), (i, split, key)
    # Every model's checkpoint is a plain single-model checkpoint: evaluate it alone.
    evaluated = train.train_and_evaluate(config, str(tmp_path / f'together{i}'), evaluate_only=True)
    assert evaluated['test'] == pytest.approx(together[i]['test'], abs=1e-6)
  # Different seeds and λ really gave different models.
  assert len({round(r['test']['loss'], 6) for r in together}) == 3


@pytest.mark.slow
def test_a_sweep_skips_finished_runs_and_writes_a_report(data_dir, tmp_path):
  config = tiny(configuration.base_config(), data_dir)
  config.model = 'cnn4'
  config.num_epochs = 1
  config.sweep = sweep.product(pe=sweep.pe_settings([None, 256.0]), seed=[0, 1])
  workdir = str(tmp_path / 'sweep')
  train.train_sweep(config, workdir)
  results = sorted(glob.glob(os.path.join(workdir, '*', 'results.json')))
  assert len(results) == 4
  assert os.path.exists(os.path.join(workdir, 'report.md'))
  stamps = [os.path.getmtime(p) for p in results]
  train.train_sweep(config, workdir)  # everything finished: nothing is retrained
  assert [os.path.getmtime(p) for p in results] == stamps


def paper_config_files():
  return sorted(glob.glob(os.path.join(REPO, 'configs', 'paper', '*.py')))


@pytest.mark.parametrize('path', paper_config_files(), ids=os.path.basename)
def test_paper_configs_expand_and_validate(path):
  config = config_flags_lib._ConfigFileParser(name='config').parse(path)
  runs = sweep.expand(config)
  assert len(runs) >= 4
  for _, run_config in runs:
    configuration.validate_config(run_config)
  seeds = {c.seed for _, c in runs}
  assert seeds == {0, 1, 2}


@pytest.mark.slow
@pytest.mark.parametrize('path', [p for p in paper_config_files()
                                  if not os.path.basename(p).startswith('phantom_')],
                         ids=os.path.basename)
def test_gpu_scale_paper_configs_run_in_miniature(path, data_dir, tmp_path):
  """The JSRT/ACDC sweeps, shrunk (1 epoch, 32 px, phantoms in place of the real data), run."""
  config = tiny(config_flags_lib._ConfigFileParser(name='config').parse(path), data_dir)
  config.num_epochs = 1
  stand_in = {'jsrt': 'phantom_chest', 'acdc': 'phantom_cardiac'}
  # One seed and the first programs only: enough to exercise every kind of run in the sweep.
  kept = [dict(r, dataset=stand_in[r['dataset']]) for r in config.sweep if r['seed'] == 0]
  config.sweep = kept[:2]
  train.train_sweep(config, str(tmp_path / 'sweep'))
  assert len(glob.glob(str(tmp_path / 'sweep' / '*' / 'results.json'))) == len(config.sweep)
