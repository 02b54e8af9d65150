"""ResNet key maps: detectron2/caffe2 pickles, torchvision keys, the restricted unpickler, the CLI."""

import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from skimage import data
from testkit.caffe2_resnet import EPS, detectron2_network, msra_blobs

from densenets.checkpoint.convert import CONVERTERS, convert
from densenets.checkpoint.convert.resnet import torchvision_resnet_to_densenets
from densenets.checkpoint.pickle_io import load_pickle
from densenets.modeling.backbones import ResNet

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def tv50():
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def test_detectron2_msra_pickle_computes_what_detectron2_computes(tmp_path, tv50):
    path = tmp_path / "R-50.pkl"
    blobs = msra_blobs(tv50)
    with open(path, "wb") as f:
        pickle.dump(blobs, f, protocol=2)  # detectron2's files are protocol-2 pickles
    sd = convert("detectron2", load_pickle(path))
    model = ResNet(depth=50, norm="FrozenBN", out_features=["res2", "res5", "linear"])
    assert set(sd) == set(model.state_dict())  # every tensor, nothing else (no *_momentum)
    assert torch.equal(sd["stem.norm1.running_mean"], torch.zeros(64))
    assert torch.equal(sd["res2.0.norm1.running_var"], torch.ones(64))  # detectron2's 1, not 1 - eps

    # On a real photo in float64: every stage equals detectron2's arithmetic to rounding.
    model = ResNet(depth=50, norm="FrozenBN", out_features=["res2", "res5", "linear"], weights=str(path))
    model.load_pretrained()
    model = model.double().eval()
    ref = detectron2_network(tv50, blobs)
    x = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].double() / 255 - 0.5  # 300 x 451
    with torch.no_grad():
        ours = model(x)
        res2 = ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x)))))
        res5 = ref.layer4(ref.layer3(ref.layer2(res2)))
        logits = ref.fc(torch.flatten(ref.avgpool(res5), 1))
    for got, want in ((ours["res2"], res2), (ours["res5"], res5), (ours["linear"], logits)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * want.abs().max().item())
    # The folded affine alone (var = 1 - eps, exactly x*s + b) is a different function.
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "running_var"):
                m.running_var.fill_(1 - EPS)
        assert not torch.allclose(model(x)["res5"], res5, rtol=1e-6, atol=0)


def test_detectron2_named_pickle_with_model_zoo_wrapper(tmp_path):
    torch.manual_seed(0)
    ours = ResNet(
        depth=50, norm="FrozenBN", out_features=["res3"], stage_with_dcn=[False, True, False, False]
    )
    ours_sd = ours.state_dict()
    d2 = {}
    for key, value in ours_sd.items():  # our layout -> detectron2's, written out by hand
        key = key.replace("shortcut.conv.", "shortcut.").replace("conv2.conv_offset.", "conv2_offset.")
        for i in (1, 2, 3):
            key = key.replace(f"norm{i}.", f"conv{i}.norm.")
        d2[f"backbone.bottom_up.{key}"] = value.numpy()
    d2["backbone.fpn_lateral2.weight"] = np.zeros((256, 256, 1, 1), np.float32)  # not backbone: ignored
    with open(tmp_path / "model_final.pkl", "wb") as f:
        pickle.dump({"model": d2, "__author__": "test", "matching_heuristics": True}, f)
    sd = convert("detectron2", load_pickle(tmp_path / "model_final.pkl"))
    assert set(sd) == set(ours_sd)
    assert all(torch.equal(sd[k], ours_sd[k]) for k in sd)


def test_restricted_unpickler_refuses_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"conv1_w": Exploit()}))
    with pytest.raises(
        pickle.UnpicklingError, match=r"evil\.pkl: refusing to load global (posix|nt)\.system"
    ):
        load_pickle(path)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(pickle.UnpicklingError, match="junk.pkl: not a readable pickle"):
        load_pickle(tmp_path / "junk.pkl")


def test_torchvision_map_with_prefixes_and_unknown_keys():
    sd = {
        "backbone.body.conv1.weight": torch.ones(1),
        "backbone.body.layer3.4.bn2.running_var": torch.ones(2),
    }
    sd["roi_heads.box_head.fc6.weight"] = torch.ones(3)  # outside the prefix: left alone
    out = torchvision_resnet_to_densenets(sd, "backbone.body.", "backbone.")
    assert sorted(out) == ["backbone.res4.4.norm2.running_var", "backbone.stem.conv1.weight"]
    with pytest.raises(KeyError, match="'layer1.0.se.fc1.weight'"):
        torchvision_resnet_to_densenets({"layer1.0.se.fc1.weight": torch.ones(1)})
    assert {"torchvision-resnet", "timm-resnet", "detectron2"} <= set(CONVERTERS)


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "convert_checkpoint", ROOT / "tools" / "convert_checkpoint.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_convert_checkpoint_cli(tmp_path, capsys):
    main = load_tool()
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    assert main(["--from", "torchvision-resnet", str(tmp_path / "tv.pth"), str(tmp_path / "out.pth")]) == 0
    assert "wrote 122 tensors" in capsys.readouterr().out
    model = ResNet(depth=18, out_features=["linear"])
    model.load_state_dict(torch.load(tmp_path / "out.pth", weights_only=True)["model"])  # strict
    torch.testing.assert_close(model.res4[1].conv2.weight, tv.layer3[1].conv2.weight)

    assert main(["--from", "torchvision-resnett", "a", "b"]) == 2
    assert "unknown format 'torchvision-resnett'" in capsys.readouterr().err
    assert main(["--from", "detectron2", str(tmp_path / "no.pkl"), "b"]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["--list"]) == 0 and "timm-resnet" in capsys.readouterr().out.split()


@pytest.mark.slow
def test_convert_checkpoint_cli_runs_as_a_script():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_checkpoint.py"), "--list"],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0 and "detectron2" in run.stdout.split()
