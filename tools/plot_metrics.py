#!/usr/bin/env python
"""`python tools/plot_metrics.py ARGS` from a checkout runs `densenets.tools.plot_metrics`, which the installed
package also offers as the command `densenets plot_metrics ARGS` (`--help` lists the arguments)."""

import sys

from densenets.tools.plot_metrics import main

if __name__ == "__main__":
    sys.exit(main())
