"""The compute core: positional encoding, padded convolutions (and the CPU convolution), the
U-Net and the small CNN, Dice, the pure train/eval/predict steps, a config's model spec, the
predictor and the epoch runner for one model or K vmapped models.

May import JAX, Flax, Optax, NumPy and pejax's `choices` and `errors` only: it runs on a bare
accelerator image without TensorFlow, TFDS, CLU or ml_collections.
"""
