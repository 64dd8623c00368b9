"""The project's networks and steps in PyTorch, layer for layer, as a speed reference.

Same layers as `pejax.models.networks`: 3×3 convolution without bias (zero padding 1) + BatchNorm2d +
ReLU, 2×2 max-pool, bilinear ×2 upsampling with align_corners=False, concatenation with the
skip, a 1×1 score convolution with bias; pixel-wise cross-entropy and Adam (lr 1e-3). The
positional-encoding channels are appended inside the step, as `pejax.models.steps` does. On a GPU,
`autocast_dtype=torch.bfloat16` is the counterpart of the JAX steps' bfloat16 compute dtype
(float32 master weights and optimizer state).
Needs PyTorch (`pip install 'pejax[benchmark]'`, i.e. torch==2.13.0); used only by benchmarks.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

UNET_DEPTH = 4


class ConvBNReLU(nn.Sequential):

  def __init__(self, in_channels, out_channels):
    super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                     nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.1), nn.ReLU(inplace=True))


class DoubleConv(nn.Sequential):

  def __init__(self, in_channels, out_channels):
    super().__init__(ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels))


class UNet(nn.Module):
  """Paper Table 3, as `pejax.models.networks.UNet`."""

  def __init__(self, in_channels=1, num_classes=4, width=64):
    super().__init__()
    w = width
    self.encoder = nn.ModuleList([DoubleConv(in_channels, w), DoubleConv(w, 2 * w),
                                  DoubleConv(2 * w, 4 * w), DoubleConv(4 * w, 8 * w)])
    self.bottleneck = DoubleConv(8 * w, 8 * w)
    self.decoder = nn.ModuleList([DoubleConv(16 * w, 4 * w), DoubleConv(8 * w, 2 * w),
                                  DoubleConv(4 * w, w), DoubleConv(2 * w, w)])
    self.score = nn.Conv2d(w, num_classes, 1)

  def forward(self, x):
    skips = []
    for level in self.encoder:
      x = level(x)
      skips.append(x)
      x = F.max_pool2d(x, 2)
    x = self.bottleneck(x)
    for level, skip in zip(self.decoder, reversed(skips)):
      x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
      x = level(torch.cat([x, skip], dim=1))
    return self.score(x)


class SmallCNN(nn.Module):
  """Paper Table 4, as `pejax.models.networks.SmallCNN`."""

  def __init__(self, in_channels=1, num_classes=4, width=64, depth=3):
    super().__init__()
    channels = [in_channels] + [width] * depth
    self.layers = nn.Sequential(*[ConvBNReLU(a, b) for a, b in zip(channels[:-1], channels[1:])])
    self.score = nn.Conv2d(width, num_classes, 1)

  def forward(self, x):
    return self.score(self.layers(x))


MODELS = {'unet': UNet, 'cnn4': SmallCNN}


def add_coordinate_channels(images, scale):
  """NCHW images + two channels λ·i/(W−1) (along x) and λ·j/(H−1) (along y), as pejax.models.encoding."""
  if scale is None:
    return images
  batch, _, height, width = images.shape
  x = scale * torch.arange(width, dtype=images.dtype, device=images.device) / max(width - 1, 1)
  y = scale * torch.arange(height, dtype=images.dtype, device=images.device) / max(height - 1, 1)
  coords = torch.stack([x[None, :].expand(height, width), y[:, None].expand(height, width)])
  return torch.cat([images, coords[None].expand(batch, 2, height, width)], dim=1)


class Steps:
  """A model, its Adam optimizer, and train / eval steps that mirror `pejax.models.steps`."""

  def __init__(self, model_name, *, in_channels, width=64, num_classes=4, pe_scale=None,
               channels_last=False, compile=False, device='cpu', autocast_dtype=None):
    self.device = torch.device(device)
    self.model = MODELS[model_name](in_channels, num_classes, width=width).to(self.device)
    self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
    self.model = self.model.to(memory_format=self.memory_format)
    self.autocast_dtype = autocast_dtype
    self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
    self.pe_scale = pe_scale
    self.num_classes = num_classes
    # torch.compile traces the model once shapes are known (at the first call); dynamic=False
    # compiles each input shape for itself, as XLA does, instead of one shape-generic program
    # from the second shape on.
    self.forward = torch.compile(self.model, dynamic=False) if compile else self.model

  def inputs(self, images):
    return add_coordinate_channels(images, self.pe_scale).contiguous(memory_format=self.memory_format)

  def autocast(self):
    """Mixed precision in `autocast_dtype`, or nothing (float32) when it is None."""
    return torch.autocast(self.device.type, dtype=self.autocast_dtype,
                          enabled=self.autocast_dtype is not None)

  def train_step(self, images, labels):
    self.model.train()
    self.optimizer.zero_grad(set_to_none=True)
    with self.autocast():
      logits = self.forward(self.inputs(images))
    loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    self.optimizer.step()
    return loss.detach()

  @torch.no_grad()
  def eval_step(self, images, labels):
    """Loss and the per-class Dice counts (intersection, predicted, true) of a batch."""
    self.model.eval()
    with self.autocast():
      logits = self.forward(self.inputs(images))
    logits = logits.float()
    predictions = logits.argmax(dim=1)
    loss = F.cross_entropy(logits, labels, reduction='none').mean(dim=(1, 2)).sum()
    classes = torch.arange(self.num_classes, device=self.device)[None, :, None, None]
    predicted = predictions[:, None] == classes
    true = labels[:, None] == classes
    return loss, (predicted & true).sum((2, 3)), predicted.sum((2, 3)), true.sum((2, 3))
