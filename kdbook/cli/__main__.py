"""``python -m kdbook.cli``: the ``kdbook`` command (as ``python -m kdbook``)."""

import sys

from kdbook.cli.main import main

sys.exit(main())
