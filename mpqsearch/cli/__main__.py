"""``python -m mpqsearch.cli``: the ``mpqsearch`` command."""

import sys

from . import main

sys.exit(main())
