"""U-Net (paper Table 3) with positional encoding λ = 1, zero padding, on the chest phantom.

Command (paper settings: 256×256, width 64, Adam 1e-3, batch 20, 100 epochs):
  python main.py --config=configs/unet_pe.py
CPU-sized variant (64×64, width 16, 20 epochs):
  python main.py --config=configs/unet_pe.py:quick
Other data / settings: --config.dataset=jsrt|acdc|phantom_cardiac --config.pe_scale=256 ...

Expected result (measured, :quick on a 2-core CPU, 2026-12-01, phantom builder 2.0.0): test
Dice 0.981 (right lung 0.991, left lung 0.988, heart 0.963); averaged-mask baseline 0.811; 3
minutes with other jobs on both cores. On JSRT at the paper's settings the paper reports 0.9649 ± 0.0012.
"""

from pejax import configuration


def get_config(variant: str = ''):
  config = configuration.base_config()
  config.model = 'unet'
  config.use_pe = True
  config.pe_scale = 1.0
  return configuration.apply_variant(config, variant)
