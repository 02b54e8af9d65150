"""`python -m densenets COMMAND [ARGS]`: the `densenets` command (see densenets.cli)."""

import sys

from densenets.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m densenets"))
