import sys

from codi.cli import main

sys.exit(main())
