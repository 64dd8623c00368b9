"""The sweep report on a fake sweep folder whose Dice numbers are known by construction."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from pejax.reporting import aggregation, claims, report, sections
from pejax import storage
from pejax.runs import run_files

from helpers import CLASS_OFFSETS, SEED_OFFSETS, block, write_run, write_setting

# JSRT U-Net, zero padding: (λ, clean, noise drop, shift drop). PE drops less under noise,
# more with larger λ, costs clean Dice and does worse under shifts: those claims hold.
JSRT_TABLE1 = ((None, 0.96, 0.40, 0.1), (1.0, 0.955, 0.30, 0.2), (10.0, 0.95, 0.20, 0.3),
               (256.0, 0.94, 0.10, 0.4))
# JSRT U-Net, reflection padding: (λ, clean, noise drop, shift drop); noise Dice without PE
# 0.40 (zero padding 0.56), with λ=256 0.89 (zero padding 0.84).
JSRT_REFLECT = ((None, 0.95, 0.55, 0.1), (256.0, 0.93, 0.04, 0.4))
# Cardiac phantom: here PE does *better* under shifts, so the shift claim does not hold.
CARDIAC = ((None, 0.90, 0.30, 0.4), (256.0, 0.88, 0.10, 0.1))
# Small CNN on JSRT: PE far above no PE and the averaged mask.
JSRT_CNN4 = ((None, 0.50), (256.0, 0.90))
# Table 2 (two seeds): training images -> (no PE, λ=256) clean Dice.
JSRT_TABLE2 = {10: (0.88, 0.90), 5: (0.87, 0.88)}
# Jitter (chest phantom, two seeds): (model, jitter) -> per-seed clean Dice (no PE, λ=256).
JITTER = {('cnn4', 0.0): ((0.49, 0.51), (0.88, 0.94)), ('cnn4', 0.2): ((0.49, 0.51), (0.60, 0.60)),
          ('unet', 0.0): ((0.95, 0.95), (0.96, 0.95)), ('unet', 0.2): ((0.95, 0.95), (0.94, 0.94))}


def build_sweep(root):
  for pe, clean, noise_drop, shift_drop in JSRT_TABLE1:
    # λ=256 stopped while still improving in one seed: every verdict on it says so.
    write_setting(root, f'jsrt_unet_zeros_pe{pe}', clean, pe=pe, noise_drop=noise_drop,
                  shift_drop=shift_drop, dataset='jsrt',
                  unconverged_seeds=(1,) if pe == 256.0 else ())
  # Reflection padding: less robust than zero padding without PE, more robust with λ=256 (as
  # on the real JSRT files), so the Figure 4 claim holds, and a comparison of the wrong pairs
  # (zero padding without PE − with PE) would not.
  for pe, clean, noise_drop, shift_drop in JSRT_REFLECT:
    write_setting(root, f'jsrt_unet_reflect_pe{pe}', clean, pe=pe, noise_drop=noise_drop,
                  shift_drop=shift_drop, dataset='jsrt', padding='reflect')
  for pe, clean in JSRT_CNN4:
    write_setting(root, f'jsrt_cnn4_pe{pe}', clean, pe=pe, dataset='jsrt', model='cnn4')
  for size, (without, with_pe) in JSRT_TABLE2.items():
    write_setting(root, f'jsrt_unet_n{size}_nope', without, seeds=2, dataset='jsrt',
                  num_train_examples=size)
    write_setting(root, f'jsrt_unet_n{size}_pe256', with_pe, seeds=2, pe=256.0, dataset='jsrt',
                  num_train_examples=size)
  # The phantoms one folder deeper: runs are found recursively.
  phantoms = os.path.join(root, 'phantoms')
  for pe, clean, noise_drop, shift_drop in CARDIAC:
    write_setting(phantoms, f'cardiac_pe{pe}', clean, seeds=2, pe=pe, noise_drop=noise_drop,
                  shift_drop=shift_drop, dataset='phantom_cardiac')
  for (model, jitter), (without, with_pe) in JITTER.items():
    for seed in range(2):
      name = f'chest_{model}_jitter{jitter}_seed{seed}'
      write_run(os.path.join(phantoms, name + '_nope'), clean=without[seed], seed=seed,
                dataset='phantom_chest', model=model, position_jitter=jitter, use_pe=False)
      write_run(os.path.join(phantoms, name + '_pe256'), clean=with_pe[seed], seed=seed,
                dataset='phantom_chest', model=model, position_jitter=jitter, use_pe=True,
                pe_scale=256.0)
  # An unfinished run: settings written, no results yet.
  storage.write_json(os.path.join(root, 'jsrt_unet_unfinished', 'config.json'), {'seed': 9})


def collect_runs(root):
  return run_files.scan_runs(root)[0]


NUM_RUNS = 4 * 3 + 2 * 3 + 2 * 3 + 2 * 2 * 2 + 2 * 2 + 4 * 2 * 2


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('sweep'))
  build_sweep(root)
  path = report.write_report(root, title='Fake sweep')
  with open(path) as f:
    return root, path, f.read()


def stat_text(values):
  """Mean ± sample std [95% t-interval of the mean], as the report prints it."""
  mean, std = np.mean(values), np.std(values, ddof=1)
  half = scipy.stats.t.ppf(0.975, len(values) - 1) * std / np.sqrt(len(values))
  return f'{mean:.4f} ± {std:.4f} [{mean - half:.4f}, {mean + half:.4f}]'


def table_row(text, first_cell):
  for line in text.splitlines():
    if line.startswith(f'| {first_cell} |'):
      return [cell.strip() for cell in line.strip('|').split('|')]
  raise AssertionError(f'no table row {first_cell!r} in:\n{text}')


def test_collect_runs_skips_unfinished(sweep):
  root, _, text = sweep
  runs, unfinished = run_files.scan_runs(root)
  assert len(runs) == NUM_RUNS
  assert unfinished == ['jsrt_unet_unfinished']
  assert len(collect_runs(root)) == NUM_RUNS
  assert all(run.robustness for run in runs)
  assert f'from {NUM_RUNS} finished runs' in text
  assert '1 unfinished run skipped (jsrt_unet_unfinished)' in text


def test_grouping_and_seed_statistics(sweep):
  root, _, _ = sweep
  settings = aggregation.group_runs(collect_runs(root))
  table1 = aggregation.select(settings, dataset='jsrt', model='unet', padding='zeros',
                         num_train_examples=None, position_jitter=None)
  assert [s.pe for s in table1] == [None, 1.0, 10.0, 256.0]
  without = table1[0]
  assert sorted(without.seeds) == [0, 1, 2]
  expected = [0.96 + o for o in SEED_OFFSETS[3]]
  assert without.test().mean == pytest.approx(np.mean(expected))
  assert without.test().std == pytest.approx(np.std(expected, ddof=1))
  assert without.test().n == 3
  # Every run is in exactly one setting.
  assert sum(len(s.runs) for s in settings) == NUM_RUNS


def test_table1_values_and_paper_column(sweep):
  _, _, text = sweep
  jsrt = block(text, '**JSRT** — U-Net')
  assert '| model | Dice | n | converged | Dice right_lung | Dice left_lung | Dice heart | paper |' in jsrt
  assert table_row(jsrt, 'averaged mask')[1] == '0.8100 ± 0.0000 [0.8100, 0.8100]'
  assert table_row(jsrt, 'averaged mask')[-3] == '0.8124'
  for pe, clean, _, _ in JSRT_TABLE1:
    name = 'U-Net w/o PE' if pe is None else f'U-Net w/ PE (λ={pe:g})'
    row = table_row(jsrt, name)
    values = [clean + o for o in SEED_OFFSETS[3]]
    assert row[1] == stat_text(values)
    assert row[2] == '3'
    # The fake sweep's λ=256 stopped while still improving in one seed.
    assert row[3] == ('2 of 3' if pe == 256.0 else '3 of 3')
    assert row[4] == stat_text([v + CLASS_OFFSETS[0] for v in values])  # right lung
    paper = claims.PAPER_TABLE1['jsrt'][pe]
    assert row[-3] == f'{paper[0]:.4f} ± {paper[1]:.4f}'
  # A phantom shows the real dataset it mimics, labelled as an analogue.
  cardiac = block(text, '**cardiac phantom** — U-Net')
  assert 'paper (ACDC, analogue)' in cardiac
  assert 'Paper: n/a (phantom)' in cardiac
  assert table_row(cardiac, 'U-Net w/o PE')[-1] == '0.8496 ± 0.0133'


def test_small_cnn_and_table2(sweep):
  _, _, text = sweep
  small = block(text, '**JSRT** — small CNN')
  assert table_row(small, 'small CNN w/o PE')[1] == stat_text([0.5 + o for o in SEED_OFFSETS[3]])
  assert table_row(small, 'small CNN w/o PE')[-3] == '≈ 0.5'
  assert table_row(small, 'small CNN w/ PE (λ=256)')[-3] == '≈ 0.9'
  table2 = block(text, '**JSRT** — U-Net, zero padding; clean test Dice by training-set')
  for size, (without, with_pe) in JSRT_TABLE2.items():
    row = table_row(table2, str(size))
    assert row[1] == stat_text([without + o for o in SEED_OFFSETS[2]])
    assert row[3] == stat_text([with_pe + o for o in SEED_OFFSETS[2]])
    paper = claims.PAPER_TABLE2['jsrt'][size]
    assert row[5::3] == [f'{paper[None][0]:.4f} ± {paper[None][1]:.4f}',
                         f'{paper[256.0][0]:.4f} ± {paper[256.0][1]:.4f}']
  assert table_row(table2, 'all (30)')[1] == stat_text([0.96 + o for o in SEED_OFFSETS[3]])


def test_jitter_benefit_is_paired_by_seed(sweep):
  _, _, text = sweep
  jitter = block(text, '**chest phantom: PE benefit versus position jitter**')
  for (model, value), (without, with_pe) in JITTER.items():
    title = sections.MODEL_TITLES[model]
    rows = [line for line in jitter.splitlines() if line.startswith(f'| {title} | {value:g} |')]
    assert len(rows) == 1, rows
    cells = [cell.strip() for cell in rows[0].strip('|').split('|')]
    assert cells[4] == stat_text(np.subtract(with_pe, without))
    assert cells[5] == '2 / 2'


def test_figures_are_written(sweep):
  root, _, text = sweep
  expected = ['fig2_jsrt_unet.png', 'fig2_phantom_cardiac_unet.png', 'fig3_jsrt_cnn4.png',
              'fig4_jsrt_padding.png', 'fig5_jsrt_shift.png', 'fig5_phantom_cardiac_shift.png',
              'jitter_phantom_chest.png']
  for name in expected:
    path = os.path.join(root, name)
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n', name
    assert f']({name})' in text
  assert not [n for n in os.listdir(root) if n.endswith('.tmp')]


def test_verdicts(sweep):
  root, _, text = sweep
  verdicts = {(v.claim, v.dataset): v for v in
              claims.evaluate_claims(aggregation.group_runs(collect_runs(root)))}
  expected = {
      ('noise_robustness', 'jsrt'): claims.HOLDS,
      ('clean_cost', 'jsrt'): claims.HOLDS,
      ('reflection_padding', 'jsrt'): claims.HOLDS,
      ('shift', 'jsrt'): claims.HOLDS,
      ('small_cnn', 'jsrt'): claims.HOLDS,
      ('small_data', 'jsrt'): claims.HOLDS,
      ('noise_robustness', 'phantom_cardiac'): claims.HOLDS,
      ('shift', 'phantom_cardiac'): claims.FAILS,
      ('reflection_padding', 'phantom_cardiac'): claims.NOT_MEASURED,
      ('small_cnn', 'phantom_cardiac'): claims.NOT_MEASURED,
      # The chest phantom has only jitter runs, outside the paper's settings.
      ('noise_robustness', 'phantom_chest'): claims.NOT_MEASURED,
  }
  for key, status in expected.items():
    assert verdicts[key].status == status, (key, verdicts[key])
  assert 'noise drop: no PE 0.400, PE λ=1 0.300, PE λ=10 0.200, PE λ=256 0.100' in (
      verdicts[('noise_robustness', 'jsrt')].numbers)
  padding = verdicts[('reflection_padding', 'jsrt')].numbers
  assert 'noise Dice zero/reflection padding: no PE 0.560/0.400, PE λ=256 0.840/0.890' in padding
  assert 'gap (zero − reflection) without PE +0.160 [+0.160, +0.160] (3 seeds, per run)' in padding
  assert 'gap without PE − gap with PE λ=256 +0.210 [+0.210, +0.210] (3 seeds, per run)' in padding
  # Every claim is one line in the report, with its rule and one verdict line per dataset.
  verdict_block = text[text.index('## Verdicts'):text.index('## Table 1')]
  for claim in claims.CLAIMS:
    assert f'- **{claim.text}.** Rule: ' in verdict_block
  assert verdict_block.count('  - JSRT: **') == len(claims.CLAIMS)
  assert ('  - JSRT: **holds** (caution: PE λ=256 not converged in 1 of 3 seeds) — noise drop: '
          in verdict_block)
  assert ('  - JSRT: **holds** (caution: zero padding, PE λ=256 not converged in 1 of 3 seeds) — '
          'noise Dice zero/reflection padding' in verdict_block)
  # Claims on settings whose runs all converged carry no caution.
  assert '  - JSRT: **holds** — clean Dice: no PE 0.500, PE λ=256 0.900' in verdict_block
  assert '  - cardiac phantom: **does not hold** — mean Dice over shifts' in verdict_block


def test_header_and_sections(sweep):
  _, path, text = sweep
  assert path.endswith('report.md')
  assert text.startswith('# Fake sweep\n')
  assert 'image 64×64, width 16, 20 epochs' in text
  assert 'platform cpu' in text and 'ddof=1' in text and '95% interval' in text
  for heading in ('## Table 1', '## Figures 2 and 3', '## Small CNN', '## Table 2',
                  '## Figure 4', '## Figure 5', '## Beyond the paper: position jitter'):
    assert heading in text
  assert '## Other settings' not in text


def test_only_sections_with_runs(tmp_path):
  write_setting(str(tmp_path), 'cnn4', 0.5, seeds=2, dataset='phantom_chest', model='cnn4',
                robustness=False)
  text = open(report.write_report(str(tmp_path))).read()
  assert '## Small CNN' in text
  for heading in ('## Table 1', '## Table 2', '## Figure 4', '## Figure 5', 'position jitter'):
    assert heading not in text
  assert '**not measured**' in text
  assert not [n for n in os.listdir(tmp_path) if n.endswith('.png')]


def test_cli_fails_without_finished_runs(tmp_path):
  storage.write_json(str(tmp_path / 'unfinished' / 'config.json'), {'seed': 0})
  failed = subprocess.run([sys.executable, '-m', 'pejax.reporting', f'--workdir={tmp_path}'],
                          capture_output=True, text=True, timeout=120)
  assert failed.returncode != 0
  assert 'holds no finished run' in failed.stderr
  assert not (tmp_path / 'report.md').exists()


def claim_verdicts(root):
  """{claim name: Verdict} for a folder holding runs of one dataset."""
  settings = aggregation.group_runs(collect_runs(str(root)))
  return {v.claim: v for v in claims.evaluate_claims(settings)}


def test_claims_not_assessed_where_no_model_beats_the_averaged_mask(tmp_path):
  # Every model within LEARNT_MARGIN of the averaged mask (0.81): the noise-robustness claim
  # would "hold" on these numbers, but the models learnt nothing to be robust with.
  for pe, noise_drop in ((None, 0.3), (256.0, 0.0)):
    write_setting(str(tmp_path), f'cardiac_pe{pe}', 0.82, seeds=2, pe=pe, noise_drop=noise_drop,
                  dataset='phantom_cardiac')
  verdicts = claim_verdicts(tmp_path)
  assert verdicts['noise_robustness'].status == claims.NOT_ASSESSED
  assert 'mean Dice 0.820 vs averaged mask 0.810' in verdicts['noise_robustness'].numbers
  assert verdicts['small_cnn'].status == claims.NOT_MEASURED  # no small-CNN runs at all


def test_claims_not_assessed_where_a_class_is_never_found(tmp_path):
  # Mean Dice well above the averaged mask, but the first class no better than the mask's.
  for pe in (None, 256.0):
    write_setting(str(tmp_path), f'cardiac_pe{pe}', 0.95, seeds=2, pe=pe,
                  dataset='phantom_cardiac')
  for folder in os.listdir(tmp_path):
    path = os.path.join(tmp_path, folder, 'results.json')
    results = json.load(open(path))
    first = f'dice_{results["class_names"][0]}'
    results['test'][first] = results['test_averaged_mask'][first]
    storage.write_json(path, results)
  verdicts = claim_verdicts(tmp_path)
  assert verdicts['noise_robustness'].status == claims.NOT_ASSESSED
  assert 'right_ventricle Dice' in verdicts['noise_robustness'].numbers
  assert verdicts['small_cnn'].status == claims.NOT_MEASURED  # no small-CNN runs at all


def two_scale_sweep(root):
  """A U-Net setting (quick scale) and small-CNN settings at 30 epochs: a two-part report."""
  write_setting(str(root), 'unet', 0.95, dataset='phantom_chest')
  write_setting(str(root), 'unet_pe256', 0.93, pe=256.0, noise_drop=0.0,
                dataset='phantom_chest')
  for pe, clean in ((None, 0.30), (256.0, 0.84)):
    write_setting(str(root), f'cnn4_pe{pe}', clean, pe=pe, dataset='phantom_chest',
                  model='cnn4', num_epochs=30)


def test_whether_a_dataset_was_learnt_is_judged_over_every_part(tmp_path):
  # The small CNN (its own scale, 30 epochs) barely beats the averaged mask; the U-Net of the
  # other part learnt the dataset, so the small-CNN claim is assessed, and holds.
  two_scale_sweep(tmp_path)
  text = open(report.write_report(str(tmp_path))).read()
  assert '## Part 2' in text
  assert '  - chest phantom: **holds** — clean Dice: no PE 0.300' in text
  assert '**not assessed**' not in text
  # Judged on the small-CNN part alone, the chest phantom counts as not learnt.
  cnn4_only = [s for s in aggregation.group_runs(collect_runs(str(tmp_path))) if s.model == 'cnn4']
  assert {v.status for v in claims.evaluate_claims(cnn4_only) if v.claim == 'small_cnn'} == {
      claims.NOT_ASSESSED}


def test_a_report_in_parts_lists_every_verdict_in_one_place(tmp_path):
  two_scale_sweep(tmp_path)
  text = open(report.write_report(str(tmp_path))).read()
  summary = text[text.index("## Verdicts on the paper's claims, all parts"):text.index('## Part 1')]
  assert ('  - chest phantom (part 2, 64×64, width 16, 30 epochs): **holds** — clean Dice: no PE '
          '0.300') in summary
  assert ('  - chest phantom (part 1, 64×64, width 16, 20 epochs): **holds** — noise drop: no PE '
          '0.100, PE λ=256 0.000') in summary
  # A claim no part has runs for appears once, as not measured.
  assert ('- **With 5/10 training images PE helps the U-Net (Table 2).**\n  - chest phantom: '
          '**not measured**') in summary
  for claim in claims.CLAIMS:
    assert summary.count(f'- **{claim.text}.**') == 1


def test_a_new_report_removes_the_figures_only_an_old_one_wrote(tmp_path):
  two_scale_sweep(tmp_path)
  report.write_report(str(tmp_path))
  assert os.path.exists(tmp_path / 'fig2_phantom_chest_unet_part1.png')
  assert os.path.exists(tmp_path / 'fig5_phantom_chest_shift_part1.png')
  (tmp_path / 'my_figure.png').write_bytes(b'mine')
  for folder in os.listdir(tmp_path):
    if folder.startswith('cnn4'):
      shutil.rmtree(tmp_path / folder)
  text = open(report.write_report(str(tmp_path))).read()
  assert '## Part' not in text
  pngs = sorted(n for n in os.listdir(tmp_path) if n.endswith('.png'))
  assert pngs == ['fig2_phantom_chest_unet.png', 'fig5_phantom_chest_shift.png', 'my_figure.png']
  assert json.load(open(tmp_path / run_files.FIGURES_FILE)) == {
      'figures': ['fig2_phantom_chest_unet.png', 'fig5_phantom_chest_shift.png']}


def test_claims_compare_per_image_values_from_the_per_case_files(tmp_path):
  """With per-case files, a claim pairs runs by seed and image id: what a seed or an image
  shares between the two settings cancels."""
  rng = np.random.default_rng(0)
  for pe, clean in ((None, 0.95), (256.0, 0.90)):
    write_setting(str(tmp_path), f'unet_pe{pe}', clean, pe=pe, dataset='phantom_chest')
  seed_shift = {seed: 0.05 * rng.normal() for seed in range(3)}
  image_shift = 0.1 * rng.normal(size=40)
  for folder in sorted(os.listdir(tmp_path)):
    clean = 0.90 if 'pe256' in folder else 0.95
    shift = seed_shift[int(folder.split('seed')[1])]
    rows = [{'condition': 'clean', 'level': 0, 'parameter': '', 'id': f'img{i:02d}',
             'dice': clean + shift + image_shift[i] + 0.01 * rng.normal()} for i in range(40)]
    storage.write_csv(os.path.join(tmp_path, folder, run_files.ROBUSTNESS_CASES_CSV),
                      rows, ['condition', 'level', 'parameter', 'id', 'dice'])
  runs = collect_runs(str(tmp_path))
  assert all(len(run.per_image) == 40 and ('clean', 0) in run.per_image['img00']
             for run in runs)
  verdicts = {v.claim: v for v in claims.evaluate_claims(aggregation.group_runs(runs))}
  assert verdicts['clean_cost'].status == claims.HOLDS, verdicts['clean_cost']
  assert '3 seeds × 40 images' in verdicts['clean_cost'].numbers


def test_example_predictions_side_by_side(tmp_path):
  """Each PE setting's first seed with an examples file is a column; a run whose test image
  differs (another test split) is left out."""
  rng = np.random.default_rng(0)
  truth = rng.integers(0, 4, (3, 16, 16)).astype(np.uint8)
  common = {'conditions': np.asarray(['clean', 'gaussian_noise', 'shift_x']),
            'levels': np.asarray([0, 5, 4], np.int32), 'targets': truth,
            'inputs': rng.random((3, 16, 16, 1)).astype(np.float16)}
  for pe, image_id in ((None, 'JPCLN001'), (1.0, 'JPCLN001'), (256.0, 'other')):
    name = 'nope' if pe is None else f'pe{pe:g}'
    for seed in (1, 0):
      folder = tmp_path / f'{name}_seed{seed}'
      write_run(str(folder), clean=0.9, seed=seed, dataset='jsrt', use_pe=pe is not None,
                pe_scale=pe or 1.0)
      if pe != 1.0 or seed == 1:  # λ=1: only seed 1 has examples
        run_files.write_examples(str(folder), dict(
            common, image_id=np.asarray(image_id),
            predictions=np.full((3, 16, 16), seed + (pe or 0) % 3, np.uint8)))
  text = open(report.write_report(str(tmp_path))).read()
  section = text[text.index('## Example predictions'):]
  assert ('test image JPCLN001 (the first with every class), as each model saw it; zero padding, '
          'all training data (no PE: seed 0, PE λ=1: seed 1)') in section
  assert '![JSRT, U-Net: example predictions](examples_jsrt.png)' in section
  with open(tmp_path / 'examples_jsrt.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
