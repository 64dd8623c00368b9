"""The values settings can take and the paper's default parameters, importable without JAX.

The configuration validates settings against these names before anything heavy is imported;
the modules that implement them (layers, models, corruptions, robustness) take them from here,
so a name is defined once.
"""

DATASETS = ('phantom_chest', 'phantom_cardiac', 'jsrt', 'acdc')
# Any dataset in nnU-Net's raw format: 'nnunet:Dataset027_ACDC' (a folder of $nnUNet_raw) or
# 'nnunet:/path/to/DatasetXXX_Name'.
NNUNET_PREFIX = 'nnunet:'


def is_nnunet(dataset: str) -> bool:
  return isinstance(dataset, str) and dataset.startswith(NNUNET_PREFIX)


def nnunet_name(dataset: str) -> str:
  """'Dataset027_ACDC' of 'nnunet:Dataset027_ACDC' or of 'nnunet:/data/raw/Dataset027_ACDC/'."""
  return dataset[len(NNUNET_PREFIX):].replace('\\', '/').rstrip('/').split('/')[-1]
MODELS = ('unet', 'cnn4')            # paper Table 3 and Table 4
COMPUTE_DTYPES = ('float32', 'bfloat16')

# Poolings of the U-Net: its input sides must be multiples of 2**UNET_DEPTH.
UNET_DEPTH = 4
UNET_SIZE_MULTIPLE = 2**UNET_DEPTH

# Padding modes as PyTorch's `Conv2d(padding_mode=...)` names them, plus 'symmetric' and
# 'valid' (no padding; the small CNN only).
PADDING_MODES = ('zeros', 'reflect', 'replicate', 'circular', 'symmetric', 'valid')
# 'auto' resolves to 'cpu' (pejax.models.cpu_conv) on the CPU backend and to 'xla' elsewhere.
CONV_IMPLS = ('auto', 'xla', 'cpu')

# Test-time corruptions (paper Sec. 2.3): Tiny-ImageNet-C parameters (Hendrycks & Dietterich),
# severity 1 (mildest) .. 5, on intensities in [0, 1].
CORRUPTIONS = ('gaussian_noise', 'shot_noise', 'gaussian_blur')
GAUSSIAN_NOISE_SIGMAS = (0.04, 0.08, 0.12, 0.15, 0.18)    # x + N(0, σ²)
SHOT_NOISE_COUNTS = (250.0, 100.0, 50.0, 30.0, 15.0)      # Poisson(x·c) / c
GAUSSIAN_BLUR_SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5)        # pixels
SEVERITIES = (1, 2, 3, 4, 5)
# Shifts of test images and masks (paper Fig. 5).
SHIFT_AXES = ('x', 'y', 'xy')
SHIFT_FILLS = ('zeros', 'edge')

# The phantoms' position jitter (a standard deviation, as a fraction of the image side): the
# phantom builder draws anatomy that stays in the image up to this value.
MAX_POSITION_JITTER = 0.5
# Positional encodings (pejax.models.encoding) and where they enter: 'input' (the paper) or
# 'all' (CoordConv: every 3×3 convolution's input).
PE_KINDS = ('linear', 'centered', 'radial', 'fourier')
PE_LAYERS = ('input', 'all')
MAX_PE_BANDS = 16  # 2^15·π: finer than a pixel at any size pejax trains
