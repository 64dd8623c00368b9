"""TensorFlow Datasets builders of pejax: phantoms (built in), JSRT + SCR and ACDC (manual download)."""
