"""`main.py` with a pause at a named moment, so that a test can SIGKILL it exactly there.

  python tests/reliability_worker.py <main.py flags>

PEJAX_TEST_PAUSE_AT names the moment, PEJAX_TEST_PAUSE_MARKER a file that is created when the
process gets there; it then sleeps until it is killed. Moments:

  train_step:E:S          epoch E, right after step S of the epoch was dispatched
  checkpoint_write:E      the checkpoint of epoch E is written to Orbax's temporary folder but
                          not yet committed (renamed)
  final_evaluation        the final evaluation, after the model's Dice, before the baseline's
  results_write           robustness files written, results.json half written

Without PEJAX_TEST_PAUSE_AT it is exactly `main.py`.
"""

import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def pause_here():
  with open(os.environ['PEJAX_TEST_PAUSE_MARKER'], 'w') as marker:
    marker.write(str(os.getpid()))
  while True:  # until SIGKILL
    time.sleep(1)


def install_pause(moment: str):
  kind, _, where = moment.partition(':')
  from pejax.evaluation import evaluator
  from pejax.models import epochs
  from pejax import storage
  from pejax.runs import run_files

  if kind == 'train_step':
    epoch, pause_step = (int(n) for n in where.split(':'))
    original_call = epochs.EpochRunner.__call__

    def call(self, state, *args):
      current_epoch = int(state.epoch) + 1
      original_step = self._step
      count = {'steps': 0}

      def counted_step(*step_args):
        result = original_step(*step_args)
        count['steps'] += 1
        if current_epoch == epoch and count['steps'] == pause_step:
          pause_here()
        return result

      self._step = counted_step
      try:
        return original_call(self, state, *args)
      finally:
        self._step = original_step

    epochs.EpochRunner.__call__ = call

  elif kind == 'checkpoint_write':
    from orbax.checkpoint._src.path import atomicity
    epoch = where
    original_finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *args, **kwargs):
      if self.get_final().name == epoch:
        pause_here()
      return await original_finalize(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize

  elif kind == 'final_evaluation':
    original_baseline = evaluator.Evaluator.averaged_mask_dice

    def averaged_mask_dice(self, *args, **kwargs):
      pause_here()
      return original_baseline(self, *args, **kwargs)

    evaluator.Evaluator.averaged_mask_dice = averaged_mask_dice

  elif kind == 'results_write':
    original_write_atomically = storage.write_atomically

    def write_atomically(path, write, mode='w'):
      if os.path.basename(path) != run_files.RESULTS_FILE:
        return original_write_atomically(path, write, mode)

      def half_write(handle):
        handle.write('{"half": ')
        handle.flush()
        pause_here()

      return original_write_atomically(path, half_write, mode)

    storage.write_atomically = write_atomically

  else:
    raise ValueError(f'PEJAX_TEST_PAUSE_AT={moment!r} is not a known moment.')


if __name__ == '__main__':
  from absl import app
  from pejax import cli
  cli.use_fast_cpu_convolutions()  # exactly what `python main.py` does before it starts
  cli.define_flags()
  if os.environ.get('PEJAX_TEST_PAUSE_AT'):
    install_pause(os.environ['PEJAX_TEST_PAUSE_AT'])
  app.run(cli.main)
