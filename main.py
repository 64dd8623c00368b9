"""Trains and evaluates one pejax run (or a sweep of runs) described by a config file.

  python main.py --config=configs/unet_pe.py:quick
  python main.py --config=configs/unet_pe.py --config.dataset=jsrt --workdir=runs/unet_pe_jsrt
  python main.py --config=configs/unet_pe.py --workdir=runs/unet_pe --mode=evaluate
  python main.py --config=configs/paper/phantom_all.py --workdir=runs/phantom_paper
  python main.py --mode=report --workdir=runs/phantom_paper

Flags and dispatch live in `pejax/cli.py`.
"""

import os

# TensorFlow (used by TFDS and CLU for files and summaries) must not take the accelerators.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from pejax import cli  # noqa: E402  (after the environment is set)

if __name__ == '__main__':
  cli.console_main()
