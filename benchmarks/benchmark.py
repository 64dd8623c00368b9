"""Times the project's train and eval steps against the same networks in PyTorch, side by side.

  python benchmarks/benchmark.py --quick                       # about a minute
  python benchmarks/benchmark.py                               # the tables of BENCHMARKS.md
  python benchmarks/benchmark.py --models=unet --sizes=128 --steps=train --torch_compile
  python benchmarks/benchmark.py --xla_flags=none --conv_impls=xla      # XLA:CPU defaults: the slow "before"
  python benchmarks/benchmark.py --only_stacked --stacked=1,4,12   # many models by jax.vmap
  python benchmarks/benchmark.py --only_conv_layer --xla_flags=none  # one convolution's three passes
  python benchmarks/benchmark.py --layer_shapes --sizes=64,128  # every layer shape's three passes
  python benchmarks/benchmark.py --dtypes=float32,bfloat16

The JAX side is `pejax.models.steps.train_step` / `eval_step` (jitted with the spec static), the PyTorch
side `benchmarks/torch_reference.py`. Both are warmed up, then timed in turns, one step each per
round, so that a disturbance of the machine hits both alike; the tables give medians. PyTorch is
optional: `pip install 'pejax[benchmark]'` (torch==2.13.0; on a machine without a GPU install
the CPU wheel, `pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu`).

FLOPs are counted analytically (see BENCHMARKS.md): 2·k²·Cin·Cout·H·W per convolution forward;
a train step counts each convolution 3× (forward, input gradient, weight gradient) except the
first, whose input gradient is not needed (2×). Elementwise work (BatchNorm, ReLU, pooling,
upsampling, loss, Adam) is not counted. "peak" is a 2048² float32 matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import gc
import json
import os
import platform
import statistics
import sys
import time

RECOMMENDED = 'recommended'


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true',
                      help='Small CNN and U-Net at 64², train step, few repeats: about a minute.')
  parser.add_argument('--models', default='cnn4,unet')
  parser.add_argument('--sizes', default='64,128,256')
  parser.add_argument('--batch', type=int, default=20)
  parser.add_argument('--width', type=int, default=64, help='64 = the paper.')
  parser.add_argument('--pe', default='on', help="'on', 'off' or 'on,off' (PE scale λ=1).")
  parser.add_argument('--steps', default='train,eval')
  parser.add_argument('--conv_impls', default='xla,cpu',
                      help='pejax.models.layers.CONV_IMPLEMENTATIONS keys.')
  parser.add_argument('--dtypes', default='float32', help="'float32' and/or 'bfloat16' (JAX only).")
  parser.add_argument('--xla_flags', default=RECOMMENDED,
                      help="'recommended' (pejax.models.cpu_conv.recommended_xla_flags()), 'none', or "
                           'flags to append to XLA_FLAGS. Set before JAX starts.')
  parser.add_argument('--donate', action='store_true', help='Donate the train state to the JAX step.')
  parser.add_argument('--torch', dest='torch', action='store_true', default=True)
  parser.add_argument('--no_torch', dest='torch', action='store_false')
  parser.add_argument('--torch_compile', action='store_true', help='Also time torch.compile(model).')
  parser.add_argument('--torch_channels_last', action='store_true')
  parser.add_argument('--stacked', default='',
                      help='e.g. 1,4,12: K models trained by jax.vmap vs K sequential steps '
                           '(small CNN, and U-Net at --stacked_unet_width).')
  parser.add_argument('--stacked_unet_width', type=int, default=16)
  parser.add_argument('--stacked_size', type=int, default=64)
  parser.add_argument('--only_stacked', action='store_true')
  parser.add_argument('--conv_layer', action='store_true',
                      help='Also time one 3×3 conv 64→64 at 128² (forward, input and weight gradient).')
  parser.add_argument('--only_conv_layer', action='store_true')
  parser.add_argument('--layer_shapes', action='store_true',
                      help='Instead of the steps, time every distinct 3×3 convolution of --models at '
                           '--sizes: forward, input and weight gradient, JAX against PyTorch.')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--seconds', type=float, default=60.0,
                      help='Stop repeating a configuration after this long (at least 2 timed rounds).')
  parser.add_argument('--json', default='', help='Also write every measurement to this file.')
  if parser.parse_args(argv).quick:  # quick changes the defaults; explicit options still win
    parser.set_defaults(sizes='64', steps='train', conv_impls='cpu', warmup=1, repeats=3,
                        seconds=15.0)
  args = parser.parse_args(argv)
  from pejax.models.networks import MODELS  # JAX reads XLA_FLAGS later, when its backend starts
  unknown = [m for m in args.models.split(',') if m not in MODELS]
  if unknown:
    parser.error(f'--models={args.models}: {", ".join(unknown)} is not a model; '
                 f'use {" and/or ".join(MODELS)}.')
  try:
    sizes = [int(s) for s in args.sizes.split(',')]
  except ValueError:
    sizes = [0]
  if any(size <= 0 for size in sizes):
    parser.error(f'--sizes={args.sizes}: give image sides in pixels, e.g. --sizes=64,128.')
  if 'unet' in args.models.split(',') and any(size % 16 for size in sizes):
    parser.error(f'--sizes={args.sizes}: the U-Net halves the image 4 times; use multiples of 16.')
  return args


def set_xla_flags(choice: str) -> str:
  """Puts the chosen flags in XLA_FLAGS; must run before JAX creates its CPU backend."""
  if choice == 'none':
    return os.environ.get('XLA_FLAGS', '')
  if choice == RECOMMENDED:
    from pejax.models import cpu_conv  # imports jax, but XLA reads its flags only when a backend starts
    choice = cpu_conv.recommended_xla_flags()
  flags = ' '.join(f for f in (os.environ.get('XLA_FLAGS', ''), choice) if f)
  os.environ['XLA_FLAGS'] = flags
  return flags


# --- FLOPs ---------------------------------------------------------------------------------------

def conv_layers(model: str, in_channels: int, width: int, size: int, num_classes: int = 4):
  """(k, Cin, Cout, H, W) of every convolution of `pejax.models.networks`, in order."""
  if model == 'cnn4':
    channels = [in_channels] + [width] * 3
    layers = [(3, a, b, size, size) for a, b in zip(channels[:-1], channels[1:])]
  elif model == 'unet':
    w, layers, cin = width, [], in_channels
    for level in range(4):                              # encoder: w, 2w, 4w, 8w
      s, c = size >> level, w << level
      layers += [(3, cin, c, s, s), (3, c, c, s, s)]
      cin = c
    s = size >> 4                                       # bottleneck 8w at 1/16
    layers += [(3, 8 * w, 8 * w, s, s), (3, 8 * w, 8 * w, s, s)]
    cin = 8 * w
    for level, c in zip(range(3, -1, -1), (4 * w, 2 * w, w, w)):  # decoder: upsample + skip
      s, skip = size >> level, w << level
      layers += [(3, cin + skip, c, s, s), (3, c, c, s, s)]
      cin = c
  else:
    raise ValueError(model)
  return layers + [(1, width, num_classes, size, size)]


def step_flops(layers, batch: int, train: bool) -> float:
  total = 0.0
  for index, (k, cin, cout, h, w) in enumerate(layers):
    forward = 2 * k * k * cin * cout * h * w
    total += forward * ((2 if index == 0 else 3) if train else 1)
  return total * batch


# --- timing --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Timed:
  """A step to time: `run()` performs one step and waits for its result."""
  name: str
  run: callable
  seconds: list = dataclasses.field(default_factory=list)
  cpu_seconds: list = dataclasses.field(default_factory=list)
  other_seconds: list = dataclasses.field(default_factory=list)  # CPU used by other programs
  compile_seconds: float | None = None
  first_call_seconds: float | None = None
  error: str = ''

  @property
  def median(self):
    return statistics.median(self.seconds)

  @property
  def cores_busy(self):
    return sum(self.cpu_seconds) / sum(self.seconds)

  @property
  def others_busy(self):
    """Cores used by other programs meanwhile: above ~0.2 the times are pessimistic."""
    return sum(self.other_seconds) / sum(self.seconds) if self.other_seconds else float('nan')


def time_in_turns(timed: list[Timed], warmup: int, repeats: int, budget_seconds: float):
  """Warms each up, then runs one step of each per round; stops early after `budget_seconds`."""
  for item in timed:
    try:
      for index in range(warmup):
        start = time.perf_counter()
        item.run()
        if index == 0 and item.compile_seconds is None:  # e.g. torch.compile: compiles at first call
          item.first_call_seconds = time.perf_counter() - start
    except Exception as error:  # e.g. torch.compile without a working compiler
      item.error = f'{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}'[:300]
  live = [item for item in timed if not item.error]
  start = time.perf_counter()
  for round_index in range(repeats):
    for item in live:
      busy, cpu, wall = machine_busy_seconds(), time.process_time(), time.perf_counter()
      item.run()
      item.seconds.append(time.perf_counter() - wall)
      item.cpu_seconds.append(time.process_time() - cpu)
      if busy is not None:
        item.other_seconds.append(max(0.0, machine_busy_seconds() - busy - item.cpu_seconds[-1]))
    if round_index >= 1 and time.perf_counter() - start > budget_seconds:
      break


def compile_column(item: Timed) -> str:
  if item.compile_seconds is not None:
    return f'{item.compile_seconds:.1f}'
  if item.first_call_seconds is not None and 'compile' in item.name:
    return f'({item.first_call_seconds:.1f} first step)'
  return ''


def machine_busy_seconds() -> float | None:
  """CPU seconds spent by all processes so far (Linux /proc/stat), or None elsewhere."""
  try:
    with open('/proc/stat') as f:
      fields = [int(v) for v in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
  return (sum(fields[:8]) - idle) / os.sysconf('SC_CLK_TCK')


def matmul_peak(torch_module=None, size=2048, repeats=10):
  """GFLOP/s of a size² float32 matmul in JAX (and PyTorch): the machine's practical peak."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  product = jax.jit(lambda a: a @ a)
  product(a).block_until_ready()
  timed = [Timed('jax', lambda: product(a).block_until_ready())]
  if torch_module is not None:
    t = torch_module.randn(size, size)
    timed.append(Timed('torch', lambda: t @ t))
  time_in_turns(timed, 1, repeats, 30.0)
  flops = 2 * size**3
  return {item.name: flops / min(item.seconds) / 1e9 for item in timed}


