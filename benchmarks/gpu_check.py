"""One-shot GPU check: throughput against PyTorch, MFU, vmapped models and a phantom training.

Command, from the repository root on a machine with one NVIDIA GPU:

  python benchmarks/gpu_check.py --out=gpu_check_results

Needs: JAX with CUDA, Flax, Optax, NumPy; and PyTorch with CUDA for the PyTorch columns
(without it they read "not installed"):

  pip install torch && pip install -U "jax[cuda12]" flax optax   # cuda12 or cuda13: the major
                                                                 # version of torch.version.cuda

Nothing else: no TensorFlow, TFDS, CLU or network (the phantoms are generated in NumPy), and
the project need not be pip-installed. `--no_torch` leaves PyTorch out if it will not load
beside JAX's CUDA libraries.

Run time: at most 8 minutes (`--deadline_minutes`), most of it compiling (XLA and
torch.compile). A measurement starts only if the time it is expected to take fits in its
part's share of the deadline; otherwise it is skipped and listed as skipped. Expected times
are the compile times measured so far (30 s before the first), so only a compilation far
slower than those before it can make the run overrun, by its excess.

Outputs, in `--out` (default `./gpu_check_results`): `gpu_check.json` (every number, the
environment, what was skipped and why, errors) and `gpu_check.md` (the same as tables),
rewritten after each measurement so that an interrupted run leaves what it measured.

What it measures:

1. Device and library versions; a large matrix product in float32 and bfloat16 (the practical
   peak).
2. Training images/s at 256² (width 64, PE on) for the U-Net and the small CNN, float32 and
   bfloat16, batch 20 and 64: the project's jitted `pejax.models.steps.train_step` (conv_impl 'auto',
   i.e. XLA's convolution on a GPU) against PyTorch eager and `torch.compile` on the same GPU
   (`torch_reference.py`; bfloat16 there is autocast), timed in turns; model FLOP utilization
   (analytic convolution FLOPs, BENCHMARKS.md) against the GPU's peak. float32 MFU is against
   the TF32 tensor-core peak: JAX and PyTorch both run float32 convolutions in TF32 by default
   on such GPUs (the settings are recorded).
3. A short training on the chest phantom (U-Net, 128², 300 steps) and its Dice on held-out
   phantom images (`pejax.models.dice`), beside the averaged-mask baseline.
4. K = 1, 4, 12 models trained together by `jax.vmap` against K sequential steps (128²).

`--smoke` runs every part at toy sizes (small CNN only, 32², width 4, 2 steps) on whatever JAX
finds, CPU included, in about half a minute on 2 CPU cores; `tests/test_gpu_check.py` runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
import traceback

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCHMARKS_DIR))   # pejax, data_builders
sys.path.insert(0, BENCHMARKS_DIR)                    # benchmark, torch_reference

import benchmark  # noqa: E402  (analytic FLOPs, timing in turns, model state)

MODEL_NAMES = {'unet': 'U-Net', 'cnn4': 'small CNN'}
GPU_BACKENDS = ('gpu', 'cuda')
CHEST_CLASSES = ['right_lung', 'left_lung', 'heart']

# Dense (no sparsity) peak TFLOP/s from NVIDIA's datasheets, at boost clock: bfloat16 and TF32
# on tensor cores, float32 on CUDA cores. Matched against JAX's device_kind in this order.
GPU_PEAKS = (
    ('GH200', r'GH200', dict(bfloat16=989.5, tf32=494.5, float32=67.0)),
    ('H200 NVL', r'H200.*NVL', dict(bfloat16=835.5, tf32=417.5, float32=60.0)),
    ('H200 SXM', r'H200', dict(bfloat16=989.5, tf32=494.5, float32=67.0)),
    ('H100 NVL', r'H100.*NVL', dict(bfloat16=835.5, tf32=417.5, float32=60.0)),
    ('H100 PCIe', r'H100.*PCIE', dict(bfloat16=756.5, tf32=378.0, float32=51.0)),
    ('H100 SXM', r'H100', dict(bfloat16=989.5, tf32=494.5, float32=67.0)),
    ('A100', r'A100', dict(bfloat16=312.0, tf32=156.0, float32=19.5)),
    ('L40S', r'L40S', dict(bfloat16=362.0, tf32=183.0, float32=91.6)),
    ('L40', r'L40\b', dict(bfloat16=181.0, tf32=90.5, float32=90.5)),
    ('L4', r'\bL4\b', dict(bfloat16=121.0, tf32=60.0, float32=30.3)),
    ('A10', r'\bA10\b', dict(bfloat16=125.0, tf32=62.5, float32=31.2)),
    ('RTX 4090', r'RTX 4090', dict(bfloat16=165.2, tf32=82.6, float32=82.6)),
)

# When each part's share of the deadline ends (fractions of --deadline_minutes, cumulative, in
# the order the parts run); a part that ends early leaves its time to the next. A measurement
# starts only if what it is expected to take (mostly compilation) fits in what is left.
PART_ENDS = {'throughput': 0.55, 'phantom': 0.75, 'stacked': 0.97}


@dataclasses.dataclass(frozen=True)
class Sizes:
  models: tuple = ('unet', 'cnn4')
  size: int = 256
  width: int = 64
  batches: tuple = (20, 64)
  inner_steps: int = 5         # steps per timed call: one synchronization per call
  warmup: int = 2
  repeats: int = 10
  seconds: float = 3.0         # timing budget of one group (after warm-up)
  stacked: tuple = (1, 4, 12)
  stacked_size: int = 128
  stacked_batch: int = 20
  phantom_model: str = 'unet'
  phantom_size: int = 128
  phantom_width: int = 64
  phantom_steps: int = 300
  phantom_batch: int = 20
  phantom_train: int = 156     # the chest phantom's split sizes (JSRT's as the paper split it)
  phantom_test: int = 68
  matmul_size: int = 8192
  # What one compilation is expected to take before any has been measured (then the last
  # measured one of the same model is the estimate).
  expected_compile_seconds: float = 30.0


# The small CNN only: a U-Net's training step takes 10–30 s to compile on a small CPU, and the
# code paths are the same for both models.
SMOKE = Sizes(models=('cnn4',), size=32, width=4, batches=(2,), inner_steps=1, warmup=1,
              repeats=2, seconds=0.2, stacked=(1, 2), stacked_size=32, stacked_batch=2,
              phantom_model='cnn4', phantom_size=32, phantom_width=4, phantom_steps=2,
              phantom_batch=4, phantom_train=8, phantom_test=4, matmul_size=256,
              expected_compile_seconds=0.0)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default='gpu_check_results',
                      help='Folder for gpu_check.json and gpu_check.md.')
  parser.add_argument('--smoke', action='store_true', help='Toy sizes, any device (the tests).')
  parser.add_argument('--deadline_minutes', type=float, default=8.0)
  parser.add_argument('--peak_tflops', default='',
                      help="Peak TFLOP/s for MFU where the device is not in the table: one number "
                           "for both dtypes, or 'bfloat16=989,float32=495' (float32: the TF32 "
                           'tensor-core peak).')
  parser.add_argument('--models', default='', help='e.g. unet,cnn4 (the default; --smoke: cnn4).')
  parser.add_argument('--dtypes', default='float32,bfloat16')
  parser.add_argument('--batches', default='', help='e.g. 20,64 (the default).')
  parser.add_argument('--no_torch', dest='torch', action='store_false', default=True)
  parser.add_argument('--torch_compile', default='auto', choices=('auto', 'on', 'off'),
                      help="'auto': on a GPU, off in --smoke (it compiles C++ for minutes on CPU).")
  parser.add_argument('--allow_cpu', action='store_true',
                      help='Run the full sizes even when JAX finds no GPU (hours on a CPU).')
  return parser.parse_args(argv)


# --- bookkeeping ---------------------------------------------------------------------------------

class Clock:
  """Seconds since the start, and what is left of the deadline or of a part's share of it."""

  def __init__(self, deadline_seconds: float):
    self.start = time.perf_counter()
    self.deadline_seconds = deadline_seconds

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def left(self, part: str | None = None) -> float:
    end = self.deadline_seconds * (PART_ENDS[part] if part else 1.0)
    return end - self.elapsed()

  def fits(self, part: str, seconds: float) -> bool:
    """Whether a measurement expected to take `seconds` can start within `part`'s share."""
    left = self.left(part)
    return left > 0 and left >= seconds


