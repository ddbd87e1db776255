"""`python -m tpdump.sim --scenario FILE --state-dir DIR`."""

import sys

from tpdump.sim.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
