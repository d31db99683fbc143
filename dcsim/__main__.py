"""Entry point for ``python -m dcsim``."""
import sys

from dcsim.cli import main

sys.exit(main())
