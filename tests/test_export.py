"""The accelerator programs, lowered and exported for GPU and TPU on a machine without either.

`jax.export` lowers a jitted function for a platform that is not present, so a lowering rule or
a platform-specific path that fails only on 'cuda' or 'tpu' fails here, in CI on a CPU. Each
program is exported for one platform at a time: a multi-platform export puts every
convolution into a `stablehlo.case` over the platform, which would double the counts below.

The models are built with conv_impl='xla' explicitly: 'auto' is resolved when the model is
constructed, by `jax.default_backend()` (here 'cpu', i.e. `pejax.models.cpu_conv`), not by the
platform a program is later lowered for; on a GPU or TPU machine 'auto' is 'xla', which is what
these exports show.

Everything is abstract (`jax.eval_shape`, `jax.ShapeDtypeStruct`): nothing is initialized or
compiled, only traced and lowered.
"""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx
from jax import export

from pejax import configuration
from pejax.data import input_pipeline
from pejax.evaluation import corruptions, robustness
from pejax.models import networks, steps
from pejax.models.encoding import input_channels

PLATFORMS = ('cuda', 'tpu')
SIZES = {'unet': 32, 'cnn4': 16}   # the U-Net halves 4 times: 32 px leaves 2×2 at the bottleneck
WIDTH, BATCH, NUM_CLASSES = 4, 2, 4
DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}
CONVOLUTION = re.compile(r'= stablehlo\.convolution\(.*')


def abstract_spec_and_state(model_name, dtype):
  """StepSpec and an abstract TrainState of a small model with XLA's convolution."""
  net = nnx.eval_shape(lambda: networks.create_model(
      model_name, in_channels=input_channels(1.0), num_classes=NUM_CLASSES, width=WIDTH,
      conv_impl='xla', dtype=dtype))
  graphdef, params, batch_stats = steps.split_model(net)
  spec = steps.StepSpec(graphdef=graphdef, optimizer=optax.adam(1e-3), num_classes=NUM_CLASSES,
                        use_pe=True, compute_dtype=dtype)
  state = jax.eval_shape(lambda: steps.init_train_state(spec, params, batch_stats,
                                                        jax.random.key(0)))
  return spec, state


def abstract_batch(size, label_dtype=jnp.uint8):
  return (jax.ShapeDtypeStruct((BATCH, size, size, 1), jnp.float32),
          jax.ShapeDtypeStruct((BATCH, size, size), label_dtype),
          jax.ShapeDtypeStruct((BATCH,), jnp.float32))


def export_for(platform, function, *args):
  """Exports `function(*args)` for one platform, round-trips it through serialization, and
  returns (exported, StableHLO text).

  The function is exported over the flat list of its argument and result leaves: the
  serialization format takes only dicts with string keys, and the states hold NNX's integer
  keys (list indices) and a Flax dataclass. The program itself is the same.
  """
  leaves, treedef = jax.tree.flatten(args)
  flat = lambda *flat_args: jax.tree.leaves(function(*jax.tree.unflatten(treedef, flat_args)))
  exported = export.export(jax.jit(flat), platforms=(platform,))(*leaves)
  assert exported.platforms == (platform,)
  restored = export.deserialize(exported.serialize())
  assert restored.platforms == (platform,)
  assert restored.in_avals == exported.in_avals and restored.out_avals == exported.out_avals
  return exported, exported.mlir_module()


def convolutions(text):
  return CONVOLUTION.findall(text)


def conv_layer_count(model_name):
  # U-Net: 4 encoder levels, bottleneck and 4 decoder levels of two 3×3 convolutions; small
  # CNN: 3. Each plus the 1×1 score convolution.
  return {'unet': 9 * 2, 'cnn4': 3}[model_name] + 1


def check_xla_convolutions(text, expected_count, dtype_name):
  """XLA's convolution, `expected_count` times, in the compute dtype; none of the CPU path.

  `pejax.models.cpu_conv` (conv_impl='cpu') would show as optimization barriers around its
  custom-gradient convolutions and a `dot_general` for the 1×1 score convolution.
  """
  found = convolutions(text)
  assert len(found) == expected_count
  assert 'optimization_barrier' not in text
  assert 'stablehlo.dot_general' not in text
  element = 'bf16' if dtype_name == 'bfloat16' else 'f32'
  for line in found:
    operands = re.search(r': \(tensor<[^>]*>, tensor<[^>]*>\)', line).group(0)
    assert operands.count(f'x{element}>') == 2, line