def error_text(error: BaseException) -> str:
  message = str(error).strip().splitlines()
  return f'{type(error).__name__}: {message[0] if message else ""}'[:300]


def json_safe(value):
  """NaN and infinities as null, tuples as lists, so the file is strict JSON."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  return value


def write_outputs(results: dict, out: str) -> None:
  os.makedirs(out, exist_ok=True)
  for name, text in (('gpu_check.json', json.dumps(json_safe(results), indent=1)),
                     ('gpu_check.md', markdown(results))):
    temporary = os.path.join(out, name + '.tmp')
    with open(temporary, 'w') as f:
      f.write(text + '\n')
    os.replace(temporary, os.path.join(out, name))


# --- environment and peaks -----------------------------------------------------------------------

def package_versions() -> dict:
  wanted = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'torch', 'triton')
  versions = {}
  for distribution in importlib.metadata.distributions():
    name = (distribution.metadata['Name'] or '').lower()
    if name in wanted or name.startswith(('jax-cuda', 'jax_cuda', 'nvidia-cudnn', 'nvidia-cublas',
                                          'nvidia-cuda-runtime', 'nvidia-nccl')):
      versions[name] = distribution.version
  return dict(sorted(versions.items()))


def git_commit() -> str | None:
  """The checkout's commit (with '+changes' if it has uncommitted ones), or None."""
  import subprocess
  root = os.path.dirname(BENCHMARKS_DIR)
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    changes = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=root,
                             capture_output=True, text=True, timeout=10, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ('+changes' if changes.strip() else '')


