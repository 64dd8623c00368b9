"""The command line of pejax: flags, multi-process start-up, and the dispatch to one run, a
sweep, the evaluation of a trained run, or the report. `main.py` calls `console_main`.

Errors the user can fix (`pejax.errors.PejaxError`) end the program with one line and a
non-zero exit; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

MODES = ('train', 'evaluate', 'report', 'predict')


def define_flags() -> dict:
  """The command's flags (defined once per process); returns their holders by name."""
  if 'mode' in flags.FLAGS:
    return _FLAG_HOLDERS
  _FLAG_HOLDERS.update(
      config=config_flags.DEFINE_config_file(
          'config', None, 'Config file (configs/*.py[:variant]).', lock_config=True),
      workdir=flags.DEFINE_string(
          'workdir', None, 'Run folder; default runs/<config name>[_<variant>].'),
      mode=flags.DEFINE_enum(
          'mode', 'train', MODES,
          'train: train (or continue) then evaluate; evaluate: evaluate the latest checkpoint '
          'of --workdir again; report: write the report of the sweep in --workdir; predict: '
          'label the --input files with the model of --workdir into --output.'),
      input=flags.DEFINE_multi_string(
          'input', None, '--mode=predict: files or folders to predict (repeat the flag or give '
          'a comma list): PNG, JPEG, raw JSRT .IMG, NIfTI, DICOM.'),
      output=flags.DEFINE_string(
          'output', None, '--mode=predict: folder for the masks, overlays and predictions.csv.'),
      intensity=flags.DEFINE_enum(
          'intensity', 'auto', ('auto', 'percentile', 'as_is'),
          '--mode=predict: how stored values become [0, 1] intensities; auto: per format, as '
          'the training data (README, "Use a trained model").'),
      coordinator_address=flags.DEFINE_string(
          'coordinator_address', None, 'host:port of process 0, for several processes on '
          'CPU/GPU (Cloud TPU VMs find it themselves).'),
      num_processes=flags.DEFINE_integer(
          'num_processes', None, 'Processes in a multi-process run.'),
      process_id=flags.DEFINE_integer(
          'process_id', None, 'This process in a multi-process run.'),
      verbose=flags.DEFINE_bool(
          'verbose', False, 'Also show the libraries\' start-up notices, TFDS\'s lines per split '
          'read and the full config.'),
      shard=flags.DEFINE_string(
          'shard', None, 'I/N: train only share I (0..N-1) of a sweep\'s runs, so that N '
          'independent processes sharing --workdir complete it; the last to finish writes '
          'the report.'),
  )
  return _FLAG_HOLDERS


_FLAG_HOLDERS: dict = {}


def use_fast_cpu_convolutions() -> None:
  """Turns off XLA:CPU's YNNPACK convolutions, which are slow here (BENCHMARKS.md).

  XLA reads XLA_FLAGS once, when its CPU backend starts, so this runs before any computation;
  only on the jaxlib release whose flag it is (an unknown flag would stop XLA). Set
  PEJAX_DEFAULT_XLA_FLAGS=0 to leave XLA_FLAGS alone.
  """
  import jaxlib
  if (os.environ.get('PEJAX_DEFAULT_XLA_FLAGS', '1') == '0'
      or not jaxlib.__version__.startswith('0.10.')):
    return
  from pejax import fast_conv
  os.environ['XLA_FLAGS'] = (
      f"{os.environ.get('XLA_FLAGS', '')} {fast_conv.recommended_xla_flags()}".strip())


def config_folders() -> list:
  """Where configs named without a path are looked up: the installed `pejax.configs`, else a
  checkout's `configs/` beside the package."""
  import importlib.resources
  import pathlib
  try:
    return [importlib.resources.files('pejax.configs')]
  except ModuleNotFoundError:
    return [pathlib.Path(__file__).resolve().parent.parent / 'configs']


def resolve_config_argument(argument: str) -> str:
  """`--config` as a file path, or as the name of a config that comes with pejax:
  'unet_pe:quick', 'paper/phantom_all' or 'paper.phantom_all'; 'configs/unet_pe.py' outside a
  checkout also names the installed one."""
  path, colon, variant = argument.partition(':')
  if os.path.isfile(path):
    return argument
  name = path.removeprefix('configs/').removesuffix('.py').replace('.', '/')
  for folder in config_folders():
    candidate = folder.joinpath(name + '.py')
    if candidate.is_file():
      return f'{candidate}{colon}{variant}'
  known = sorted(f'{"paper/" if p.parent.name == "paper" else ""}{p.stem}'
                 for folder in config_folders() for p in _config_files(folder))
  raise app.UsageError(f'--config={argument}: no file {path!r} and no config of that name; '
                       f'pejax comes with {", ".join(known)}.')


