"""``python -m terramind_ft.cli``: the same as the ``terramind-ft`` console script."""

import sys

from terramind_ft.cli import main

sys.exit(main())
