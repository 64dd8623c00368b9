"""Beyond the paper: other encodings, coordinates at every layer, and the position the network
holds, on the chest phantom at CPU size (64×64, width 16, 160 steps = 20 epochs), three seeds.

U-Net, zero padding: no PE; linear λ = 1 and λ = 2 (the span of centered λ = 1); centered,
radial and Fourier (K = 4) at λ = 1; linear λ = 1 at every 3×3 convolution — with robustness
grids and their encoding conditions (21 runs); and without PE under reflect, replicate and
circular padding, no grid (9 runs); the position probe on every run.

  python main.py --config=configs/paper/phantom_encodings.py --workdir=runs/phantom_encodings
Writes runs/phantom_encodings/report.md. Measured wall time and results: README, "Beyond the
paper".
"""

from pejax.configs.paper import common

# The quick schedule: on the chest phantom every setting with λ ≤ 10 converged at 160 steps in
# the schedule study (README, "Training schedule"); the report says if a run did not.
EPOCHS = {'num_epochs': 20}


def get_config(datasets: str = ''):
  chosen = common.chosen_datasets(datasets, ('phantom_chest',))
  return common.sweep_config(common.probed(common.cpu_scale()),
                             common.encoding_experiments(chosen, EPOCHS))
