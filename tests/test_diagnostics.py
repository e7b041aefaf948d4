"""The physics of initialization: activation std against depth, LSUV's unit variance, the symmetry problem."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_cfg
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainstudy.diagnostics import InitDiagnostics, histogram_every, layer_statistics, weight_histogram, weight_ranks
from trainstudy.inits import apply_init, apply_lsuv
from trainstudy.losses import build_loss
from trainstudy.models import mlp
from trainstudy.train import fit

SHORT = ["data=digits", "trainer.max_steps=30", "val_every_n_steps=10", "progress_bar=false"]


def deep_relu(init: list[str], depth: int = 20, width: int = 256) -> tuple[list[dict], torch.nn.Module]:
    torch.manual_seed(0)
    x, y = torch.randn(512, 256), torch.randint(0, 10, (512,))
    model = mlp(256, 10, depth=depth, width=width, activation="relu")
    apply_init(model, make_cfg(init).init, "relu", batch=x)
    loss = build_loss(make_cfg(["loss=ce"]).loss, "multiclass", 10)
    return layer_statistics(model, loss, x, y), model


def test_act_std_shrinks_with_depth_under_xavier_and_holds_under_kaiming() -> None:
    xavier = [r["act_std"] for r in deep_relu(["init=xavier_normal"])[0][:20]]
    kaiming = [r["act_std"] for r in deep_relu(["init=kaiming_normal"])[0][:20]]
    assert all(b < a for a, b in zip(xavier, xavier[1:])), xavier  # Glorot's Var = 1/n halves per ReLU layer
    assert xavier[-1] < xavier[0] / 100
    assert all(kaiming[0] / 2 <= s <= kaiming[0] * 2 for s in kaiming), kaiming  # He et al.: variance kept


def test_lsuv_puts_every_layer_output_at_unit_variance_where_kaiming_and_xavier_do_not() -> None:
    tol = 0.02
    lsuv = [r["preact_std"] ** 2 for r in deep_relu(["init=lsuv", f"init.tol={tol}"])[0]]
    assert all(abs(v - 1) < tol for v in lsuv), lsuv
    for other in (["init=kaiming_normal"], ["init=xavier_normal"]):
        variances = [r["preact_std"] ** 2 for r in deep_relu(other)[0]]
        assert sum(abs(v - 1) >= tol for v in variances) > len(variances) // 2, (other, variances)


def test_lsuv_reports_the_variances_it_reached() -> None:
    torch.manual_seed(1)
    model, x = mlp(64, 10, depth=5, width=128, activation="tanh"), torch.randn(256, 64) * 3
    variances = apply_lsuv(model, x, tol=0.05, max_iter=20)
    assert len(variances) == 6 and all(abs(v - 1) < 0.05 for v in variances.values())


def test_measured_weight_std_sits_next_to_the_aim() -> None:
    rows, _ = deep_relu(["init=kaiming_normal"], depth=3, width=512)
    torch.manual_seed(0)
    model = mlp(256, 10, depth=3, width=512, activation="relu")
    targets = apply_init(model, make_cfg(["init=kaiming_normal"]).init, "relu")
    loss = build_loss(make_cfg(["loss=ce"]).loss, "multiclass", 10)
    rows = layer_statistics(model, loss, torch.randn(64, 256), torch.randint(0, 10, (64,)), targets)
    for row in rows[:-1]:
        assert row["weight_std"] == pytest.approx(row["weight_std_target"], rel=0.05)
    assert all(p.grad is None for p in model.parameters())  # leaves no gradients behind


def test_diagnostics_do_not_change_training(tmp_path: Path, data_dir: Path) -> None:
    on = fit(make_cfg([*SHORT, f"data_dir={data_dir}"], tmp_path / "on"))[0]
    off = fit(make_cfg([*SHORT, f"data_dir={data_dir}", "diagnostics=false"], tmp_path / "off"))[0]
    assert on["train_loss"] == off["train_loss"]
    assert on["diagnostics"]["layers"] and off["diagnostics"] is None


def test_zero_init_never_breaks_symmetry(tmp_path: Path, data_dir: Path) -> None:
    result, module = fit(make_cfg([*SHORT, f"data_dir={data_dir}", "init=zeros"], tmp_path))
    layers = [m for m in module.model if isinstance(m, torch.nn.Linear)]
    for hidden in layers[:-1]:
        assert torch.count_nonzero(hidden.weight) == 0 and torch.count_nonzero(hidden.bias) == 0
    assert torch.count_nonzero(layers[-1].weight) == 0
    assert torch.count_nonzero(layers[-1].bias) > 0  # the only parameter that moved
    x = torch.randn(100, 1, 8, 8)
    assert module.model(x).argmax(1).unique().numel() == 1  # one class for every input
    assert [r["weight_rank"] for r in result["diagnostics"]["layers"][:-1]] == [0, 0]


def test_constant_init_collapses_hidden_layers_to_rank_one(tmp_path: Path, data_dir: Path) -> None:
    result, module = fit(make_cfg([*SHORT, f"data_dir={data_dir}", "init=constant", "init.value=0.01"], tmp_path))
    assert result["status"] == "ok"
    assert [r["weight_rank"] for r in result["diagnostics"]["layers"][:-1]] == [1, 1]
    assert set(weight_ranks(module.model).values()) == {1}
    default = fit(make_cfg([*SHORT, f"data_dir={data_dir}"], tmp_path / "default"))[0]
    assert min(r["weight_rank"] for r in default["diagnostics"]["layers"][:-1]) > 1


def test_histogram_interval_is_a_round_tenth_of_the_run() -> None:
    assert [histogram_every(n) for n in (30, 355, 1000, 7)] == [5, 50, 100, 1]
    assert histogram_every(float("inf")) is None


def test_a_weight_histogram_counts_every_weight_in_equal_buckets() -> None:
    w = torch.randn(300, 70, generator=torch.Generator().manual_seed(0)) * 0.05
    h = weight_histogram(w, bins=16)
    values = w.double().flatten().numpy()
    edges = np.linspace(values.min(), values.max(), 17)
    assert h["bucket_counts"] == np.histogram(values, bins=edges)[0].tolist()  # numpy's last bucket is closed too
    assert h["bucket_limits"] == pytest.approx(edges[1:].tolist(), rel=1e-6)
    assert sum(h["bucket_counts"]) == h["num"] == 21000
    assert (h["min"], h["max"]) == pytest.approx((values.min(), values.max()), rel=1e-6)
    assert (h["sum"], h["sum_squares"]) == pytest.approx((values.sum(), (values ** 2).sum()), rel=1e-4, abs=1e-4)
    constant = weight_histogram(torch.full((4, 5), 0.25))  # the constant init: one bucket
    assert (constant["bucket_limits"], constant["bucket_counts"], constant["min"]) == ([0.25], [20.0], 0.25)


@pytest.mark.parametrize("seed", range(6))
def test_weight_histogram_buckets_are_torch_histc_s(seed: int) -> None:
    """Counted with bincount, the buckets are histc's, values on a bucket's edge and the maximum included."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(5000 + 997 * seed, generator=g) * (0.01 + seed)
    if seed % 2:
        w = (w * 8).round() / 8  # many weights exactly on bucket edges
    counts = weight_histogram(w)["bucket_counts"]
    assert counts == torch.histc(w, bins=len(counts), min=w.min().item(), max=w.max().item()).tolist()


