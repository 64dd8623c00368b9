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

from data_builders.nnunet import phantom_export
from helpers import small_run_config
from pejax import probing, train
from pejax.errors import SettingsMismatchError
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
    assert f'{folder}, which no longer exists' in message
    assert "--config.dataset=nnunet:<the folder's new path>" in message
    assert 'delete' not in message
    results = evaluate(trained, 'nnunet:' + moved, tmp_path)
    assert results['test'] == trained['results']['test']
    assert run_files.read_data_record(trained['workdir'])['source'] == moved
    # The probe reads the data at the place recorded now.
    assert probing.run_dataset(trained['workdir'], ConfigDict({'dataset': trained['relative']}),
                               run_files.read_results(trained['workdir'])) == 'nnunet:' + moved
  finally:
    shutil.copytree(moved, folder)
    evaluate(trained, trained['relative'], trained['place'])  # recorded back at its place
