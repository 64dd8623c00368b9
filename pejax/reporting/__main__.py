"""`python -m pejax.reporting --workdir=W [--title=T]`: writes the report of the sweep in W."""

from pejax import runtime

# TensorFlow (loaded below, through CLU) prints C++ start-up notices on stderr when it loads;
# as main.py does, load it with them off the console.
with runtime.stderr_silenced():
  import tensorflow  # noqa: F401

from absl import app, flags  # noqa: E402

from pejax import errors  # noqa: E402
from pejax.reporting import report  # noqa: E402

# Defined here, not in `report`: main.py, which imports it through the sweep, has its own
# --workdir flag.
flags.DEFINE_string('workdir', None, 'Sweep folder: every run below it is reported.')
flags.DEFINE_string('title', None, 'Title of the report; default: the folder name.')
flags.mark_flag_as_required('workdir')
app.run(report.main, flags_parser=errors.parse_flags)
