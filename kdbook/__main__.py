"""``python -m kdbook`` (and ``torchrun -m kdbook train ...``): the ``kdbook`` command."""

import sys

from kdbook.cli import main

sys.exit(main())
