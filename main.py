"""Trains and evaluates one pejax run (or a sweep of runs) described by a config file.

  python main.py --config=configs/unet_pe.py:quick
  python main.py --config=configs/unet_pe.py --config.dataset=jsrt --workdir=runs/unet_pe_jsrt
  python main.py --config=configs/unet_pe.py --workdir=runs/unet_pe --mode=evaluate
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

# TensorFlow (used by TFDS and CLU for files and summaries) must not take the accelerators.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:variant]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder; default runs/<config name>[_<variant>].')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'evaluate'],
                          'train: train (or continue) then evaluate; evaluate: evaluate the '
                          'latest checkpoint of --workdir again.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0, for several processes on CPU/GPU '
                                   '(Cloud TPU VMs find it themselves).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process in a multi-process run.')
flags.mark_flags_as_required(['config'])


def use_fast_cpu_convolutions() -> None:
  """Turns off XLA:CPU's YNNPACK convolutions, ~1.6× slower here (pejax/fast_conv.py).

  XLA reads XLA_FLAGS once, when its CPU backend starts, so this runs before any computation;
  only on the jaxlib release whose flag it is (an unknown flag would stop XLA). Set
  PEJAX_DEFAULT_XLA_FLAGS=0 to leave XLA_FLAGS alone.
  """
  import jaxlib
  if os.environ.get('PEJAX_DEFAULT_XLA_FLAGS', '1') == '0' or not jaxlib.__version__.startswith('0.10.'):
    return
  from pejax import fast_conv
  os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {fast_conv.recommended_xla_flags()}".strip()


def default_workdir(config_argument: str) -> str:
  path, _, variant = config_argument.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('runs', f'{name}_{variant}' if variant else name)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from pejax import runtime  # after flag parsing: sets XLA options before JAX starts
  runtime.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from pejax import train
  workdir = _WORKDIR.value or default_workdir(config_flags.get_config_filename(flags.FLAGS['config']))
  logging.info('Config %s, workdir %s', _CONFIG.value, workdir)
  train.run(_CONFIG.value, workdir, evaluate_only=_MODE.value == 'evaluate')


if __name__ == '__main__':
  use_fast_cpu_convolutions()
  app.run(main)
