import sys

from audit.cli.app import main

sys.exit(main())
