"""Sweeps: expansion, grouping, vmapped training equal to separate runs, resumability."""

import glob
import os
import re
import subprocess
import sys

import pytest
from ml_collections.config_flags import config_flags as config_flags_lib

from pejax import configuration, errors, sweep, train
from pejax import storage
from pejax.models import spec as spec_lib
from pejax.runs import run_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  spec, init_state = spec_lib.model_spec(base, num_classes=4)
  assert spec_lib.model_spec(other_seed_and_scale, num_classes=4) == (spec, init_state)
  for change in ({'learning_rate': 0.01}, {'width': 8}, {'use_pe': False}, {'padding': 'reflect'},
                 {'model': 'cnn4'}, {'compute_dtype': 'bfloat16'}):
    other = configuration.quick(configuration.base_config())
    other.update(change)
    assert spec_lib.model_spec(other, num_classes=4)[0] != spec, change
  assert spec_lib.model_spec(base, num_classes=2)[0] != spec


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
    # The loss agrees to float rounding (observed ≤ 1e-6). Dice counts pixels: a vmapped
    # convolution sums in another order, and on an AVX2 CPU that flipped a pixel or two whose
    # classes' logits were within rounding of each other (validation right lung of the λ=256
    # run: 3.1e-4 over its 23 images); a model mixed up with another would differ by far more.
    for split in ('test', 'validation'):
      for key, value in alone[split].items():
        tolerance = 1e-5 if key == 'loss' else 1e-3
        assert together[i][split][key] == pytest.approx(value, abs=tolerance), (i, split, key)
    # Every model's checkpoint is a plain single-model checkpoint: evaluate it alone.
    evaluated = train.train_and_evaluate(config, str(tmp_path / f'together{i}'), evaluate_only=True)
    assert evaluated['test'] == pytest.approx(together[i]['test'], abs=1e-6)
  # Different seeds and λ really gave different models.
  assert len({round(r['test']['loss'], 6) for r in together}) == 3


@pytest.mark.slow
def test_a_sweep_skips_finished_runs_and_writes_a_report(data_dir, tmp_path, caplog):
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

  # Evaluating the sweep with one run unfinished counts each kind as what it is.
  os.remove(results[0])
  caplog.set_level('INFO')
  train.train_sweep(config, workdir, evaluate_only=True)
  assert (f'Sweep {workdir}: 4 runs, 3 finished, 3 to evaluate (1 unfinished runs are not '
          'evaluated: train them first).') in caplog.text
  assert 'runs done 3/3' in caplog.text and not os.path.exists(results[0])


def paper_config_files():
  return sorted(path for path in glob.glob(os.path.join(REPO, 'configs', 'paper', '*.py'))
                if not os.path.basename(path).startswith('_'))


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
  kept = [dict(r, dataset=stand_in[r['dataset']], **({'num_epochs': 1} if 'num_epochs' in r else {}))
          for r in config.sweep if r['seed'] == 0]
  config.sweep = kept[:2]
  train.train_sweep(config, str(tmp_path / 'sweep'))
  assert len(glob.glob(str(tmp_path / 'sweep' / '*' / 'results.json'))) == len(config.sweep)


# ---------------------------------------------------------------------------------- shards


def paper_runs():
  path = os.path.join(REPO, 'configs', 'paper', 'phantom_all.py')
  return sweep.expand(config_flags_lib._ConfigFileParser(name='config').parse(path))


@pytest.mark.parametrize('count', [1, 2, 3, 7, 30, 40])
def test_shards_split_a_sweep_into_whole_programs(count):
  runs = paper_runs()
  shards = [sweep.shard_runs(runs, index, count, models_per_program=12) for index in range(count)]
  names = [name for shard in shards for name, _ in shard]
  assert sorted(names) == sorted(name for name, _ in runs)  # every run once
  owner = {name: index for index, shard in enumerate(shards) for name, _ in shard}
  programs = sweep.plan_programs(runs, models_per_program=12)
  for program in programs:
    assert len({owner[name] for name, _ in program}) == 1, [name for name, _ in program]
  sizes = [len(shard) for shard in shards]
  assert max(sizes) - min(sizes) <= max(len(p) for p in programs)
  if count <= len(programs):
    assert min(sizes) > 0
  # The same share from the same sweep, whatever else is known (finished runs, other shards).
  assert sweep.shard_runs(runs, count - 1, count, 12) == shards[-1]


@pytest.mark.parametrize('text', ['2/2', '-1/2', '1', '1/0', 'a/b', '0/2/3'])
def test_a_bad_shard_is_refused_with_what_is_allowed(text):
  with pytest.raises(errors.SettingError, match=r'--shard=.* is not allowed: use I/N with 0 ≤ I < N'):
    sweep.parse_shard(text)
  assert sweep.parse_shard('1/4') == (1, 4)


