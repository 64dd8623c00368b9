"""U-Net (paper Table 3) without positional encoding, zero padding, on the chest phantom.

Command: python main.py --config=configs/unet.py   (CPU-sized: configs/unet.py:quick)

Expected result (measured, :quick = 64×64, width 16, 20 epochs, 2-core CPU, 2026-11-24,
phantom builder 1.0.0, not yet re-measured on 2.0.0): test Dice 0.979 (right lung 0.992, left
lung 0.992, heart 0.954); averaged mask 0.816. Paper (JSRT, full settings): 0.9673 ± 0.0011.
"""

from pejax import configuration


def get_config(variant: str = ''):
  config = configuration.base_config()
  config.model = 'unet'
  config.use_pe = False
  return configuration.apply_variant(config, variant)
