"""The run folder and its owner: where a run may be written and whether it holds this run
(`folder`), its files and how they are read back (`run_files`), the writer of an evaluation
(`outputs`), checkpoints, the lock, TensorBoard events and HParams, provenance.

Every file of a run is written here (through `pejax.storage`'s whole-file writes). May import
the shared modules and `pejax.evaluation` (for what it writes); `run_files` loads no JAX or
TensorFlow, for the report.
"""
