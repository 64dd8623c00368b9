"""A run keeps its data: a dataset in nnU-Net's format is recorded by its resolved folder, its
files' contents and its split by case (data.json), and evaluating, continuing or probing the run
uses what was recorded. A changed folder is refused in one line that says what changed, before
anything is written; the same files spelled another way, or moved to another place, are the
run's data."""

import json
import os
import shutil

import pytest
from ml_collections import ConfigDict

from data_builders.nnunet import nnunet_dataset_builder, phantom_export, source
from helpers import small_run_config
from pejax import probing, train
from pejax.errors import DamagedFileError, SettingsMismatchError, SourceFileError
from pejax.runs import run_files

SIZE = 16


def twenty_cases(root, seed=0) -> str:
  """20 labelled 2-D chest-phantom cases, all in imagesTr, no splits file: pejax draws the
  test and validation cases itself (seeded)."""
  folder = phantom_export.write_phantom_dataset(
      'chest', str(root), image_size=SIZE, seed=seed,
      split_sizes={'train': 12, 'validation': 4, 'test': 4})
  for kind in ('images', 'labels'):
    test, training = os.path.join(folder, f'{kind}Ts'), os.path.join(folder, f'{kind}Tr')
    for name in os.listdir(test):
      os.rename(os.path.join(test, name), os.path.join(training, name))
    os.rmdir(test)
  for name in ('splits_final.json',):
    if os.path.exists(os.path.join(folder, name)):
      os.remove(os.path.join(folder, name))
  set_num_training(folder, 20)
  return folder


def set_num_training(folder, count):
  path = os.path.join(folder, 'dataset.json')
  description = json.load(open(path))
  description['numTraining'] = count
  json.dump(description, open(path, 'w'))


def config_of(data_dir, dataset):
  return small_run_config(data_dir, dataset=dataset, image_size=SIZE, num_epochs=2,
                          eval_every_epochs=2, num_image_panels=0)


