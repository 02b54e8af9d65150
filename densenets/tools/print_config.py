#!/usr/bin/env python
"""Print the fully merged config: `tools/print_config.py --config FILE [key=value ...]`.

Runs the same checks as `tools/train.py` before printing (top-level sections, every key
and value of the whole tree, model sub-dicts included, then the model built on the `meta`
device), so a config that prints trains.
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiment YAML file")
    parser.add_argument("overrides", nargs="*", help="key.sub=value (YAML values); +key=value adds a key")
    args = parser.parse_args(argv)
    import yaml

    from densenets import register_all
    from densenets.config import ConfigError, load_config
    from densenets.engine.config_check import check_config

    try:
        register_all()
        cfg = load_config(args.config, args.overrides)
        check_config(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
