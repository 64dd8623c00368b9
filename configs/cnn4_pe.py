"""Small CNN (paper Table 4) with positional encoding λ = 256 (paper Sec. 3.2), chest phantom.

Command: python main.py --config=configs/cnn4_pe.py   (CPU-sized: configs/cnn4_pe.py:quick)
"""

from pejax import configuration


def get_config(variant: str = ''):
  config = configuration.base_config()
  config.model = 'cnn4'
  config.use_pe = True
  config.pe_scale = 256.0
  return configuration.apply_variant(config, variant)
