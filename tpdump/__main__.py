"""`python -m tpdump` runs the command line."""

from tpdump.cli import main

raise SystemExit(main())
