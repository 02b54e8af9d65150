#!/usr/bin/env python
"""`python tools/print_config.py ARGS` from a checkout runs `densenets.tools.print_config`, which the installed
package also offers as the command `densenets print_config ARGS` (`--help` lists the arguments)."""

import sys

from densenets.tools.print_config import main

if __name__ == "__main__":
    sys.exit(main())
