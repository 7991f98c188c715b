import sys

from salmask.cli import main

sys.exit(main())
