"""Tiny versions of the four tasks' real configs (Faster R-CNN, DETR, FCN, EDSR) on
tiny synthetic data, with every random augmentation of their training pipelines on,
for the exact-resume tests. Each trains a few iterations in about a second."""

from __future__ import annotations

from pathlib import Path

import yaml

from densenets.data.synthetic import make_shapes, make_shapes_city, make_sr_set

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TASKS = ("detection", "detr", "segmentation", "super_resolution")


def make_data(root: Path) -> Path:
    """Write the three tiny synthetic datasets under `root` (once per test session)."""
    make_shapes(root / "shapes", num_train=8, num_val=2, image_size=64, max_objects=3, object_size=(0.2, 0.5))
    make_shapes_city(root / "city", num_train=4, num_val=1, image_size=(64, 128))
    make_sr_set(root / "sr", num_train=4, hr_size=48, scales=(2,), valid_max_size=48)
    return root


def _train(**extra) -> dict:
    return {
        "batch_size": 2,
        "max_iter": 6,
        "optimizer": {"type": "AdamW", "lr": 1e-3, "weight_decay": 1e-4},
        "scheduler": {"type": "CosineLR", "warmup_iters": 2},
        "checkpoint_period": 2,
        "keep_checkpoints": 0,
        "log_period": 1,
        "plot": False,
        "device": "cpu",
        "eval_period": 0,
        "best_metric": None,
        **extra,
    }


def _coco(root: Path, split: str, transforms: dict) -> dict:
    return {
        "type": "COCODetection",
        "root": str(root / "shapes" / f"{split}2017"),
        "ann_file": str(root / "shapes" / "annotations" / f"instances_{split}2017.json"),
        "transforms": transforms,
    }


def task_config(task: str, data: Path) -> dict:
    """The experiment dict of `task` (data loaded by 2 workers, augmentation on)."""
    small_r18 = {"depth": 18, "norm": "BN", "freeze_at": 0, "weights": None, "channels_last": False}
    if task == "detection":
        jitter = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.0, "p": 0.8}
        return {
            "_base_": str(CONFIGS / "demo" / "faster_rcnn_r18_fpn_shapes.yaml"),
            "model": {
                "backbone": {"channels_last": False},
                "neck": {"out_channels": 32},
                "roi_heads": {"box_head": {"fc_dims": [32, 32]}},
            },
            "data": {
                "train": _coco(
                    data,
                    "train",
                    {
                        "type": "DetectionTransform",
                        "min_size": [48, 56, 64],
                        "max_size": 64,
                        "flip_prob": 0.5,
                        "color_jitter": jitter,
                    },
                ),
                "val": _coco(data, "val", {"type": "DetectionTransform", "min_size": 64, "max_size": 64}),
                "num_workers": 2,
            },
            "train": _train(clip_grad={"type": "norm", "max": 5.0}),
        }
    if task == "detr":
        return {
            "_base_": str(CONFIGS / "_base_" / "models" / "detr_r50.yaml"),
            "model": {
                "num_classes": 3,
                "num_queries": 8,
                "backbone": {**small_r18, "out_features": ["res5"]},
                "transformer": {
                    "d_model": 32,
                    "nhead": 2,
                    "num_encoder_layers": 1,
                    "num_decoder_layers": 1,
                    "dim_feedforward": 32,
                },
            },
            "data": {
                "train": _coco(
                    data,
                    "train",
                    {
                        "type": "DETRTransform",
                        "scales": [48, 56, 64],
                        "max_size": 64,
                        "crop_resize": [48, 64],
                        "crop_size": [32, 48],
                    },
                ),
                "num_workers": 2,
            },
            "train": _train(),
        }
    if task == "segmentation":
        return {
            "_base_": [
                str(CONFIGS / "_base_" / "models" / "fcn_r50_d8.yaml"),
                str(CONFIGS / "_base_" / "datasets" / "cityscapes.yaml"),
            ],
            "model": {
                "backbone": {**small_r18},
                "decode_head": {"num_classes": 19, "channels": 16, "norm": "BN"},
                "auxiliary_head": {"num_classes": 19, "channels": 8, "norm": "BN"},
            },
            "data": {
                "train": {
                    "root": str(data / "city"),
                    "transforms": {"crop_size": [48, 64], "ratio_range": [0.75, 1.5], "photometric": True},
                },
                "val": {"root": str(data / "city")},
                "num_workers": 2,
            },
            "train": _train(optimizer={"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}),
        }
    if task == "super_resolution":
        return {
            "_base_": [
                str(CONFIGS / "_base_" / "models" / "edsr_baseline.yaml"),
                str(CONFIGS / "_base_" / "datasets" / "div2k.yaml"),
            ],
            "model": {"body": {"num_blocks": 2, "channels": 8}},
            "data": {
                "train": {
                    "root": str(data / "sr"),
                    "repeat": 2,
                    "transforms": [
                        {"type": "SRRandomCrop", "patch_size": 12},
                        {"type": "SRRandomFlipRotate"},
                    ],
                },
                "val": {"root": str(data / "sr"), "index_range": None},
                "num_workers": 2,
            },
            "train": _train(),
        }
    raise KeyError(task)


def write_task_config(task: str, data: Path, path: Path, **train) -> Path:
    cfg = task_config(task, data)
    cfg["train"].update(train)
    cfg["evaluation"] = None  # no evaluation: these tests compare weights
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
