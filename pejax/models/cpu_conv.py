"""Fast convolutions on XLA:CPU: compiler options, and a convolution that vmaps model by model.

What it works around on XLA:CPU (jaxlib 0.10; the numbers are in BENCHMARKS.md):

- XLA:CPU hands float32 convolutions to YNNPACK by default, which is slow for the forward
  convolution and much slower for the weight gradient (which XLA writes as a convolution with
  an H×W window and the batch as input features). Later XLA versions restrict YNNPACK
  convolutions to int8 for this reason. `recommended_xla_flags()` /
  `recommended_compiler_options()` turn them off and keep YNNPACK for matrix products and
  reductions; nothing else changes. The rule is keyed on what was measured: jaxlib 0.10.x on
  x86-64, with AVX2 and with AVX-512 alike (`cpu_kind()`); elsewhere XLA's defaults stay.
- `jax.vmap` over stacked models (sweeps) turns each convolution into a feature-grouped one,
  which XLA:CPU runs slower than the same convolutions one model after the other.
  `conv_general_dilated` below (registered as conv_impl='cpu' in `pejax.models.layers`) runs
  them model by model under vmap, and folds a vmapped axis into the batch when the kernel is
  shared.

Other formulations (im2col, one matrix product per kernel tap) are slower here (BENCHMARKS.md).

Where to set the options: XLA reads `XLA_FLAGS` once, when JAX starts its CPU backend (the first
computation or `jax.devices()`), so `recommended_xla_flags()` must be in the environment before
that, in practice before `import jax` in the program's entry point. `recommended_compiler_options()`
applies to one compiled function instead: `jax.jit(f, compiler_options=...)`, at any time.
"""

from __future__ import annotations

import functools
import platform

import jax
import jax.numpy as jnp
from jax import lax

# XLA_FLAGS syntax: remove one item from the default list of YNNPACK fusion types.
_NO_YNNPACK_CONVOLUTION_FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
# The same as a per-compilation option, which takes the full list: jaxlib 0.10's default
# (individual dots, individual convolutions, reductions) without the convolutions.
_NO_YNNPACK_CONVOLUTION_OPTIONS = {
    'xla_cpu_experimental_ynn_fusion_type':
        'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE',
}

# NHWC input, HWIO kernel, NHWC output: what `nnx.Conv` passes for 2-D convolutions.
_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


# Where YNNPACK's float32 convolutions were measured slower than XLA's own (BENCHMARKS.md):
# jaxlib releases (version prefix) and the CPU kinds of `cpu_kind()`. An x86-64 CPU whose
# features cannot be read (no /proc/cpuinfo) counts as x86-64: both kinds measured want it.
SLOW_YNNPACK_CONVOLUTIONS = {'0.10.': ('x86-64 AVX-512', 'x86-64 AVX2', 'x86-64')}

_X86_64 = ('x86_64', 'amd64', 'x64')


def cpu_flags(cpuinfo: str = '/proc/cpuinfo') -> frozenset[str]:
  """The CPU's feature flags as Linux lists them ('avx2', 'avx512f', ...); empty if unknown."""
  try:
    with open(cpuinfo) as f:
      line = next((line for line in f if line.startswith(('flags', 'Features'))), '')
  except OSError:
    return frozenset()
  return frozenset(line.partition(':')[2].split())


def cpu_kind(machine: str | None = None, flags: frozenset[str] | None = None) -> str:
  """'x86-64 AVX-512', 'x86-64 AVX2', 'x86-64' (features unknown or older), or the machine
  name for other architectures (e.g. 'aarch64'): the kinds the rules here tell apart."""
  machine = (machine or platform.machine()).lower()
  if machine not in _X86_64:
    return machine
  flags = cpu_flags() if flags is None else flags
  return ('x86-64 AVX-512' if 'avx512f' in flags else 'x86-64 AVX2' if 'avx2' in flags
          else 'x86-64')


def ynnpack_convolutions_are_slow(jaxlib_version: str | None = None, kind: str | None = None) -> bool:
  """Whether this jaxlib on this CPU is one where YNNPACK convolutions were measured slow."""
  if jaxlib_version is None:
    import jaxlib
    jaxlib_version = jaxlib.__version__
  kind = cpu_kind() if kind is None else kind
  return any(jaxlib_version.startswith(release) and kind in kinds
             for release, kinds in SLOW_YNNPACK_CONVOLUTIONS.items())


def recommended_xla_flags() -> str:
  """Flags to append to `XLA_FLAGS` before JAX starts (see the module docstring); empty where
  the rule does not apply. Only XLA:CPU reads them; other backends ignore them."""
  return _NO_YNNPACK_CONVOLUTION_FLAG if ynnpack_convolutions_are_slow() else ''


def recommended_compiler_options(backend: str | None = None) -> dict[str, str]:
  """`compiler_options` for `jax.jit` with the same effect as `recommended_xla_flags()`.

  Empty for backends other than CPU and where the rule does not apply. Overrides any YNNPACK
  fusion types set in `XLA_FLAGS`.
  """
  backend = backend or jax.default_backend()
  if backend != 'cpu' or not ynnpack_convolutions_are_slow():
    return {}
  return dict(_NO_YNNPACK_CONVOLUTION_OPTIONS)


# --- a VALID, stride-1 NHWC convolution with its own gradient and batching rules -----------------

