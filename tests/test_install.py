"""The installed package, outside the checkout: the `pejax` command and configs by name."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """The project built as a wheel and installed (without its dependencies, which this test's
  environment has) into a folder of its own."""
  folder = tmp_path_factory.mktemp('install')
  wheels, target = folder / 'wheels', folder / 'site'
  build = [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
           '-w', str(wheels), REPO]
  output = subprocess.run(build, capture_output=True, text=True, timeout=600)
  assert output.returncode == 0, output.stderr[-3000:]
  install = [sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(target),
             *map(str, wheels.glob('pejax-*.whl'))]
  output = subprocess.run(install, capture_output=True, text=True, timeout=600)
  assert output.returncode == 0, output.stderr[-3000:]
  return folder, target


def run_outside(folder, target, *command):
  env = dict(os.environ, PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run(list(command), capture_output=True, text=True, timeout=900, cwd=folder,
                        env=env)


def test_the_wheel_holds_the_package_configs_and_builders(installed):
  folder, target = installed
  probe = ('import pejax, pejax.configs, data_builders.phantoms; from pejax import cli; '
           'print(pejax.__file__); print(cli.resolve_config_argument("paper/phantom_all"))')
  output = run_outside(folder, target, sys.executable, '-c', probe)
  assert output.returncode == 0, output.stderr[-3000:]
  package, config = output.stdout.split()
  assert package.startswith(str(target)) and config.startswith(str(target))
  assert (target / 'data_builders' / 'phantoms' / 'README.md').is_file()
  assert (target / 'bin' / 'pejax').is_file()


@pytest.mark.slow
def test_the_installed_command_runs_the_main_job_by_config_name(installed, tmp_path):
  folder, target = installed
  output = run_outside(
      folder, target, str(target / 'bin' / 'pejax'), '--config=unet_pe:quick',
      '--config.num_epochs=1', '--config.image_size=32', '--config.width=4',
      '--config.run_robustness=False', '--config.num_image_panels=0',
      f'--config.data_dir={tmp_path / "tfds"}', f'--workdir={tmp_path / "run"}')
  assert output.returncode == 0, output.stderr[-3000:]
  with open(tmp_path / 'run' / 'results.json') as f:
    results = json.load(f)
  assert results['config']['model'] == 'unet' and results['epochs'] == 1
  assert not os.path.exists(os.path.join(folder, 'runs'))
  unknown = run_outside(folder, target, str(target / 'bin' / 'pejax'), '--config=unet_p')
  assert unknown.returncode != 0 and 'pejax comes with' in unknown.stderr
