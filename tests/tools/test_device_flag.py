"""`--device` takes the same strings in every tool (auto, cpu, cuda, cuda:N, mps), and a
device this machine lacks is a one-line error, not argparse's "invalid choice" or a traceback."""

import importlib

import pytest
import torch

DEMO = "configs/demo/faster_rcnn_r18_fpn_shapes.yaml"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    "tool, extra",
    [("eval", ["--weights", "none"]), ("infer", ["--weights", "none", "--input", "x.png", "--output", "o"]),
     ("benchmark", [])],
)  # fmt: skip
@pytest.mark.parametrize("device", ["cuda:1", "mps"])
def test_device_strings_reach_the_device_check(tool, extra, device, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if tool == "infer":
        from PIL import Image

        Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    if device == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    main = importlib.import_module(f"densenets.tools.{tool}").main
    assert main(["--config", DEMO, *extra, "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: device '{device}'"), err
