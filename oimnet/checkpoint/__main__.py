"""``python -m oimnet.checkpoint PATH [--cfg FILE] [KEY VALUE ...]`` (see :mod:`oimnet.checkpoint.cli`)."""

import sys

from oimnet.checkpoint.cli import main

sys.exit(main())
