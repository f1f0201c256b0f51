from evalkit.cli import main
import sys

sys.exit(main())
