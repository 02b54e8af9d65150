#!/usr/bin/env python
"""`python tools/train.py ARGS` from a checkout runs `densenets.tools.train`, which the installed
package also offers as the command `densenets train ARGS` (`--help` lists the arguments)."""

import sys

from densenets.tools.train import main

if __name__ == "__main__":
    sys.exit(main())
