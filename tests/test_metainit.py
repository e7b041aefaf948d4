"""MetaInit: its gradient quotient is the paper's formula, and learning the norms lowers it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import make_cfg
from test_train import scalars
from torch.func import functional_call

from trainstudy.inits import apply_init
from trainstudy.metainit import RandomTask, gradient_quotient, learn_norms
from trainstudy.models import mlp
from trainstudy.train import train
from trainstudy.vectorized import solo_reason


def quotient_by_full_hessian(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 1e-5) -> float:
    """GQ from the whole Hessian of a small net: mean |(g - Hg)/(g + eps sign g) - 1| over all parameters."""
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        parts = torch.split(theta, [s.numel() for s in shapes])
        params = {k: v.reshape(s) for k, v, s in zip(names, parts, shapes)}
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    g = torch.autograd.functional.jacobian(loss, flat)
    h = torch.autograd.functional.hessian(loss, flat)
    sign = torch.where(g >= 0, 1.0, -1.0)
    return float(((g - h @ g) / (g + eps * sign) - 1).abs().mean())


def test_gradient_quotient_is_the_formula_on_the_full_hessian() -> None:
    torch.manual_seed(0)
    model = mlp(3, 3, depth=1, width=4, activation="tanh")  # 31 parameters: a 31x31 Hessian
    x, y = torch.randn(16, 3), torch.randint(0, 3, (16,))
    params = {k: p.detach() for k, p in model.named_parameters()}
    ours = gradient_quotient(lambda th: F.cross_entropy(functional_call(model, th, (x,)), y), params)
    assert float(ours) == pytest.approx(quotient_by_full_hessian(model, x, y), rel=1e-4)


def test_metainit_lowers_the_quotient_it_minimises() -> None:
    torch.manual_seed(0)
    model = mlp(3, 3, depth=1, width=4, activation="tanh")
    apply_init(model, {"name": "normal", "std": 2.0})  # too large: tanh saturates
    task = RandomTask(F.cross_entropy, (3,), 3)
    x, y = task.draw(32)
    task.draw = lambda batch_size: (x, y)  # one batch throughout: GQ is then one function of the norms
    before = quotient_by_full_hessian(model, x, y)
    log = learn_norms(model, task, steps=60, lr=0.02, batch_size=32)
    after = quotient_by_full_hessian(model, x, y)
    assert log.quotients[0] == pytest.approx(before, rel=1e-4) and log.quotients[-1] == pytest.approx(after, rel=1e-4)
    assert after < 0.7 * before, (before, after)
    assert set(log.norms_after) == {"1.weight", "3.weight"}  # weights only; biases stay as they were
    for name, p in model.named_parameters():
        if name in log.norms_after:
            assert p.norm().item() == pytest.approx(log.norms_after[name], rel=1e-5)


@pytest.mark.parametrize("data", [["data=digits"], ["data=regression", "loss=mse"]], ids=["digits", "regression"])
def test_a_metainit_run_logs_its_curve_and_counts_its_time(data: list[str], tmp_path: Path, data_dir: Path) -> None:
    cfg = make_cfg([*data, "init=metainit", "init.steps=3", "init.batch_size=8", "trainer.max_steps=2",
                    "val_every_n_steps=1", f"data_dir={data_dir}"], tmp_path)
    result = train(cfg)
    meta = json.loads((tmp_path / "run" / "metrics.json").read_text())["metainit"]
    assert meta["steps"] == 3 and len(meta["gradient_quotient"]) == 4 and meta["seconds"] > 0
    assert result["metrics"]["conv/train_time_s"] >= meta["seconds"]  # the init's learning is on the clock
    curve = scalars(tmp_path / "run" / "tb")["metainit/gradient_quotient"]
    assert [step for step, _ in curve] == [0, 1, 2, 3]
    assert [v for _, v in curve] == pytest.approx(meta["gradient_quotient"])


def test_vectorized_sweeps_run_metainit_jobs_on_their_own() -> None:
    assert "metainit" in solo_reason(make_cfg(["init=metainit"]))
    for name in ("mean_field", "sparse", "identity", "delta_orthogonal"):
        assert solo_reason(make_cfg([f"init={name}", "init.zero_readout=true"])) is None
