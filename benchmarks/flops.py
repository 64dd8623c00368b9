"""FLOPs of one training step and one forward pass: XLA's cost analysis beside the analytic count.

  python benchmarks/flops.py                     # paper settings: 256², width 64, batch 20, PE on
  python benchmarks/flops.py --size=64 --width=16 --no_compile

The analytic count is `benchmark.py`'s (convolutions only: 2·k²·C_in·C_out·H·W per convolution
and image forward, ×3 in a training step, ×2 for the first convolution). XLA's cost analysis
counts the whole program (convolutions, BatchNorm, ReLU, pooling, upsampling, loss, Dice sums,
Adam) as XLA sees it:

- `lowered`: `jax.jit(f).lower(...).cost_analysis()`, the program before XLA's optimizations,
  lowered here for each of `--platforms` (the accelerator programs of `tests/test_export.py`);
- `compiled`: `.compile().cost_analysis()` on this machine's backend (CPU here), after XLA's
  optimizations.

Everything is abstract: nothing is allocated or run, so the paper's sizes fit on a small CPU;
compiling the U-Net's training step at 256², width 64, takes a minute or so there.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark  # noqa: E402  (the analytic FLOP count and the XLA flags)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--models', default='unet,cnn4')
  parser.add_argument('--size', type=int, default=256)
  parser.add_argument('--width', type=int, default=64)
  parser.add_argument('--batch', type=int, default=20)
  parser.add_argument('--conv_impl', default='xla',
                      help="'xla' (what 'auto' is on GPU/TPU) or 'cpu' (pejax.models.cpu_conv).")
  parser.add_argument('--dtype', default='float32', help="'float32' or 'bfloat16'.")
  parser.add_argument('--platforms', default='cuda,tpu', help='Platforms to lower for.')
  parser.add_argument('--no_compile', dest='compile', action='store_false',
                      help='Skip compiling on this machine (the slow part).')
  parser.add_argument('--json', default='', help='Also write the numbers to this file.')
  return parser.parse_args(argv)


def abstract_program(model, size, width, batch, conv_impl, dtype, step_kind):
  """(jitted step with the spec bound, abstract arguments) for `model` with PE on (λ = 1)."""
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx
  from pejax.models import networks, encoding, steps
  compute_dtype = None if dtype == 'float32' else jnp.dtype(dtype)
  net = nnx.eval_shape(lambda: networks.create_model(
      model, in_channels=encoding.input_channels(1.0), width=width, conv_impl=conv_impl,
      dtype=compute_dtype))
  graphdef, params, batch_stats = steps.split_model(net)
  spec = steps.StepSpec(graphdef=graphdef, optimizer=optax.adam(1e-3), compute_dtype=compute_dtype)
  state = jax.eval_shape(lambda: steps.init_train_state(spec, params, batch_stats,
                                                        jax.random.key(0)))
  arguments = (state, jax.ShapeDtypeStruct((batch, size, size, 1), jnp.float32),
               jax.ShapeDtypeStruct((batch, size, size), jnp.uint8),
               jax.ShapeDtypeStruct((batch,), jnp.float32), jax.ShapeDtypeStruct((), jnp.float32))
  step = steps.train_step if step_kind == 'train' else steps.eval_step
  return jax.jit(functools.partial(step, spec)), arguments


def flops_of(cost) -> float | None:
  """The 'flops' entry of a cost analysis (a dict, or a list of one dict in older JAX)."""
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and 'flops' in cost else None


def measure(args):
  import jax
  rows = []
  platforms = [p for p in args.platforms.split(',') if p]
  for model in args.models.split(','):
    layers = benchmark.conv_layers(model, 3, args.width, args.size)
    for step_kind in ('train', 'eval'):
      jitted, arguments = abstract_program(model, args.size, args.width, args.batch,
                                           args.conv_impl, args.dtype, step_kind)
      row = {'model': model, 'step': step_kind, 'size': args.size, 'width': args.width,
             'batch': args.batch, 'conv_impl': args.conv_impl, 'dtype': args.dtype,
             'analytic': benchmark.step_flops(layers, args.batch, step_kind == 'train')}
      traced = jitted.trace(*arguments)
      for platform in platforms:
        row[f'lowered {platform}'] = flops_of(
            traced.lower(lowering_platforms=(platform,)).cost_analysis())
      if args.compile:
        start = time.perf_counter()
        compiled = traced.lower().compile()
        row['compile seconds'] = time.perf_counter() - start
        row[f'compiled {jax.default_backend()}'] = flops_of(compiled.cost_analysis())
      rows.append(row)
      print(json.dumps(row), flush=True)
  return rows


def markdown(rows, batch) -> str:
  """GFLOP per image; XLA's counts also as a ratio to the analytic one."""
  counts = [key for key in rows[0] if key.startswith(('lowered', 'compiled'))]
  # Platforms whose lowered programs count the same are one column.
  columns = {}
  for key in counts:
    same = next((k for k in columns if all(row[k] == row[key] for row in rows)), None)
    columns.setdefault(same or key, []).append(key.split(' ', 1)[1])
  counts = list(columns)
  titles = [f"XLA {key.split(' ')[0]} {' = '.join(columns[key])}" for key in counts]
  names = {'unet': 'U-Net', 'cnn4': 'small CNN'}
  header = ['model', 'step', 'analytic (convolutions)'] + titles
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for row in rows:
    cells = [names.get(row['model'], row['model']),
             'training step' if row['step'] == 'train' else 'forward (eval step)',
             f"{row['analytic'] / batch / 1e9:.4g}"]
    for key in counts:
      value = row[key]
      cells.append('n/a' if value is None else
                   f"{value / batch / 1e9:.4g} ({value / row['analytic']:.3f}×)")
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv=None):
  args = parse_args(argv)
  benchmark.set_xla_flags(benchmark.RECOMMENDED)  # as main.py runs on CPU; before JAX starts
  import jax
  print(f'jax {jax.__version__}, backend {jax.default_backend()}; GFLOP per image, '
        f'{args.size}², width {args.width}, batch {args.batch}, PE on, '
        f"conv_impl='{args.conv_impl}', {args.dtype}")
  rows = measure(args)
  print(markdown(rows, args.batch))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'jax': jax.__version__, 'backend': jax.default_backend(), 'rows': rows}, f,
                indent=1)


if __name__ == '__main__':
  main()
