"""A run's model as the training step sees it: the `StepSpec` (graph definition, optimizer,
dtypes) and the function that makes its initial state, from the settings that define them.
Training, prediction and the benchmarks build their models here.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pejax.models import networks, steps
from pejax.models.encoding import input_channels


def model_spec(config, num_classes: int, image_channels: int = 1):
  """The StepSpec of a config (graph definition, optimizer) and a function making its state.

  Configs that define the same model and optimizer get the same (equal) objects, so the runs
  of a sweep reuse each other's compiled programs instead of tracing them again.
  """
  return build(config.model, config.use_pe, config.width, config.padding, config.conv_impl,
               config.compute_dtype, float(config.learning_rate), num_classes, image_channels)


@functools.lru_cache(maxsize=16)
def build(model: str, use_pe: bool, width: int, padding: str, conv_impl: str,
          compute_dtype_name: str, learning_rate: float, num_classes: int,
          image_channels: int = 1):
  """`model_spec` from the settings themselves (cached: equal settings, equal objects)."""
  compute_dtype = jnp.bfloat16 if compute_dtype_name == 'bfloat16' else None

  def make_model(seed):
    # The number of PE channels does not depend on λ (any λ > 0 adds two).
    return networks.create_model(
        model, in_channels=input_channels(1.0 if use_pe else None, image_channels),
        num_classes=num_classes,
        width=width, padding=padding, conv_impl=conv_impl, dtype=compute_dtype, seed=seed)

  graphdef, _, _ = steps.split_model(jax.eval_shape(lambda: make_model(0)))
  spec = steps.StepSpec(graphdef=graphdef, optimizer=optax.adam(learning_rate),
                        num_classes=num_classes, use_pe=use_pe, compute_dtype=compute_dtype)

  def init_state(seed):
    parameter_key, data_key = jax.random.split(jax.random.key(seed))
    _, params, batch_stats = steps.split_model(make_model(parameter_key))
    return steps.init_train_state(spec, params, batch_stats, data_key)

  return spec, init_state


def count_parameters(params) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))
