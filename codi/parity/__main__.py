import sys

from codi.parity import main

sys.exit(main())
