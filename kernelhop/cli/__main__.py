"""`python -m kernelhop.cli`, as the `kernelhop` console script."""

import sys

from .main import main

sys.exit(main())