# --- JAX -----------------------------------------------------------------------------------------

def jax_batch(batch, size, seed=0):
  import jax.numpy as jnp
  import numpy as np
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.normal(size=(batch, size, size, 1)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 4, size=(batch, size, size)), jnp.uint8)
  return images, labels, jnp.ones((batch,), jnp.float32)


def jax_model_state(model, size, width, use_pe, conv_impl, dtype, seed=0):
  """The project's StepSpec and initial state of a model (`pejax.models.spec`), 4 classes."""
  from pejax.models import spec as spec_lib
  spec, init_state = spec_lib.build(model, use_pe, width, 'zeros', conv_impl, dtype, 1e-3, 4)
  return spec, init_state(seed)


def jax_timed_steps(model, size, batch, width, use_pe, conv_impl, dtype, step_kind, donate):
  """A `Timed` for the project's jitted step; its compile time measured ahead of time."""
  import jax
  import jax.numpy as jnp
  from pejax.models import steps
  spec, state = jax_model_state(model, size, width, use_pe, conv_impl, dtype)
  images, labels, weights = jax_batch(batch, size)
  pe_scale = jnp.float32(1.0)
  if step_kind == 'train':
    step = jax.jit(steps.train_step, static_argnums=0, donate_argnums=(1,) if donate else ())
  else:
    step = jax.jit(steps.eval_step, static_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(spec, state, images, labels, weights, pe_scale).compile()
  compile_seconds = time.perf_counter() - start
  holder = {'state': state}

  def run():
    if step_kind == 'train':
      holder['state'], metrics = compiled(holder['state'], images, labels, weights, pe_scale)
      jax.block_until_ready((holder['state'], metrics))
    else:
      jax.block_until_ready(compiled(holder['state'], images, labels, weights, pe_scale))

  return Timed(f'jax {conv_impl}' + ('' if dtype == 'float32' else f' {dtype}'), run,
               compile_seconds=compile_seconds)


# --- PyTorch -------------------------------------------------------------------------------------

def torch_timed_steps(torch_module, model, size, batch, width, use_pe, step_kind, compile, channels_last):
  import torch_reference
  torch_module.manual_seed(0)
  steps = torch_reference.Steps(model, in_channels=3 if use_pe else 1, width=width,
                                pe_scale=1.0 if use_pe else None, channels_last=channels_last,
                                compile=compile)
  images = torch_module.randn(batch, 1, size, size)
  labels = torch_module.randint(0, 4, (batch, size, size))
  step = steps.train_step if step_kind == 'train' else steps.eval_step
  name = 'torch ' + ('compile' if compile else 'eager') + (' channels_last' if channels_last else '')
  return Timed(name, lambda: step(images, labels))


def import_torch(wanted: bool):
  if not wanted:
    return None
  try:
    import torch
  except ImportError:
    message = ("PyTorch is not installed: the JAX side runs alone. For the comparison install it: "
               "pip install 'pejax[benchmark]' (torch==2.13.0; CPU-only machines: pip install "
               "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu).")
    print(message, file=sys.stderr)
    return None
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  return torch


# --- reports -------------------------------------------------------------------------------------

def environment(torch_module, flags):
  import flax
  import jax
  import jaxlib
  from pejax.models import cpu_conv
  cpu = platform.processor()
  flags_of_cpu = cpu_conv.cpu_flags()
  vector_flags = sorted(f for f in flags_of_cpu if f.startswith(('avx', 'amx', 'fma')))
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return {
      'date': time.strftime('%Y-%m-%d %H:%M %Z'), 'cpu': cpu,
      'cpu kind': cpu_conv.cpu_kind(flags=flags_of_cpu), 'cpu vector flags': ' '.join(vector_flags),
      'cores': os.cpu_count(),
      'devices': str(jax.devices()), 'python': platform.python_version(),
      'jax': jax.__version__, 'jaxlib': jaxlib.__version__, 'flax': flax.__version__,
      'torch': torch_module.__version__ if torch_module else None,
      'torch_threads': torch_module.get_num_threads() if torch_module else None,
      'XLA_FLAGS': flags, 'command': ' '.join([os.path.basename(sys.executable)] + sys.argv),
  }


def print_table(rows, columns):
  print('| ' + ' | '.join(columns) + ' |')
  print('|' + '|'.join('---' for _ in columns) + '|')
  for row in rows:
    print('| ' + ' | '.join(str(row.get(c, '')) for c in columns) + ' |')
  sys.stdout.flush()


STEP_COLUMNS = ['model', 'size', 'batch', 'PE', 'step', 'implementation', 'images/s', 'GFLOP/s',
                'of peak', 'vs torch eager', 'compile s', 'cores busy', 'others busy']


def benchmark_steps(args, torch_module, peak):
  rows = []
  for model in args.models.split(','):
    for size in [int(s) for s in args.sizes.split(',')]:
      for pe in args.pe.split(','):
        use_pe = pe == 'on'
        layers = conv_layers(model, 3 if use_pe else 1, args.width, size)
        for step_kind in args.steps.split(','):
          timed = []
          for dtype in args.dtypes.split(','):
            for conv_impl in args.conv_impls.split(','):
              timed.append(jax_timed_steps(model, size, args.batch, args.width, use_pe, conv_impl,
                                           dtype, step_kind, args.donate))
          if torch_module is not None:
            timed.append(torch_timed_steps(torch_module, model, size, args.batch, args.width,
                                           use_pe, step_kind, False, args.torch_channels_last))
            if args.torch_compile:
              timed.append(torch_timed_steps(torch_module, model, size, args.batch, args.width,
                                             use_pe, step_kind, True, args.torch_channels_last))
          time_in_turns(timed, args.warmup, args.repeats, args.seconds)
          flops = step_flops(layers, args.batch, step_kind == 'train')
          eager = next((t for t in timed if t.name.startswith('torch eager') and t.seconds), None)
          for item in timed:
            row = dict(model=model, size=size, batch=args.batch, PE=pe, step=step_kind,
                       implementation=item.name)
            if item.error:
              row['images/s'] = f'failed: {item.error}'
            else:
              row.update({
                  'images/s': f'{args.batch / item.median:.2f}',
                  'GFLOP/s': f'{flops / item.median / 1e9:.1f}',
                  'of peak': f'{flops / item.median / 1e9 / peak:.0%}',
                  'vs torch eager': f'{eager.median / item.median:.2f}' if eager else '',
                  'compile s': compile_column(item),
                  'cores busy': f'{item.cores_busy:.2f}',
                  'others busy': f'{item.others_busy:.2f}',
                  'seconds': item.seconds})
            rows.append(row)
          print_table(rows[-len(timed):], STEP_COLUMNS)
          del timed
          gc.collect()
  return rows


PASSES = ('forward', 'input gradient', 'weight gradient')


def conv_pass_timers(batch: int, conv_impls: list[str], torch_module, cin: int, cout: int,
                     size: int) -> dict:
  """One 3×3 convolution, cin→cout at size², zero padding 1 inside the convolution (as the
  models' layers): {(side, pass): Timed} for each JAX implementation ('jax <impl>') and for
  PyTorch ('torch'), passes as in PASSES."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from pejax.models.layers import CONV_IMPLEMENTATIONS
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, size, size, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) * 0.05, jnp.float32)
  g = jnp.asarray(rng.normal(size=(batch, size, size, cout)), jnp.float32)
  timed = {}
  for conv_impl in conv_impls:
    conv = functools.partial(CONV_IMPLEMENTATIONS[conv_impl], window_strides=(1, 1),
                             padding=((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    functions = (jax.jit(lambda x, w, g, conv=conv: conv(x, w)),
                 jax.jit(lambda x, w, g, conv=conv: jax.vjp(conv, x, w)[1](g)[0]),
                 jax.jit(lambda x, w, g, conv=conv: jax.vjp(conv, x, w)[1](g)[1]))
    for name, function in zip(PASSES, functions):
      timed[(f'jax {conv_impl}', name)] = Timed(
          f'jax {conv_impl} {name}', lambda f=function: jax.block_until_ready(f(x, w, g)))
  if torch_module is not None:
    functional, grad = torch_module.nn.functional, torch_module.nn.grad
    tx = torch_module.randn(batch, cin, size, size)
    tw = torch_module.randn(cout, cin, 3, 3) * 0.05
    tg = torch_module.randn(batch, cout, size, size)
    functions = (lambda: functional.conv2d(tx, tw, padding=1),
                 lambda: grad.conv2d_input(tx.shape, tw, tg, padding=1),
                 lambda: grad.conv2d_weight(tx, tw.shape, tg, padding=1))
    for name, function in zip(PASSES, functions):
      timed[('torch', name)] = Timed(f'torch {name}', function)
  return timed


def benchmark_conv_layer(args, torch_module, peak):
  """One 3×3 convolution, 64→64 channels at 128², batch 20: forward, input and weight gradient."""
  channels, size = 64, 128
  timed = list(conv_pass_timers(args.batch, args.conv_impls.split(','), torch_module,
                                channels, channels, size).values())
  time_in_turns(timed, args.warmup, args.repeats, args.seconds)
  flops = 2 * 9 * channels * channels * size * size * args.batch
  rows = [{'convolution': item.name, 'ms': f'{item.median * 1e3:.0f}',
           'GFLOP/s': f'{flops / item.median / 1e9:.1f}',
           'of peak': f'{flops / item.median / 1e9 / peak:.0%}', 'cores busy': f'{item.cores_busy:.2f}',
           'others busy': f'{item.others_busy:.2f}', 'seconds': item.seconds} for item in timed]
  print_table(rows, [c for c in rows[0] if c != 'seconds'])
  return rows


def benchmark_layer_shapes(args, torch_module):
  """Every distinct 3×3 convolution of --models at --sizes, each pass timed in JAX (the first
  of --conv_impls) and PyTorch, in turns. `count` is how often the shape occurs in the model;
  the model's row adds the shapes up weighted by it, without the first layer's input gradient,
  which a training step does not compute."""
  conv_impl = args.conv_impls.split(',')[0]
  jax_side = f'jax {conv_impl}'
  sides = [jax_side] + (['torch'] if torch_module is not None else [])
  rows = []
  for model in args.models.split(','):
    for size in (int(s) for s in args.sizes.split(',')):
      layers = [layer for layer in conv_layers(model, 1 if args.pe == 'off' else 3, args.width, size)
                if layer[0] == 3]
      totals = dict.fromkeys(((side, name) for side in sides for name in PASSES), 0.0)
      for layer, count in collections.Counter(layers).items():
        _, cin, cout, height, _ = layer
        timed = conv_pass_timers(args.batch, [conv_impl], torch_module, cin, cout, height)
        time_in_turns(list(timed.values()), args.warmup, args.repeats, args.seconds)
        row = {'model': model, 'size': size, 'layer': f'{cin}→{cout} at {height}²', 'count': count}
        for name in PASSES:
          medians = {side: timed[(side, name)].median * 1e3 for side in sides}
          first_input_gradient = name == 'input gradient' and layer == layers[0]
          for side in sides:
            row[f'{name}: {side.split()[0]} ms'] = f'{medians[side]:.1f}'
            totals[(side, name)] += 0.0 if first_input_gradient else count * medians[side]
          if 'torch' in sides:
            row[f'{name}: torch / jax'] = f'{medians["torch"] / medians[jax_side]:.2f}'
        row['others busy'] = f'{max(item.others_busy for item in timed.values()):.2f}'
        rows.append(row)
        print(' | '.join(f'{k} {v}' for k, v in row.items()), flush=True)
      total = {'model': model, 'size': size, 'layer': 'whole model', 'count': len(layers)}
      for name in PASSES:
        for side in sides:
          total[f'{name}: {side.split()[0]} ms'] = f'{totals[(side, name)]:.0f}'
        if 'torch' in sides:
          total[f'{name}: torch / jax'] = f'{totals[("torch", name)] / totals[(jax_side, name)]:.2f}'
      total['others busy'] = ''
      rows.append(total)
  print()
  print_table(rows, list(rows[-1]))
  return rows


def benchmark_stacked(args):
  """K models trained together by jax.vmap over stacked states against K sequential steps."""
  import jax
  import jax.numpy as jnp
  from pejax.models import steps
  size, batch, rows = args.stacked_size, args.batch, []
  images, labels, weights = jax_batch(batch, size)
  for model, width in (('cnn4', args.width), ('unet', args.stacked_unet_width)):
    for count in [int(k) for k in args.stacked.split(',')]:
      timed = []
      for conv_impl in args.conv_impls.split(','):
        built = [jax_model_state(model, size, width, True, conv_impl, 'float32', seed=i)
                 for i in range(count)]
        spec = built[0][0]
        states = [state for _, state in built]
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
        pe_scales = jnp.ones((count,), jnp.float32)
        vmapped = jax.jit(jax.vmap(functools.partial(steps.train_step, spec),
                                   in_axes=(0, None, None, None, 0)))
        single = jax.jit(steps.train_step, static_argnums=0)
        start = time.perf_counter()
        vmapped = vmapped.lower(stacked, images, labels, weights, pe_scales).compile()
        compile_seconds = time.perf_counter() - start
        single = single.lower(spec, states[0], images, labels, weights, jnp.float32(1.0)).compile()
        holder = {'stacked': stacked, 'states': states}

        def run_vmapped(holder=holder, vmapped=vmapped, pe_scales=pe_scales):
          holder['stacked'], metrics = vmapped(holder['stacked'], images, labels, weights, pe_scales)
          jax.block_until_ready((holder['stacked'], metrics))

        def run_sequential(holder=holder, single=single):
          holder['states'] = [single(s, images, labels, weights, jnp.float32(1.0))[0]
                              for s in holder['states']]
          jax.block_until_ready(holder['states'])

        timed += [Timed(f'{conv_impl} vmap', run_vmapped, compile_seconds=compile_seconds),
                  Timed(f'{conv_impl} sequential', run_sequential)]
      time_in_turns(timed, args.warmup, args.repeats, args.seconds)
      flops = step_flops(conv_layers(model, 3, width, size), batch, True) * count
      fastest_sequential = min(t.median for t in timed if t.name.endswith('sequential'))
      for item in timed:
        rows.append({'model': model, 'width': width, 'size': size, 'batch': batch, 'K models': count,
                     'run': item.name, 'images/s (all models)': f'{count * batch / item.median:.2f}',
                     'GFLOP/s': f'{flops / item.median / 1e9:.1f}',
                     'vs fastest sequential': f'{fastest_sequential / item.median:.2f}',
                     'compile s': f'{item.compile_seconds:.1f}' if item.compile_seconds else '',
                     'cores busy': f'{item.cores_busy:.2f}', 'others busy': f'{item.others_busy:.2f}',
                     'seconds': item.seconds})
      print_table(rows[-len(timed):], [c for c in rows[-1] if c != 'seconds'])
      del timed
      gc.collect()
  return rows


def main(argv=None):
  args = parse_args(argv)
  flags = set_xla_flags(args.xla_flags)
  torch_module = import_torch(args.torch)
  env = environment(torch_module, flags)
  print('\n'.join(f'{k}: {v}' for k, v in env.items()))
  peaks = matmul_peak(torch_module)
  peak = max(peaks.values())
  print('2048² float32 matmul GFLOP/s: ' + ', '.join(f'{k} {v:.0f}' for k, v in peaks.items()))
  print("'others busy' = cores used by other programs during the timed steps (0 = quiet machine; "
        'more makes the times pessimistic, for JAX and PyTorch alike)\n')
  results = {'environment': env, 'matmul_gflops': peaks}
  if args.conv_layer or args.only_conv_layer:
    results['conv_layer'] = benchmark_conv_layer(args, torch_module, peak)
    print()
  if args.layer_shapes:
    results['layer_shapes'] = benchmark_layer_shapes(args, torch_module)
    print()
  if not (args.only_stacked or args.only_conv_layer or args.layer_shapes):
    results['steps'] = benchmark_steps(args, torch_module, peak)
  if args.stacked:
    print()
    results['stacked'] = benchmark_stacked(args)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
