"""benchmarks/gpu_check.py in --smoke mode, in a fresh process that cannot import TF, TFDS or CLU.

The GPU check must run where only JAX, Flax, Optax, NumPy (and optionally PyTorch) are
installed, so it may import only the project's compute core. The child process cannot import
those libraries nor the project modules that pull them in; an attempt fails the run. Passes
with or without PyTorch installed.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'gpu_check.py')

# Not installed on a bare GPU machine, or importing something that is not.
BLOCKED = ('tensorflow', 'tensorflow_datasets', 'clu', 'ml_collections', 'matplotlib',
           'pejax.train', 'pejax.data.datasets', 'pejax.sweep', 'pejax.reporting.report',
           'pejax.evaluation.robustness',
           'pejax.configuration', 'pejax.configs.paper.common', 'pejax.runtime', 'pejax.drawing',
           'pejax.data', 'data_builders.phantoms.phantoms_dataset_builder')

# A name mapped to None in sys.modules cannot be imported (ImportError), and
# `importlib.util.find_spec` reports it missing, as on a machine without it (PyTorch's dynamo
# probes for TensorFlow that way, so refusing the probe itself would be wrong). An unguarded
# import in the script then fails the run or lands in its 'errors'.
RUNNER = textwrap.dedent('''
    import runpy, sys
    for name in {blocked!r}:
      sys.modules[name] = None
    sys.argv = [{script!r}] + sys.argv[1:]
    runpy.run_path({script!r}, run_name='__main__')
''')

TOP_LEVEL_KEYS = {'settings', 'torch_status', 'environment', 'peak_tflops', 'matmul',
                  'throughput', 'stacked', 'phantom_training', 'skipped', 'errors', 'seconds',
                  'finished_within_deadline'}


def run_gpu_check(out, *flags, timeout=300):
  # Run from outside the repository: the script finds the project by itself.
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  code = RUNNER.format(blocked=BLOCKED, script=SCRIPT)
  process = subprocess.run([sys.executable, '-c', code, '--smoke', f'--out={out}', *flags],
                           cwd=out, env=env, capture_output=True, text=True, timeout=timeout)
  assert process.returncode == 0, process.stderr[-3000:]
  with open(os.path.join(out, 'gpu_check.json')) as f:
    results = json.load(f)
  with open(os.path.join(out, 'gpu_check.md')) as f:
    report = f.read()
  return results, report


@pytest.mark.slow  # about 30–50 s on 2 CPU cores: seven small compilations
def test_smoke_run_writes_every_part_without_tensorflow(tmp_path):
  results, report = run_gpu_check(str(tmp_path))
  assert set(results) == TOP_LEVEL_KEYS
  assert results['errors'] == [] and results['skipped'] == []
  assert results['finished_within_deadline'] is True
  env = results['environment']
  assert env['jax_backend'] == 'cpu' and env['packages']['jax'] and 'git_commit' in env
  assert env['conv_impl_auto'] == 'cpu'   # 'xla' on a GPU
  assert results['peak_tflops']['bfloat16'] is None   # unknown device: no MFU, and says so
  assert 'MFU not computed' in results['peak_tflops']['source']
  assert results['matmul']['float32'] > 0

  rows = results['throughput']
  jax_rows = [row for row in rows if row['implementation'] == 'jax']
  assert {(row['dtype'], row['batch']) for row in jax_rows} == {('float32', 2), ('bfloat16', 2)}
  for row in jax_rows:
    assert row['status'] == 'ok' and row['images_per_second'] > 0 and row['mfu'] is None
    assert row['analytic_flops_per_step'] > 0 and row['xla_flops_per_step'] > 0
  torch_rows = [row for row in rows if row['implementation'].startswith('torch')]
  assert {row['implementation'] for row in torch_rows} == {'torch eager', 'torch.compile'}
  if results['torch_status'] == 'not installed':
    assert all(row['status'] == 'not installed' for row in torch_rows)
  else:
    assert results['torch_status'] == 'ok' and env['torch']['version']
    for row in torch_rows:
      if row['implementation'] == 'torch eager':
        assert row['status'] == 'ok' and row['images_per_second'] > 0
      else:
        assert row['status'].startswith('skipped: --smoke')

  stacked = results['stacked']
  assert {(row['K'], row['run']) for row in stacked} == {
      (1, 'vmap'), (1, 'sequential'), (2, 'vmap'), (2, 'sequential')}
  assert all(row['status'] == 'ok' and row['images_per_second'] > 0 for row in stacked)

  phantom = results['phantom_training']
  assert phantom['status'] == 'ok' and phantom['steps_done'] == 2 and phantom['all_finite']
  assert 0.0 <= phantom['test_dice']['dice'] <= 1.0
  assert set(phantom['test_dice']) == {'dice', 'dice_right_lung', 'dice_left_lung', 'dice_heart'}
  assert 0.5 < phantom['averaged_mask_dice']['dice'] < 1.0

  for heading in ('# GPU check', '## Training throughput', '## K models by jax.vmap',
                  '## Phantom training', '## Skipped'):
    assert heading in report
  assert 'Test Dice' in report


def test_past_the_deadline_everything_is_skipped_and_said(tmp_path):
  results, report = run_gpu_check(str(tmp_path), '--deadline_minutes=0')
  assert set(results) == TOP_LEVEL_KEYS
  assert [item['what'] for item in results['skipped']] == [
      'matmul', 'throughput', 'phantom', 'stacked']
  assert all(item['why'] == 'deadline' for item in results['skipped'])
  assert results['throughput'] == [] and results['stacked'] == []
  assert '- throughput: deadline' in report


@pytest.fixture
def gpu_check(monkeypatch):
  """The script as a module; the paths it adds and the modules it loads are undone after."""
  monkeypatch.setattr(sys, 'path', [os.path.dirname(SCRIPT)] + sys.path)
  import gpu_check
  yield gpu_check
  for name in ('gpu_check', 'benchmark'):
    sys.modules.pop(name, None)


def test_peak_table_and_override(gpu_check):
  peak = gpu_check.peak_tflops
  assert peak('NVIDIA H100 80GB HBM3', None)['bfloat16'] == 989.5
  assert peak('NVIDIA H100 PCIe', None)['bfloat16'] == 756.5
  assert peak('NVIDIA H200', None)['source'].startswith('table: H200 SXM')
  assert peak('NVIDIA GH200 480GB', None)['source'].startswith('table: GH200')
  assert peak('NVIDIA H100 NVL', None)['bfloat16'] == 835.5
  assert peak('NVIDIA A100-SXM4-40GB', None)['float32'] == 156.0      # TF32 for float32
  assert peak('NVIDIA L4', None)['bfloat16'] == 121.0
  assert peak('NVIDIA L40S', None)['bfloat16'] == 362.0
  assert peak('NVIDIA A10G', None)['bfloat16'] is None                 # not A10, not A100
  assert peak('cpu', None)['bfloat16'] is None
  override = gpu_check.parse_peak_override('bfloat16=100,float32=50')
  assert peak('cpu', override) == {'source': '--peak_tflops', 'bfloat16': 100.0, 'float32': 50.0}
  assert gpu_check.parse_peak_override('70') == {'bfloat16': 70.0, 'float32': 70.0}
  with pytest.raises(ValueError, match='not a dtype'):
    gpu_check.parse_peak_override('fp8=1000')


def test_full_sizes_refuse_a_machine_without_gpu(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  process = subprocess.run([sys.executable, SCRIPT, f'--out={tmp_path}'], cwd=str(tmp_path),
                           env=env, capture_output=True, text=True, timeout=120)
  assert process.returncode == 2
  assert 'JAX finds no GPU' in process.stderr and '--smoke' in process.stderr
  assert not os.listdir(tmp_path)
