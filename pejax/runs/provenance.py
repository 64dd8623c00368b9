"""What a trained model is and what made it: the description stored with every checkpoint and in
`results.json`, so that a checkpoint copied alone to another machine says how to use it.

`model_description` is what a checkpoint carries as Orbax custom metadata (the settings, the
normalization statistics, the class names and `software`); `software` names the pejax version,
its git commit where pejax runs from a git checkout, and the versions of the libraries whose
changes could change the numbers. No JAX is imported here.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

# Format of the checkpoint description; raised when a field changes meaning.
DESCRIPTION_VERSION = 1
LIBRARIES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy')


def _installed_version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


@functools.cache
def git_commit() -> dict[str, Any]:
  """{'commit': hash, 'dirty': bool} of the git checkout pejax runs from; {} for an installed
  copy (no checkout), or where git is missing."""
  folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if not os.path.exists(os.path.join(folder, '.git')):
    return {}
  try:
    run = functools.partial(subprocess.run, cwd=folder, capture_output=True, text=True,
                            timeout=10, check=True)
    commit = run(['git', 'rev-parse', 'HEAD']).stdout.strip()
    # Only tracked files: run outputs and caches in the checkout do not make it dirty.
    changed = run(['git', 'status', '--porcelain', '--untracked-files=no']).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return {}
  return {'commit': commit, 'dirty': bool(changed)}


@functools.cache
def software() -> dict[str, Any]:
  """pejax's version and git commit, Python's version and the versions of `LIBRARIES`."""
  return {'pejax': _installed_version('pejax'), 'git': git_commit(), 'python': platform.python_version(),
          **{name: _installed_version(name) for name in LIBRARIES}}


def model_description(config: Mapping[str, Any], class_names: Sequence[str],
                      normalization: Mapping[str, Any], image_channels: int = 1,
                      nnunet_inputs: Mapping[str, Any] | None = None,
                      data: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The custom metadata of a checkpoint: everything `pejax.load` needs besides the arrays.

  Args:
    config: the run's settings as plain JSON values (`configuration.settings_dict`).
    class_names: every class in label order, background first.
    normalization: the fields of the run's `pejax.models.predictor.Normalizer`.
    image_channels: the image channels the model takes (besides PE).
    nnunet_inputs: for a dataset in nnU-Net's format, how its files became the examples the
      model was trained on (`pejax.data.datasets.nnunet_inputs`), which prediction repeats.
    data: what data the model was trained on (`pejax.data.identity.compact`), so that a run
      folder that lost its data.json is still checked against them.
  """
  return {'format': DESCRIPTION_VERSION, 'config': dict(config), 'class_names': list(class_names),
          'normalization': dict(normalization), 'image_channels': int(image_channels),
          'nnunet_inputs': dict(nnunet_inputs) if nnunet_inputs else None,
          'data': dict(data) if data else None,
          'software': software()}