def test_weights_and_grad_norms_named_by_the_layer_number_init_uses(tmp_path: Path, data_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write = InitDiagnostics._histograms

    def slow(self, trainer, module, step: int) -> None:
        time.sleep(0.5)
        write(self, trainer, module, step)

    monkeypatch.setattr(InitDiagnostics, "_histograms", slow)
    result, module = fit(make_cfg([*SHORT, f"data_dir={data_dir}", "log_every_n_steps=10"], tmp_path))
    assert result["metrics"]["conv/train_time_s"] < 2.5  # the five during training (2.5 s asleep) are off the clock
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"histograms": 0})
    events.Reload()
    layers = [m for m in module.model if isinstance(m, torch.nn.Linear)]  # the model is Flatten, Linear, ReLU, ...
    numbers = [str(r["index"]) for r in result["diagnostics"]["layers"]]
    assert numbers == ["1", "2", "3"] == [str(i) for i in range(1, len(layers) + 1)]
    assert set(events.Tags()["histograms"]) == {f"weights/{n}" for n in numbers}
    # at init, every 5 steps (30 planned / 10, rounded), and the end: the steps are the weights' update counts
    assert [e.step for e in events.Histograms("weights/1")] == [0, 5, 10, 15, 20, 25, 30]
    assert events.Histograms("weights/1")[-1].histogram_value.max == pytest.approx(float(layers[0].weight.detach().max()))
    grads = {t for t in events.Tags()["scalars"] if t.startswith("grad/")}
    assert grads == {"grad/total"} | {f"grad/{n}/{kind}" for n in numbers for kind in ("weight", "bias")}
    at_10 = {t: next(e.value for e in events.Scalars(t) if e.step == 10) for t in grads}
    layer_sq = sum(v ** 2 for t, v in at_10.items() if t != "grad/total")
    assert at_10["grad/total"] == pytest.approx(layer_sq ** 0.5, rel=1e-4)
