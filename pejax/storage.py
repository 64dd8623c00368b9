"""Where pejax's files live: local folders, or folders in a Cloud Storage bucket (`gs://`).

Every file pejax itself writes or reads under a workdir or a bucket's data_dir goes through this
module, and so does every whole-file write (`write_atomically`, `write_json`, `write_csv`). A
`gs://` path goes through `etils.epath` with its fsspec backend to gcsfs's `GCSFileSystem`,
which speaks Cloud Storage's JSON API, and never through TensorFlow's gfile: TensorFlow's GCS
client cannot be pointed at another endpoint, gcsfs follows STORAGE_EMULATOR_HOST, so the route
production takes is the route the tests take
against an emulator. Orbax's checkpoints take the same route for their metadata (they use
epath) and TensorStore's own GCS driver for the arrays (TENSORSTORE_GCS_HTTP_URL points it
elsewhere); TensorBoard events are written locally and copied (`pejax.runs.event_writers`).

Which write is atomic where: in a local folder a file is written to a temporary name and renamed
over the target (`write_atomically`); in a bucket an object appears only once its upload
is complete, so `write_object` uploads the finished bytes in one request and readers see the old
object or the new one. Any other scheme (`s3://`, `file://`, a mistyped `gs:/`) is refused at
start, never treated as a local folder, and so is a path too long for the files pejax writes
below it. An endpoint that cannot be connected to ends the first gs:// call at once, naming the
object (`check_reachable`), instead of gcsfs's half-minute of retries per request.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import fsspec
from absl import logging

from pejax import configuration, errors
from pejax.errors import SettingError

SCHEME = 'gs'
_URL = re.compile(r'^([A-Za-z][A-Za-z0-9+.-]*):/')

# Both before any gs:// path is used, since etils caches its choices: epath's fsspec backend
# rather than TensorFlow's gfile, and gcsfs's plain JSON-API file system for gs://. The default
# extension of gcsfs first asks a gRPC control service for the bucket's layout (for zonal
# buckets), which an emulator does not serve and the objects pejax writes do not need.
os.environ['EPATH_USE_TF'] = '0'
for _protocol in ('gs', 'gcs'):
  if _protocol in fsspec.registry:  # its class is imported already: replace the class itself
    import gcsfs.core
    fsspec.register_implementation(_protocol, gcsfs.core.GCSFileSystem, clobber=True)
  else:  # imported on first use
    fsspec.register_implementation(_protocol, 'gcsfs.core.GCSFileSystem', clobber=True)
# gcsfs keeps folder listings and answers later listings and `exists` from them, never
# expiring; but other processes write to the same folders.
fsspec.config.conf.setdefault(SCHEME, {})['use_listings_cache'] = False


def is_remote(path) -> bool:
  """Whether `path` is in a bucket (`gs://...`)."""
  return str(path).startswith(f'{SCHEME}://')


# The longest name and path Linux file systems take (NAME_MAX, PATH_MAX), and Cloud Storage's
# longest object name; what pejax writes below a folder (checkpoints/<epoch>.orbax-checkpoint-
# tmp-<id>/default/ocdbt.process_0/d/<hash>, ...) needs `_ROOM_BELOW` more.
_NAME_BYTES = 255
_PATH_BYTES = 4096
_OBJECT_NAME_BYTES = 1024
_ROOM_BELOW = 256
# The settings that name a single file; all others name a folder pejax writes or reads below.
_FILE_SETTINGS = ('path', '--input')


def check_location(path, what: str) -> None:
  """Raises SettingError, naming `what` (a flag or setting), for a path pejax cannot write:
  a scheme other than gs://, a gs:// path without a bucket, or a path too long for its file
  system (or bucket) to hold the files pejax writes below it."""
  if path is None:
    return
  text = str(path)
  match = _URL.match(text)
  if not match:
    _check_length(text, what, os.fsencode(os.path.abspath(text)).split(b'/'), _PATH_BYTES)
    return
  if is_remote(text) and text[len(SCHEME) + 3:].split('/')[0]:
    object_name = text[len(SCHEME) + 3:].partition('/')[2]
    _check_length(text, what, [], _OBJECT_NAME_BYTES, len(object_name.encode()))
    return
  if match.group(1) == SCHEME:
    problem = 'write a folder in a bucket as gs://<bucket>/<folder>'
  else:
    problem = (f'pejax reads and writes local folders and gs:// buckets only, not '
               f'{match.group(1)}://; use a local folder or gs://<bucket>/<folder>')
  raise SettingError(f'{what}={text!r} is not allowed: {problem}.')


def _check_length(text: str, what: str, names: list[bytes], limit: int,
                  length: int | None = None) -> None:
  """Refuses a path with a name longer than the file system takes, or (for a folder) too long to
  hold pejax's files below it; the system would refuse them only later, one file at a time."""
  longest = max(names, key=len, default=b'')
  shown = repr(text if len(text) <= 100 else f'{text[:60]}...{text[-30:]}')
  if len(longest) > _NAME_BYTES:
    raise SettingError(
        f'{what}={shown} has a name of {len(longest)} bytes; the file system takes names of at '
        f'most {_NAME_BYTES} bytes ({longest[:30].decode(errors="replace")}...): choose a shorter '
        f'{what}.')
  length = len(b'/'.join(names)) if length is None else length
  room = 0 if what in _FILE_SETTINGS else _ROOM_BELOW
  if length + room > limit:
    holds = 'an object name in a bucket' if not names else 'a path'
    below = f', and the files pejax writes below it take up to {room} more' if room else ''
    raise SettingError(f'{what}={shown} is too long ({length} bytes; {holds} holds at most '
                       f'{limit}{below}): choose a shorter {what}.')