def _model_by_model(function, shared_kernel_argument=None):
  """`function(a, b)` whose vmap runs it once per model (`lax.map`) instead of batching it.

  If `shared_kernel_argument` (0 or 1) names the kernel and only the other argument is batched,
  the vmapped axis is folded into that argument's leading (image batch) axis instead: one
  larger convolution with the same kernel.
  """
  wrapped = jax.custom_batching.custom_vmap(function)

  @wrapped.def_vmap
  def rule(axis_size, in_batched, a, b):
    args, batched = [a, b], list(in_batched)
    if shared_kernel_argument is not None and not batched[shared_kernel_argument]:
      images = 1 - shared_kernel_argument
      stacked = args[images]
      args[images] = stacked.reshape((-1,) + stacked.shape[2:])
      out = wrapped(*args)
      return out.reshape((axis_size, -1) + out.shape[1:]), True
    args = [x if is_batched else jnp.broadcast_to(x, (axis_size,) + x.shape)
            for x, is_batched in zip(args, batched)]
    return lax.map(lambda pair: wrapped(*pair), tuple(args)), True

  return wrapped


@functools.cache
def _convolution(padding, precision, preferred_element_type):
  """The custom-VJP convolution for one set of static options (cached: one per combination).

  `padding` is ((top, bottom), (left, right)), each at most kernel size − 1 (zeros, as in lax).
  """
  (top, bottom), (left, right) = padding

  def plain(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_NHWC,
                                    precision=precision,
                                    preferred_element_type=preferred_element_type)

  forward = _model_by_model(plain, shared_kernel_argument=1)

  # The gradients as convolutions in the canonical NHWC/HWIO layout, written out: XLA's own
  # transposes leave other layouts, which XLA:CPU runs with a slow generic loop inside `lax.map`.
  def input_gradient_of(g, w, dtype):
    kh, kw = w.shape[:2]
    flipped = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))          # (kh, kw, K, C)
    full = ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right))
    return lax.conv_general_dilated(
        g, flipped, (1, 1), full, dimension_numbers=_NHWC, precision=precision,
        preferred_element_type=preferred_element_type).astype(dtype)

  def weight_gradient_of(x, g, dtype):
    # Σ over images and pixels of x[n, i+dy, j+dx, c]·g[n, i, j, k]: a convolution whose
    # "batch" is the input channel, "features" the images, and whose window is the image.
    out = lax.conv_general_dilated(
        jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)), (1, 1), padding,
        dimension_numbers=_NHWC, precision=precision,
        preferred_element_type=preferred_element_type)             # (C, kh, kw, K)
    return jnp.transpose(out, (1, 2, 0, 3)).astype(dtype)

  @jax.custom_vjp
  def conv(x, w):
    return forward(x, w)

  def conv_forward(x, w):
    # Asks that the saved input be the buffer the forward convolution read, so that its
    # producers (BatchNorm, ReLU) are not recomputed inside the weight gradient's transpose,
    # which would run several times slower than a plain one. XLA:CPU may fuse across the
    # barrier anyway; it is an identity either way.
    x = lax.optimization_barrier(x)
    return forward(x, w), (x, w)

  def conv_backward(residuals, g):
    x, w = residuals
    g = lax.optimization_barrier(g)  # likewise for the output gradient's producers
    input_gradient = _model_by_model(functools.partial(input_gradient_of, dtype=x.dtype),
                                     shared_kernel_argument=1)
    weight_gradient = _model_by_model(functools.partial(weight_gradient_of, dtype=w.dtype))
    return input_gradient(g, w), weight_gradient(x, g)

  conv.defvjp(conv_forward, conv_backward)
  return conv


def _explicit_padding(padding, lhs, rhs, window_strides):
  """((top, bottom), (left, right)) if each side pads 0 to kernel size − 1 pixels, else None."""
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  if len(padding) != 2 or any(len(pair) != 2 for pair in padding):
    return None
  fits = all(0 <= p < k for pair, k in zip(padding, rhs.shape[:2]) for p in pair)
  return padding if fits else None


def _all_ones(values):
  return values is None or all(v == 1 for v in values)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None, out_sharding=None):
  """`lax.conv_general_dilated`, batched model by model under vmap (see the module docstring).

  Covers what the project's convolutions use: 2-D, NHWC/HWIO/NHWC, stride 1, no dilation, no
  groups, and VALID or zero padding of at most kernel size − 1 per side (a zero-padded layer
  may pass its padding here instead of padding its input: the input gradient then skips the
  border). Anything else goes to `lax.conv_general_dilated` unchanged.
  """
  supported = (
      lhs.ndim == 4 and rhs.ndim == 4 and _all_ones(window_strides) and _all_ones(lhs_dilation)
      and _all_ones(rhs_dilation) and feature_group_count == 1 and batch_group_count == 1
      and out_sharding is None and dimension_numbers is not None
      and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC)
  explicit_padding = _explicit_padding(padding, lhs, rhs, window_strides) if supported else None
  if explicit_padding is None:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type, out_sharding=out_sharding)
  if rhs.shape[:2] == (1, 1):  # then the padding is zero
    return _pointwise(lhs, rhs, precision, preferred_element_type)
  precision = tuple(precision) if isinstance(precision, list) else precision  # a cache key
  if preferred_element_type is not None:
    preferred_element_type = jnp.dtype(preferred_element_type)
  return _convolution(explicit_padding, precision, preferred_element_type)(lhs, rhs)


def _pointwise(x, w, precision, preferred_element_type):
  """A 1×1 convolution as one matrix product over all pixels.

  Its gradients are products too (the weight gradient contracts the pixels of two row-major
  matrices, which needs no transpose); as a convolution, XLA would transpose the input first.
  """
  n, height, width, in_channels = x.shape
  pixels = x.reshape(n * height * width, in_channels)
  out = lax.dot_general(pixels, w.reshape(in_channels, -1), (((1,), (0,)), ((), ())),
                        precision=precision, preferred_element_type=preferred_element_type)
  return out.reshape(n, height, width, -1)