@pytest.mark.slow
def test_the_last_shard_to_finish_writes_the_report(data_dir, tmp_path):
  config = tiny(configuration.base_config(), data_dir)
  config.model = 'cnn4'
  config.num_epochs = 1
  config.sweep = sweep.product(pe=sweep.pe_settings([None, 256.0]))
  workdir = str(tmp_path / 'sweep')
  assert train.train_sweep(config, workdir, shard=(1, 2)) == [os.path.join(workdir, 'pe256')]
  # The other shard's run is not finished: no report yet (it would lack that run).
  assert not os.path.exists(os.path.join(workdir, 'report.md'))
  assert train.train_sweep(config, workdir, shard=(0, 2)) == [os.path.join(workdir, 'nope')]
  with open(os.path.join(workdir, 'report.md')) as f:
    assert 'from 2 finished runs' in f.read()


@pytest.mark.parametrize('mode', ['train', 'report'])
def test_a_shard_of_what_is_not_a_sweep_is_refused(tmp_path, mode):
  from pejax import cli
  with pytest.raises(SystemExit, match=r'pejax: error: --shard=0/2 applies to training or '
                     r'evaluating a sweep config'):
    cli.run(configuration.base_config(), str(tmp_path / 'run'), mode=mode, shard='0/2')
  assert not os.path.exists(tmp_path / 'run')


SHARDED_SWEEP_CONFIG = '''
from pejax import configuration, sweep


def get_config():
  config = configuration.base_config()
  config.update(dict(image_size=32, model='cnn4', width=4, num_epochs=1, eval_every_epochs=1,
                     num_image_panels=0, batch_size=10))
  config.robustness.severities = (1, 5)
  config.robustness.shifts = (-2, 0, 2)
  config.sweep = sweep.product(pe=sweep.pe_settings([None, 256.0]), seed=[0, 1])
  return config
'''


def start_sweep(config_path, data_dir, workdir, log_path, *flags):
  log = open(log_path, 'w')
  return subprocess.Popen(
      [sys.executable, 'main.py', f'--config={config_path}', f'--config.data_dir={data_dir}',
       f'--workdir={workdir}', *flags], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))


def finished_sweep(workdir):
  """What a finished sweep holds, less times: each run's numbers and grid, the report (but its
  'Made:' line) and the report's figures."""
  runs = {}
  for path in sorted(glob.glob(os.path.join(workdir, '*', 'results.json'))):
    folder = os.path.dirname(path)
    results = run_files.read_results(folder).to_json()
    grid = storage.read_json(os.path.join(folder, run_files.ROBUSTNESS_FILE))
    grid.pop('seconds')
    runs[os.path.basename(folder)] = ({key: results[key] for key in (
        'config', 'epochs', 'steps', 'test', 'validation', 'test_averaged_mask')}, grid)
  with open(os.path.join(workdir, run_files.REPORT_FILE)) as f:
    report = [line for line in f if not line.startswith('- Made:')]
  figures = {}
  for path in sorted(glob.glob(os.path.join(workdir, '*.png'))):
    with open(path, 'rb') as f:
      figures[os.path.basename(path)] = f.read()
  return runs, report, figures


@pytest.mark.slow
def test_two_shards_at_once_make_the_runs_and_report_of_one_process(data_dir, tmp_path):
  config_path = tmp_path / 'sharded_sweep.py'
  config_path.write_text(SHARDED_SWEEP_CONFIG)
  # The one process first (the shared `data_dir` holds the phantom already; the shards only read it).
  whole = start_sweep(config_path, data_dir, tmp_path / 'whole' / 'sweep',
                       tmp_path / 'whole.log')
  assert whole.wait(timeout=600) == 0, (tmp_path / 'whole.log').read_text()[-3000:]
  shards = [start_sweep(config_path, data_dir, tmp_path / 'sharded' / 'sweep',
                        tmp_path / f'{index}.log',
                        f'--shard={index}/2') for index in range(2)]
  for index, shard in enumerate(shards):
    assert shard.wait(timeout=600) == 0, (tmp_path / f'{index}.log').read_text()[-3000:]
  logs = [(tmp_path / f'{index}.log').read_text() for index in range(2)]
  # Each shard trained its own half: the no-PE runs and the PE runs (one program each on an
  # accelerator).
  trained = [sorted(re.findall(r'Sweep program \d+/\d+: (\S+) \(runs done', log)) for log in logs]
  assert trained == [['seed0_nope', 'seed1_nope'], ['pe256_seed0', 'pe256_seed1']], logs
  assert sum('Report: ' in log for log in logs) >= 1

  runs, report, figures = finished_sweep(tmp_path / 'sharded' / 'sweep')
  expected_runs, expected_report, expected_figures = finished_sweep(tmp_path / 'whole' / 'sweep')
  assert sorted(runs) == sorted(expected_runs) == ['pe256_seed0', 'pe256_seed1', 'seed0_nope',
                                                   'seed1_nope']
  assert runs == expected_runs
  assert report == expected_report
  assert figures.keys() == expected_figures.keys() and figures == expected_figures
