#!/usr/bin/env python
"""Convert a foreign checkpoint to a densenets state dict.

    tools/convert_checkpoint.py --from torchvision-resnet resnet50-0676ba61.pth r50.pth
    tools/convert_checkpoint.py --from detectron2 R-50.pkl r50_msra.pth
    tools/convert_checkpoint.py --list

NAME is a converter registered in `densenets.checkpoint.convert.CONVERTERS`. ``.pkl`` inputs
are read with the restricted unpickler (numpy arrays and containers only), anything else
with ``torch.load(weights_only=True)``. OUT holds ``{"model": state_dict}``, which
``weights:`` in a backbone config and the trainer's checkpoint loader both accept; a
COCO detector's also holds ``"meta": {"class_names", "category_ids"}`` (the 80 COCO
classes, or torchvision's 90 ids with "N/A" gaps), which infer.py and Predictor use.
"""

from __future__ import annotations

import argparse
import pickle
import sys

# Converters of COCO detectors -> whether their labels keep COCO's id gaps (torchvision's
# 91-way classifier uses the category ids as labels); the class metadata goes into the file.
COCO_DETECTORS = {
    "torchvision-faster-rcnn": True,
    "detectron2-faster-rcnn": False,
    "detr": False,
    "dab-detr": False,
    "mmdet": False,
    "deformable-detr": False,
    "dino": False,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--from", dest="fmt", metavar="NAME", help="source format (see --list)")
    parser.add_argument("--prefix", default="", help="prepended to every converted key, e.g. 'backbone.'")
    parser.add_argument("--list", action="store_true", help="print the registered formats and exit")
    parser.add_argument("input", nargs="?", help="foreign checkpoint (.pth, .pt, .pkl)")
    parser.add_argument("output", nargs="?", help="where to write the converted state dict")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch  # after parsing: --help stays fast

    from densenets.checkpoint import save_atomic
    from densenets.checkpoint.convert import CONVERTERS
    from densenets.checkpoint.weights import read_checkpoint

    if args.list:
        print("\n".join(sorted(CONVERTERS)))
        return 0
    if not (args.fmt and args.input and args.output):
        print("error: --from NAME, IN and OUT are required (or --list)", file=sys.stderr)
        return 2
    if args.fmt not in CONVERTERS:
        print(
            f"error: --from: unknown format {args.fmt!r} (one of {', '.join(sorted(CONVERTERS))})",
            file=sys.stderr,
        )
        return 2
    try:
        # Official training checkpoints (DETR's, for one) carry their argparse options.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = read_checkpoint(args.input)
        state_dict = CONVERTERS[args.fmt](obj)
    except (FileNotFoundError, KeyError, ValueError, TypeError, pickle.UnpicklingError) as e:
        print(f"error: {args.input}: {e}", file=sys.stderr)
        return 1
    state_dict = {args.prefix + k: v for k, v in state_dict.items()}
    out = {"model": state_dict}
    if args.fmt in COCO_DETECTORS:
        from densenets.data.coco_names import coco_metadata

        out["meta"] = coco_metadata(with_gaps=COCO_DETECTORS[args.fmt])
    save_atomic(out, args.output)
    print(f"wrote {len(state_dict)} tensors ({args.fmt} -> densenets) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
