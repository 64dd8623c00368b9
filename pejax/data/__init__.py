"""Datasets as arrays: `datasets` loads any split of the phantoms, JSRT or ACDC through their
TFDS builders (building on first use), `input_pipeline` places splits on the devices, sharded
and normalized. `python -m pejax.data` builds datasets and draws examples of them.

May import the shared modules at the top of pejax, `data_builders` and `pejax.models` (for the
normalizer); nothing that trains, evaluates or writes runs.
"""
