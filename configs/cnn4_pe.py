"""Small CNN (paper Table 4) with positional encoding λ = 256 (paper Sec. 3.2), chest phantom.

Command: python main.py --config=configs/cnn4_pe.py   (CPU-sized: configs/cnn4_pe.py:quick)

Expected result (measured, :quick = 64×64, width 16, 30 epochs, 2-core CPU, 2026-12-01,
phantom builder 2.0.0): test Dice 0.891, above the averaged mask (0.811) and 0.43 above the
same network without PE (configs/cnn4.py). Paper (JSRT): ≈ 0.9.
"""

from pejax import configuration


def get_config(variant: str = ''):
  config = configuration.base_config()
  config.model = 'cnn4'
  config.use_pe = True
  config.pe_scale = 256.0
  return configuration.apply_variant(config, variant)