def _filesystem(location):
  """gcsfs's file system, once the endpoint it talks to for `location` has answered."""
  check_reachable(location)
  return fsspec.filesystem(SCHEME)


# The endpoints this process has reached: checked once each.
_REACHED: set[str] = set()
_CONNECT_SECONDS = 10


def endpoint() -> str:
  """The URL gcsfs sends its requests to: the config's endpoint_url, else STORAGE_EMULATOR_HOST
  (an emulator), else Cloud Storage itself."""
  import gcsfs.core
  return fsspec.config.conf.get(SCHEME, {}).get('endpoint_url') or gcsfs.core._location()


def check_reachable(location) -> None:
  """Raises StorageUnreachableError, naming `location`, when the Cloud Storage endpoint cannot
  be connected to at all (no network, a wrong host or port): gcsfs would retry each request
  for half a minute, and `exists` would then answer False, as if the object did not exist. A
  connection through a proxy is left to gcsfs."""
  url = endpoint()
  if url in _REACHED or any(os.environ.get(name) for name in (
      'HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy', 'ALL_PROXY', 'all_proxy')):
    return
  import socket
  import urllib.parse
  parts = urllib.parse.urlsplit(url if '://' in url else f'http://{url}')
  port = parts.port or (443 if parts.scheme == 'https' else 80)
  try:
    socket.create_connection((parts.hostname, port), timeout=_CONNECT_SECONDS).close()
  except OSError as error:
    raise errors.unreachable(location, url, error) from None
  _REACHED.add(url)


def path(location):
  """`location` as an `etils.epath.Path` (gs:// through gcsfs)."""
  from etils import epath
  check_location(location, 'path')
  if is_remote(location):
    check_reachable(location)
  return epath.Path(location)


def join(folder, *names) -> str:
  """`os.path.join` for local folders and gs:// folders alike (no abspath, no normalization
  that would turn gs:// into gs:/)."""
  return os.path.join(str(folder), *names)


def exists(location) -> bool:
  return path(location).exists()


def isdir(location) -> bool:
  return path(location).is_dir()


def read_text(location) -> str:
  return path(location).read_text()


def write_object(location, data: bytes) -> None:
  """Uploads the whole of `data` as one object: it appears complete or not at all."""
  if not is_remote(location):
    raise ValueError(f'{location} is not in a bucket; local files are written by '
                     'workdir.write_atomically.')
  _filesystem(location).pipe_file(str(location), data)


