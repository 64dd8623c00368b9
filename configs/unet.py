"""U-Net (paper Table 3) without positional encoding, zero padding, on the chest phantom.

Command: python main.py --config=configs/unet.py   (CPU-sized: configs/unet.py:quick)
"""

from pejax import configuration


def get_config(variant: str = ''):
  config = configuration.base_config()
  config.model = 'unet'
  config.use_pe = False
  return configuration.apply_variant(config, variant)
