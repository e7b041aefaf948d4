"""μP's coordinate check (trainstudy.coordcheck, scripts/coord_check.py): the table, the slope fit, and SP + Adam's
readout growing with width while nothing grows at init."""

from __future__ import annotations

import csv
import importlib.util
import math

import pytest
from conftest import ROOT, make_cfg

from trainstudy.coordcheck import (COLUMNS, GROWTH_THRESHOLD, coord_check, fit_slopes, plot_coord_check,
                                   watched_layers)
from trainstudy.errors import UserError
from trainstudy.models import mlp


def cfg_for(data_dir, *overrides: str):
    return make_cfg(["data=digits", f"data_dir={data_dir}", "data.batch_size=32", "model.depth=2", *overrides])


def slope(slopes: list[dict], name: str, step: int) -> dict:
    return next(s for s in slopes if s["name"] == name and s["step"] == step)


def test_watched_layers_are_each_hidden_nonlinearity_and_the_readout() -> None:
    model = mlp(5, 3, 2, 8, "tanh")  # Flatten, Linear, Tanh, Linear, Tanh, Linear
    assert [(name, type(m).__name__) for name, m in watched_layers(model)] == [
        ("hidden 1", "Tanh"), ("hidden 2", "Tanh"), ("readout", "Linear")]
    assert watched_layers(model)[-1][1] is model[-1]


def test_the_table_has_a_row_per_width_layer_step_seed(data_dir) -> None:
    table = coord_check(cfg_for(data_dir, "optim=adam"), [8, 16, 32], steps=2, seeds=[0, 1])
    assert all(tuple(r) == COLUMNS for r in table)
    keys = {(r["width"], r["name"], r["step"], r["seed"]) for r in table}
    assert len(table) == len(keys) == 3 * 3 * 3 * 2
    assert {r["name"] for r in table} == {"hidden 1", "hidden 2", "readout"}
    assert all(r["mean_abs_act"] > 0 for r in table)
    # training moves the activations: step 2 differs from step 0 for every width, layer and seed
    at = {(r["width"], r["name"], r["step"], r["seed"]): r["mean_abs_act"] for r in table}
    assert all(at[(w, n, 2, s)] != at[(w, n, 0, s)] for w, n, _, s in keys)


@pytest.mark.parametrize("overrides", [["init=lsuv", "loss=mse"],
                                       ["init=orthogonal", "loss=bce", "model.activation=tanh"]])
def test_any_init_and_loss(data_dir, overrides) -> None:
    """The model, init (lsuv on the batch), loss and optimizer come from the config like a run's."""
    table = coord_check(cfg_for(data_dir, "optim=adam", *overrides), [8, 16], steps=1, seeds=[3])
    assert len(table) == 2 * 3 * 2 and {r["seed"] for r in table} == {3}
    assert all(math.isfinite(r["mean_abs_act"]) and r["mean_abs_act"] > 0 for r in table)


def test_step_t_is_after_t_steps(data_dir) -> None:
    """With lr 0 nothing moves: every step's activations are step 0's; and step 0 is before any step, so it
    is the same for every optimizer."""
    frozen = coord_check(cfg_for(data_dir, "optim=sgd", "optim.lr=0"), [8, 16], steps=2, seeds=[0])
    adam = coord_check(cfg_for(data_dir, "optim=adam", "optim.lr=0.1"), [8, 16], steps=2, seeds=[0])
    step0 = {(r["width"], r["name"]): r["mean_abs_act"] for r in frozen if r["step"] == 0}
    assert all(r["mean_abs_act"] == step0[(r["width"], r["name"])] for r in frozen)
    assert all(r["mean_abs_act"] == step0[(r["width"], r["name"])] for r in adam if r["step"] == 0)
    assert any(r["mean_abs_act"] != step0[(r["width"], r["name"])] for r in adam if r["step"] == 1)


