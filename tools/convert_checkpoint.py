#!/usr/bin/env python
"""`python tools/convert_checkpoint.py ARGS` from a checkout runs `densenets.tools.convert_checkpoint`, which the installed
package also offers as the command `densenets convert_checkpoint ARGS` (`--help` lists the arguments)."""

import sys

from densenets.tools.convert_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
