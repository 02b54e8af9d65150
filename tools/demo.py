#!/usr/bin/env python
"""`python tools/demo.py ARGS` from a checkout runs `densenets.tools.demo`, which the installed
package also offers as the command `densenets demo ARGS` (`--help` lists the arguments)."""

import sys

from densenets.tools.demo import main

if __name__ == "__main__":
    sys.exit(main())