def environment(torch_module, torch_device) -> dict:
  import jax
  devices = jax.devices()
  env = {
      'date': time.strftime('%Y-%m-%d %H:%M %Z'), 'python': platform.python_version(),
      'host': platform.platform(), 'cpu_count': os.cpu_count(),
      'jax_backend': jax.default_backend(), 'device_count': len(devices),
      'device_kind': devices[0].device_kind, 'devices': [str(d) for d in devices],
      'packages': package_versions(), 'git_commit': git_commit(),
      'jax_default_matmul_precision': jax.config.jax_default_matmul_precision,
      'XLA_FLAGS': os.environ.get('XLA_FLAGS', ''),
      'XLA_PYTHON_CLIENT_PREALLOCATE': os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE'),
  }
  try:
    stats = devices[0].memory_stats() or {}
    limit = stats.get('bytes_limit')
    env['device_memory_gib'] = round(limit / 2**30, 1) if limit else None
  except Exception:  # not every backend reports memory
    env['device_memory_gib'] = None
  from pejax.models import layers
  env['conv_impl_auto'] = next(name for name, function in layers.CONV_IMPLEMENTATIONS.items()
                               if function is layers.conv_primitive('auto'))
  try:
    env['jax_environment_info'] = jax.print_environment_info(return_string=True)
  except Exception as error:  # it runs nvidia-smi
    env['jax_environment_info'] = error_text(error)
  if torch_module is None:
    env['torch'] = 'not installed'
  else:
    torch = torch_module
    env['torch'] = {
        'version': torch.__version__, 'cuda': torch.version.cuda,
        'cuda_available': torch.cuda.is_available(), 'device': str(torch_device),
        'cudnn': torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        'cudnn_allow_tf32': torch.backends.cudnn.allow_tf32,
        'cudnn_benchmark': torch.backends.cudnn.benchmark,
        'matmul_allow_tf32': torch.backends.cuda.matmul.allow_tf32,
        'device_name': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
  return env


def parse_peak_override(text: str) -> dict | None:
  if not text:
    return None
  if '=' not in text:
    return {'bfloat16': float(text), 'float32': float(text)}
  peaks = {}
  for item in text.split(','):
    key, value = item.split('=')
    if key.strip() not in ('bfloat16', 'float32'):
      raise ValueError(f"--peak_tflops: {key!r} is not a dtype; use 'bfloat16' and/or 'float32'.")
    peaks[key.strip()] = float(value)
  return peaks


def peak_tflops(device_kind: str, override: dict | None) -> dict:
  """{'source', 'bfloat16', 'float32'} (TFLOP/s, None where unknown) for MFU."""
  import re
  if override:
    return {'source': '--peak_tflops', 'bfloat16': override.get('bfloat16'),
            'float32': override.get('float32')}
  for name, pattern, peaks in GPU_PEAKS:
    if 'NVIDIA' in device_kind.upper() and re.search(pattern, device_kind.upper()):
      return {'source': f'table: {name} (datasheet, dense)', 'bfloat16': peaks['bfloat16'],
              'float32': peaks['tf32'], 'float32_cuda_cores': peaks['float32']}
  return {'source': f'unknown device {device_kind!r}: MFU not computed (pass --peak_tflops)',
          'bfloat16': None, 'float32': None}


def import_torch(wanted: bool, jax_backend: str):
  """(torch module or None, device or None, status text)."""
  if not wanted:
    return None, None, 'not run (--no_torch)'
  try:
    import torch
  except ImportError:
    return None, None, 'not installed'
  if jax_backend in GPU_BACKENDS:
    if not torch.cuda.is_available():
      return torch, None, f'torch {torch.__version__} sees no GPU (a CPU-only build?)'
    torch.backends.cudnn.benchmark = True   # autotuned convolutions, as XLA autotunes its own
    return torch, torch.device('cuda'), 'ok'
  if jax_backend == 'cpu':
    return torch, torch.device('cpu'), 'ok'
  return torch, None, f'not compared on {jax_backend}'


# --- measurements --------------------------------------------------------------------------------

def matmul_tflops(sizes: Sizes) -> dict:
  """TFLOP/s of a square matrix product in float32 and bfloat16 (JAX), best of 10."""
  import jax
  import jax.numpy as jnp
  results = {'size': sizes.matmul_size}
  for dtype in ('float32', 'bfloat16'):
    a = jax.random.normal(jax.random.key(0), (sizes.matmul_size,) * 2, jnp.dtype(dtype))
    product = jax.jit(lambda a: a @ a)
    product(a).block_until_ready()
    best = float('inf')
    for _ in range(10):
      start = time.perf_counter()
      product(a).block_until_ready()
      best = min(best, time.perf_counter() - start)
    results[dtype] = 2 * sizes.matmul_size**3 / best / 1e12
    del a
  return results


def flops_of(cost) -> float | None:
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and 'flops' in cost else None


def jax_train_timed(model, size, batch, width, dtype, inner_steps):
  """A `benchmark.Timed` running `inner_steps` jitted train steps (state donated) per call."""
  import jax
  import jax.numpy as jnp
  from pejax.models import steps
  spec, state = benchmark.jax_model_state(model, size, width, True, 'auto', dtype)
  images, labels, weights = benchmark.jax_batch(batch, size)
  pe_scale = jnp.float32(1.0)
  step = jax.jit(functools.partial(steps.train_step, spec), donate_argnums=(0,))
  start = time.perf_counter()
  compiled = step.lower(state, images, labels, weights, pe_scale).compile()
  compile_seconds = time.perf_counter() - start
  try:
    xla_flops = flops_of(compiled.cost_analysis())
  except Exception:  # cost analysis is not available on every backend
    xla_flops = None
  holder = {'state': state}

  def run():
    state = holder.pop('state')
    for _ in range(inner_steps):
      state, metrics = compiled(state, images, labels, weights, pe_scale)
    jax.block_until_ready((state, metrics))
    holder['state'] = state

  timed = benchmark.Timed('jax', run, compile_seconds=compile_seconds)
  return timed, xla_flops


def torch_train_timed(torch, device, model, size, batch, width, dtype, compiled, inner_steps):
  """A `benchmark.Timed` running `inner_steps` PyTorch train steps per call, then synchronizing."""
  import torch_reference
  torch.manual_seed(0)
  steps = torch_reference.Steps(
      model, in_channels=3, width=width, pe_scale=1.0, compile=compiled, device=device,
      autocast_dtype=torch.bfloat16 if dtype == 'bfloat16' else None)
  images = torch.randn(batch, 1, size, size, device=device)
  labels = torch.randint(0, 4, (batch, size, size), device=device)

  def run():
    for _ in range(inner_steps):
      steps.train_step(images, labels)
    if device.type == 'cuda':
      torch.cuda.synchronize()

  return benchmark.Timed('torch.compile' if compiled else 'torch eager', run)


def model_names(args, sizes) -> list[str]:
  return args.models.split(',') if args.models else list(sizes.models)


def release_memory(torch):
  gc.collect()
  if torch is not None and torch.cuda.is_available():
    torch.cuda.empty_cache()


def throughput(args, sizes, clock, torch, torch_device, torch_status, peaks, results):
  rows, skipped = results['throughput'], results['skipped']
  compile_torch = (args.torch_compile == 'on'
                   or (args.torch_compile == 'auto' and not args.smoke and torch_device is not None
                       and torch_device.type == 'cuda'))
  batches = [int(b) for b in args.batches.split(',')] if args.batches else list(sizes.batches)
  models = model_names(args, sizes)
  dtypes = args.dtypes.split(',')
  # Last compile times per model (for torch.compile: its first call): they predict the next.
  jax_compile_seconds, torch_compile_seconds = {}, {}
  for batch in batches:
    for dtype in dtypes:
      for model in models:
        where = f'{MODEL_NAMES[model]} {sizes.size}² batch {batch} {dtype}'
        expected = jax_compile_seconds.get(model, sizes.expected_compile_seconds) + sizes.seconds
        if not clock.fits('throughput', expected):
          skipped.append({'what': f'throughput {where}', 'why': 'deadline'})
          continue
        base = dict(model=model, size=sizes.size, width=sizes.width, batch=batch, dtype=dtype)
        group, notes, new_rows = [], {}, []
        try:
          timed, xla_flops = jax_train_timed(model, sizes.size, batch, sizes.width, dtype,
                                             sizes.inner_steps)
          group.append(timed)
        except Exception as error:
          new_rows.append(dict(base, implementation='jax', status=f'failed: {error_text(error)}'))
          results['errors'].append(f'jax {where}: {traceback.format_exc(limit=3)}')
          xla_flops = None
        for compiled in (False, True):
          name = 'torch.compile' if compiled else 'torch eager'
          if torch_device is None:
            notes[name] = torch_status
          elif compiled and not compile_torch:
            notes[name] = ('skipped: --smoke (torch.compile compiles C++ for minutes on a CPU)'
                           if args.smoke else 'skipped: --torch_compile')
          elif compiled and not clock.fits('throughput', 1.2 * torch_compile_seconds.get(
              model, 2 * sizes.expected_compile_seconds)):
            notes[name] = 'skipped: deadline (torch.compile would not finish in time)'
            skipped.append({'what': f'torch.compile {where}', 'why': 'deadline'})
          else:
            try:
              group.append(torch_train_timed(torch, torch_device, model, sizes.size, batch,
                                             sizes.width, dtype, compiled, sizes.inner_steps))
            except Exception as error:
              notes[name] = f'failed: {error_text(error)}'
        try:
          benchmark.time_in_turns(group, sizes.warmup, sizes.repeats,
                                  max(0.0, min(sizes.seconds, clock.left())))
        except Exception as error:  # e.g. out of memory after the warm-up
          for item in group:
            item.error = item.error or error_text(error)
          results['errors'].append(f'{where}: {traceback.format_exc(limit=3)}')
        layers = benchmark.conv_layers(model, 3, sizes.width, sizes.size)
        flops = benchmark.step_flops(layers, batch, True)
        eager = next((t for t in group if t.name == 'torch eager' and t.seconds), None)
        for item in group:
          row = dict(base, implementation=item.name)
          if item.name == 'torch.compile' and item.first_call_seconds is not None:
            torch_compile_seconds[model] = item.first_call_seconds
          if item.name == 'jax':
            jax_compile_seconds[model] = item.compile_seconds
          if item.error or not item.seconds:
            row['status'] = f'failed: {item.error}' if item.error else 'failed: not timed'
            new_rows.append(row)
            continue
          step_seconds = item.median / sizes.inner_steps
          tflops = flops / step_seconds / 1e12
          peak = peaks.get(dtype)
          row.update(
              status='ok', images_per_second=batch / step_seconds, step_ms=step_seconds * 1e3,
              tflops=tflops, mfu=tflops / peak if peak else None,
              vs_torch_eager=eager.median / item.median if eager else None,
              # torch.compile compiles during its first call (a warm-up call).
              compile_seconds=(item.first_call_seconds if item.name == 'torch.compile'
                               else item.compile_seconds),
              analytic_flops_per_step=flops, timed_calls=len(item.seconds),
              steps_per_call=sizes.inner_steps, seconds=item.seconds)
          if item.name == 'jax':
            row['xla_flops_per_step'] = xla_flops
          new_rows.append(row)
        for name, note in notes.items():
          new_rows.append(dict(base, implementation=name, status=note))
        rows.extend(new_rows)
        print_rows(new_rows)
        del group
        release_memory(torch)
        write_outputs(results, args.out)


def stacked_models(args, sizes, clock, torch, results):
  """K models by jax.vmap over stacked states against K sequential steps, float32."""
  import jax
  import jax.numpy as jnp
  from pejax.models import steps
  rows, skipped = results['stacked'], results['skipped']
  size, batch = sizes.stacked_size, sizes.stacked_batch
  compile_seconds = {}
  # The small CNN first: it is the model that one training step leaves a GPU idle with.
  for model in sorted(model_names(args, sizes), key=lambda name: name != 'cnn4'):
    single = None
    for count in sizes.stacked:
      where = f'{MODEL_NAMES[model]} K={count} {size}² batch {batch}'
      expected = 1.5 * compile_seconds.get(model, sizes.expected_compile_seconds) + sizes.seconds
      if not clock.fits('stacked', expected):
        skipped.append({'what': f'stacked {where}', 'why': 'deadline'})
        continue
      try:
        images, labels, weights = benchmark.jax_batch(batch, size)
        built = [benchmark.jax_model_state(model, size, sizes.width, True, 'auto', 'float32',
                                           seed=i) for i in range(count)]
        spec = built[0][0]
        states = [state for _, state in built]
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
        pe_scales = jnp.ones((count,), jnp.float32)
        start = time.perf_counter()
        vmapped = jax.jit(jax.vmap(functools.partial(steps.train_step, spec),
                                   in_axes=(0, None, None, None, 0)), donate_argnums=(0,))
        vmapped = vmapped.lower(stacked, images, labels, weights, pe_scales).compile()
        vmapped_compile = compile_seconds[model] = time.perf_counter() - start
        if single is None:
          single = jax.jit(functools.partial(steps.train_step, spec), donate_argnums=(0,))
          single = single.lower(states[0], images, labels, weights, jnp.float32(1.0)).compile()
        holder = {'stacked': stacked, 'states': states}
        del built, stacked, states

        def run_vmapped(holder=holder, vmapped=vmapped, pe_scales=pe_scales,
                        batch=(images, labels, weights)):
          state = holder.pop('stacked')
          for _ in range(sizes.inner_steps):
            state, metrics = vmapped(state, *batch, pe_scales)
          jax.block_until_ready(state)
          holder['stacked'] = state

        def run_sequential(holder=holder, single=single, batch=(images, labels, weights)):
          states = holder.pop('states')
          for _ in range(sizes.inner_steps):
            states = [single(s, *batch, jnp.float32(1.0))[0] for s in states]
          jax.block_until_ready(states)
          holder['states'] = states

        group = [benchmark.Timed('vmap', run_vmapped, compile_seconds=vmapped_compile),
                 benchmark.Timed('sequential', run_sequential)]
        benchmark.time_in_turns(group, sizes.warmup, sizes.repeats,
                                max(0.0, min(sizes.seconds, clock.left())))
      except Exception as error:
        rows.append(dict(model=model, K=count, status=f'failed: {error_text(error)}'))
        results['errors'].append(f'stacked {where}: {traceback.format_exc(limit=3)}')
        release_memory(torch)
        continue
      flops = benchmark.step_flops(benchmark.conv_layers(model, 3, sizes.width, size), batch, True)
      sequential = group[1]
      for item in group:
        row = dict(model=model, K=count, size=size, width=sizes.width, batch=batch,
                   run=item.name)
        if item.error or not item.seconds:
          row['status'] = f'failed: {item.error or "not timed"}'
        else:
          step_seconds = item.median / sizes.inner_steps
          row.update(status='ok', images_per_second=count * batch / step_seconds,
                     tflops=count * flops / step_seconds / 1e12,
                     vs_sequential=(sequential.median / item.median
                                    if sequential.seconds else None),
                     compile_seconds=item.compile_seconds, seconds=item.seconds)
        rows.append(row)
      print_rows(rows[-2:])
      del group, holder
      release_memory(torch)
      write_outputs(results, args.out)


def phantom_data(sizes):
  from data_builders.phantoms import phantom_generator as generator
  jitter = generator.DEFAULT_POSITION_JITTER[generator.CHEST]
  train_images, train_labels, _ = generator.generate_split(
      generator.CHEST, sizes.phantom_size, jitter, 0, 'train', sizes.phantom_train)
  test_images, test_labels, _ = generator.generate_split(
      generator.CHEST, sizes.phantom_size, jitter, 0, 'test', sizes.phantom_test)
  return train_images, train_labels, test_images, test_labels


def phantom_training(args, sizes, clock, results):
  """The U-Net (--smoke: the small CNN) with PE λ = 1, zero padding, Adam 1e-3, float32
  (configs/unet_pe.py) for a few hundred steps on the chest phantom; Dice on its test split."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from pejax.models import dice, steps
  report = results['phantom_training']
  report.update(model=sizes.phantom_model, size=sizes.phantom_size, width=sizes.phantom_width,
                batch=sizes.phantom_batch, pe_scale=1.0, dtype='float32',
                steps_planned=sizes.phantom_steps, train_images=sizes.phantom_train,
                test_images=sizes.phantom_test, dataset='chest phantom, seed 0')
  # Two compilations (training and evaluation step) and the data.
  if not clock.fits('phantom', 2 * sizes.expected_compile_seconds):
    report['status'] = 'skipped: deadline'
    results['skipped'].append({'what': 'phantom training', 'why': 'deadline'})
    return
  start = time.perf_counter()
  train_images, train_labels, test_images, test_labels = phantom_data(sizes)
  report['data_seconds'] = time.perf_counter() - start
  # 'dataset' normalization, as the chest data is trained: the training split's mean and std.
  mean, std = float(train_images.mean()), float(train_images.std())
  normalize = lambda images: (images - mean) / (std + 1e-6)

  spec, state = benchmark.jax_model_state(sizes.phantom_model, sizes.phantom_size,
                                          sizes.phantom_width, True, 'auto', 'float32')
  train_x = jnp.asarray(normalize(train_images))
  train_y = jnp.asarray(train_labels)
  pe_scale = jnp.float32(1.0)

  def train_rows(state, rows, images, labels, pe_scale):
    return steps.train_step(spec, state, images[rows], labels[rows],
                            jnp.ones(rows.shape, jnp.float32), pe_scale)

  rng = np.random.default_rng(0)
  order = np.zeros((0,), np.int32)

  def next_rows():
    nonlocal order
    while order.size < sizes.phantom_batch:   # epochs of fresh permutations, back to back
      order = np.concatenate([order, rng.permutation(sizes.phantom_train).astype(np.int32)])
    rows, order = order[:sizes.phantom_batch], order[sizes.phantom_batch:]
    return rows

  start = time.perf_counter()
  step = jax.jit(train_rows, donate_argnums=(0,)).lower(
      state, next_rows(), train_x, train_y, pe_scale).compile()
  report['compile_seconds'] = time.perf_counter() - start
  losses = []
  start = time.perf_counter()
  done = 0
  while done < sizes.phantom_steps:
    state, step_metrics = step(state, next_rows(), train_x, train_y, pe_scale)
    losses.append(step_metrics['loss'])
    done += 1
    if done % 25 == 0 or done == sizes.phantom_steps:   # look at the clock now and then
      jax.block_until_ready(state)
      if clock.left('phantom') <= 0 and done < sizes.phantom_steps:
        report['stopped_early'] = f'deadline after {done} of {sizes.phantom_steps} steps'
        results['skipped'].append({'what': f'phantom training steps {done + 1}–'
                                           f'{sizes.phantom_steps}', 'why': 'deadline'})
        break
  jax.block_until_ready(state)
  train_seconds = time.perf_counter() - start
  losses = np.asarray(jax.device_get(losses), np.float64)
  finite = bool(np.all(np.isfinite(losses)))
  report.update(steps_done=done, train_seconds=train_seconds,
                train_images_per_second=done * sizes.phantom_batch / train_seconds,
                first_loss=float(losses[0]), last_loss=float(losses[-1]), all_finite=finite,
                epochs=done * sizes.phantom_batch / sizes.phantom_train)

  # Dice over the test split in equal batches, the last padded and masked.
  count = sizes.phantom_test
  eval_batch = -(-count // -(-count // 32))
  padded = -(-count // eval_batch) * eval_batch
  pad = lambda x: np.concatenate([x, np.zeros((padded - count,) + x.shape[1:], x.dtype)])
  test_x, test_y = pad(normalize(test_images)), pad(test_labels)
  valid = (np.arange(padded) < count).astype(np.float32)
  evaluate = jax.jit(functools.partial(steps.eval_step, spec))
  sums = None
  for first in range(0, padded, eval_batch):
    part = slice(first, first + eval_batch)
    batch_sums = jax.device_get(evaluate(state, test_x[part], test_y[part], valid[part],
                                         pe_scale))
    sums = batch_sums if sums is None else jax.tree.map(np.add, sums, batch_sums)
  report['test_dice'] = dice.finalize_dice(sums, CHEST_CLASSES)
  report['test_loss'] = float(sums['loss_sum'] / sums['example_count'])
  baseline = dice.averaged_mask(train_labels, 4)
  predictions = jnp.broadcast_to(baseline, test_labels.shape)
  report['averaged_mask_dice'] = dice.finalize_dice(
      dice.dice_sums(predictions, jnp.asarray(test_labels), 4), CHEST_CLASSES)
  report['status'] = 'ok' if finite else 'non-finite loss'
  print(f"phantom training: {done} steps in {train_seconds:.1f} s, test Dice "
        f"{report['test_dice']['dice']:.4f} (averaged mask "
        f"{report['averaged_mask_dice']['dice']:.4f})", flush=True)


# --- report --------------------------------------------------------------------------------------

def print_rows(rows):
  for row in rows:
    shown = {k: (f'{v:.4g}' if isinstance(v, float) else v) for k, v in row.items()
             if k != 'seconds'}
    print(' '.join(f'{k}={v}' for k, v in shown.items()), flush=True)


def number(value, pattern='{:.1f}'):
  return '' if value is None else pattern.format(value)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
  return (['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
          + ['| ' + ' | '.join(row) + ' |' for row in rows])


def header_lines(results: dict) -> list[str]:
  env, settings = results.get('environment', {}), results['settings']
  packages = env.get('packages', {})
  torch = env.get('torch')
  torch_text = results.get('torch_status', '?')
  if isinstance(torch, dict):
    torch_text += f" ({torch['version']}, CUDA {torch['cuda']}, cuDNN {torch['cudnn']})"
  peaks = results.get('peak_tflops', {})
  peak_text = peaks.get('source', '?')
  if peaks.get('bfloat16'):
    peak_text += (f": bfloat16 {number(peaks['bfloat16'])}, float32 (TF32 tensor cores) "
                  f"{number(peaks.get('float32'))} TFLOP/s")
  lines = [
      '# GPU check', '',
      f"Command: `{settings['command']}`  ",
      f"Device: {env.get('device_kind', '?')} ({env.get('jax_backend', '?')}, "
      f"{env.get('device_memory_gib') or '?'} GiB); jax {packages.get('jax', '?')}, "
      f"jaxlib {packages.get('jaxlib', '?')}, flax {packages.get('flax', '?')}; "
      f"torch: {torch_text}  ",
      f"Date: {env.get('date', '?')}; took {results.get('seconds', 0):.0f} s of a "
      f"{settings['deadline_seconds']:.0f} s deadline.  ",
      f'Peak for MFU: {peak_text}. MFU and TFLOP/s count convolution FLOPs analytically '
      '(BENCHMARKS.md).', '']
  matmul = results.get('matmul')
  if matmul:
    lines += [f"Matrix product {matmul['size']}²: float32 {number(matmul.get('float32'))}, "
              f"bfloat16 {number(matmul.get('bfloat16'))} TFLOP/s (JAX).", '']
  return lines


def phantom_lines(phantom: dict) -> list[str]:
  if not phantom.get('test_dice'):
    return [f"Not run: {phantom.get('status', 'not reached')}."]
  dice, baseline = phantom['test_dice'], phantom['averaged_mask_dice']
  four = lambda value: number(value, '{:.4f}')
  lines = [
      f"{MODEL_NAMES[phantom['model']]}, PE λ = 1, width {phantom['width']}, "
      f"{phantom['size']}², batch {phantom['batch']}, Adam 1e-3, float32: "
      f"{phantom['steps_done']} steps ({phantom['epochs']:.1f} epochs of "
      f"{phantom['train_images']} chest phantoms) in {phantom['train_seconds']:.1f} s "
      f"({phantom['train_images_per_second']:.0f} images/s; compile "
      f"{phantom['compile_seconds']:.1f} s); loss {phantom['first_loss']:.3f} → "
      f"{phantom['last_loss']:.3f}.", '',
      f"Test Dice ({phantom['test_images']} images): **{four(dice['dice'])}** (right lung "
      f"{four(dice['dice_right_lung'])}, left lung {four(dice['dice_left_lung'])}, heart "
      f"{four(dice['dice_heart'])}); averaged-mask baseline {four(baseline['dice'])}."]
  if phantom.get('stopped_early'):
    lines.append(f"Stopped early: {phantom['stopped_early']}.")
  return lines


def markdown(results: dict) -> str:
  settings = results['settings']
  name = lambda row: MODEL_NAMES.get(row['model'], row['model'])
  lines = header_lines(results)
  lines += [f"## Training throughput, {settings['size']}², width {settings['width']}, PE on", '']
  lines += table(
      ['model', 'batch', 'dtype', 'implementation', 'images/s', 'TFLOP/s', 'MFU',
       'vs torch eager', 'compile s', 'status'],
      [[name(row), str(row['batch']), row['dtype'], row['implementation'],
        number(row.get('images_per_second')), number(row.get('tflops'), '{:.3g}'),
        number(row.get('mfu'), '{:.0%}'), number(row.get('vs_torch_eager'), '{:.2f}'),
        number(row.get('compile_seconds')), row['status']]
       for row in results.get('throughput', [])])
  lines += ['', '## Phantom training', ''] + phantom_lines(results.get('phantom_training', {}))
  lines += ['', f"## K models by jax.vmap against K sequential steps ({settings['stacked_size']}², "
                f"width {settings['width']}, batch {settings['stacked_batch']}, float32)", '']
  lines += table(
      ['model', 'K', 'run', 'images/s (all models)', 'TFLOP/s', 'vs sequential', 'compile s',
       'status'],
      [[name(row), str(row['K']), row.get('run', ''), number(row.get('images_per_second')),
        number(row.get('tflops'), '{:.3g}'), number(row.get('vs_sequential'), '{:.2f}'),
        number(row.get('compile_seconds')), row['status']]
       for row in results.get('stacked', [])])
  lines += ['', '## Skipped', '']
  lines += [f"- {item['what']}: {item['why']}" for item in results.get('skipped', [])] or ['Nothing.']
  if results.get('errors'):
    lines += ['', '## Errors', ''] + [f'```\n{error.strip()}\n```' for error in results['errors']]
  return '\n'.join(lines)


def main(argv=None):
  # Share the GPU with PyTorch: JAX would otherwise reserve 75% of its memory when it starts.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  args = parse_args(argv)
  sizes = SMOKE if args.smoke else Sizes()
  clock = Clock(args.deadline_minutes * 60)
  import jax
  backend = jax.default_backend()
  if backend == 'cpu' and not (args.smoke or args.allow_cpu):
    print('JAX finds no GPU (backend cpu): install JAX with CUDA (pip install -U "jax[cuda13]") '
          'and check `python -c "import jax; print(jax.devices())"`. --smoke runs toy sizes '
          'on a CPU.', file=sys.stderr)
    return 2
  torch, torch_device, torch_status = import_torch(args.torch, backend)
  results = {
      'settings': dict(dataclasses.asdict(sizes), smoke=args.smoke,
                       models=model_names(args, sizes),
                       dtypes=args.dtypes, deadline_seconds=clock.deadline_seconds,
                       command=' '.join(['python benchmarks/gpu_check.py'] + list(
                           sys.argv[1:] if argv is None else argv))),
      'torch_status': torch_status, 'environment': {}, 'peak_tflops': {}, 'matmul': None,
      'throughput': [], 'stacked': [], 'phantom_training': {}, 'skipped': [], 'errors': [],
      'seconds': 0.0, 'finished_within_deadline': None,
  }
  results['environment'] = environment(torch, torch_device)
  results['peak_tflops'] = peak_tflops(results['environment']['device_kind'],
                                       parse_peak_override(args.peak_tflops))
  print(f"device {results['environment']['device_kind']} ({backend}); torch: {torch_status}; "
        f"peak: {results['peak_tflops']['source']}", flush=True)
  write_outputs(results, args.out)
  parts = (
      ('matmul', lambda: results.update(matmul=matmul_tflops(sizes))),
      ('throughput', lambda: throughput(args, sizes, clock, torch, torch_device, torch_status,
                                        results['peak_tflops'], results)),
      ('phantom', lambda: phantom_training(args, sizes, clock, results)),
      ('stacked', lambda: stacked_models(args, sizes, clock, torch, results)),
  )
  for name, part in parts:
    if clock.left() <= 0:
      results['skipped'].append({'what': name, 'why': 'deadline'})
      continue
    try:
      part()
    except Exception:
      results['errors'].append(f'{name}: {traceback.format_exc(limit=5)}')
      print(results['errors'][-1], file=sys.stderr)
    release_memory(torch)
    results['seconds'] = clock.elapsed()
    write_outputs(results, args.out)
  results['seconds'] = clock.elapsed()
  results['finished_within_deadline'] = results['seconds'] <= clock.deadline_seconds
  write_outputs(results, args.out)
  print(f"{results['seconds']:.0f} s; results in {os.path.join(args.out, 'gpu_check.md')} "
        f"and gpu_check.json", flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
