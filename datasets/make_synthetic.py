#!/usr/bin/env python
"""Write the synthetic datasets (deterministic from a seed) in the real datasets' layouts.

    python datasets/make_synthetic.py shapes --root datasets/synthetic/shapes
    python datasets/make_synthetic.py shapes-city --root datasets/synthetic/shapes_city
    python datasets/make_synthetic.py sr --root datasets/synthetic/sr

See `densenets/data/synthetic.py` for what each dataset holds.
"""

from __future__ import annotations

import argparse
import sys
import time

from densenets.data.synthetic import make_shapes, make_shapes_city, make_sr_set

DEFAULT_ROOTS = {
    "shapes": "datasets/synthetic/shapes",
    "shapes-city": "datasets/synthetic/shapes_city",
    "sr": "datasets/synthetic/sr",
}


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.replace("x", ",").split(",") if v]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=sorted(DEFAULT_ROOTS), help="which dataset to write")
    parser.add_argument("--root", help="output folder (default: datasets/synthetic/<dataset>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, help="training images (default: the generator's)")
    parser.add_argument("--num-val", type=int, help="validation images (shapes, shapes-city)")
    parser.add_argument("--image-size", type=_int_list, help="S or H,W (shapes, shapes-city)")
    parser.add_argument("--hr-size", type=int, help="training crop side (sr)")
    parser.add_argument("--scales", type=_int_list, help="LR scales, e.g. 2,3,4 (sr)")
    args = parser.parse_args(argv)

    kwargs: dict = {"seed": args.seed}
    if args.num_train is not None:
        kwargs["num_train"] = args.num_train
    if args.dataset == "sr":
        if args.num_val is not None or args.image_size is not None:
            parser.error("sr: --num-val and --image-size do not apply (use --hr-size)")
        if args.hr_size is not None:
            kwargs["hr_size"] = args.hr_size
        if args.scales is not None:
            kwargs["scales"] = tuple(args.scales)
    else:
        if args.hr_size is not None or args.scales is not None:
            parser.error(f"{args.dataset}: --hr-size and --scales apply to sr only")
        if args.num_val is not None:
            kwargs["num_val"] = args.num_val
        if args.image_size is not None:
            size = args.image_size
            kwargs["image_size"] = size[0] if len(size) == 1 else tuple(size[:2])
    make = {"shapes": make_shapes, "shapes-city": make_shapes_city, "sr": make_sr_set}[args.dataset]
    start = time.perf_counter()
    try:
        out = make(args.root or DEFAULT_ROOTS[args.dataset], **kwargs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: wrote {out['root']} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
