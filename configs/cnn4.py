"""Small CNN (paper Table 4: three 3×3 conv+BN+ReLU, 1×1 score) without PE, chest phantom.

Its 7×7 receptive field sees only local appearance; the two phantom lungs look alike, so
without PE it cannot tell them apart (paper Sec. 3.2: Dice ≈ 0.5 on JSRT).
Command: python main.py --config=configs/cnn4.py   (CPU-sized: configs/cnn4.py:quick)

Expected result (measured, :quick = 64×64, width 16, 30 epochs, 2-core CPU, 2026-12-01,
phantom builder 2.0.0): test Dice 0.463, far below the averaged mask (0.811).
"""

from pejax import configuration


def get_config(variant: str = ''):
  config = configuration.base_config()
  config.model = 'cnn4'
  config.use_pe = False
  return configuration.apply_variant(config, variant)
