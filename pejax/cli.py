"""The command line of pejax: flags, multi-process start-up, and the dispatch to one run, a
sweep, the evaluation of a trained run, or the report. `main.py` calls `console_main`.

Errors the user can fix (a wrong flag, config file or setting, a `pejax.errors.PejaxError`, a
full disk: `errors.translate`) end the program with one line, `pejax: error: ...`, and a non-zero
exit; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from pejax import errors

MODES = ('train', 'evaluate', 'report', 'predict', 'probe')


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
          'label the --input files with the model of --workdir into --output; probe: how much '
          'position the network of --workdir (or of every finished run of the sweep there) '
          'holds at each level (probe.json, probe.png).'),
      input=flags.DEFINE_multi_string(
          'input', None, '--mode=predict: files or folders to predict (repeat the flag or give '
          'a comma list): PNG, JPEG, BMP, TIFF, raw JSRT .IMG, NIfTI, DICOM.'),
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
  """Turns off XLA:CPU's YNNPACK convolutions where they were measured slow (BENCHMARKS.md):
  the rule of `cpu_conv.recommended_xla_flags()`, by jaxlib release and CPU kind (an unknown
  flag would stop XLA, so only on the release whose flag it is).

  XLA reads XLA_FLAGS once, when its CPU backend starts, so this runs before any computation.
  Set PEJAX_DEFAULT_XLA_FLAGS=0 to leave XLA_FLAGS alone.
  """
  if os.environ.get('PEJAX_DEFAULT_XLA_FLAGS', '1') == '0':
    return
  from pejax.models import cpu_conv
  flags = cpu_conv.recommended_xla_flags()
  if flags:
    os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


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
  raise errors.SettingError(f'--config={argument}: no file {path!r} and no config of that '
                            f'name; pejax comes with {", ".join(known)}.')


def _config_files(folder):
  """The config files below `folder`: those that define `get_config` (paper/common.py holds the
  experiments' definitions, not a config)."""
  for entry in folder.iterdir():
    if entry.is_dir() and entry.name == 'paper':
      yield from _config_files(entry)
    elif (entry.name.endswith('.py') and not entry.name.startswith('_')
          and 'def get_config(' in entry.read_text()):
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


@errors.exit_on_user_error
def run(config, workdir: str, *, mode: str = 'train', shard: str | None = None):
  """One run, a sweep (or a shard of it), an evaluation or the report; a user's error as one
  line, exit 1."""
  from pejax import sweep, train
  from pejax.reporting import report
  if shard is not None and (mode == 'report' or not sweep.is_sweep(config)):
    raise errors.SettingError(f'--shard={shard} applies to training or evaluating a sweep '
                              'config (configs/paper/*.py); leave it out here.')
  if mode == 'report':
    return report.write_report(workdir)
  if sweep.is_sweep(config):
    return train.train_sweep(config, workdir, evaluate_only=mode == 'evaluate',
                             shard=sweep.parse_shard(shard) if shard is not None else None)
  return train.train_and_evaluate(config, workdir, evaluate_only=mode == 'evaluate')


@errors.exit_on_user_error
def predict(workdir: str, inputs, output: str, intensity: str = 'auto'):
  """--mode=predict: the model of `workdir` on the `inputs` files, written into `output`."""
  from pejax.inference import predict as predict_lib
  model = predict_lib.load(workdir)
  rows = predict_lib.predict_files(model, inputs, output, intensity)
  print(f'{len(rows)} inputs predicted into {output} ({predict_lib.PREDICTIONS_CSV}).')
  return rows


@errors.exit_on_user_error
def probe(workdir: str, config=None):
  """--mode=probe: the position probe of the run (or of every finished run of the sweep) in
  `workdir`, with --config's probe settings (and its dataset, where the run's folder moved)
  where --config is given."""
  from pejax import probing
  paths = probing.probe_workdir(workdir, config.probe if config is not None else None,
                                config.dataset if config is not None else None)
  print(f'{len(paths)} run{"" if len(paths) == 1 else "s"} probed: {", ".join(paths)}.')
  return paths


def start_line(config, workdir: str) -> str:
  """The console's line on what is about to run: a run's main settings (all of them go to its
  config.json), or a sweep's size and the values it varies (each run's folder below the sweep's
  holds that run's config.json; the base config's values of a swept setting apply to no run)."""
  from pejax import configuration, sweep
  if not sweep.is_sweep(config):
    return (f'Workdir {workdir} (all settings in its config.json): '
            + ', '.join(f'{name}={config[name]}' for name in configuration.SHOWN_SETTINGS))
  runs = sweep.expand(config)
  swept: dict[str, list] = {}
  for overrides in config.sweep:
    for name, value in overrides.items():
      values = swept.setdefault(name, [])
      if not any(type(value) is type(v) and value == v for v in values):
        values.append(value)
  varied = '; '.join(f'{name}={",".join(map(str, values))}' for name, values in swept.items())
  common = ', '.join(f'{name}={config[name]}' for name in configuration.SHOWN_SETTINGS
                     if name not in swept)
  return (f'Sweep in {workdir}: {len(runs)} runs, each in a folder of its own with its '
          f'config.json, over {varied}; every run: {common}')


@errors.exit_on_user_error
def main(argv) -> None:
  if len(argv) > 1:
    raise errors.SettingError(f'unexpected arguments {argv[1:]}: give every setting as a flag, '
                              'e.g. --config.num_epochs=5 (--helpfull lists the flags).')
  holders = define_flags()
  mode = holders['mode'].value
  if mode == 'predict':
    if not (holders['workdir'].value and holders['input'].value and holders['output'].value):
      raise errors.SettingError('--mode=predict needs --workdir (a trained run or checkpoint), '
                                '--input (files or folders) and --output (a folder).')
    predict(holders['workdir'].value, holders['input'].value, holders['output'].value,
            holders['intensity'].value)
    return
  config = holders['config'].value
  if config is None and holders['config'].present:
    raise errors.SettingError(f'--config={_config_argument(sys.argv)}: its get_config() '
                              'returned None; it must return the ConfigDict of the run.')
  if mode == 'probe':
    if not holders['workdir'].value:
      raise errors.SettingError('--mode=probe needs --workdir: the folder of a trained run (with '
                                'checkpoints/) or of a sweep.')
    from pejax import runtime  # before TensorFlow loads (with the data): it quiets it
    runtime.initialize(verbose=holders['verbose'].value)
    probe(holders['workdir'].value, config)
    return
  if config is None and mode != 'report':
    raise errors.SettingError('--config is required (e.g. --config=configs/unet_pe.py:quick).')
  workdir = holders['workdir'].value
  if workdir is None:
    if config is None:
      raise errors.SettingError('--mode=report needs --workdir (the sweep\'s folder).')
    workdir = default_workdir(config_flags.get_config_filename(flags.FLAGS['config']))
  from pejax import runtime  # after flag parsing: XLA options are set before JAX starts
  verbose = holders['verbose'].value
  runtime.initialize(holders['coordinator_address'].value, holders['num_processes'].value,
                     holders['process_id'].value, verbose=verbose)
  from absl import logging
  if verbose or config is None:
    logging.info('Config %s, workdir %s', config, workdir)
  else:
    logging.info('%s', start_line(config, workdir))
  run(config, workdir, mode=mode, shard=holders['shard'].value)


def console_main() -> None:
  """`main.py` and the installed `pejax` command."""
  # TensorFlow (TFDS, CLU) prints start-up notices on stderr unless told before it loads, as
  # main.py does; the installed command tells it here.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  use_fast_cpu_convolutions()
  define_flags()
  argv = errors.exit_on_user_error(_with_resolved_config)(sys.argv)
  app.run(main, argv=argv, flags_parser=lambda args: errors.parse_flags(args, config_flag_error))


# ------------------------------------------------------------------- wrong --config flags


def _config_argument(argv) -> str | None:
  """The value of the last --config=... of `argv`."""
  values = [a.removeprefix('--config=') for a in argv if a.startswith('--config=')]
  return values[-1] if values else None


def config_flag_error(error: Exception, argv: list[str]) -> errors.PejaxError | None:
  """What a failure to parse --config or a --config.<setting> means for the user: a config
  file that cannot be loaded (named with the line that fails), a setting it does not have (with
  the nearest name) or a value of the wrong type; None if it is neither. A bug in pejax's own
  code, run by a config file, is raised again with its traceback."""
  from ml_collections.config_flags import config_flags as library
  argument = _config_argument(argv)
  links = list(errors.chain(error))  # ml_collections wraps the config file's own error
  loading = [link for link in links
             if any(frame.f_code is library.ConfigFileFlagParser.parse.__code__
                    for frame, _ in errors.frames(link))]
  if loading:
    return _config_file_error(error, loading[-1], argument)
  # A setting the config does not have: ml_collections' frames hold the override's path.
  folder = os.path.dirname(library.__file__)
  for link in links:
    for frame, _ in errors.frames(link):  # outermost first: the root config
      names = frame.f_locals
      override = names.get('field_path', names.get('override'))
      if (os.path.dirname(frame.f_code.co_filename) == folder and isinstance(override, str)
          and hasattr(names.get('config'), 'keys')):
        return _unknown_setting(override, names['config'], argument)
  match = re.match(r'flag --config\.([\w.]+)=(.*?): (.*)', str(error), re.DOTALL)
  if isinstance(error, flags.Error) and match:
    path, value, reason = match.groups()
    default = _setting_value(flags.FLAGS['config'].value, path.split('.'))
    kind = type(default).__name__
    known = (f'; the setting is {"an" if kind[0] in "aeiou" else "a"} {kind} ({default!r} in '
             f'--config={argument})' if default is not None else '')
    return errors.SettingError(f'--config.{path}={value}: {errors.one_line(reason)}{known}.')
  return None


def _config_file_error(error, origin, argument) -> errors.PejaxError:
  if isinstance(origin, errors.PejaxError):
    return errors.SettingError(f'--config={argument}: {origin}')
  path = os.path.abspath(argument.partition(':')[0])
  if isinstance(origin, SyntaxError) and origin.filename:
    return errors.SettingError(
        f'--config={argument}: the config file does not compile: {origin.msg} ({origin.filename}'
        f', line {origin.lineno}); fix it.')
  frames = list(errors.frames(origin))
  innermost = frames[-1][0].f_code.co_filename if frames else ''
  if errors.is_own_code(innermost):  # a bug of pejax's, not of the config file
    raise error
  lines = [line for frame, line in frames if os.path.abspath(frame.f_code.co_filename) == path]
  where = f' at line {lines[-1]}' if lines else ''
  return errors.SettingError(
      f'--config={argument}: the config file fails{where}: {type(origin).__name__}: '
      f'{errors.one_line(origin)}; fix it (its get_config() returns the ConfigDict of the run, '
      'as in configs/unet_pe.py).')


def _unknown_setting(field_path: str, config, argument) -> errors.PejaxError:
  parts = field_path.split('.')
  node = config
  for index, part in enumerate(parts):
    names = list(node.keys()) if hasattr(node, 'keys') else []
    if part not in names:
      nearest = difflib.get_close_matches(part, names, n=1)
      hint = (f' (did you mean --config.{".".join(parts[:index] + nearest)}?)' if nearest
              else '')
      return errors.SettingError(
          f'--config.{field_path}: no such setting in --config={argument}{hint}; '
          'pejax/configuration.py lists the settings.')
    node = node[part]
  return errors.SettingError(f'--config.{field_path}: this setting cannot be set from the '
                             'command line.')


def _setting_value(config, parts):
  """The value of a setting in `config`, or None where it cannot be read."""
  node = config
  try:
    for part in parts:
      if part not in node.keys():
        return None
      node = node[part]
  except Exception:  # noqa: BLE001  a config that failed to load; the message does without
    return None
  return node