def results_bytes(workdir):
  return open(os.path.join(workdir, run_files.RESULTS_FILE), 'rb').read()


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A small CNN trained from the folder 'place' on 'data/Dataset903_PhantomChest', named by a
  relative path; beside it 'elsewhere' holds another dataset at the same relative path."""
  root = tmp_path_factory.mktemp('identity')
  data_dir = str(root / 'tfds')
  place, elsewhere = root / 'place', root / 'elsewhere'
  folder = twenty_cases(place / 'data')
  twenty_cases(elsewhere / 'data', seed=1)
  relative = 'nnunet:' + os.path.relpath(folder, place)
  workdir = str(root / 'run')
  here = os.getcwd()
  os.chdir(place)
  try:
    results = train.train_and_evaluate(config_of(data_dir, relative), workdir)
  finally:
    os.chdir(here)
  return dict(root=root, data_dir=data_dir, folder=folder, relative=relative, workdir=workdir,
              place=place, elsewhere=elsewhere, results=results)


def test_the_run_records_its_data(trained):
  record = run_files.read_data_record(trained['workdir'])
  assert record['source'] == trained['folder'] and record['dataset'] == trained['relative']
  assert sum(len(cases) for cases in record['splits'].values()) == 20
  assert len(record['splits']['test']) == 4
  assert set(record['files']) >= {'dataset.json'} and len(record['files']) == 1 + 2 * 20
  assert all(len(entry) == 2 and len(entry[1]) == 64 for entry in record['files'].values())


def evaluate(trained, dataset, cwd):
  here = os.getcwd()
  os.chdir(cwd)
  try:
    return train.train_and_evaluate(config_of(trained['data_dir'], dataset), trained['workdir'],
                                    evaluate_only=True)
  finally:
    os.chdir(here)


def test_the_same_relative_path_from_another_folder_is_refused(trained):
  before = results_bytes(trained['workdir'])
  with pytest.raises(SettingsMismatchError) as raised:
    evaluate(trained, trained['relative'], trained['elsewhere'])
  message = str(raised.value)
  assert '\n' not in message
  assert f'was trained on {trained["folder"]}' in message
  assert os.path.join(str(trained['elsewhere']), 'data') in message and 'edited' in message
  assert f'--config.dataset=nnunet:{trained["folder"]}' in message
  assert results_bytes(trained['workdir']) == before


def test_the_same_folder_spelled_as_an_absolute_path_is_the_runs_data(trained):
  results = evaluate(trained, 'nnunet:' + trained['folder'], trained['elsewhere'])
  assert results['test'] == trained['results']['test']
  assert results['dataset_source'] == trained['folder']


def test_a_case_added_to_the_dataset_is_refused_and_nothing_is_rewritten(trained, tmp_path):
  folder = trained['folder']
  before = results_bytes(trained['workdir'])
  added = {}
  for kind, suffix in (('imagesTr', '_0000.png'), ('labelsTr', '.png')):
    first = sorted(os.listdir(os.path.join(folder, kind)))[0]
    added[kind] = os.path.join(folder, kind, 'extra_0001' + suffix)
    shutil.copyfile(os.path.join(folder, kind, first), added[kind])
  set_num_training(folder, 21)
  try:
    with pytest.raises(SettingsMismatchError) as raised:
      evaluate(trained, trained['relative'], trained['place'])
    message = str(raised.value)
    assert f'the files of {folder} changed since the run' in message
    assert '2 files added (imagesTr/extra_0001_0000.png, labelsTr/extra_0001.png)' in message
    assert '1 file edited (dataset.json)' in message
    assert results_bytes(trained['workdir']) == before
    # The training command is refused the same way, before it reads or writes anything.
    with pytest.raises(SettingsMismatchError, match='changed since the run'):
      train.train_and_evaluate(config_of(trained['data_dir'], 'nnunet:' + folder),
                               trained['workdir'])
  finally:
    for path in added.values():
      os.remove(path)
    set_num_training(folder, 20)


def test_a_moved_folder_is_named_and_taken_at_its_new_place(trained, tmp_path):
  folder = trained['folder']
  moved = str(tmp_path / 'moved' / os.path.basename(folder))
  # A copy without the files' times, as a copy to another machine makes, then the original gone.
  shutil.copytree(folder, moved, copy_function=shutil.copyfile)
  shutil.rmtree(folder)
  try:
    with pytest.raises(SettingsMismatchError) as raised:
      evaluate(trained, trained['relative'], trained['place'])
    message = str(raised.value)
    assert f'{folder} no longer exists: if the folder moved' in message
    assert '--config.dataset=nnunet:<its new path>' in message
    assert 'delete' not in message
    results = evaluate(trained, 'nnunet:' + moved, tmp_path)
    assert results['test'] == trained['results']['test']
    assert run_files.read_data_record(trained['workdir'])['source'] == moved
    assert "for a sweep config, --config=<config>.py:nnunet:<its new path>" in message
    # The probe reads the data at the place recorded now.
    assert probing.run_dataset(trained['workdir'],
                               ConfigDict({'dataset': trained['relative']})) == 'nnunet:' + moved
  finally:
    shutil.copytree(moved, folder)
    evaluate(trained, trained['relative'], trained['place'])  # recorded back at its place


def test_a_lost_data_json_is_replaced_by_the_checkpoints_record(trained, tmp_path):
  copy = str(tmp_path / 'run')
  shutil.copytree(trained['workdir'], copy)
  os.remove(os.path.join(copy, run_files.DATA_FILE))
  before = results_bytes(copy)
  here = os.getcwd()
  os.chdir(trained['elsewhere'])  # where the relative path names another dataset
  try:
    with pytest.raises(SettingsMismatchError) as raised:
      train.train_and_evaluate(config_of(trained['data_dir'], trained['relative']), copy,
                               evaluate_only=True)
  finally:
    os.chdir(here)
  assert f'{copy} was trained on {trained["folder"]}' in str(raised.value)
  assert 'the fingerprint of its files differs from the one its checkpoint records' in str(
      raised.value)
  assert results_bytes(copy) == before and not os.path.exists(os.path.join(copy, 'data.json'))
  # Named as the refusal says (its folder's absolute path, from anywhere), the run is evaluated,
  # and data.json written again.
  results = evaluate(dict(trained, workdir=copy), 'nnunet:' + trained['folder'], trained['elsewhere'])
  assert results['test'] == trained['results']['test']
  rewritten = run_files.read_data_record(copy)
  assert rewritten['dataset'] == 'nnunet:' + trained['folder']  # as the command named it
  assert dict(rewritten, dataset=None) == dict(run_files.read_data_record(trained['workdir']),
                                               dataset=None)
  for damaged in ('{}', '[]', '{"dataset": "nnunet:x"'):
    with open(os.path.join(copy, run_files.DATA_FILE), 'w') as file:
      file.write(damaged)
    with pytest.raises(DamagedFileError, match='data.json is damaged'):
      evaluate(dict(trained, workdir=copy), trained['relative'], trained['place'])


def test_a_splits_file_the_build_does_not_read_changes_nothing(trained, tmp_path, monkeypatch):
  preprocessed = tmp_path / 'preprocessed'
  (preprocessed / os.path.basename(trained['folder'])).mkdir(parents=True)
  (preprocessed / os.path.basename(trained['folder']) / 'splits_final.json').write_text('[]')
  monkeypatch.setenv('nnUNet_preprocessed', str(preprocessed))
  # The dataset's own splits are seeded (no splits file beside dataset.json): the one in
  # $nnUNet_preprocessed is read, so it is a change.
  with pytest.raises(SettingsMismatchError, match=r'\$nnUNet_preprocessed/splits_final.json'):
    evaluate(trained, trained['relative'], trained['place'])
  beside = os.path.join(trained['folder'], 'splits_final.json')
  monkeypatch.delenv('nnUNet_preprocessed')
  assert source.source_files(trained['folder'])[1][0] != 'splits_final.json'
  shutil.copyfile(preprocessed / os.path.basename(trained['folder']) / 'splits_final.json', beside)
  try:
    monkeypatch.setenv('nnUNet_preprocessed', str(preprocessed))
    keys = [key for key, _ in source.source_files(trained['folder'])]
    assert 'splits_final.json' in keys and '$nnUNet_preprocessed/splits_final.json' not in keys
  finally:
    os.remove(beside)


def test_a_broken_link_in_the_dataset_is_named_in_one_line(trained, tmp_path):
  link = os.path.join(trained['folder'], 'imagesTr', 'dangling_0000.png')
  os.symlink(str(tmp_path / 'nowhere.png'), link)
  try:
    with pytest.raises(SourceFileError) as raised:
      evaluate(trained, trained['relative'], trained['place'])
    assert str(raised.value).startswith(f'{link} cannot be read (No such file or directory; a '
                                        'broken link')
    with pytest.raises(SourceFileError, match='a broken link'):  # a new run too
      train.train_and_evaluate(config_of(trained['data_dir'], 'nnunet:' + trained['folder']),
                               str(tmp_path / 'new'))
  finally:
    os.remove(link)


def test_an_edit_that_keeps_size_and_time_builds_the_dataset_again(tmp_path):
  folder = twenty_cases(tmp_path / 'data')
  label = os.path.join(folder, 'labelsTr', sorted(os.listdir(os.path.join(folder, 'labelsTr')))[0])
  status = os.stat(label)
  before = nnunet_dataset_builder.make_builder(folder, SIZE).builder_config.name
  data = bytearray(open(label, 'rb').read())
  data[-5] ^= 1  # the PNG's last checksum byte: same size, other contents
  open(label, 'wb').write(bytes(data))
  os.utime(label, ns=(status.st_atime_ns, status.st_mtime_ns))
  assert os.stat(label).st_size == status.st_size
  assert nnunet_dataset_builder.make_builder(folder, SIZE).builder_config.name != before
