"""The report's tables beside the paper's numbers: the difference of the means, whether the
paper's mean lies in our 95% interval, the small CNN's approximate values, no comparison for
the phantoms, and the scale of our runs beside the paper's; on a fake sweep of known numbers."""

import math

import pytest

from pejax.reporting import paper_comparison, report
from pejax.reporting.paired_statistics import Stat

from helpers import CARDIAC_CLASSES, CLASSES, block, write_run, write_setting

# Every run: 100 epochs of batch 8; write_run gives 30 training images unless told.
SCALE = {'num_epochs': 100, 'batch_size': 8}
SCALE_LINE = ('Our runs: 64×64, width 16, 100 epochs (batch 8, 400 steps on 30 training images{}); '
              'the paper: 256×256, width 64, 100 epochs (batch 20).')


def build_sweep(root):
  """Seeds of three get `clean` ± 0.01 (t-interval ±0.0248), of two ± 0.01 (±0.1271)."""
  write_setting(root, 'jsrt_nope', 0.9573, dataset='jsrt', **SCALE)
  write_run(f'{root}/jsrt_pe1_seed0', clean=0.97, seed=0, dataset='jsrt', use_pe=True,
            pe_scale=1.0, **SCALE)  # one seed: no interval
  write_setting(root, 'jsrt_pe10', 0.99, pe=10.0, dataset='jsrt', **SCALE)
  write_setting(root, 'jsrt_pe256', 0.92, pe=256.0, dataset='jsrt', **SCALE)
  write_setting(root, 'jsrt_n10_nope', 0.8913, seeds=2, dataset='jsrt', num_train_examples=10,
                **SCALE)
  write_setting(root, 'jsrt_n10_pe256', 0.85, pe=256.0, dataset='jsrt', num_train_examples=10,
                **SCALE)
  write_run(f'{root}/jsrt_n5_nope_seed0', clean=0.80, seed=0, dataset='jsrt', use_pe=False,
            num_train_examples=5, **SCALE)
  for dataset, (without, with_pe) in (('jsrt', (0.53, 0.85)), ('acdc', (0.15, 0.60))):
    write_setting(root, f'{dataset}_cnn4_nope', without, dataset=dataset, model='cnn4', **SCALE)
    write_setting(root, f'{dataset}_cnn4_pe256', with_pe, pe=256.0, dataset=dataset,
                  model='cnn4', **SCALE)
  for pe in (None, 256.0):
    write_setting(root, f'chest_unet_pe{pe}', 0.95, pe=pe, dataset='phantom_chest', **SCALE)
    write_setting(root, f'chest_cnn4_pe{pe}', 0.5, pe=pe, dataset='phantom_chest',
                  model='cnn4', **SCALE)
    write_setting(root, f'chest_n10_pe{pe}', 0.88, pe=pe, dataset='phantom_chest',
                  num_train_examples=10, **SCALE)


@pytest.fixture(scope='module')
def text(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('paper_sweep'))
  with pytest.MonkeyPatch.context() as patch:  # write_run knows the classes of these datasets
    patch.setitem(CLASSES, 'acdc', CARDIAC_CLASSES)
    build_sweep(root)
  with open(report.write_report(root, title='Paper sweep')) as f:
    return f.read()


def table(text, title):
  """The table under a bold title: (header cells, {first cell: {header: cell}}, text after it)."""
  section = block(text, title)
  lines = [line for line in section.splitlines() if line.startswith('|')]
  split = [[cell.strip() for cell in line.strip('|').split('|')] for line in lines]
  header = split[0]
  assert all(len(row) == len(header) for row in split), section
  rest = section[section.index(lines[-1]) + len(lines[-1]):]
  return header, {row[0]: dict(zip(header, row)) for row in split[2:]}, rest


def test_table1_difference_and_interval(text):
  header, rows, rest = table(text, '**JSRT** — U-Net, zero padding, all training')
  assert header[-3:] == ['paper', 'ours − paper', 'paper in our 95% interval']
  expected = {  # (paper, ours − paper, in our interval)
      # Seeds 0.9473, 0.9573, 0.9673: [0.9325, 0.9821] holds 0.9673.
      'U-Net w/o PE': ('0.9673 ± 0.0011', '-0.0100', 'yes'),
      'U-Net w/ PE (λ=1)': ('0.9649 ± 0.0012', '+0.0051', '—'),  # one seed
      'U-Net w/ PE (λ=10)': ('0.9637 ± 0.0003', '+0.0263', 'no (paper below)'),  # [0.9652, ...]
      'U-Net w/ PE (λ=256)': ('0.9599 ± 0.0023', '-0.0399', 'no (paper above)'),  # [..., 0.9448]
      # Every run's averaged mask is 0.81: a zero-width interval below the paper's 0.8124.
      'averaged mask': ('0.8124', '-0.0024', 'no (paper above)'),
  }
  for name, cells in expected.items():
    assert tuple(rows[name][h] for h in header[-3:]) == cells, name
  assert rows['U-Net w/o PE']['Dice'] == '0.9573 ± 0.0100 [0.9325, 0.9821]'
  assert SCALE_LINE.format('') in rest


