import sys

from clip_icm.cli import main

sys.exit(main())
