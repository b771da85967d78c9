"""`python -m pybn` is the `pybn` command."""
import sys

from .cli import main

sys.exit(main())
