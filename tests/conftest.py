"""Shared pytest set-up: keep TensorFlow off any accelerator and quiet, and Google's credential
look-ups off the network (google-auth reads NO_GCE_CHECK once, when it is imported: without it,
a look-up asks for a cloud metadata server)."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('NO_GCE_CHECK', 'true')
