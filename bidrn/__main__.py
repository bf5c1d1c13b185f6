import sys

from bidrn.cli import main

sys.exit(main())
