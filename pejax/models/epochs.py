"""One training epoch as compiled programs: the order of the examples, the step on a batch
gathered on the device, and the runner of one model or K vmapped models (`Members`)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from pejax.models import steps


def epoch_order(rng, epoch, example_ids, batch_size: int, rows_per_step: int):
  """Rows of the training array (steps, rows_per_step) and loss weights of one epoch.

  A fresh permutation of this model's training examples (`example_ids`: all of the split, or
  a subset) per epoch from (rng, epoch), cut into steps of `batch_size` examples at weight 1.
  The rest of each step's `rows_per_step` rows (the last, partial batch; rows that round the
  batch up to the device count) repeat examples of the same step at weight 0, which the step
  leaves out of the loss and BatchNorm's statistics: each example contributes exactly once to
  the epoch, and each step equals one on its weight-1 examples alone.
  """
  num_examples = example_ids.shape[0]
  num_steps = -(-num_examples // batch_size)
  key = jax.random.fold_in(jax.random.wrap_key_data(rng), epoch)
  order = jnp.resize(jax.random.permutation(key, example_ids), (num_steps, batch_size))
  real = (jnp.arange(num_steps * batch_size) < num_examples).reshape(num_steps, batch_size)
  columns = jnp.arange(rows_per_step)
  weights = (columns < batch_size) & real[:, columns % batch_size]
  return order[:, columns % batch_size], weights.astype(jnp.float32)


def train_batch(spec: steps.StepSpec, batch_sharding, state: steps.TrainState, pe_scale, rows,
                weights, images, labels):
  """One step on the batch of training-array `rows`, gathered on the device."""
  batch_images = jax.lax.with_sharding_constraint(images[rows], batch_sharding)
  batch_labels = jax.lax.with_sharding_constraint(labels[rows], batch_sharding)
  return steps.train_step(spec, state, batch_images, batch_labels, weights, pe_scale)


def train_epoch_scan(spec: steps.StepSpec, batch_sharding, batch_size: int, rows_per_step: int,
                     state: steps.TrainState, pe_scale, example_ids, images, labels):
  """One epoch as a single `lax.scan` over steps; returns the state and per-step metrics."""
  order, weights = epoch_order(state.rng, state.epoch, example_ids, batch_size, rows_per_step)

  def step(state, batch):
    return train_batch(spec, batch_sharding, state, pe_scale, *batch, images, labels)

  state, step_metrics = jax.lax.scan(step, state, (order, weights))
  return state.replace(epoch=state.epoch + 1), step_metrics


@dataclasses.dataclass(frozen=True)
class Members:
  """One model, or K models trained together as one vmapped program: how their states and
  inputs are stacked, how a function maps over them, and how one member is taken back out.
  The one place that tells the two apart: one model runs the unbatched program, unstacked."""
  count: int

  @property
  def stacked(self) -> bool:
    return self.count > 1

  def map(self, fn, in_axes):
    """`fn` over the members (`jax.vmap` with `in_axes`; None: shared by all of them)."""
    return jax.vmap(fn, in_axes=in_axes) if self.stacked else fn

  def stack(self, trees):
    """The members' pytrees (one per member, in order) as one."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees) if self.stacked else trees[0]

  def member(self, tree, index: int):
    """Member `index` of a stacked pytree (a result of `map`)."""
    return jax.tree.map(lambda leaf: leaf[index], tree) if self.stacked else tree

  def unstack(self, tree) -> list:
    return [self.member(tree, index) for index in range(self.count)]

  @property
  def step_axis(self) -> int:
    """The axis of the steps in an epoch's per-step arrays (after the members' axis)."""
    return 1 if self.stacked else 0


class EpochRunner:
  """Runs one training epoch of one model, or of K stacked models (vmapped).

  `scan=True` compiles the epoch as one `lax.scan`; `scan=False` dispatches one compiled step
  per batch from Python (the data, the order and the gathering stay on the device, and
  dispatch is asynchronous). On XLA:CPU convolutions inside a scan run much slower than the
  same step outside it (BENCHMARKS.md), so the loop is the default.
  """

  def __init__(self, spec, batch_sharding, batch_size: int, rows_per_step: int,
               members: Members, scan: bool):
    vmapped = members.map
    self.scan = scan
    if scan:
      self._epoch = jax.jit(vmapped(functools.partial(
          train_epoch_scan, spec, batch_sharding, batch_size, rows_per_step),
          (0, 0, 0, None, None)), donate_argnums=(0,))
    else:
      self._order = jax.jit(vmapped(functools.partial(
          epoch_order, batch_size=batch_size, rows_per_step=rows_per_step), (0, 0, 0)))
      self._step = jax.jit(vmapped(functools.partial(train_batch, spec, batch_sharding),
                                   (0, 0, 0, 0, None, None)), donate_argnums=(0,))
      self._next_epoch = jax.jit(lambda state: state.replace(epoch=state.epoch + 1),
                                 donate_argnums=(0,))
    self.members = members

  @classmethod
  @functools.lru_cache(maxsize=16)
  def shared(cls, spec, batch_sharding, batch_size: int, rows_per_step: int, members: Members,
             scan: bool):
    """One runner (with its compiled programs) per distinct setting, reused by later runs."""
    return cls(spec, batch_sharding, batch_size, rows_per_step, members, scan)

  def __call__(self, state, pe_scale, example_ids, images, labels):
    if self.scan:
      return self._epoch(state, pe_scale, example_ids, images, labels)
    order, weights = self._order(state.rng, state.epoch, example_ids)
    step_axis = self.members.step_axis
    step_metrics = []
    for index in range(order.shape[step_axis]):
      rows = jnp.take(order, index, axis=step_axis)
      batch_weights = jnp.take(weights, index, axis=step_axis)
      state, metrics = self._step(state, pe_scale, rows, batch_weights, images, labels)
      step_metrics.append(metrics)
    stacked = jax.tree.map(lambda *m: jnp.stack(m, axis=step_axis), *step_metrics)
    return self._next_epoch(state), stacked
