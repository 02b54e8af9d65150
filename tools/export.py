#!/usr/bin/env python
"""`python tools/export.py ARGS` from a checkout runs `densenets.tools.export`, which the installed
package also offers as the command `densenets export ARGS` (`--help` lists the arguments)."""

import sys

from densenets.tools.export import main

if __name__ == "__main__":
    sys.exit(main())
