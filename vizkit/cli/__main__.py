"""``python -m vizkit.cli``: the same as the installed ``vizkit`` command."""

import sys

from . import main

sys.exit(main())
