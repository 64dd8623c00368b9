"""The code's structure rules: light configs, a compute core without TensorFlow, no import
cycle, and size limits that keep modules and functions readable."""

import ast
import glob
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, 'pejax')
HEAVY = ('jax', 'jaxlib', 'flax', 'optax', 'orbax', 'clu', 'tensorflow', 'tensorflow_datasets')
TENSORFLOW = ('tensorflow', 'tensorflow_datasets', 'clu')
# Modules that must run where only jax/flax/optax/numpy are installed (a bare GPU image).
COMPUTE_CORE = ('positional', 'layers', 'fast_conv', 'models', 'steps', 'metrics', 'corruptions',
                'robustness', 'surface_distance')
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def loaded_after(code: str) -> set[str]:
  """Top-level package names a fresh interpreter has loaded after running `code`."""
  probe = code + '\nimport sys\nprint(" ".join(sorted({m.split(".")[0] for m in sys.modules})))'
  output = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
  assert output.returncode == 0, output.stderr[-3000:]
  return set(output.stdout.split())


def config_files() -> list[str]:
  return sorted(glob.glob(os.path.join(REPO, 'configs', '**', '*.py'), recursive=True))


def test_every_config_loads_without_heavy_libraries():
  files = [path for path in config_files() if not path.endswith('__init__.py')]
  assert len(files) >= 14
  code = 'import importlib.util, inspect\n'
  for index, path in enumerate(files):
    code += (f'spec = importlib.util.spec_from_file_location("config{index}", {path!r})\n'
             'module = importlib.util.module_from_spec(spec)\n'
             'spec.loader.exec_module(module)\n'
             'module.get_config()\n'
             'if inspect.signature(module.get_config).parameters:\n'
             '  module.get_config("quick")\n')
  loaded = loaded_after(code)
  assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize('module', COMPUTE_CORE)
def test_compute_core_imports_no_tensorflow_tfds_or_clu(module):
  loaded = loaded_after(f'import pejax.{module}')
  assert 'pejax' in loaded
  assert not loaded & set(TENSORFLOW), sorted(loaded & set(TENSORFLOW))


def pejax_imports(path: str) -> set[str]:
  """The pejax modules a file imports, at its top or inside functions."""
  names = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names if alias.name.startswith('pejax.')}
    elif isinstance(node, ast.ImportFrom) and node.module:
      if node.module == 'pejax':
        names |= {f'pejax.{alias.name}' for alias in node.names}
      elif node.module.startswith('pejax.'):
        names.add(node.module)
  return {name.split('.')[1] for name in names}


def import_graph() -> dict[str, set[str]]:
  modules = {os.path.splitext(os.path.basename(p))[0]: p
             for p in glob.glob(os.path.join(PACKAGE, '*.py')) if not p.endswith('__init__.py')}
  return {name: pejax_imports(path) & set(modules) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """A cycle of the graph as a list of nodes, or None (depth-first search)."""
  state = {}

  def visit(node, path):
    state[node] = 'open'
    for successor in sorted(graph[node]):
      if state.get(successor) == 'open':
        return path[path.index(successor):] + [successor]
      if successor not in state:
        cycle = visit(successor, path + [successor])
        if cycle:
          return cycle
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node, [node])
      if cycle:
        return cycle
  return None


def test_the_package_has_no_import_cycle():
  graph = import_graph()
  assert {'train', 'configuration', 'report', 'claims'} <= set(graph)
  assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph))


def test_cycle_finder_finds_cycles():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


def test_pure_modules_import_only_what_they_need():
  graph = import_graph()
  assert graph['sweep'] <= {'configuration', 'errors', 'choices'}
  assert graph['configuration'] <= {'choices', 'errors', 'datasets'}
  assert graph['choices'] == set() and graph['errors'] == set()
  for module in COMPUTE_CORE:
    assert not graph[module] & {'train', 'report', 'claims', 'datasets', 'workdir', 'cli'}, module


def test_modules_and_functions_stay_short():
  long_modules, long_functions = [], []
  for path in sorted(glob.glob(os.path.join(PACKAGE, '*.py'))):
    source = open(path).read()
    name = os.path.relpath(path, REPO)
    if source.count('\n') > MAX_MODULE_LINES:
      long_modules.append(f'{name}: {source.count(chr(10))} lines')
    for node in ast.walk(ast.parse(source)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > MAX_FUNCTION_LINES:
          long_functions.append(f'{name}:{node.lineno} {node.name}: {length} lines')
  assert not long_modules, long_modules
  assert not long_functions, long_functions


def test_code_passes_the_linter():
  """The house style of pyproject.toml's [tool.ruff] (also run on its own by .ci/run)."""
  output = subprocess.run([sys.executable, '-m', 'ruff', 'check', '--no-cache', '.'],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
  assert output.returncode == 0, output.stdout[-3000:] + output.stderr[-3000:]
