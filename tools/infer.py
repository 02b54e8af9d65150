#!/usr/bin/env python
"""`python tools/infer.py ARGS` from a checkout runs `densenets.tools.infer`, which the installed
package also offers as the command `densenets infer ARGS` (`--help` lists the arguments)."""

import sys

from densenets.tools.infer import main

if __name__ == "__main__":
    sys.exit(main())
