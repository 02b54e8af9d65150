"""LR schedules against torch's own schedulers; parameter groups; gradient clipping."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as tls

from densenets.config import ConfigError
from densenets.engine.lr_schedules import SCHEDULES, epoch_to_iter
from densenets.engine.optim import WarmupLR, build_optimizer, clip_gradients, param_groups
from densenets.engine.schema import ClipGradConfig, OptimizerConfig, SchedulerConfig, parse_section

BASE = 0.1
N = 50


def _ours(**cfg) -> list[float]:
    return _curve(SchedulerConfig(**cfg), N)


def _curve(cfg: SchedulerConfig, max_iter: int, iters_per_epoch=None) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE)
    sched = WarmupLR(opt, cfg, max_iter, iters_per_epoch)
    lrs = []
    for _ in range(max_iter):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def _torch(make) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE)
    sched = make(opt)
    lrs = []
    for _ in range(N):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize(
    "cfg, make",
    [
        (dict(type="MultiStepLR", steps=[20, 35], gamma=0.5), lambda o: tls.MultiStepLR(o, [20, 35], 0.5)),
        (dict(type="CosineLR"), lambda o: tls.CosineAnnealingLR(o, T_max=N)),
        (
            dict(type="CosineLR", min_factor=0.1),
            lambda o: tls.CosineAnnealingLR(o, T_max=N, eta_min=0.1 * BASE),
        ),
        (dict(type="PolyLR", power=0.9), lambda o: tls.PolynomialLR(o, total_iters=N, power=0.9)),
        (dict(type="ConstantLR"), lambda o: tls.LambdaLR(o, lambda it: 1.0)),
        (
            dict(type="MultiStepLR", steps=[30], warmup_iters=10, warmup_factor=0.01),
            lambda o: tls.SequentialLR(
                o,
                [tls.LinearLR(o, 0.01, 1.0, total_iters=10), tls.MultiStepLR(o, [20], 0.1)],
                milestones=[10],
            ),
        ),
        (
            dict(type="ConstantLR", warmup_iters=5, warmup_factor=0.2, warmup_method="constant"),
            lambda o: tls.ConstantLR(o, factor=0.2, total_iters=5),
        ),
    ],
    ids=["multistep", "cosine", "cosine-min", "poly", "constant", "linear-warmup", "constant-warmup"],
)
def test_schedules_match_torch(cfg, make):
    assert _ours(**cfg) == pytest.approx(_torch(make), rel=1e-9, abs=1e-12)


def test_poly_min_factor_and_scheduler_state_round_trip():
    lrs = _ours(type="PolyLR", power=1.0, min_factor=0.2)
    assert lrs[0] == pytest.approx(BASE) and lrs[25] == pytest.approx(BASE * (0.2 + 0.8 * 0.5))
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE)
    sched = WarmupLR(opt, SchedulerConfig(type="CosineLR", warmup_iters=3), 10)
    for _ in range(4):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE)
    sched2 = WarmupLR(opt2, SchedulerConfig(type="CosineLR", warmup_iters=3), 10)
    sched2.load_state_dict(state)
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr()


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1, bias=False))
        self.head = nn.Sequential(nn.Linear(4, 2), nn.LayerNorm(2))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_param_groups_split_by_lr_and_weight_decay():
    net = _Net()
    cfg = OptimizerConfig(
        lr=0.1, weight_decay=1e-4, backbone_lr_mult=0.5, norm_weight_decay=0.0, bias_weight_decay=0.0
    )
    groups = {(g["lr"], g["weight_decay"]): {id(p) for p in g["params"]} for g in param_groups(net, cfg)}
    b, h = net.backbone, net.head
    assert groups == {
        (0.05, 1e-4): {id(b[0].weight), id(b[2].weight)},
        (0.05, 0.0): {id(b[0].bias), id(b[1].weight), id(b[1].bias)},
        (0.1, 1e-4): {id(h[0].weight)},
        (0.1, 0.0): {id(h[0].bias), id(h[1].weight), id(h[1].bias)},
    }
    # Defaults: one group, everything trainable, frozen parameters left out.
    (only,) = param_groups(net, OptimizerConfig(lr=0.1, weight_decay=1e-4))
    assert len(only["params"]) == sum(p.requires_grad for p in net.parameters())


def test_lr_mults_scale_parameters_by_name():
    net = _Net()
    cfg = OptimizerConfig(
        lr=0.1, weight_decay=0.0, backbone_lr_mult=0.5, lr_mults={"head.0": 0.1, "backbone.2": 0.2}
    )
    lr_of = {id(p): g["lr"] for g in param_groups(net, cfg) for p in g["params"]}
    b, h = net.backbone, net.head
    assert lr_of[id(h[0].weight)] == pytest.approx(0.01) and lr_of[id(h[0].bias)] == pytest.approx(0.01)
    assert lr_of[id(h[1].weight)] == pytest.approx(0.1)
    assert lr_of[id(b[2].weight)] == pytest.approx(0.1 * 0.5 * 0.2)
    assert lr_of[id(b[0].weight)] == pytest.approx(0.05)


def test_optimizers_get_their_options():
    sgd = build_optimizer(_Net(), OptimizerConfig(type="SGD", momentum=0.8, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8 and sgd.defaults["nesterov"]
    adamw = build_optimizer(_Net(), OptimizerConfig(type="AdamW", betas=[0.8, 0.9], eps=1e-6))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.8, 0.9)
    assert adamw.param_groups[0]["weight_decay"] == 1e-4
    assert sgd.defaults["fused"] and adamw.defaults["fused"]  # CPU float parameters: fused by default
    assert not build_optimizer(_Net(), OptimizerConfig(fused=False)).defaults["fused"]


@pytest.mark.parametrize("kind", ["SGD", "AdamW"])
def test_fused_optimizer_takes_the_per_tensor_steps(kind):
    # Every parameter gets a real gradient (no bias before a BatchNorm: Adam would turn
    # its rounding-noise gradient into full-size steps).
    def net():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2)
        )

    nets = [net(), net()]
    cfg = {"type": kind, "lr": 0.05, "weight_decay": 1e-2, "norm_weight_decay": 0.0}
    opts = [build_optimizer(n, OptimizerConfig(**cfg, fused=f)) for n, f in zip(nets, (False, True))]
    start = nets[0][0].weight.detach().clone()
    x = torch.randn(4, 3, 8, 8)
    for _ in range(5):
        for model, opt in zip(nets, opts):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # float32 rounding; steps are lr = 0.05
    assert (nets[0][0].weight - start).abs().max() > 1e-2  # the steps did move the weights


def test_clip_by_norm_and_by_value():
    params = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))]
    params[0].grad, params[1].grad = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([0.0, 12.0])
    norm = clip_gradients(params, ClipGradConfig(type="norm", max=1.3))
    assert norm == pytest.approx(13.0)
    assert torch.cat([p.grad for p in params]).norm() == pytest.approx(1.3, rel=1e-5)
    params[0].grad = torch.tensor([3.0, -0.5, -4.0])
    assert clip_gradients(params, ClipGradConfig(type="value", max=1.0)) is None
    assert params[0].grad.tolist() == [1.0, -0.5, -1.0]
    assert clip_gradients(params, None) is None


def test_resumed_schedule_follows_the_new_config():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE)
    short = WarmupLR(opt, SchedulerConfig(type="PolyLR", power=1.0), max_iter=10)
    for _ in range(6):
        opt.step()
        short.step()
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE)
    longer = WarmupLR(opt2, SchedulerConfig(type="PolyLR", power=1.0), max_iter=20)
    longer.load_state_dict(short.state_dict())
    assert longer.last_epoch == 6 and longer.max_iter == 20
    assert opt2.param_groups[0]["lr"] == pytest.approx(BASE * (1 - 6 / 20))


def test_epoch_milestones_give_the_hand_computed_iteration_curve():
    # 100 images at 8 per step: 12.5 iterations an epoch, as `train.epochs` counts them;
    # epochs 2 and 3 end at iterations ceil(25) = 25 and ceil(37.5) = 38.
    ipe = Fraction(100, 8)
    max_iter = epoch_to_iter(4, ipe)
    assert max_iter == 50
    by_epoch = SchedulerConfig(steps=[2, 3], by_epoch=True, gamma=0.5, warmup_iters=5)
    by_hand = SchedulerConfig(steps=[25, 38], gamma=0.5, warmup_iters=5)
    assert _curve(by_epoch, max_iter, ipe) == _curve(by_hand, max_iter)
    # DETR's 500-epoch recipe on COCO train2017 (117266 images with objects, 64 a step):
    # epoch 400 ends at 732913, the ceiling of 400 / 500 of the run's 916141 iterations
    # (the file used to say 733200, i.e. 400 whole epochs of 1833 iterations).
    coco = Fraction(117266, 64)
    assert epoch_to_iter(500, coco) == 916141 and epoch_to_iter(400, coco) == 732913
    with pytest.raises(ValueError, match=r"train\.scheduler\.by_epoch: the iterations per epoch are needed"):
        _curve(by_epoch, max_iter)


def test_schedule_types_are_the_registered_classes():
    assert set(SCHEDULES) == {"MultiStepLR", "CosineLR", "PolyLR", "ConstantLR"}
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE)
    sched = WarmupLR(opt, SchedulerConfig(type="PolyLR", power=2.0, min_factor=0.1), max_iter=10)
    assert sched.schedule == SCHEDULES["PolyLR"](power=2.0, min_factor=0.1)
    assert "schedule" not in sched.state_dict() and "warmup" not in sched.state_dict()
    with pytest.raises(ConfigError, match=r"train\.scheduler\.type: 'StepLR' is not one of"):
        parse_section("train", {"max_iter": 1, "scheduler": {"type": "StepLR"}})
