"""JSRT chest radiographs with the SCR lung and heart masks (manual download).

The images come from the JSRT database and the masks from the SCR database; the terms
of both forbid redistribution, so this builder only reads what the user downloaded and
unzipped below the TFDS manual folder (found recursively, unused files ignored).

Stored per example:
  image: float32 (S, S, 1) in [0, 1], lungs dark (`1 - v / 4095` of the raw 12-bit value),
    resized by area averaging (PIL BOX filter).
  label: uint8 (S, S): 0 background, 1 right lung, 2 left lung, 3 heart. Built at the
    SCR mask resolution (heart drawn last), then resized per class: the covered area of
    each class is averaged over the output pixel and the largest wins (ties go to the
    lower class index), so no label appears where the mask did not have it.
  id: the JSRT image name, e.g. "JPCLN001".
"""

import dataclasses
import re

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

# A damaged or wrong file is the user's to replace: pejax's commands say so in one line.
from data_builders.conventions import (displayed_intensities, read_raw_image, resize_image,
                                       resize_label)
from pejax.errors import SourceFileError

NUM_CLASSES = 4
CLASS_NAMES = ('background', 'right_lung', 'left_lung', 'heart')

# SCR mask folders, in drawing order (heart last: the masks overlap by a few pixels).
# Names are compared lower-case with spaces, '_' and '-' removed ("right lung",
# "right_lung" and "Right-Lung" all match).
_MASK_CLASSES = (('rightlung', 1), ('leftlung', 2), ('heart', 3))
_IGNORED_MASK_FOLDERS = ('rightclavicle', 'leftclavicle')
_MASK_NAMES = {'rightlung': 'right lung', 'leftlung': 'left lung', 'heart': 'heart'}

# JPCLN001.IMG (raw), JPCLN001.IMG.png / JPCLN001.png (converted image or PNG mask),
# JPCLN001.gif (SCR mask).
_FILE_PATTERN = re.compile(r'^(JPC[LN]N\d{3})(\.IMG)?(\.png|\.gif)?$', re.IGNORECASE)

ALL_IDS = tuple([f'JPCLN{i:03d}' for i in range(1, 155)] +
                [f'JPCNN{i:03d}' for i in range(1, 94)])

# The splits below were generated once by `split_recipe()` (numpy 2.4) and are kept as
# literals so that they never change, whatever numpy or this module become.
SPLIT_SEED = 0
SPLIT_SIZES = (('train', 156), ('validation', 23), ('test', 68))


def split_recipe(seed=SPLIT_SEED):
  """Permutes the 247 sorted ids with `np.random.default_rng(seed)`, cuts 156/23/68."""
  order = np.random.default_rng(seed).permutation(len(ALL_IDS))
  shuffled = [ALL_IDS[i] for i in order]
  splits, start = {}, 0
  for name, size in SPLIT_SIZES:
    splits[name] = tuple(sorted(shuffled[start:start + size]))
    start += size
  return splits


