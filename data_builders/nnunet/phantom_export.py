"""pejax's phantoms written as a dataset in nnU-Net's raw format, to try the nnU-Net path without
data (and to test it against the native phantom builder, whose examples it copies).

  python -m data_builders.nnunet.phantom_export --kind=chest --output=/tmp/nnUNet_raw
  python -m data_builders.nnunet.phantom_export --kind=cardiac --output=/tmp/nnUNet_raw \
      --cases=4,2,2 --channels=2

The same examples the `phantoms` builder makes for each split (same seed, jitter and indices):
  chest: one 2-D case per example, a 16-bit PNG (round(x * 65535); 8-bit round(x * 255) for a
    channel named rgb_to_0_1), `Dataset901_PhantomChest`, channel named 'zscore';
  cardiac: one volume per `slices_per_case` consecutive examples of a split, a .nii.gz whose
    slice k (`data[:, :, k]`) is the example transposed (so nnU-Net's z slice k, and pejax's
    stored slice, is the example), voxel size (x, y, z) `spacing` mm, `Dataset902_PhantomCardiac`,
    channel named 'MRI'.
The native train and validation examples go to imagesTr / labelsTr, with splits_final.json (beside
dataset.json) whose fold 0 is exactly them; the native test examples to imagesTs / labelsTs.
Case ids count through train, validation, then test: chest_0001, ..., heart_0001, ...
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence

import nibabel
import numpy as np
from PIL import Image

from data_builders.phantoms import phantom_generator
from data_builders.phantoms import phantoms_dataset_builder as phantoms
from pejax import errors
from pejax.errors import SettingError

CHEST, CARDIAC = phantom_generator.CHEST, phantom_generator.CARDIAC
SPLITS = phantoms.SPLITS
DATASET_NAMES = {CHEST: 'Dataset901_PhantomChest', CARDIAC: 'Dataset902_PhantomCardiac'}
CASE_PREFIXES = {CHEST: 'chest', CARDIAC: 'heart'}
DEFAULT_CHANNEL_NAMES = {CHEST: 'zscore', CARDIAC: 'MRI'}
SECOND_CHANNEL = 'inverted'  # 1 - x of the first
MAX_FOREGROUND_CLASSES = 6
# Two foreground classes: the two classes most alike merged.
_MERGED = {CHEST: ((0, 1, 1, 2), ('lungs', 'heart')),
           CARDIAC: ((0, 1, 2, 1), ('ventricle_cavities', 'myocardium'))}


def write_phantom_dataset(kind: str, output_folder: str, *, image_size: int = 64,
                          channels: int = 1, foreground_classes: int | None = None,
                          split_sizes: Mapping[str, int] | None = None, slices_per_case: int = 8,
                          spacing: Sequence[float] = (1.5, 1.5, 10.0), seed: int = 0,
                          channel_name: str | None = None) -> str:
  """Writes `output_folder/Dataset90X_Phantom<Kind>` and returns its path.

  Args:
    kind: 'chest' (2-D PNG cases) or 'cardiac' (3-D NIfTI cases).
    image_size: side of the phantoms, as the native builder's image_size.
    channels: 1, or 2 to add a second channel file per case, 1 - x, named 'inverted'.
    foreground_classes: 1 .. 6 (None: the native 3). 1 merges every structure, 2 merges the two
      most alike (chest lungs; cardiac cavities), 4 .. 6 split the first 1 .. 3 classes at the
      image's vertical midline ('<name>_image_left' keeps the value, '<name>_image_right' is
      new).
    split_sizes: native examples per split ({'train': ..., 'validation': ..., 'test': ...}; chest
      images, cardiac slices); missing splits take the native builder's defaults.
    slices_per_case: cardiac only: consecutive slices of a split per volume (the last volume of
      a split may have fewer).
    spacing: cardiac only: voxel size (x, y, z) in mm.
    seed: the phantoms' seed, as the native builder's.
    channel_name: name of the first channel in dataset.json (it chooses nnU-Net's normalization),
      by default 'zscore' (chest) or 'MRI' (cardiac).
  """
  sizes = _check(kind, image_size, channels, foreground_classes, split_sizes, slices_per_case,
                 spacing)
  folder = os.path.join(os.path.abspath(os.path.expanduser(output_folder)), DATASET_NAMES[kind])
  if os.path.isdir(folder) and os.listdir(folder):
    raise SettingError(f'{folder} already exists: delete it, or choose another --output.')
  names = [channel_name or DEFAULT_CHANNEL_NAMES[kind]] + [SECOND_CHANNEL] * (channels - 1)
  remap, class_names = class_map(kind, 3 if foreground_classes is None else foreground_classes)
  ending = '.png' if kind == CHEST else '.nii.gz'
  per_case = 1 if kind == CHEST else slices_per_case
  jitter = phantoms.DEFAULT_POSITION_JITTER[kind]
  cases, number = {split: [] for split in SPLITS}, 0
  for split in SPLITS:
    subset = 'Ts' if split == 'test' else 'Tr'
    for first in range(0, sizes[split], per_case):
      number += 1
      case = f'{CASE_PREFIXES[kind]}_{number:04d}'
      examples = [phantom_generator.generate_example(kind, image_size, jitter, seed, split, i)
                  for i in range(first, min(first + per_case, sizes[split]))]
      images = np.stack([image[..., 0] for image, _ in examples])  # (slices, S, S)
      labels = np.stack([remap(label) for _, label in examples])
      planes = [images, 1.0 - images][:channels]
      for c, plane in enumerate(planes):
        path = os.path.join(folder, f'images{subset}', f'{case}_{c:04d}{ending}')
        _write(path, plane, spacing, eight_bit=names[c].casefold() == 'rgb_to_0_1')
      _write(os.path.join(folder, f'labels{subset}', case + ending), labels, spacing, label=True)
      cases[split].append(case)
  description = {
      'name': DATASET_NAMES[kind].split('_', 1)[1],
      'description': f'pejax {kind} phantom at {image_size}x{image_size}, seed {seed}, copied '
                     'from the native phantom builder (data_builders/nnunet/phantom_export.py).',
      'channel_names': {str(c): name for c, name in enumerate(names)},
      'labels': {name: value for value, name in enumerate(class_names)},
      'numTraining': len(cases['train']) + len(cases['validation']),
      'file_ending': ending,
  }
  _write_json(os.path.join(folder, 'dataset.json'), description)
  _write_json(os.path.join(folder, 'splits_final.json'),
              [{'train': cases['train'], 'val': cases['validation']}])
  return folder


def _check(kind, image_size, channels, foreground_classes, split_sizes, slices_per_case,
           spacing) -> dict[str, int]:
  """The split sizes to write, or SettingError for a setting the export cannot make."""
  if kind not in DATASET_NAMES:
    raise SettingError(f'kind={kind!r} is not allowed: one of {sorted(DATASET_NAMES)}.')
  if image_size < phantoms.MIN_IMAGE_SIZE:
    raise SettingError(f'image_size={image_size} is not allowed: at least '
                       f'{phantoms.MIN_IMAGE_SIZE}.')
  if channels not in (1, 2):
    raise SettingError(f'channels={channels} is not allowed: 1, or 2 (adds 1 - x).')
  if foreground_classes is not None and not 1 <= foreground_classes <= MAX_FOREGROUND_CLASSES:
    raise SettingError(f'foreground_classes={foreground_classes} is not allowed: 1 .. '
                       f'{MAX_FOREGROUND_CLASSES}.')
  if slices_per_case < 1 or len(spacing) != 3 or min(spacing) <= 0:
    raise SettingError(f'slices_per_case={slices_per_case}, spacing={tuple(spacing)}: at least '
                       '1 slice per case, and three positive voxel sizes (x, y, z) in mm.')
  sizes = dict(phantoms.DEFAULT_SPLIT_SIZES[kind])
  unknown = set(split_sizes or {}) - set(SPLITS)
  if unknown:
    raise SettingError(f'split_sizes names {sorted(unknown)}; the splits are {SPLITS}.')
  sizes.update(split_sizes or {})
  if min(sizes.values()) < 1:
    raise SettingError(f'split_sizes={sizes}: every split needs at least one example.')
  return sizes


def class_map(kind: str, foreground_classes: int):
  """(function native label -> exported label, class names with background first)."""
  native = phantoms.CLASS_NAMES[kind]
  if foreground_classes == 3:
    return (lambda label: label), native
  if foreground_classes == 1:
    return (lambda label: (label > 0).astype(np.uint8)), ('background', 'foreground')
  if foreground_classes == 2:
    table, names = _MERGED[kind]
    return (lambda label: np.asarray(table, np.uint8)[label]), ('background',) + names
  split = foreground_classes - 3  # classes 1 .. split get a right-half class of their own

  def remap(label):
    result = label.copy()
    right = np.arange(label.shape[-1]) >= label.shape[-1] / 2
    for c in range(1, split + 1):
      result[(label == c) & right] = 3 + c
    return result

  names = [f'{name}_image_left' if 1 <= c <= split else name for c, name in enumerate(native)]
  return remap, tuple(names) + tuple(f'{native[c]}_image_right' for c in range(1, split + 1))


def _write(path, planes, spacing, label=False, eight_bit=False) -> None:
  """One file: a PNG of planes[0] (chest), or a NIfTI volume whose slice k is planes[k].T."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if path.endswith('.png'):
    plane = np.asarray(planes[0], np.float64)  # float32 * 65535 would round some pixels off
    if label:
      values = plane.astype(np.uint8)
    elif eight_bit:
      values = np.round(plane * 255.0).astype(np.uint8)
    else:
      values = np.round(plane * 65535.0).astype(np.uint16)  # a 16-bit gray PNG
    Image.fromarray(values).save(path)
    return
  volume = np.stack([plane.T for plane in planes], axis=-1)  # (x, y, z)
  volume = volume.astype(np.uint8 if label else np.float32)
  affine = np.diag([float(s) for s in spacing] + [1.0])
  nibabel.save(nibabel.Nifti1Image(volume, affine), path)


def _write_json(path, value) -> None:
  with open(path, 'w', encoding='utf-8') as file:
    json.dump(value, file, indent=2)
    file.write('\n')


# ----------------------------------------------------------------------------- command line


class _ArgumentParser(argparse.ArgumentParser):
  """argparse that says what is wrong in pejax's one line (it would print the usage too)."""

  def error(self, message):
    raise SettingError(f'{message} (python -m data_builders.nnunet.phantom_export --help lists '
                       'the options).')


def _cases(text: str) -> tuple[int, int, int]:
  try:
    counts = tuple(int(part) for part in text.split(','))
  except ValueError:
    counts = ()
  if len(counts) != 3:
    raise argparse.ArgumentTypeError(f'--cases={text}: give TRAIN,VALIDATION,TEST case counts, '
                                     'e.g. --cases=8,2,2')
  return counts


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
  parser = _ArgumentParser(description='Write a pejax phantom as an nnU-Net raw dataset.')
  parser.add_argument('--kind', required=True, choices=sorted(DATASET_NAMES))
  parser.add_argument('--output', required=True, help='folder to write DatasetXXX_Name into')
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--channels', type=int, default=1, help="2 adds 1 - x, named 'inverted'")
  parser.add_argument('--foreground_classes', type=int, default=3, help='1 .. 6; native 3')
  parser.add_argument('--cases', type=_cases, default=None,
                      help='TRAIN,VALIDATION,TEST cases (cardiac: volumes); default native')
  parser.add_argument('--slices_per_case', type=int, default=8, help='cardiac only')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--channel_name', default=None,
                      help="name of channel 0 (chooses nnU-Net's normalization)")
  args = parser.parse_args(argv)
  split_sizes = None
  if args.cases:
    per_case = args.slices_per_case if args.kind == CARDIAC else 1
    split_sizes = {split: count * per_case for split, count in zip(SPLITS, args.cases)}
  folder = write_phantom_dataset(
      args.kind, args.output, image_size=args.image_size, channels=args.channels,
      foreground_classes=args.foreground_classes, split_sizes=split_sizes,
      slices_per_case=args.slices_per_case, seed=args.seed, channel_name=args.channel_name)
  print(f'Wrote {folder}; train pejax on it with --config.dataset=nnunet:{folder}')


if __name__ == '__main__':
  main()
