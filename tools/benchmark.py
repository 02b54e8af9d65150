#!/usr/bin/env python
"""`python tools/benchmark.py ARGS` from a checkout runs `densenets.tools.benchmark`, which the installed
package also offers as the command `densenets benchmark ARGS` (`--help` lists the arguments)."""

import sys

from densenets.tools.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
