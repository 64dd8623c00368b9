"""Input pipeline: dataset arrays -> device-resident, sharded, normalized splits.

The datasets are small (JSRT's training split is ~40 MB at 256², ACDC's ~370 MB), so each split
lives on the device(s). The training split is one global array sharded by rows over the `data`
axis of the mesh: every process places only its own rows, and training gathers batches by index
inside the compiled step. Evaluation splits are cut into equal batches (`pad_to_batches`, the
one place that pads for evaluation) of images still in [0, 1], so that evaluation and the
robustness grid (whose corruptions act on [0, 1] intensities) read the same arrays.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from pejax.data import datasets, identity
from pejax.models.predictor import Normalizer


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


def training_batch_size(num_examples: int, batch_size: int, num_devices: int = 1
                        ) -> tuple[int, int]:
  """(examples, rows) of a training step: the examples it trains on, `batch_size` or the whole
  training set when that is smaller (Table 2's 5 and 10 images), and the rows it computes, that
  number rounded up to a multiple of the device count.

  The rows beyond the examples are filled at weight 0 (`epochs.epoch_order`), which neither the
  loss nor BatchNorm's statistics see (`steps.train_step`): the paper's batch of 20 trains the
  same on 1, 8 or 16 devices.
  """
  examples = min(batch_size, num_examples)
  return examples, -(-examples // num_devices) * num_devices


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


@jax.jit
def _masked_mean_std(images, num_rows):
  valid = (jnp.arange(images.shape[0]) < num_rows)[:, None, None, None]
  count = num_rows * np.prod(images.shape[1:])
  mean = jnp.sum(jnp.where(valid, images, 0.0)) / count
  variance = jnp.sum(jnp.where(valid, (images - mean) ** 2, 0.0)) / count
  return mean, jnp.sqrt(variance)


def fit_normalizer(kind: str, train_images: jax.Array, num_rows: int,
                   channel_records=()) -> Normalizer:
  """Normalizer from the (global, row-sharded, padded) training images; the same on every
  process. 'channels' takes each channel's rule from the built dataset's `channel_records`."""
  if kind not in ('dataset', 'per_image', 'channels'):
    raise ValueError(f"normalization={kind!r}: use 'dataset', 'per_image' or 'channels'.")
  if kind == 'channels':
    return Normalizer('channels', channels=tuple(
        (record['kind'], record['mean'], record['std']) for record in channel_records))
  if kind == 'per_image':
    return Normalizer('per_image')
  mean, std = _masked_mean_std(train_images, num_rows)
  return Normalizer('dataset', float(mean), float(std))


def pad_to_batches(count: int, max_batch_size: int, multiple: int = 1) -> tuple[int, int]:
  """(number of batches, batch size) that cover `count` examples for evaluation: batches of at
  most `max_batch_size` (rounded up to `multiple`, the device count), as few padded rows as
  that number of batches allows."""
  max_batch_size = -(-max_batch_size // multiple) * multiple
  batch_size = balanced_batch_size(count, max_batch_size, multiple)
  return max(1, -(-count // batch_size)), batch_size


@dataclasses.dataclass
class EvalSplit:
  """A split cut into equal batches on the device(s): (batches, batch, ...) arrays sharded on the
  batch axis; padded rows have `valid` 0. `index` numbers the rows 0..N-1 (padding: N..), so a
  per-image quantity (a noise key) does not depend on the batching."""
  images01: jax.Array        # float32 in [0, 1], not normalized
  labels: jax.Array          # int32
  valid: jax.Array           # float32 1 / 0
  index: jax.Array           # int32
  count: int                 # real examples
  ids: np.ndarray            # (count,) example ids, in row order
  host_images01: np.ndarray  # (count, H, W, C) host copy, for image panels
  host_labels: np.ndarray    # (count, H, W)
  source: datasets.SplitArrays | None = None  # the host arrays, with per-case identity

  @property
  def batch_size(self) -> int:
    return int(self.images01.shape[1])


def place_eval_split(split: datasets.SplitArrays, max_batch_size: int,
                     mesh: Mesh | None = None) -> EvalSplit:
  """Pads a split to whole batches (`pad_to_batches`) and shards each batch over the devices;
  each process transfers only its share of every batch."""
  mesh = mesh or make_mesh()
  count = len(split.images)
  num_batches, batch_size = pad_to_batches(count, max_batch_size, mesh.size)
  total = num_batches * batch_size
  sharding = NamedSharding(mesh, P(None, 'data'))
  per_process = batch_size // jax.process_count()
  start = jax.process_index() * per_process

  def batched(array):
    padded = np.zeros((total,) + array.shape[1:], array.dtype)
    padded[:len(array)] = array
    padded = padded.reshape((num_batches, batch_size) + array.shape[1:])
    local = padded[:, start:start + per_process]
    return jax.make_array_from_process_local_data(sharding, local, padded.shape)

  return EvalSplit(images01=batched(np.asarray(split.images, np.float32)),
                   labels=batched(np.asarray(split.labels, np.int32)),
                   valid=batched(np.ones((count,), np.float32)),
                   index=batched(np.arange(total, dtype=np.int32)),
                   count=count, ids=np.asarray(split.ids), host_images01=split.images,
                   host_labels=split.labels, source=split)


@dataclasses.dataclass
class RunData:
  """Everything the runs on one dataset share: splits on the device(s) and the normalization."""
  dataset: datasets.DatasetSpec
  train_images: jax.Array    # normalized, row-sharded, rows padded to the device count
  train_labels: jax.Array
  num_train: int             # real rows of the training arrays
  normalizer: Normalizer
  validation: EvalSplit
  test: EvalSplit
  # An nnU-Net-format dataset's `datasets.nnunet_inputs` (how its files became examples, which
  # prediction on a new case repeats); None for the other datasets.
  nnunet_inputs: dict | None = None
  # What data these are (`identity.record`): the runs trained on them record it, and a later
  # command on those runs checks its data against it.
  data_record: dict | None = None


def load_arguments(config: Any) -> dict[str, Any]:
  """`datasets.load_split`'s keyword arguments for the data a run of `config` sees."""
  arguments = dict(image_size=config.image_size, data_dir=config.data_dir,
                   manual_dir=config.manual_dir)
  if config.get('position_jitter') is not None:
    arguments['position_jitter'] = config.position_jitter
  return arguments


def load_run_data(config: Any, mesh: Mesh) -> RunData:
  """Loads (building on first use) the dataset of `config` and places it on the devices.

  Normalization statistics come from the whole training split's images, also for runs on a
  subset of it (they need no labels, and runs of a sweep then see the same inputs).
  """
  spec = datasets.dataset_spec(config.dataset)
  load_kwargs = load_arguments(config)
  datasets.prepare_shared(config.dataset, **load_kwargs)
  splits = datasets.load_splits(config.dataset, **load_kwargs)
  builder = datasets.prepare(config.dataset, **load_kwargs)
  inputs = datasets.nnunet_inputs(builder) if spec.normalization == 'channels' else None
  num_train = len(splits['train'].images)
  train_images = place_rows(splits['train'].images, mesh)
  normalizer = fit_normalizer(spec.normalization, train_images, num_train,
                              inputs['normalization'] if inputs else ())
  train_images = jax.jit(normalizer, out_shardings=row_sharding(mesh))(train_images)
  return RunData(dataset=spec, train_images=train_images,
                 train_labels=place_rows(splits['train'].labels.astype(np.int32), mesh),
                 num_train=num_train, normalizer=normalizer,
                 validation=place_eval_split(splits['validation'], config.eval_batch_size, mesh),
                 test=place_eval_split(splits['test'], config.eval_batch_size, mesh),
                 nnunet_inputs=inputs,
                 data_record=identity.record(config.dataset, builder, splits, inputs))
