"""Config mistakes are caught before anything runs, by train.py and print_config.py alike:
misspelt sections, wrong types and ranges (one line naming key, value and what is
allowed), nested model typos, `_base_` values, and what `+key=value` may add."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from testkit import tiny

from densenets.config import ConfigError, load_config
from densenets.engine.config_check import check_config
from densenets.tools import print_config, train

ROOT = Path(__file__).resolve().parents[2]

DEMO = str(ROOT / "configs" / "demo" / "faster_rcnn_r18_fpn_shapes.yaml")


def _both_tools(config: str, overrides: list[str], tmp_path, capsys) -> list[str]:
    """The error line of print_config.py and of train.py (which must not start training)."""
    lines = []
    for tool, extra in ((print_config, []), (train, ["--output", str(tmp_path / "run")])):
        assert tool.main(["--config", config, *extra, *overrides]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        lines.append(err.strip())
    assert not (tmp_path / "run").exists()  # nothing ran
    return lines


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.backbone.depth=51", "model.backbone.depth: must be one of 18, 34, 50, 101, 152, got 51"),
        ("train.seed=abc", "train.seed: expected an integer, got 'abc'"),
        ("train.ema.decay=abc", "train.ema.decay: expected a number, got 'abc'"),
        ("train.optimizer.momentum=abc", "train.optimizer.momentum: expected a number, got 'abc'"),
        ("train.optimizer.momentum=1.5", "train.optimizer.momentum: must be in [0, 1), got 1.5"),
        ("train.scheduler.steps=abc", "train.scheduler.steps: expected a list of integers, got 'abc'"),
        ("train.batch_size=2.5", "train.batch_size: expected an integer, got 2.5"),
        (
            "model.roi_heads.num_classes=-3",
            "model.roi_heads.num_classes: expected a positive integer, got -3",
        ),
        ("model.rpn.nms_thresh=abc", "model.rpn.nms_thresh: expected a number, got 'abc'"),
        ("train.device=gpu", "train.device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ],
)
def test_wrong_values_are_one_line_errors_in_both_tools(override, message, tmp_path, capsys):
    for line in _both_tools(DEMO, [override], tmp_path, capsys):
        assert line == f"error: {message}"


@pytest.mark.parametrize(
    "typo, section", [("trian", "train"), ("evalution", "evaluation"), ("infre", "infer")]
)
def test_misspelt_sections_in_a_file(typo, section, tmp_path, capsys):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"_base_": DEMO, typo: {"batch_size": 2}}))
    for line in _both_tools(str(path), [], tmp_path, capsys):
        assert line.startswith(f"error: {typo}: unknown top-level section, did you mean {section}?")


def test_nested_model_typos_and_bad_base_are_caught_at_load_time(tmp_path, capsys):
    path = tmp_path / "e.yaml"
    path.write_text(
        yaml.safe_dump({"_base_": DEMO, "model": {"rpn": {"anchor_generator": {"sizez": [[8]]}}}})
    )
    for line in _both_tools(str(path), [], tmp_path, capsys):
        assert line == "error: model.rpn.anchor_generator.sizez: unknown key, did you mean sizes?"
    path.write_text("_base_: 5\n")
    for line in _both_tools(str(path), [], tmp_path, capsys):
        assert line.endswith("_base_: expected a path or a list of paths, got 5")


def test_plus_adds_keys_where_nothing_checks_them_and_says_why_elsewhere(tmp_path):
    cfg_path = tiny.write_config(tmp_path / "exp.yaml")
    with pytest.raises(
        ConfigError,
        match=r"^train\.foo: unknown key \(train is a checked section: foo is not one of "
        r"accumulate, amp, batch_size, .*\)$",
    ):
        load_config(cfg_path, ["+train.foo=1"])
    with pytest.raises(ConfigError, match=r"^train\.foo: unknown key$"):
        load_config(cfg_path, ["train.foo=1"])
    with pytest.raises(
        ConfigError, match=r"data\.train\.sise: unknown key, did you mean size\? \(data\.train is a checked"
    ):
        load_config(cfg_path, ["+data.train.sise=3"])
    # Free places: `+` adds; `_`-prefixed top-level keys are the user's own.
    cfg = load_config(cfg_path, ["+_notes.owner=me"])
    assert cfg._notes.owner == "me"
    # A key of a section the config lacks: the section is made.
    cfg = load_config(cfg_path, ["infer.visualizer.score_threshold=0", "train.ema.decay=0.99"])
    assert cfg.infer.visualizer.score_threshold == 0 and cfg.train.ema.decay == 0.99
    check_config(cfg)
    with pytest.raises(ConfigError, match=r"infer\.visualiser: unknown key, did you mean visualizer\?"):
        load_config(cfg_path, ["infer.visualiser.score_threshold=0"])
    with pytest.raises(ConfigError, match=r"trian: unknown top-level section, did you mean train\?"):
        load_config(cfg_path, ["trian.max_iter=3"])


def test_every_shipped_config_passes_the_checks():
    for path in sorted((ROOT / "configs").glob("*/*.yaml")):
        check_config(load_config(path))
