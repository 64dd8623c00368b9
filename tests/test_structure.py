"""The code's structure rules: which part may import which (`ALLOWED`, written down once and
checked both in the source and in fresh interpreters), no import cycle anywhere, the heavy
libraries each part must not load, light configs, and short functions and modules."""

import ast
import glob
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The shared small modules at the top of pejax, which every sub-package may use.
FOUNDATION = ('pejax.errors', 'pejax.choices', 'pejax.configuration', 'pejax.storage',
              'pejax.runtime', 'pejax.sweep', 'pejax.drawing')
# The one table of allowed imports between the parts of the code (a sub-package, a top-level
# module, the builders, the configs or the benchmarks), besides a part's imports of itself.
ALLOWED = {
    'pejax.errors': set(),
    'pejax.choices': set(),
    'pejax.configuration': {'pejax.choices', 'pejax.errors'},
    'pejax.storage': {'pejax.configuration', 'pejax.errors'},
    'pejax.runtime': {'pejax.errors'},
    'pejax.sweep': {'pejax.choices', 'pejax.configuration', 'pejax.errors'},
    'pejax.drawing': {'pejax.storage'},
    # The TFDS builders and their shared conventions: pejax's error types only.
    'data_builders': {'pejax.errors'},
    # The compute core: JAX, Flax, Optax and NumPy.
    'pejax.models': {'pejax.choices', 'pejax.errors'},
    'pejax.data': {*FOUNDATION, 'data_builders', 'pejax.models'},
    'pejax.evaluation': {*FOUNDATION, 'pejax.models', 'pejax.data'},
    'pejax.runs': {*FOUNDATION, 'pejax.evaluation'},
    'pejax.reporting': {*FOUNDATION, 'pejax.evaluation', 'pejax.runs'},
    'pejax.inference': {*FOUNDATION, 'data_builders', 'pejax.models', 'pejax.runs'},
    # The entry points: training wires every part; the command line and `pejax.load` on top.
    'pejax.train': {*FOUNDATION, 'pejax.models', 'pejax.data', 'pejax.evaluation', 'pejax.runs',
                    'pejax.reporting'},
    # --mode=probe: a trained run restored as `pejax.load` does, probed and written.
    'pejax.probing': {*FOUNDATION, 'pejax.models', 'pejax.data', 'pejax.evaluation', 'pejax.runs',
                      'pejax.inference'},
    'pejax.cli': {*FOUNDATION, 'pejax.models', 'pejax.train', 'pejax.inference', 'pejax.reporting',
                  'pejax.probing'},
    'pejax': {'pejax.inference'},
    'configs': {'pejax.configuration', 'pejax.sweep'},
    'benchmarks': {*FOUNDATION, 'pejax.models', 'pejax.data', 'pejax.evaluation', 'pejax.runs',
                   'pejax.reporting', 'pejax.train', 'pejax.cli', 'data_builders', 'configs'},
}
# Libraries a part must not load, even through the parts it imports.
TENSORFLOW = ('tensorflow', 'tensorflow_datasets', 'clu', 'tensorboard')
JAX = ('jax', 'jaxlib', 'flax', 'optax', 'orbax')
FORBIDDEN = {
    'pejax.models': TENSORFLOW + ('matplotlib', 'ml_collections'),
    'pejax.inference': TENSORFLOW + ('matplotlib',),    # pejax.load and prediction
    'pejax.reporting': JAX,
    'configs': JAX + TENSORFLOW,
    'pejax.configuration': JAX + TENSORFLOW,
    'pejax.sweep': JAX + TENSORFLOW,
    'pejax.storage': JAX + TENSORFLOW,
    'pejax.drawing': JAX + TENSORFLOW,
}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def part_of(module: str) -> str:
  """The part of the code (a key of `ALLOWED`) a dotted module name belongs to."""
  parts = module.split('.')
  if parts[0] == 'pejax' and len(parts) > 1 and parts[1] == 'configs':
    return 'configs'
  if parts[0] != 'pejax':
    return parts[0]
  if len(parts) == 1 or parts[1] == '__init__':
    return 'pejax'
  return '.'.join(parts[:2])


def source_modules() -> dict[str, str]:
  """Every module of the checkout's code by dotted name (configs under their installed name)."""
  modules = {}
  for folder in ('pejax', 'data_builders', 'configs', 'benchmarks'):
    for path in glob.glob(os.path.join(REPO, folder, '**', '*.py'), recursive=True):
      name = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.').removesuffix('.__init__')
      modules['pejax.' + name if folder == 'configs' else name] = path
  return modules


def imports_of(path: str, module: str) -> set[str]:
  """The project modules a file imports, at its top or inside functions."""
  package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
  names = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:  # relative: from the package `level - 1` folders up
        up = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join(up + ([base] if base else []))
      names |= {f'{base}.{alias.name}' for alias in node.names}
  return names


def import_graph() -> dict[str, set[str]]:
  """module -> the project modules it imports (names that are attributes, like
  `pejax.__version__`, resolve to their module)."""
  modules = source_modules()
  graph = {}
  for module, path in modules.items():
    targets = set()
    for name in imports_of(path, module):
      while name and name not in modules:
        name = name.rpartition('.')[0]
      if name and name != module:
        targets.add(name)
    graph[module] = targets
  return graph


