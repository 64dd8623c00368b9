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
from pejax.models.encoding import input_channels, num_coordinate_channels


def model_spec(config, num_classes: int, image_channels: int = 1):
  """The StepSpec of a config (graph definition, optimizer) and a function making its state.

  Configs that define the same model and optimizer get the same (equal) objects, so the runs
  of a sweep reuse each other's compiled programs instead of tracing them again.
  """
  # Checkpoints of runs made before the encoding settings existed describe the paper's.
  encoding = (config.get('pe_kind', 'linear'), int(config.get('pe_bands', 4)),
              config.get('pe_layers', 'input'))
  return build(config.model, config.use_pe, config.width, config.padding, config.conv_impl,
               config.compute_dtype, float(config.learning_rate), num_classes, image_channels,
               *encoding)


@functools.lru_cache(maxsize=16)
def build(model: str, use_pe: bool, width: int, padding: str, conv_impl: str,
          compute_dtype_name: str, learning_rate: float, num_classes: int,
          image_channels: int = 1, pe_kind: str = 'linear', pe_bands: int = 4,
          pe_layers: str = 'input'):
  """`model_spec` from the settings themselves (cached: equal settings, equal objects)."""
  compute_dtype = jnp.bfloat16 if compute_dtype_name == 'bfloat16' else None

  at_input = use_pe and pe_layers == 'input'
  coord_channels = num_coordinate_channels(pe_kind, pe_bands) if use_pe and not at_input else 0

  def make_model(seed):
    # The number of PE channels does not depend on λ.
    return networks.create_model(
        model, in_channels=input_channels(1.0 if at_input else None, image_channels, pe_kind,
                                          pe_bands),
        num_classes=num_classes, width=width, padding=padding, conv_impl=conv_impl,
        dtype=compute_dtype, coord_channels=coord_channels, seed=seed)

  graphdef, _, _ = steps.split_model(jax.eval_shape(lambda: make_model(0)))
  spec = steps.StepSpec(graphdef=graphdef, optimizer=optax.adam(learning_rate),
                        num_classes=num_classes, use_pe=use_pe, compute_dtype=compute_dtype,
                        pe_kind=pe_kind, pe_bands=pe_bands, pe_layers=pe_layers)

  def init_state(seed):
    parameter_key, data_key = jax.random.split(jax.random.key(seed))
    _, params, batch_stats = steps.split_model(make_model(parameter_key))
    return steps.init_train_state(spec, params, batch_stats, data_key)

  return spec, init_state


def count_parameters(params) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))