def _config_files(folder):
  for entry in folder.iterdir():
    if entry.is_dir() and entry.name == 'paper':
      yield from _config_files(entry)
    elif entry.name.endswith('.py') and not entry.name.startswith('_'):
      yield entry


def _with_resolved_config(argv: list[str]) -> list[str]:
  resolved = []
  for index, argument in enumerate(argv):
    if argument.startswith('--config=') and index:
      argument = '--config=' + resolve_config_argument(argument.removeprefix('--config='))
    resolved.append(argument)
  return resolved


def default_workdir(config_argument: str) -> str:
  path, _, variant = config_argument.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('runs', f'{name}_{variant}' if variant else name)


def run(config, workdir: str, *, mode: str = 'train', shard: str | None = None):
  """One run, a sweep (or a shard of it), an evaluation or the report; a user's error as one
  line, exit 1."""
  from pejax import errors, report, sweep, train
  try:
    if shard is not None and (mode == 'report' or not sweep.is_sweep(config)):
      raise errors.SettingError(f'--shard={shard} applies to training or evaluating a sweep '
                                'config (configs/paper/*.py); leave it out here.')
    if mode == 'report':
      return report.write_report(workdir)
    if sweep.is_sweep(config):
      return train.train_sweep(config, workdir, evaluate_only=mode == 'evaluate',
                               shard=sweep.parse_shard(shard) if shard is not None else None)
    return train.train_and_evaluate(config, workdir, evaluate_only=mode == 'evaluate')
  except errors.PejaxError as error:
    raise SystemExit(f'pejax: error: {error}') from None


def predict(workdir: str, inputs, output: str, intensity: str = 'auto'):
  """--mode=predict: the model of `workdir` on the `inputs` files, written into `output`."""
  from pejax import errors, predict as predict_lib
  try:
    model = predict_lib.load(workdir)
    rows = predict_lib.predict_files(model, inputs, output, intensity)
  except errors.PejaxError as error:
    raise SystemExit(f'pejax: error: {error}') from None
  print(f'{len(rows)} inputs predicted into {output} ({predict_lib.PREDICTIONS_CSV}).')
  return rows


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  holders = define_flags()
  mode = holders['mode'].value
  if mode == 'predict':
    if not (holders['workdir'].value and holders['input'].value and holders['output'].value):
      raise app.UsageError('--mode=predict needs --workdir (a trained run or checkpoint), '
                           '--input (files or folders) and --output (a folder).')
    predict(holders['workdir'].value, holders['input'].value, holders['output'].value,
            holders['intensity'].value)
    return
  config = holders['config'].value
  if config is None and mode != 'report':
    raise app.UsageError('--config is required (e.g. --config=configs/unet_pe.py:quick).')
  workdir = holders['workdir'].value
  if workdir is None:
    if config is None:
      raise app.UsageError('--mode=report needs --workdir.')
    workdir = default_workdir(config_flags.get_config_filename(flags.FLAGS['config']))
  from pejax import runtime  # after flag parsing: XLA options are set before JAX starts
  verbose = holders['verbose'].value
  runtime.initialize(holders['coordinator_address'].value, holders['num_processes'].value,
                     holders['process_id'].value, verbose=verbose)
  from absl import logging
  if verbose or config is None:
    logging.info('Config %s, workdir %s', config, workdir)
  else:
    shown = ('dataset', 'model', 'use_pe', 'pe_scale', 'padding', 'image_size', 'width',
             'num_epochs', 'batch_size', 'seed')
    logging.info('Workdir %s (all settings in its config.json): %s', workdir,
                 ', '.join(f'{name}={config[name]}' for name in shown))
  run(config, workdir, mode=mode, shard=holders['shard'].value)


def console_main() -> None:
  """`main.py` and the installed `pejax` command."""
  use_fast_cpu_convolutions()
  define_flags()
  app.run(main, argv=_with_resolved_config(sys.argv))