TRAIN_IDS = (
    'JPCLN001', 'JPCLN002', 'JPCLN003', 'JPCLN006', 'JPCLN007', 'JPCLN009', 'JPCLN010',
    'JPCLN011', 'JPCLN012', 'JPCLN014', 'JPCLN016', 'JPCLN017', 'JPCLN018', 'JPCLN019',
    'JPCLN021', 'JPCLN024', 'JPCLN026', 'JPCLN028', 'JPCLN029', 'JPCLN031', 'JPCLN035',
    'JPCLN036', 'JPCLN037', 'JPCLN038', 'JPCLN039', 'JPCLN040', 'JPCLN042', 'JPCLN043',
    'JPCLN044', 'JPCLN045', 'JPCLN048', 'JPCLN049', 'JPCLN051', 'JPCLN053', 'JPCLN054',
    'JPCLN055', 'JPCLN056', 'JPCLN058', 'JPCLN061', 'JPCLN065', 'JPCLN066', 'JPCLN069',
    'JPCLN071', 'JPCLN072', 'JPCLN073', 'JPCLN075', 'JPCLN076', 'JPCLN081', 'JPCLN083',
    'JPCLN084', 'JPCLN085', 'JPCLN088', 'JPCLN089', 'JPCLN090', 'JPCLN091', 'JPCLN092',
    'JPCLN093', 'JPCLN094', 'JPCLN095', 'JPCLN098', 'JPCLN099', 'JPCLN100', 'JPCLN101',
    'JPCLN103', 'JPCLN104', 'JPCLN106', 'JPCLN107', 'JPCLN110', 'JPCLN111', 'JPCLN112',
    'JPCLN113', 'JPCLN115', 'JPCLN117', 'JPCLN118', 'JPCLN119', 'JPCLN120', 'JPCLN123',
    'JPCLN124', 'JPCLN125', 'JPCLN127', 'JPCLN130', 'JPCLN131', 'JPCLN132', 'JPCLN133',
    'JPCLN134', 'JPCLN136', 'JPCLN137', 'JPCLN138', 'JPCLN139', 'JPCLN140', 'JPCLN141',
    'JPCLN142', 'JPCLN143', 'JPCLN145', 'JPCLN148', 'JPCLN149', 'JPCLN150', 'JPCLN151',
    'JPCLN152', 'JPCLN153', 'JPCLN154', 'JPCNN001', 'JPCNN002', 'JPCNN004', 'JPCNN006',
    'JPCNN007', 'JPCNN008', 'JPCNN009', 'JPCNN011', 'JPCNN012', 'JPCNN014', 'JPCNN017',
    'JPCNN018', 'JPCNN020', 'JPCNN021', 'JPCNN025', 'JPCNN026', 'JPCNN028', 'JPCNN036',
    'JPCNN037', 'JPCNN039', 'JPCNN040', 'JPCNN041', 'JPCNN044', 'JPCNN045', 'JPCNN046',
    'JPCNN047', 'JPCNN049', 'JPCNN050', 'JPCNN051', 'JPCNN052', 'JPCNN053', 'JPCNN055',
    'JPCNN057', 'JPCNN058', 'JPCNN059', 'JPCNN060', 'JPCNN061', 'JPCNN062', 'JPCNN063',
    'JPCNN065', 'JPCNN067', 'JPCNN068', 'JPCNN069', 'JPCNN070', 'JPCNN071', 'JPCNN075',
    'JPCNN079', 'JPCNN080', 'JPCNN081', 'JPCNN082', 'JPCNN084', 'JPCNN085', 'JPCNN088',
    'JPCNN090', 'JPCNN091',
)

VALIDATION_IDS = (
    'JPCLN004', 'JPCLN005', 'JPCLN020', 'JPCLN023', 'JPCLN041', 'JPCLN067', 'JPCLN080',
    'JPCLN082', 'JPCLN086', 'JPCLN109', 'JPCLN144', 'JPCLN146', 'JPCNN005', 'JPCNN010',
    'JPCNN019', 'JPCNN024', 'JPCNN027', 'JPCNN030', 'JPCNN048', 'JPCNN056', 'JPCNN066',
    'JPCNN074', 'JPCNN087',
)

TEST_IDS = (
    'JPCLN008', 'JPCLN013', 'JPCLN015', 'JPCLN022', 'JPCLN025', 'JPCLN027', 'JPCLN030',
    'JPCLN032', 'JPCLN033', 'JPCLN034', 'JPCLN046', 'JPCLN047', 'JPCLN050', 'JPCLN052',
    'JPCLN057', 'JPCLN059', 'JPCLN060', 'JPCLN062', 'JPCLN063', 'JPCLN064', 'JPCLN068',
    'JPCLN070', 'JPCLN074', 'JPCLN077', 'JPCLN078', 'JPCLN079', 'JPCLN087', 'JPCLN096',
    'JPCLN097', 'JPCLN102', 'JPCLN105', 'JPCLN108', 'JPCLN114', 'JPCLN116', 'JPCLN121',
    'JPCLN122', 'JPCLN126', 'JPCLN128', 'JPCLN129', 'JPCLN135', 'JPCLN147', 'JPCNN003',
    'JPCNN013', 'JPCNN015', 'JPCNN016', 'JPCNN022', 'JPCNN023', 'JPCNN029', 'JPCNN031',
    'JPCNN032', 'JPCNN033', 'JPCNN034', 'JPCNN035', 'JPCNN038', 'JPCNN042', 'JPCNN043',
    'JPCNN054', 'JPCNN064', 'JPCNN072', 'JPCNN073', 'JPCNN076', 'JPCNN077', 'JPCNN078',
    'JPCNN083', 'JPCNN086', 'JPCNN089', 'JPCNN092', 'JPCNN093',
)

SPLIT_IDS = {'train': TRAIN_IDS, 'validation': VALIDATION_IDS, 'test': TEST_IDS}

