"""A trained model on a user's own scans: `pejax.load` restores a model from its checkpoint
(which describes it), `predict_files` labels PNG, JPEG, JSRT .IMG, NIfTI and DICOM files and
writes masks, overlays and predictions.csv.

May import the shared modules, `pejax.models`, `pejax.runs` (checkpoints, provenance) and
`data_builders.conventions` (to read a scan as the training data was read); it loads no
TensorFlow, TFDS or TensorBoard.
"""