@pytest.mark.parametrize('dtype_name', DTYPES)
@pytest.mark.parametrize('model_name', SIZES)
@pytest.mark.parametrize('platform', PLATFORMS)
def test_train_and_eval_steps_export(platform, model_name, dtype_name):
  spec, state = abstract_spec_and_state(model_name, DTYPES[dtype_name])
  images, labels, weights = abstract_batch(SIZES[model_name])
  pe_scale = jax.ShapeDtypeStruct((), jnp.float32)
  layers = conv_layer_count(model_name)

  exported, text = export_for(platform, functools.partial(steps.train_step, spec), state,
                              images, labels, weights, pe_scale)
  # Forward, input gradient and weight gradient of every convolution, except the first's
  # input gradient (the images are not differentiated).
  check_xla_convolutions(text, 3 * layers - 1, dtype_name)
  new_state, metrics = jax.tree.unflatten(jax.tree.structure((state, {
      'loss': 0, 'grad_norm': 0, 'finite': 0})), exported.out_avals)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), new_state) == jax.tree.map(
      lambda a: (a.shape, a.dtype), state)
  assert metrics['finite'].dtype == jnp.bool_

  _, text = export_for(platform, functools.partial(steps.eval_step, spec), state, images,
                       labels, weights, pe_scale)
  check_xla_convolutions(text, layers, dtype_name)


@dataclasses.dataclass(frozen=True)
class Predict:
  """A hashable `predict_fn(model_state, images)` for the grid (normalization left out)."""
  spec: steps.StepSpec

  def __call__(self, model_state, images):
    state, pe_scale = model_state
    return steps.predict(self.spec, state, images, pe_scale)


def robustness_grid_program(predict_fn, num_images, size):
  """(function of the grid's array arguments, abstract arguments) as `evaluate_robustness`
  runs it with the default settings: every corruption and severity and the 17 shifts.

  The one reference to the module's private grid program, whose signature may change.
  """
  cfg = configuration.default_robustness_config()
  table = robustness.condition_table(cfg, size, size)
  blur_sigmas = [row['parameter'] for row in table if row['condition'] == 'gaussian_blur']
  options = dict(predict_fn=predict_fn, num_classes=NUM_CLASSES,
                 max_blur_radius=max(corruptions.blur_radius(s) for s in blur_sigmas),
                 shift_axis=cfg.shift_axis, shift_fill=cfg.shift_fill)
  # The test split as `input_pipeline.place_eval_split` lays it out: equal, masked batches.
  num_batches, batch_size = input_pipeline.pad_to_batches(num_images, BATCH)
  batched = lambda shape, dtype: jax.ShapeDtypeStruct((num_batches, batch_size) + shape, dtype)
  column = lambda key, dtype: jnp.asarray([row[key] for row in table], dtype)
  arrays = (batched((size, size, 1), jnp.float32), batched((size, size), jnp.int32),
            batched((), jnp.float32), batched((), jnp.int32),
            column('kind', jnp.int32), column('parameter', jnp.float32),
            column('shift', jnp.int32), column('level', jnp.int32),
            jnp.asarray(cfg.seed, jnp.uint32))
  grid = lambda model_state, *arrays: robustness._robustness_grid(model_state, *arrays, **options)
  return grid, arrays, len(table)


@pytest.mark.parametrize('dtype_name', DTYPES)
@pytest.mark.parametrize('model_name', SIZES)
@pytest.mark.parametrize('platform', PLATFORMS)
def test_robustness_grid_exports(platform, model_name, dtype_name):
  spec, state = abstract_spec_and_state(model_name, DTYPES[dtype_name])
  size = SIZES[model_name]
  # 3 images in batches of 2: the padded, masked last batch is part of the program.
  grid, arrays, num_conditions = robustness_grid_program(Predict(spec), 3, size)
  model_state = (state, jax.ShapeDtypeStruct((), jnp.float32))
  exported, text = export_for(platform, grid, model_state, *arrays)
  # The model's forward pass appears once, inside the loops over conditions and batches.
  check_xla_convolutions(text, conv_layer_count(model_name), dtype_name)
  assert all(aval.shape[0] == num_conditions for aval in exported.out_avals)