def test_slopes_fit_a_known_power_law() -> None:
    """mean|act| = c · width^0.8 (seed-dependent c) has slope 0.8 and is flagged; width^0 is not; zeros, NaN and
    Inf are left out, and a layer left with one width has no slope."""
    table = []
    for seed, c in enumerate((0.5, 2.0)):
        for w in (64, 128, 256, 512):
            table.append({"width": w, "layer": 1, "name": "hidden 1", "step": 1, "seed": seed, "mean_abs_act": c})
            table.append({"width": w, "layer": 2, "name": "readout", "step": 1, "seed": seed,
                          "mean_abs_act": c * w ** 0.8 if w != 128 else math.nan})
            table.append({"width": w, "layer": 3, "name": "dead", "step": 1, "seed": seed,
                          "mean_abs_act": 1.0 if w == 64 else 0.0})
    slopes = fit_slopes(table)
    readout, flat, dead = slope(slopes, "readout", 1), slope(slopes, "hidden 1", 1), slope(slopes, "dead", 1)
    assert readout["slope"] == pytest.approx(0.8, abs=1e-9) and readout["grows"] and readout["widths"] == 3
    assert flat["slope"] == pytest.approx(0.0, abs=1e-9) and not flat["grows"]
    assert math.isnan(dead["slope"]) and not dead["grows"] and dead["widths"] == 1
    assert not slope(fit_slopes(table, threshold=0.9), "readout", 1)["grows"]


def test_the_figure_is_the_same_file_for_the_same_table(tmp_path) -> None:
    table = [{"width": w, "layer": 1, "name": "readout", "step": t, "seed": 0, "mean_abs_act": w ** t}
             for w in (8, 16) for t in (0, 1)]
    first = plot_coord_check(table, fit_slopes(table), tmp_path / "a", "title")
    second = plot_coord_check(table, fit_slopes(table), tmp_path / "b", "title")
    assert [p.suffix for p in first] == [".png", ".svg"]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(first, second))


def test_sp_adam_readout_grows_with_width_and_nothing_grows_at_init(data_dir) -> None:
    """mup's finding: under standard parametrization with Adam the logits grow with width after one step;
    at init (kaiming, fan_in) every layer's coordinates are the same size at every width."""
    table = coord_check(cfg_for(data_dir, "init=kaiming", "optim=adam", "optim.lr=0.01"),
                        [64, 256, 1024], steps=1, seeds=[0, 1])
    slopes = fit_slopes(table)
    assert slope(slopes, "readout", 1)["slope"] > 1 > GROWTH_THRESHOLD
    assert slope(slopes, "readout", 1)["grows"] and slope(slopes, "hidden 2", 1)["grows"]
    assert not slope(slopes, "hidden 1", 1)["grows"]  # it reads the 64 pixels, not a width-sized input
    for s in (s for s in slopes if s["step"] == 0):
        assert abs(s["slope"]) < 0.1 and not s["grows"], s


def coord_check_script():
    spec = importlib.util.spec_from_file_location("coord_check_script", ROOT / "scripts" / "coord_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_writes_the_tables_and_figures(data_dir, tmp_path, capsys) -> None:
    script = coord_check_script()
    rc = script.main(["data=digits", f"data_dir={data_dir}", "optim=adam", "optim.lr=0.01", "--widths", "64", "512",
                      "--steps", "1", "--seeds", "1", "--out", str(tmp_path), "--name", "sp"])
    assert rc == 0
    with open(tmp_path / "sp.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * 3 * 2
    with open(tmp_path / "sp_slopes.csv") as f:
        rows = {(r["name"], r["step"]): r for r in csv.DictReader(f)}
    assert rows[("readout", "1")]["grows"] == "True"
    assert (tmp_path / "sp.png").read_bytes()[:4] == b"\x89PNG" and b"<svg" in (tmp_path / "sp.svg").read_bytes()
    out = capsys.readouterr().out
    assert "readout" in out and "grows with width" in out and "at step 1" in out


@pytest.mark.parametrize("args, needle", [
    (["model=linear"], "model.width does not change model=linear"),
    (["model.depth=0"], "model.width does not change model=mlp"),
    (["--widths", "64"], "at least two widths"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    pytest.param(["data=mnist", "data.source=bundled", "model=cnn"], "model.width does not change model=cnn",
                 marks=pytest.mark.slow, id="lenet"),  # LeNet-5's sizes are fixed
])
def test_mistakes_are_user_errors(data_dir, tmp_path, args, needle) -> None:
    with pytest.raises(UserError, match=needle):
        coord_check_script().main(["data=digits", f"data_dir={data_dir}", "--out", str(tmp_path), *args])
