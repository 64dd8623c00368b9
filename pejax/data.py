"""Input pipeline: splits held on the device(s), normalization, subsets, per-process shares.

The datasets are small (JSRT's training split is ~40 MB at 256², ACDC's ~370 MB), so each split
is one global array sharded by rows over the `data` axis of the mesh: every process places only
its own rows, and training gathers batches by index inside the compiled epoch.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

NORMALIZATION_EPSILON = 1e-6


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process, axis 'data' (batch parallelism)."""
  return Mesh(np.asarray(jax.devices()), ('data',))


def row_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def padded_rows(num_rows: int, num_shards: int) -> int:
  return max(num_shards, math.ceil(num_rows / num_shards) * num_shards)


def balanced_batch_size(num_examples: int, max_batch_size: int, multiple: int = 1) -> int:
  """The smallest batch size (a multiple of `multiple`) that covers `num_examples` in as few
  batches as `max_batch_size` does.

  For evaluation, where padded rows are computed and thrown away: 68 test images in batches of
  at most 32 become 3 batches of 23 (1 padded row) instead of 3 of 32 (28 padded rows).
  """
  num_batches = max(1, math.ceil(num_examples / max_batch_size))
  return max(multiple, math.ceil(math.ceil(num_examples / num_batches) / multiple) * multiple)


def training_batch_size(num_examples: int, batch_size: int, multiple: int = 1) -> int:
  """The batch a training step computes: `num_examples` itself when a training set smaller
  than the batch divides it (and is a multiple of `multiple`, the device count), else
  `batch_size`.

  A batch filled up from such a set (`train.epoch_order`) holds every image batch_size /
  num_examples times at loss weight 0 for the copies: the same BatchNorm statistics, loss and
  gradients as the set alone, at several times the cost (Table 2's 5 and 10 images).
  """
  if (num_examples < batch_size and batch_size % num_examples == 0
      and num_examples % multiple == 0):
    return num_examples
  return batch_size


def process_row_range(num_padded_rows: int) -> tuple[int, int]:
  """Rows [start, stop) of a row-sharded global array that live on this process's devices."""
  per_process = num_padded_rows // jax.process_count()
  start = jax.process_index() * per_process
  return start, start + per_process


def place_rows(array: np.ndarray, mesh: Mesh) -> jax.Array:
  """Global array of `array`'s rows (zero-padded to a multiple of the device count), sharded by
  rows over the mesh. Each process transfers only the rows its devices hold."""
  num_padded = padded_rows(len(array), mesh.size)
  start, stop = process_row_range(num_padded)
  local = np.zeros((stop - start,) + array.shape[1:], array.dtype)
  available = array[start:min(stop, len(array))]
  local[:len(available)] = available
  return jax.make_array_from_process_local_data(row_sharding(mesh), local, (num_padded,) + array.shape[1:])


def training_subset(num_examples: int, subset_size: int | None, seed: int) -> np.ndarray:
  """Sorted indices of a random subset of the training split (paper Table 2); all if None."""
  if subset_size is None or subset_size >= num_examples:
    return np.arange(num_examples)
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(num_examples, size=subset_size, replace=False))


@dataclasses.dataclass(frozen=True)
class Normalizer:
  """Maps images in [0, 1] to the model's input scale, as the paper does.

  'dataset': (x − mean) / std with the training split's statistics (JSRT, chest phantom);
  'per_image': each image to zero mean and unit variance (ACDC, cardiac phantom).
  """
  kind: str
  mean: float = 0.0
  std: float = 1.0

  def __call__(self, images):
    if self.kind == 'per_image':
      mean = images.mean(axis=(1, 2, 3), keepdims=True)
      std = images.std(axis=(1, 2, 3), keepdims=True)
      return (images - mean) / (std + NORMALIZATION_EPSILON)
    return (images - self.mean) / (self.std + NORMALIZATION_EPSILON)


@jax.jit
def _masked_mean_std(images, num_rows):
  valid = (jnp.arange(images.shape[0]) < num_rows)[:, None, None, None]
  count = num_rows * np.prod(images.shape[1:])
  mean = jnp.sum(jnp.where(valid, images, 0.0)) / count
  variance = jnp.sum(jnp.where(valid, (images - mean) ** 2, 0.0)) / count
  return mean, jnp.sqrt(variance)


def fit_normalizer(kind: str, train_images: jax.Array, num_rows: int) -> Normalizer:
  """Normalizer from the (global, row-sharded, padded) training images; the same on every process."""
  if kind not in ('dataset', 'per_image'):
    raise ValueError(f"normalization={kind!r}: use 'dataset' or 'per_image'.")
  if kind == 'per_image':
    return Normalizer('per_image')
  mean, std = _masked_mean_std(train_images, num_rows)
  return Normalizer('dataset', float(mean), float(std))
