"""docs/quickstart.ipynb runs from top to bottom, so that what it shows stays true."""

import os
import shutil

import nbclient
import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quickstart_notebook_runs_from_its_own_folder(tmp_path, monkeypatch):
  """As Jupyter runs it: in the notebook's folder, with its own relative run folder."""
  monkeypatch.setenv('PEJAX_QUICKSTART_EPOCHS', '2')
  monkeypatch.delenv('PEJAX_QUICKSTART_WORKDIR', raising=False)
  folder = tmp_path / 'docs'
  folder.mkdir()
  shutil.copy(os.path.join(REPO, 'docs', 'quickstart.ipynb'), folder)
  notebook = nbformat.read(str(folder / 'quickstart.ipynb'), as_version=4)
  nbclient.NotebookClient(notebook, timeout=900, kernel_name='python3',
                          resources={'metadata': {'path': str(folder)}}).execute()
  outputs = [output for cell in notebook.cells if cell.cell_type == 'code'
             for output in cell.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
  assert 'test Dice' in text and 'of the pixels as in the ground truth' in text
  assert sum('image/png' in o.get('data', {}) for o in outputs) == 2
  assert (folder / 'runs' / 'quickstart' / 'quickstart_curve.png').is_file()