_DOWNLOAD_HINT = (
    'Download the 247 JSRT images (JPCLN001.IMG ... JPCNN093.IMG) from the JSRT database '
    '(http://db.jsrt.or.jp/eng.php) and the SCR masks (masks/right lung, masks/left lung, '
    'masks/heart) from the SCR database, and unzip both anywhere below the manual folder.')


@dataclasses.dataclass
class JsrtConfig(tfds.core.BuilderConfig):
  """Output size of the stored images and label maps."""
  image_size: int = 256


def _folder_key(name):
  return re.sub(r'[\s_\-]+', '', name.lower())


def _files_below(root):
  """Every file below root, sorted (epath paths have no recursive glob)."""
  return sorted(folder / name for folder, _, names in root.walk() for name in names)


def _read_pil(path):
  with path.open('rb') as f:
    image = Image.open(f)
    image.load()
  return image


class Builder(tfds.core.GeneratorBasedBuilder):
  """JSRT chest radiographs with SCR right lung, left lung and heart masks."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: 156/23/68 split, 4 classes.'}
  BUILDER_CONFIGS = [
      JsrtConfig(name='size_256', image_size=256,
                 description='256x256, the size used in the paper.'),
      JsrtConfig(name='size_128', image_size=128, description='128x128.'),
      JsrtConfig(name='size_64', image_size=64, description='64x64.'),
  ]
  DEFAULT_CONFIG_NAME = 'size_256'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  JSRT and SCR may not be redistributed; download them yourself:
  1. JSRT images: register at http://db.jsrt.or.jp/eng.php and download the 247 chest
     radiographs (JPCLN001.IMG ... JPCLN154.IMG, JPCNN001.IMG ... JPCNN093.IMG).
  2. SCR masks: download the SCR database masks (masks/right lung, masks/left lung,
     masks/heart; GIF files named like the images).
  Unzip both archives as they come anywhere below the manual folder (by default
  ~/tensorflow_datasets/downloads/manual/). PNG copies of the images (JPCLN001.png,
  JPCLN001.IMG.png; taken as already lungs-dark) and of the masks are accepted too.
  """

  # Sizes of the official files; tests shrink them to keep fake data small.
  RAW_IMAGE_SIZE = 2048
  MASK_SIZE = 1024
  RAW_MAX_VALUE = 4095

  def __init__(self, *, file_format=None, **kwargs):
    # The project reads with `as_data_source`, which needs ArrayRecord: make it the
    # default, `tfds build` included.
    super().__init__(file_format=file_format or 'array_record', **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(
                shape=(size, size, 1), dtype=np.float32,
                doc='Radiograph in [0, 1], lungs dark.'),
            'label': tfds.features.Tensor(
                shape=(size, size), dtype=np.uint8,
                doc='0 background, 1 right lung, 2 left lung, 3 heart.'),
            'id': tfds.features.Text(doc='JSRT image name, e.g. JPCLN001.'),
        }),
        supervised_keys=('image', 'label'),
        homepage='http://db.jsrt.or.jp/eng.php',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError as e:
      raise FileNotFoundError(
          f'JSRT: the manual folder is missing or empty. {_DOWNLOAD_HINT}\n{e}') from e
    images, masks = self._find_files(manual_dir)
    self._check_complete(manual_dir, images, masks)
    return {
        split: self._generate_examples(ids, images, masks)
        for split, ids in SPLIT_IDS.items()
    }

  def _find_files(self, manual_dir):
    """Maps each id to its image file and to its mask file per structure."""
    found = {}  # (kind, id) -> list of paths
    for path in _files_below(manual_dir):
      match = _FILE_PATTERN.match(path.name)
      if not match:
        continue
      image_id = match.group(1).upper()
      is_raw = bool(match.group(2)) and not match.group(3)
      extension = (match.group(3) or '').lower()
      folders = [_folder_key(p) for p in path.relative_to(manual_dir).parts[:-1]]
      structure = next((f for f in reversed(folders)
                        if f in _MASK_NAMES or f in _IGNORED_MASK_FOLDERS), None)
      if structure in _IGNORED_MASK_FOLDERS:
        continue
      if structure:
        if extension in ('.gif', '.png'):
          found.setdefault((structure + extension, image_id), []).append(path)
      elif is_raw:
        found.setdefault(('raw', image_id), []).append(path)
      elif extension == '.png':
        found.setdefault(('png', image_id), []).append(path)
    for (kind, image_id), paths in found.items():
      if len(paths) > 1:
        listed = '\n  '.join(str(p) for p in paths)
        raise SourceFileError(
            f'JSRT: {image_id} ({kind}) was found more than once:\n  {listed}\n'
            'Keep one copy below the manual folder.')

    def first_of(kinds, image_id):
      for kind in kinds:  # official format first, converted copies after
        if (kind, image_id) in found:
          return found[(kind, image_id)][0]
      return None

    images = {i: first_of(('raw', 'png'), i) for i in ALL_IDS}
    masks = {(s, i): first_of((s + '.gif', s + '.png'), i)
             for s, _ in _MASK_CLASSES for i in ALL_IDS}
    return ({i: p for i, p in images.items() if p is not None},
            {k: p for k, p in masks.items() if p is not None})

  def _check_complete(self, manual_dir, images, masks):
    missing = [i for i in ALL_IDS if i not in images]
    if missing:
      raise FileNotFoundError(
          f'JSRT: found {len(images)} of the {len(ALL_IDS)} expected images below '
          f'{manual_dir}; missing {_first_few(missing)}. Expected raw files such as '
          f'{missing[0]}.IMG (or PNG copies {missing[0]}.png). {_DOWNLOAD_HINT}')
    missing_masks = [(s, i) for i in ALL_IDS for s, _ in _MASK_CLASSES
                     if (s, i) not in masks]
    if missing_masks:
      structure, image_id = missing_masks[0]
      described = [f'{_MASK_NAMES[s]} of {i}' for s, i in missing_masks]
      raise FileNotFoundError(
          f'JSRT: image {images[image_id]} has no "{_MASK_NAMES[structure]}" mask: '
          f'expected a file like masks/{_MASK_NAMES[structure]}/{image_id}.gif below '
          f'{manual_dir}. Missing masks ({len(missing_masks)}): {_first_few(described)}. '
          'Unzip the complete SCR masks archive there.')

  def _generate_examples(self, ids, images, masks):
    size = self.builder_config.image_size
    for image_id in ids:
      image = self._read_image(images[image_id])
      label = self._read_label([(masks[(s, image_id)], c) for s, c in _MASK_CLASSES])
      yield image_id, {
          # BOX averages areas when shrinking a radiograph.
          'image': np.clip(resize_image(image, size, Image.Resampling.BOX), 0.0, 1.0)[..., None],
          'label': resize_label(label, size),
          'id': image_id,
      }

  def _read_image(self, path):
    """Returns the radiograph as float32 in [0, 1] with lungs dark."""
    if path.suffix.lower() == '.png':
      return _read_png_image(path)
    return read_raw_image(path, self.RAW_IMAGE_SIZE, self.RAW_MAX_VALUE)

  def _read_label(self, masks_and_classes):
    label = np.zeros((self.MASK_SIZE, self.MASK_SIZE), np.uint8)
    for path, class_index in masks_and_classes:  # heart last: it wins overlaps
      label[self._read_mask(path)] = class_index
    return label

  def _read_mask(self, path):
    try:
      mask = _read_pil(path)
    except Exception as e:  # PIL raises several types for damaged files
      raise SourceFileError(f'JSRT: cannot read the mask {path} ({e}); unzip it again.') from e
    if mask.size != (self.MASK_SIZE, self.MASK_SIZE):
      raise SourceFileError(
          f'JSRT: the mask {path} is {mask.size[0]}x{mask.size[1]} pixels; SCR masks '
          f'are {self.MASK_SIZE}x{self.MASK_SIZE}. Use the masks of the SCR database.')
    # GIF masks are palette images: convert to gray levels, then split at half the
    # maximum (0/255 masks and 0/1 copies both work).
    values = np.asarray(mask.convert('L'))
    return values > max(int(values.max()), 1) / 2


def _read_png_image(path):
  """PNG copies are taken as displayed (lungs dark), scaled by the dtype maximum."""
  try:
    image = _read_pil(path)
  except Exception as e:  # PIL raises several types for damaged files
    raise SourceFileError(f'JSRT: cannot read the image {path} ({e}); download or unzip it '
                          'again.') from e
  values = displayed_intensities(image)
  if values.shape[0] != values.shape[1]:
    raise SourceFileError(
        f'JSRT: the image {path} is {values.shape[1]}x{values.shape[0]}; JSRT images '
        'are square: use the file of the JSRT database (or a PNG copy of it).')
  return np.clip(values, 0.0, 1.0)


def _first_few(items, count=5):
  shown = ', '.join(items[:count])
  return shown + (f' and {len(items) - count} more' if len(items) > count else '')
