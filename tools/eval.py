#!/usr/bin/env python
"""`python tools/eval.py ARGS` from a checkout runs `densenets.tools.eval`, which the installed
package also offers as the command `densenets eval ARGS` (`--help` lists the arguments)."""

import sys

from densenets.tools.eval import main

if __name__ == "__main__":
    sys.exit(main())
