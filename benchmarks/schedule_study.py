"""How the paper's verdicts depend on the training schedule: every setting the claims compare,
on the chest phantom at the laptop configs' shapes (64×64, width 16), three seeds, trained to
each of several schedules counted in optimizer steps.

  python benchmarks/schedule_study.py --workdir=runs/schedule_study               # 160,400,800
  python benchmarks/schedule_study.py --workdir=runs/schedule_study --steps=160,800 --seeds=0

Writes <workdir>/steps<S>/<run>/ (complete runs: results, grids, per-case files, history),
<workdir>/report.md (one part per schedule) and <workdir>/schedule_study.md: claim × schedule →
verdict with its effects and intervals, and per setting how many seeds converged
(`pejax.evaluation.convergence`). Finished runs are kept: a stopped study continues where it was.

The learning rate is constant (Adam, paper Sec. 2.4) and nothing in training depends on the
planned number of epochs, so the first S steps of a longer run are exactly a run of S steps:
each schedule continues the previous one's final checkpoint (a copy of its folder whose
config.json says the longer schedule) instead of training from scratch. `tests/test_train.py`
checks that continuing gives the numbers of an uninterrupted run.

Cost on the 2-core CPU: 94 minutes (BENCHMARKS.md, "Training schedule: what a CPU-sized run costs").
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pejax import cli  # noqa: E402

# The claims' settings on the chest phantom: Table 1 / Fig. 2 / Fig. 5 (U-Net, zero padding, no
# PE and λ = 1, 10, 256), Fig. 4 (reflection padding), Sec. 3.2 (small CNN), Table 2 (10 and 5
# training images, no grid).
DATASET = 'phantom_chest'


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', default='runs/schedule_study')
  parser.add_argument('--steps', default='160,400,800', help='schedules, in optimizer steps')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--experiments', default='table1,fig4,small_cnn,table2',
                      help='which of table1, fig4, small_cnn, table2 (in this order of priority)')
  parser.add_argument('--width', type=int, default=16)
  parser.add_argument('--image_size', type=int, default=64)
  return parser.parse_args(argv)


def study_runs(experiment_names, seeds):
  """(name, overrides) of every run of the study, without the schedule."""
  from pejax import sweep
  from pejax.configs.paper import common
  chosen = {
      'table1': lambda: common.table1_fig2([DATASET], seeds=seeds),
      'fig4': lambda: common.fig4_padding([DATASET], seeds=seeds),
      'small_cnn': lambda: common.fig3_small_cnn([DATASET], seeds=seeds),
      'table2': lambda: common.table2_data_size(DATASET, sizes=(10, 5), seeds=seeds,
                                                run_robustness=False),
  }
  runs = sweep.union(*(chosen[name]() for name in experiment_names))
  return [(sweep.run_name(overrides), overrides) for overrides in runs]


def run_config(base, overrides, steps: int):
  from pejax.configs.paper import common
  config = base.copy_and_resolve_references()
  for key, value in overrides.items():
    config[key] = value
  config.num_epochs = common.epochs_for_steps(steps, config.dataset,
                                              config.num_train_examples, config.batch_size)
  return config


def continue_from(previous: str, folder: str, config) -> None:
  """`folder` as a copy of the finished run `previous`, set to train on to `config`'s schedule:
  its settings file says the longer schedule and nothing says it is finished."""
  from pejax import configuration
  from pejax import storage
  from pejax.runs import checkpoints, run_files
  staging = folder + '.partial'
  shutil.rmtree(staging, ignore_errors=True)
  shutil.copytree(previous, staging)
  for name in os.listdir(staging):
    if name not in (checkpoints.CHECKPOINT_FOLDER, run_files.HISTORY_FILE) and (
        not name.startswith('events.')):
      path = os.path.join(staging, name)
      shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
  storage.write_json(os.path.join(staging, run_files.CONFIG_FILE),
                     configuration.settings_dict(config))
  os.replace(staging, folder)


def main(argv=None):
  args = parse_args(argv)
  cli.use_fast_cpu_convolutions()
  from pejax import runtime
  runtime.initialize()
  from absl import logging
  from pejax import train
  from pejax.configs.paper import common
  from pejax.data import input_pipeline
  from pejax.evaluation import convergence
  from pejax.reporting import aggregation, claims, report
  from pejax import storage
  from pejax.runs import run_files
  logging.set_verbosity(logging.INFO)
  schedules = sorted(int(s) for s in args.steps.split(','))
  seeds = tuple(int(s) for s in args.seeds.split(','))
  base = common.cpu_scale()
  base.dataset = DATASET
  base.image_size = args.image_size
  base.width = args.width
  base.num_image_panels = 0
  mesh = input_pipeline.make_mesh()
  run_data = input_pipeline.load_run_data(base, mesh)
  runs = study_runs(args.experiments.split(','), seeds)
  start = time.perf_counter()
  for index, (name, overrides) in enumerate(runs, 1):
    previous = None
    # Evaluations dense enough for the convergence rule at the shortest schedule, few
    # checkpoints (a checkpoint costs more than a 1-step epoch of Table 2's subsets).
    first_epochs = run_config(base, overrides, schedules[0]).num_epochs
    for steps in schedules:
      config = run_config(base, overrides, steps)
      config.eval_every_epochs = convergence.eval_every_epochs(first_epochs)
      config.checkpoint_every_epochs = max(config.eval_every_epochs, first_epochs // 4)
      folder = os.path.join(args.workdir, f'steps{steps}', name)
      if not run_files.is_finished(folder):
        if previous is not None and not os.path.exists(folder):
          continue_from(previous, folder, config)
        train.train_group([config], [folder], mesh=mesh, run_data=run_data)
      previous = folder
    elapsed = time.perf_counter() - start
    logging.info('Schedule study: %d/%d runs done, %.0f s elapsed, ETA %.0f s.', index, len(runs),
                 elapsed, elapsed / index * (len(runs) - index))
  report.write_report(args.workdir, title='Verdicts as a function of the training schedule')
  rows = []
  for steps in schedules:
    settings = aggregation.group_runs(
        run_files.scan_runs(os.path.join(args.workdir, f'steps{steps}'))[0])
    rows.append((steps, claims.evaluate_claims(settings)))
  text = schedule_table(rows, convergence.RULE)
  storage.write_atomically(os.path.join(args.workdir, 'schedule_study.md'),
                           lambda f: f.write(text))
  print(text)


def schedule_table(rows, rule: str) -> str:
  """claim × schedule: the verdict, its numbers and its convergence note."""
  from pejax.reporting import claims
  lines = ['# Verdicts as a function of the training schedule', '',
           f'Chest phantom; convergence rule: {rule}.', '']
  claims_order = [verdict.claim for verdict in rows[0][1]]
  for claim in dict.fromkeys(claims_order):
    lines.append(f'## {claim}')
    lines.append('')
    for steps, verdicts in rows:
      for verdict in verdicts:
        if verdict.claim == claim:
          lines.append(f'- {steps} steps: {claims.describe(verdict)}')
    lines.append('')
  return '\n'.join(lines)


if __name__ == '__main__':
  main()