def layering_violations(graph: dict[str, set[str]], allowed=None) -> list[str]:
  allowed = ALLOWED if allowed is None else allowed
  found = []
  for module, targets in sorted(graph.items()):
    part = part_of(module)
    for target in sorted(targets):
      if part_of(target) != part and part_of(target) not in allowed.get(part, set()):
        found.append(f'{module} imports {target} ({part} -> {part_of(target)})')
  return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """A cycle of the graph as a list of nodes, or None (depth-first search)."""
  state = {}

  def visit(node, path):
    state[node] = 'open'
    for successor in sorted(graph.get(node, ())):
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


def part_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
  parts: dict[str, set[str]] = {}
  for module, targets in graph.items():
    parts.setdefault(part_of(module), set()).update(
        part_of(t) for t in targets if part_of(t) != part_of(module))
  return parts


def test_every_part_imports_only_what_the_table_allows():
  graph = import_graph()
  assert {'pejax.train', 'pejax.models.steps', 'data_builders.conventions',
          'pejax.configs.paper.common'} <= set(graph)
  assert set(part_graph(graph)) <= set(ALLOWED), set(part_graph(graph)) - set(ALLOWED)
  assert not layering_violations(graph), '\n'.join(layering_violations(graph))


def test_no_import_cycle_between_modules_or_parts():
  graph = import_graph()
  assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph))
  assert find_cycle(part_graph(graph)) is None, ' -> '.join(find_cycle(part_graph(graph)))
  assert find_cycle(ALLOWED) is None, ' -> '.join(find_cycle(ALLOWED))


def test_the_checks_find_what_they_look_for():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None
  upward = {'pejax.models.steps': {'pejax.reporting.report'}, 'pejax.reporting.report': set()}
  assert layering_violations(upward) == [
      'pejax.models.steps imports pejax.reporting.report (pejax.models -> pejax.reporting)']
  assert part_of('pejax') == 'pejax' and part_of('pejax.configs.paper.all') == 'configs'
  assert part_of('data_builders.acdc.acdc_dataset_builder') == 'data_builders'


def loaded_after(code: str) -> set[str]:
  """Module names a fresh interpreter has loaded after running `code`."""
  probe = code + '\nimport sys\nprint(" ".join(sorted(sys.modules)))'
  output = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
  assert output.returncode == 0, output.stderr[-3000:]
  return set(output.stdout.split())


def reachable(part: str) -> set[str]:
  """The parts `part` may load, directly or through the parts it imports."""
  seen, todo = set(), [part]
  while todo:
    for successor in ALLOWED[todo.pop()]:
      if successor not in seen:
        seen.add(successor)
        todo.append(successor)
  return seen | {part}


@pytest.mark.parametrize('part', sorted(set(ALLOWED) - {'benchmarks'}))
def test_a_fresh_interpreter_loads_only_allowed_parts_and_libraries(part):
  """Importing every module of a part loads no part it may not reach and no library it must
  not load (what the import statements say, checked against what actually happens)."""
  modules = sorted(name for name in source_modules() if part_of(name) == part
                   and not name.endswith('__main__'))
  loaded = loaded_after('\n'.join(f'import {name}' for name in modules))
  # The package itself (pejax/__init__.py) is loaded with any of its modules; it loads nothing.
  parts = {part_of(name) for name in loaded
           if name.split('.')[0] in ('pejax', 'data_builders') and name != 'pejax'}
  assert parts <= reachable(part), sorted(parts - reachable(part))
  libraries = {name.split('.')[0] for name in loaded}
  assert not libraries & set(FORBIDDEN.get(part, ())), sorted(libraries & set(FORBIDDEN[part]))


def test_importing_pejax_loads_nothing_else():
  loaded = loaded_after('import pejax')
  assert {name for name in loaded if name.startswith('pejax.')} == set()
  assert not {name.split('.')[0] for name in loaded} & set(JAX + TENSORFLOW)


def test_modules_and_functions_stay_short():
  long_modules, long_functions = [], []
  for path in sorted(glob.glob(os.path.join(REPO, 'pejax', '**', '*.py'), recursive=True)):
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


def test_every_config_loads_without_heavy_libraries():
  files = [p for p in glob.glob(os.path.join(REPO, 'configs', '**', '*.py'), recursive=True)
           if 'def get_config(' in open(p).read()]
  assert len(files) >= 14
  code = 'import importlib.util, inspect\n'
  for index, path in enumerate(files):
    code += (f'spec = importlib.util.spec_from_file_location("config{index}", {path!r})\n'
             'module = importlib.util.module_from_spec(spec)\n'
             'spec.loader.exec_module(module)\n'
             'module.get_config()\n'
             'if inspect.signature(module.get_config).parameters:\n'
             '  module.get_config("quick")\n')
  libraries = {name.split('.')[0] for name in loaded_after(code)}
  assert not libraries & set(JAX + TENSORFLOW), sorted(libraries & set(JAX + TENSORFLOW))


def test_code_passes_the_linter():
  """The house style of pyproject.toml's [tool.ruff] (also run on its own by .ci/run)."""
  output = subprocess.run([sys.executable, '-m', 'ruff', 'check', '--no-cache', '.'],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
  assert output.returncode == 0, output.stdout[-3000:] + output.stderr[-3000:]
