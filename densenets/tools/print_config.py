#!/usr/bin/env python
"""Print the fully merged config: `tools/print_config.py --config FILE [key=value ...]`."""

import argparse
import sys

import yaml

from densenets.config import ConfigError, load_config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="experiment YAML file")
    parser.add_argument("overrides", nargs="*", help="key.sub=value (YAML values); +key=value adds a key")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
