"""The report beyond the paper: the encodings section, the encoding conditions, and the claims
about encodings, on fake runs whose numbers decide each claim."""

import os

from pejax import storage
from pejax.reporting import report
from pejax.reporting.beyond_paper import drop_correlation

from helpers import block, robustness_result, write_setting

CHEST = ['left_lung', 'right_lung', 'heart']


def write_encoding_sweep(root, every_layer_noise_drop=0.05, radial_noise_drop=0.1):
  common = dict(dataset='phantom_chest', model='unet', padding='zeros')
  write_setting(root, 'nope', 0.95, **common)
  write_setting(root, 'pe1', 0.95, pe=1.0, encoding_drop=0.3, **common)
  write_setting(root, 'pe2', 0.94, pe=2.0, encoding_drop=0.3, **common)
  write_setting(root, 'centered1', 0.94, pe=1.0, pe_kind='centered', encoding_drop=0.3, **common)
  write_setting(root, 'radial1', 0.95, pe=1.0, pe_kind='radial', encoding_drop=0.3,
                noise_drop=radial_noise_drop, **common)
  write_setting(root, 'all1', 0.95, pe=1.0, pe_layers='all', encoding_drop=0.4,
                noise_drop=every_layer_noise_drop, shift_drop=0.2, **common)


def verdict_line(text, claim_start):
  section = text[text.index('Verdicts beyond the paper'):]
  index = section.index(claim_start)
  return section[index:section.index('\n- **', index + 1) if '\n- **' in section[index + 1:]
                 else len(section)]


def test_encodings_section_and_claims(tmp_path):
  root = str(tmp_path)
  write_encoding_sweep(root)
  text = open(report.write_report(root)).read()
  table = block(text, '**chest phantom, U-Net: encodings')
  for label in ('| no PE |', '| PE λ=1 |', '| PE λ=2 |', '| centered λ=1 |', '| radial λ=1 |',
                '| PE λ=1, every layer |'):
    assert label in table, label
  assert os.path.exists(os.path.join(root, 'encodings_phantom_chest_shift.png'))
  # Equal numbers at equal span: the range claim holds; the radial run is as robust as linear.
  assert '**holds**' in verdict_line(text, '- **At equal span')
  assert '**holds**' in verdict_line(text, '- **Radial and Fourier')
  # Every layer: half the noise drop (holds), twice the shift drop (less robust: holds).
  assert '**holds**' in verdict_line(text, '- **Coordinates at every 3×3 convolution (CoordConv)')
  assert '**holds**' in verdict_line(text, '- **Coordinates at every 3×3 convolution make')
  # The encoding-only drop is proportional to the real one: r = 1.
  assert '**holds**' in verdict_line(text, '- **The Dice drop when only the encoding shifts')


def test_other_encodings_never_enter_the_papers_comparisons(tmp_path):
  root = str(tmp_path)
  write_encoding_sweep(root)
  text = open(report.write_report(root)).read()
  paper = text[:text.index('Beyond the paper: encodings')]
  for label in ('centered', 'radial', 'every layer'):
    assert label not in paper, label


def test_claims_that_do_not_hold(tmp_path):
  root = str(tmp_path)
  write_encoding_sweep(root, every_layer_noise_drop=0.2, radial_noise_drop=0.3)
  text = open(report.write_report(root)).read()
  assert '**does not hold**' in verdict_line(text, '- **Radial and Fourier')
  assert '**does not hold**' in verdict_line(
      text, '- **Coordinates at every 3×3 convolution (CoordConv)')


def test_drop_correlation():
  grid = robustness_result(0.9, 0.1, 0.2, CHEST, encoding_drop=0.1)
  assert drop_correlation(grid) == 1.0
  flat = robustness_result(0.9, 0.1, 0.2, CHEST, encoding_drop=0.0)
  assert drop_correlation(flat) != drop_correlation(flat)   # NaN: no drop to track


def probe_json(first, last, constant=None, levels=5):
  """A probe.json whose content-free SPC rises linearly from `first` to `last` over the
  levels (and `constant` on constant images, default the same)."""
  entries = []
  for index in range(levels):
    spc = first + (last - first) * index / (levels - 1)
    scores = lambda v: {'spc_x': v, 'spc_y': v, 'mae_x': 0.1, 'mae_y': 0.1}
    entries.append({'level': index + 1,
                    'name': f'encoder_{index + 1}' if index < levels - 1 else 'bottleneck',
                    'height': 64 >> index, 'width': 64 >> index, 'channels': 16,
                    'content_free': scores(spc), 'constant': scores(spc if constant is None
                                                                    else constant),
                    'noise': scores(spc), 'images': scores(0.9)})
  return {'levels': entries, 'step': 6}  # the step of `helpers.results_json`'s trained network


def write_probed(root, name, probe, seeds=3, **kwargs):
  write_setting(root, name, 0.95, seeds=seeds, **kwargs)
  for seed in range(seeds):
    storage.write_json(os.path.join(root, f'{name}_seed{seed}', 'probe.json'), probe(seed))


def test_probe_claims(tmp_path):
  root = str(tmp_path)
  common = dict(dataset='phantom_chest', model='unet')
  jitter = lambda seed: 0.01 * (seed - 1)
  write_probed(root, 'zeros', lambda s: probe_json(0.3 + jitter(s), 0.9), padding='zeros',
               **common)
  write_probed(root, 'reflect', lambda s: probe_json(0.6, 0.8 + jitter(s)), padding='reflect',
               **common)
  write_probed(root, 'circular', lambda s: probe_json(0.1, 0.2 + jitter(s), constant=0.0),
               padding='circular', **common)
  write_probed(root, 'pe', lambda s: probe_json(0.995 + jitter(s) / 5, 0.9), pe=1.0,
               padding='zeros', **common)
  text = open(report.write_report(root)).read()
  assert '**holds**' in verdict_line(text, '- **Without PE, zero, reflect')
  assert '**holds**' in verdict_line(text, '- **With PE, the first level')
  table = text[text.index('## Position information (probe)'):]
  assert '| phantom_chest, unet, circular, no PE | 1 (encoder_1) | 64×64 | 0.100 / 0.100 | ' \
         '0.000 / 0.000 | 0.900 / 0.900 | 3 |' in table

  # A circular network that holds position on constant images, and PE below the ceiling.
  write_probed(root, 'circular', lambda s: probe_json(0.1, 0.2, constant=0.3 + jitter(s)),
               padding='circular', **common)
  write_probed(root, 'pe', lambda s: probe_json(0.9 + jitter(s), 0.9), pe=1.0,
               padding='zeros', **common)
  text = open(report.write_report(root)).read()
  assert '**does not hold**' in verdict_line(text, '- **Without PE, zero, reflect')
  assert '**does not hold**' in verdict_line(text, '- **With PE, the first level')