def test_small_cnn_against_approximate_values(text):
  header, rows, rest = table(text, '**JSRT** — small CNN')
  assert header[-3:] == ['paper', 'ours − paper', 'paper in our 95% interval']
  assert [rows['small CNN w/o PE'][h] for h in header[-3:]] == [
      '≈ 0.5', '≈ +0.03', 'n/a (approximate)']
  assert [rows['small CNN w/ PE (λ=256)'][h] for h in header[-3:]] == [
      '≈ 0.9', '≈ -0.05', 'n/a (approximate)']
  assert rows['averaged mask']['ours − paper'] == '-0.0024'
  assert SCALE_LINE.format('') in rest
  _, acdc, _ = table(text, '**ACDC** — small CNN')
  # '< 0.1': whether ours (0.15) is below it, not a difference.
  assert [acdc['small CNN w/o PE'][h] for h in header[-3:]] == [
      '< 0.1', 'ours < 0.1: no', 'n/a (approximate)']
  assert acdc['small CNN w/ PE (λ=256)']['ours − paper'] == '≈ +0.05'
  assert [acdc['averaged mask'][h] for h in header[-3:]] == ['0.158', '+0.6520', 'no (paper below)']


def test_versus_paper_cells():
  three_seeds = Stat(0.05, 0.01, 3, 0.0252, 0.0748)
  assert paper_comparison.versus_paper(three_seeds, '< 0.1') == ['ours < 0.1: yes',
                                                                 'n/a (approximate)']
  assert paper_comparison.versus_paper(three_seeds, (0.05, None)) == ['+0.0000', 'yes']
  assert paper_comparison.versus_paper(Stat(0.0499999, 0.01, 3, 0.0252, 0.0748),
                                       '0.05') == ['+0.0000', 'yes']  # never '-0.0000'
  assert paper_comparison.versus_paper(three_seeds, None) == ['—', '—']
  assert paper_comparison.versus_paper(Stat(math.nan, math.nan, 0), (0.9, 0.01)) == ['—', '—']
  assert paper_comparison.paper_number('≈ 0.55') == ('≈', 0.55)
  assert paper_comparison.paper_number((0.9673, 0.0011)) == ('', 0.9673)


def test_table2_difference_and_interval(text):
  header, rows, rest = table(text, '**JSRT** — U-Net, zero padding; clean test Dice by training-set')
  assert header[5:] == ['paper no PE', 'ours − paper, no PE', 'paper in our 95% interval, no PE',
                        'paper PE λ=256', 'ours − paper, PE λ=256',
                        'paper in our 95% interval, PE λ=256']
  expected = {
      'all (30)': ['0.9673 ± 0.0011', '-0.0100', 'yes', '0.9599 ± 0.0023', '-0.0399',
                   'no (paper above)'],
      # No PE: two seeds, [0.7642, 1.0184]; PE: three seeds 0.84, 0.85, 0.86, [0.8252, 0.8748].
      '10': ['0.8813 ± 0.0175', '+0.0100', 'yes', '0.9020 ± 0.0027', '-0.0520', 'no (paper above)'],
      # One seed without PE, none with: no interval, no difference.
      '5': ['0.8700 ± 0.0170', '-0.0700', '—', '0.8774 ± 0.0055', '—', '—'],
  }
  for size, cells in expected.items():
    assert [rows[size][h] for h in header[5:]] == cells, size
  assert SCALE_LINE.format(', 200 on 10, 100 on 5') in rest


@pytest.mark.parametrize('title, first_cell, paper, steps', [
    ('**chest phantom** — U-Net, zero padding, all training', 'U-Net w/o PE', '0.9673 ± 0.0011', ''),
    ('**chest phantom** — small CNN', 'small CNN w/o PE', '≈ 0.5', ''),
    ('**chest phantom** — U-Net, zero padding; clean test Dice', 'all (30)', '0.9673 ± 0.0011',
     ', 200 on 10')])
def test_phantoms_show_the_analogue_without_a_difference(text, title, first_cell, paper, steps):
  header, rows, rest = table(text, title)
  assert not [h for h in header if 'ours − paper' in h or 'interval' in h]
  analogue = [h for h in header if h.startswith('paper')]
  assert analogue and all(h.startswith('paper (JSRT, analogue)') for h in analogue)
  assert rows[first_cell][analogue[0]] == paper
  cells = [cell for row in rows.values() for name, cell in row.items() if name != 'n']
  assert not [c for c in cells if c[:1] in '+-' or c.startswith(('≈ +', '≈ -', 'ours <', 'yes'))]
  assert 'Paper: n/a (phantom)' in rest
  assert SCALE_LINE.format(steps) in rest  # the scale line stays: the analogue is the paper's