def probe_bucket_folder(folder) -> None:
  """Writes and deletes a uniquely named object in `folder`, so that a missing bucket or a
  missing permission shows (as OSError) before anything else is written there."""
  probe = join(folder, f'.write_probe.{os.getpid()}.{uuid.uuid4().hex}')
  write_object(probe, b'ok')
  remove(probe)


def create_object(location, data: bytes) -> None:
  """Uploads `data` only if no object is at `location` (a generation precondition); raises
  FileExistsError otherwise. Two processes creating it together: exactly one succeeds."""
  _filesystem(location).pipe_file(str(location), data, mode='create')


def remove(location) -> None:
  path(location).unlink()


def walk(top) -> Iterator[tuple[str, list[str], list[str]]]:
  """`os.walk` for local and gs:// folders: (folder, subfolders, files), top-down; clearing or
  sorting `subfolders` in place steers the walk, as with `os.walk`."""
  if not is_remote(top):
    yield from os.walk(top)
    return
  for folder, subfolders, names in _filesystem(top).walk(str(top), topdown=True):
    # gcsfs names folders without their scheme.
    yield f'{SCHEME}://{folder}', subfolders, names


def file_sizes(folder) -> dict[str, int]:
  """Name -> size of the files directly in `folder` (none if it does not exist)."""
  if not is_remote(folder):
    if not os.path.isdir(folder):
      return {}
    return {entry.name: entry.stat().st_size for entry in os.scandir(folder) if entry.is_file()}
  try:
    entries = _filesystem(folder).ls(str(folder), detail=True)
  except FileNotFoundError:
    return {}
  return {os.path.basename(entry['name']): int(entry['size']) for entry in entries
          if entry['type'] == 'file'}


def download(remote, local) -> None:
  _filesystem(remote).get_file(str(remote), str(local))


# ------------------------------------------------------------------- whole-file writes


def write_atomically(path: str, write: Callable[[Any], None], mode: str = 'w') -> None:
  """Writes through `write(file)` to a temporary file in the same folder, then renames it over
  `path`: readers see the old file or the new one, never a partial one. In a bucket, where an
  object appears only when its upload completes, the bytes are gathered first and uploaded in
  one piece (an error or interruption in `write` uploads nothing)."""
  if is_remote(path):
    buffer = io.BytesIO() if 'b' in mode else io.StringIO(newline='')
    write(buffer)
    data = buffer.getvalue()
    write_object(path, data if 'b' in mode else data.encode())
    return
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  descriptor, temporary = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp',
                                           dir=folder)
  try:
    # mkstemp makes the file private (0600); give it the permissions open() would have given.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    with os.fdopen(descriptor, mode, **({} if 'b' in mode else {'newline': ''})) as handle:
      write(handle)
      handle.flush()
      os.fsync(handle.fileno())
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def write_json(path: str, value) -> None:
  write_atomically(path, lambda f: json.dump(configuration.json_safe(value), f, indent=2, sort_keys=True,
                                             allow_nan=False))


def read_json(path: str):
  """The JSON at `path`; DamagedFileError naming the file when it is not JSON (cut short by a
  disk or copy error, or edited by hand)."""
  text = read_text(path)
  try:
    return json.loads(text)
  except ValueError as error:
    raise errors.damaged_file(path, error) from None


def read_json_or_none(path: str):
  """The JSON at `path`, or None (with a warning) when it is missing or cannot be read."""
  try:
    return read_json(path)
  except (OSError, ValueError) as error:
    logging.warning('Skipping %s: it cannot be read (%s).', path, error)
    return None


def write_csv(path: str, rows: Sequence[Mapping], fields: Sequence[str] | None = None) -> None:
  """Rows as CSV with the columns `fields` (default: every key, in the order of first
  appearance; missing values empty, NaN as 'nan')."""
  if fields is None:
    fields = list(dict.fromkeys(key for row in rows for key in row))

  def write(f):
    writer = csv.DictWriter(f, fieldnames=list(fields), restval='')
    writer.writeheader()
    writer.writerows(rows)

  write_atomically(path, write)
