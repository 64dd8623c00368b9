"""Pure training and evaluation steps: functions of (static spec, state, arrays) -> (state, metrics).

The model lives as an NNX graph definition (static) plus two pytrees, parameters and BatchNorm
statistics, so that steps jit, vmap over stacked models (sweeps) and shard over devices.
Images reaching these functions are already normalized; positional encoding is added here
with a scale that is an array, so models that differ only in λ can be vmapped together.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from pejax.models import dice
from pejax.models.encoding import EncodingChange, add_coordinate_channels, coordinate_channels


@flax.struct.dataclass
class TrainState:
  step: jax.Array        # optimizer steps taken
  epoch: jax.Array       # epochs completed; the next epoch's data order derives from it
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array         # key of this model's data order (typed key data, uint32)


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """What the steps need besides arrays; hashable, so it can be a static jit argument."""
  graphdef: Any
  optimizer: optax.GradientTransformation = dataclasses.field(compare=False, hash=False)
  num_classes: int = 4
  use_pe: bool = True
  compute_dtype: Any = None   # e.g. jnp.bfloat16 for mixed precision; params stay float32
  pe_kind: str = 'linear'     # pejax.models.encoding
  pe_bands: int = 4
  pe_layers: str = 'input'    # 'input' (the paper) or 'all' (every 3×3 convolution)

  def _key(self):
    return (self.graphdef, self.num_classes, self.use_pe, self.compute_dtype, self.pe_kind,
            self.pe_bands, self.pe_layers)

  def __hash__(self):
    return hash((id(self.optimizer),) + self._key())

  def __eq__(self, other):
    return (isinstance(other, StepSpec) and self.optimizer is other.optimizer
            and self._key() == other._key())


def split_model(model: nnx.Module):
  """(graphdef, params, batch_stats) of an NNX model, the states as plain nested dicts.

  Plain dicts (not `nnx.State` of Variables) keep the steps free of NNX trace-level rules,
  and are what Orbax saves and `vmap` stacks.
  """
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return graphdef, params.to_pure_dict(), batch_stats.to_pure_dict()


def init_train_state(spec: StepSpec, params, batch_stats, rng) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), epoch=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=spec.optimizer.init(params),
                    rng=jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng)


def model_inputs(spec: StepSpec, images, pe_scale, change: EncodingChange | None = None):
  """The network's input: the images, with the coordinate channels (changed by `change`) where
  they enter there."""
  if spec.use_pe and spec.pe_layers == 'input':
    images = add_coordinate_channels(images, pe_scale, spec.pe_kind, spec.pe_bands, change)
  return images.astype(spec.compute_dtype) if spec.compute_dtype is not None else images


def layer_coordinates(spec: StepSpec, pe_scale, change: EncodingChange | None = None):
  """The `coords` function of a model whose every 3×3 convolution takes coordinate channels
  (pe_layers='all'), or None."""
  if not (spec.use_pe and spec.pe_layers == 'all'):
    return None
  # Made in float32 (exact pixel indices at any size) and cast to the activations' dtype.
  return lambda height, width: coordinate_channels(height, width, pe_scale, jnp.float32,
                                                   spec.pe_kind, spec.pe_bands, change)


def apply_model(spec: StepSpec, params, batch_stats, images, pe_scale, train: bool,
                mask=None, change: EncodingChange | None = None):
  """Logits (float32) and the BatchNorm statistics after this call; in training, BatchNorm's
  batch statistics are over the examples where `mask` (N,) is True (all when None).
  `change` changes the coordinate channels (the robustness grid's encoding conditions)."""
  model = nnx.merge(spec.graphdef, params, batch_stats)
  if mask is not None:
    mask = mask.reshape((-1,) + (1,) * (images.ndim - 1))
  logits = model(model_inputs(spec, images, pe_scale, change), train=train, mask=mask,
                 coords=layer_coordinates(spec, pe_scale, change))
  return logits.astype(jnp.float32), nnx.state(model, nnx.BatchStat).to_pure_dict()


def center_crop_labels(labels, height, width):
  """Crops labels to the logits' size (only the small CNN with padding='valid' shrinks)."""
  top = (labels.shape[1] - height) // 2
  left = (labels.shape[2] - width) // 2
  return labels[:, top:top + height, left:left + width]


def example_cross_entropy(logits, labels):
  """Mean pixel cross-entropy of each example (N,), over the model's output (labels cropped)."""
  labels = center_crop_labels(labels, logits.shape[1], logits.shape[2])
  per_pixel = optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))
  return per_pixel.mean(axis=(1, 2))


def cross_entropy_loss(logits, labels, weights):
  """Mean pixel cross-entropy over examples with weight 1 (weight-0 rows fill a batch up)."""
  per_example = example_cross_entropy(logits, labels)
  return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def train_step(spec: StepSpec, state: TrainState, images, labels, weights, pe_scale):
  """One Adam step on a batch; returns the new state and {'loss', 'grad_norm', 'finite'}.

  Rows of weight 0 are not part of the batch: neither the loss nor BatchNorm's statistics see
  them, so a batch filled up with them (to a multiple of the device count, or the last batch of
  an epoch) trains exactly as its weight-1 rows alone.
  """

  def loss_fn(params):
    logits, batch_stats = apply_model(spec, params, state.batch_stats, images, pe_scale,
                                      train=True, mask=weights > 0)
    return cross_entropy_loss(logits, labels, weights), batch_stats

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updates, opt_state = spec.optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # A non-finite step leaves the state untouched; the caller stops training on `finite`.
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = state.replace(step=state.step + finite.astype(jnp.int32),
                            params=keep(params, state.params),
                            batch_stats=keep(batch_stats, state.batch_stats),
                            opt_state=keep(opt_state, state.opt_state))
  return new_state, {'loss': loss, 'grad_norm': grad_norm, 'finite': finite}


def pad_to_size(predictions, height, width):
  """Pads label maps to (height, width) with background; only 'valid' padding shrinks outputs."""
  rows, columns = height - predictions.shape[1], width - predictions.shape[2]
  return jnp.pad(predictions, ((0, 0), (rows // 2, rows - rows // 2),
                               (columns // 2, columns - columns // 2)))


def predict(spec: StepSpec, state: TrainState, images, pe_scale,
            change: EncodingChange | None = None):
  """Predicted label maps (N, H, W) int32 in evaluation mode, at the input's size."""
  logits, _ = apply_model(spec, state.params, state.batch_stats, images, pe_scale, train=False,
                          change=change)
  predictions = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return pad_to_size(predictions, images.shape[1], images.shape[2])


def eval_step(spec: StepSpec, state: TrainState, images, labels, valid, pe_scale):
  """Summable Dice statistics and summed loss of a batch (see `dice.dice_sums`).

  Dice is over the full image (a border the model cannot see counts as background); the loss is
  over the model's output, as in training.
  """
  logits, _ = apply_model(spec, state.params, state.batch_stats, images, pe_scale, train=False)
  predictions = pad_to_size(jnp.argmax(logits, axis=-1), labels.shape[1], labels.shape[2])
  sums = dice.dice_sums(predictions, labels, spec.num_classes, valid=valid)
  sums['loss_sum'] = jnp.sum(example_cross_entropy(logits, labels) * valid)
  sums['example_count'] = jnp.sum(valid.astype(jnp.float32))
  return sums
