"""Each init strategy hits the std its formula aims for; the tutorial's examples come out as printed."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, make_cfg
from torch import nn

from trainstudy.errors import UserError
from trainstudy.inits import STRATEGIES, apply_init, fans
from trainstudy.models import mlp


def init_cfg(overrides: list[str]) -> dict:
    return dict(make_cfg(overrides).init)


def big_layers() -> list[nn.Module]:
    # a 1000x500 Linear (fan_in 500, fan_out 1000) and a conv weight (fan_in 64*9, fan_out 128*9)
    return [nn.Linear(500, 1000), nn.Conv2d(64, 128, 3)]


RANDOM = [
    ["init=uniform"], ["init=uniform", "init.a=-0.3", "init.b=0.1"],
    ["init=normal"], ["init=normal", "init.std=0.02"],
    ["init=trunc_normal"], ["init=trunc_normal", "init.std=0.5", "init.a=-0.4", "init.b=0.6"],
    ["init=xavier_uniform"], ["init=xavier_normal", "init.gain=2.0"],
    ["init=kaiming_uniform"], ["init=kaiming_normal"], ["init=kaiming_normal", "init.mode=fan_out"],
    ["init=kaiming_uniform", "init.mode=fan_out", "init.nonlinearity=tanh"],
    ["init=orthogonal"], ["init=default"],
]


@pytest.mark.parametrize("overrides", RANDOM, ids=lambda o: " ".join(o))
@pytest.mark.parametrize("layer", range(2), ids=["linear1000x500", "conv128x64x3x3"])
def test_measured_std_matches_formula(overrides: list[str], layer: int) -> None:
    torch.manual_seed(0)
    module = big_layers()[layer]
    targets = apply_init(nn.Sequential(module), init_cfg(overrides), activation="relu")
    aim = targets["0"]
    assert aim > 0
    assert module.weight.std().item() == pytest.approx(aim, rel=0.05)


def test_formulas_are_the_papers() -> None:
    torch.manual_seed(0)
    w = nn.Linear(500, 1000).weight  # fan_in 500, fan_out 1000
    assert STRATEGIES["xavier_normal"](w) == pytest.approx(math.sqrt(2 / 1500))
    assert STRATEGIES["kaiming_normal"](w, mode="fan_in", nonlinearity="relu") == pytest.approx(math.sqrt(2 / 500))
    assert STRATEGIES["kaiming_normal"](w, mode="fan_out", nonlinearity="relu") == pytest.approx(math.sqrt(2 / 1000))
    assert STRATEGIES["uniform"](w, a=0, b=1) == pytest.approx(1 / math.sqrt(12))
    # cut at ±2σ keeps 95.4% of the mass; its std is 0.8796σ (standard table value)
    assert STRATEGIES["trunc_normal"](w, 0.0, 1.0, -2.0, 2.0) == pytest.approx(0.8796, abs=1e-4)
    assert fans(nn.Conv2d(3, 8, 5).weight) == (75, 200)


def test_fan_out_differs_from_fan_in_where_it_should() -> None:
    stds = {}
    for mode in ("fan_in", "fan_out"):
        torch.manual_seed(0)
        layer = nn.Linear(500, 1000)
        apply_init(nn.Sequential(layer), init_cfg(["init=kaiming_normal", f"init.mode={mode}"]), "relu")
        stds[mode] = layer.weight.std().item()
    assert stds["fan_in"] / stds["fan_out"] == pytest.approx(math.sqrt(2), rel=0.03)
    square = nn.Linear(300, 300)  # square: the two modes agree
    assert apply_init(nn.Sequential(square), init_cfg(["init=kaiming_normal", "init.mode=fan_out"]), "relu")["0"] == \
        apply_init(nn.Sequential(square), init_cfg(["init=kaiming_normal"]), "relu")["0"]


def test_kaiming_gain_follows_the_model_activation() -> None:
    for activation, g in (("relu", math.sqrt(2)), ("tanh", 5 / 3), ("sigmoid", 1.0),
                          ("leaky_relu", math.sqrt(2 / (1 + 0.01**2)))):
        model = mlp(400, 10, depth=1, width=400, activation=activation)
        targets = apply_init(model, init_cfg(["init=kaiming_normal"]), activation=activation)
        assert targets["1"] == pytest.approx(g / math.sqrt(400)), activation


@pytest.mark.parametrize(("overrides", "value"), [
    (["init=zeros"], 0.0), (["init=ones"], 1.0), (["init=constant"], 7.7), (["init=constant", "init.value=-0.5"], -0.5),
])
def test_constant_strategies_are_exact(overrides: list[str], value: float) -> None:
    layer = nn.Linear(2, 4)  # the tutorial's Linear(2, 4) for constant_(7.7)
    apply_init(nn.Sequential(layer), init_cfg(overrides))
    assert torch.equal(layer.weight, torch.full((4, 2), value))
    assert torch.equal(layer.bias, torch.zeros(4))  # biases: zeros unless the strategy says otherwise


def test_default_keeps_pytorch_init_for_weights_and_biases() -> None:
    torch.manual_seed(3)
    expected = nn.Linear(50, 20)
    torch.manual_seed(3)
    layer = nn.Linear(50, 20)
    apply_init(nn.Sequential(layer), init_cfg(["init=default"]))
    assert torch.equal(layer.weight, expected.weight) and torch.equal(layer.bias, expected.bias)


def test_bias_init_rule() -> None:
    layer = nn.Linear(10, 5)
    apply_init(nn.Sequential(layer), init_cfg(["init=xavier_uniform", "init.bias_init=0.1"]))
    assert torch.allclose(layer.bias, torch.full((5,), 0.1))
    apply_init(nn.Sequential(layer), init_cfg(["init=xavier_uniform"]))
    assert torch.equal(layer.bias, torch.zeros(5))


def test_fixed_reproduces_the_tutorial_example() -> None:
    # the tutorial: net = nn.Linear(2, 2); net.weight.data = [[0.1, 0.2], [0.3, 0.4]]; x = [[0.1, 0.95]]
    net = nn.Linear(2, 2)
    cfg = init_cfg(["init=fixed", "init.weight=[[0.1,0.2],[0.3,0.4]]", "init.bias=[-0.4744,-0.3748]"])
    apply_init(nn.Sequential(net), cfg)
    out = net(torch.tensor([[0.1, 0.95]]))
    assert torch.allclose(out, torch.tensor([[-0.2744, 0.0352]]), atol=1e-4)
    assert torch.equal(net.weight, torch.tensor([[0.1, 0.2], [0.3, 0.4]]))


@pytest.mark.parametrize("layer", ["init.layer=0", "init.layer='1'"], ids=["index", "module-name"])
def test_fixed_names_a_layer_and_leaves_the_others(layer: str) -> None:
    torch.manual_seed(0)
    model = mlp(3, 2, depth=1, width=2, activation="relu")  # Flatten, Linear '1', ReLU, Linear '3'
    before = model[3].weight.clone()
    apply_init(model, init_cfg(["init=fixed", layer, "init.weight=[[1.0,2.0,3.0],[4.0,5.0,6.0]]"]))
    assert torch.equal(model[1].weight, torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    assert torch.equal(model[3].weight, before)


def test_aliases_are_the_papers_forms() -> None:
    assert make_cfg(["init=xavier"]).init.name == "xavier_uniform"
    assert make_cfg(["init=kaiming"]).init.name == "kaiming_normal"
    assert make_cfg(["init=kaiming", "init.mode=fan_out"]).init.mode == "fan_out"


@pytest.mark.parametrize(("overrides", "needle"), [
    (["init=normal", "init.std=0"], "init.std must be > 0"),
    (["init=normal", "init.std=-1"], "init.std must be > 0"),
    (["init=trunc_normal", "init.std=0"], "init.std must be > 0"),
    (["init=uniform", "init.a=1", "init.b=0"], "init.a < init.b"),
    (["init=trunc_normal", "init.a=2", "init.b=2"], "init.a < init.b"),
    (["init=kaiming_normal", "init.mode=fan_avg"], "fan_in or fan_out"),
    (["init=kaiming_uniform", "init.nonlinearity=swish"], "unknown init.nonlinearity"),
    (["init=constant", "init.value=abc"], "init.value must be a number"),
    (["init=fixed", "init.weight=[[1.0,2.0]]"], "has shape [1, 2] but layer"),
    (["init=fixed", "init.layer=7", "init.weight=[[1.0]]"], "is not a layer of this model"),
    (["init=normal", "+init.stdd=0.1"], "has no parameter stdd"),
])
def test_bad_values_give_one_line(overrides: list[str], needle: str) -> None:
    with pytest.raises(UserError, match=needle.replace("[", r"\[").replace("]", r"\]")) as err:
        apply_init(nn.Sequential(nn.Linear(2, 2)), init_cfg(overrides))
    assert "\n" not in str(err.value)


def test_inspect_init_prints_the_tutorial_layer_and_the_aim() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "inspect_init.py"), "init=constant",
                           "init.value=7.7"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("7.7000, 7.7000") == 4  # the tutorial's Linear(2, 4) filled with 7.7
    assert "std 0.00000  aim 0.00000" in proc.stdout


# What the tutorial printed for its fixed example (section 1.4), in its order: output, weight, bias.
TUTORIAL_FIXED_PRINTED = """
tensor([[-0.2744,  0.0352]], grad_fn=<AddmmBackward0>)
Parameter containing:
tensor([[0.1000, 0.2000],
[0.3000, 0.4000]], requires_grad=True)
Parameter containing:
tensor([-0.4744, -0.3748], requires_grad=True)
"""


def inspect_init(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "inspect_init.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_inspect_init_fixed_alone_prints_the_tutorial_output() -> None:
    # the tutorial's numbers are torch's: W @ x + b with its printed bias, to its 4 decimals
    w, b, x = torch.tensor([[0.1, 0.2], [0.3, 0.4]]), torch.tensor([-0.4744, -0.3748]), torch.tensor([0.1, 0.95])
    assert (w @ x + b).tolist() == pytest.approx([-0.2744, 0.0352], abs=5e-5)
    proc = inspect_init(["init=fixed"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "init=fixed on nn.Linear(2, 2), x = [[0.1, 0.95]]:"
    # the page lost its indentation; compare line by line without the leading spaces
    assert [line.strip() for line in lines[1:7]] == TUTORIAL_FIXED_PRINTED.strip().splitlines()
    assert "no std statistics for init=fixed" in proc.stdout and "1,000,000 weights" not in proc.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["init=kaiminng"], "unknown init option 'kaiminng' (did you mean kaiming?)"),
    (["init.stdd=1"], "unknown key 'init.stdd'"),
    (["init=fixed", "init.weight=[[1.0,2.0]]", "--input", "[[0.1,0.95,0.5]]"], "--input has shape [1, 3]"),
])
def test_inspect_init_mistakes_are_one_line_exit_2(args: list[str], needle: str) -> None:
    proc = inspect_init(args)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], \
        proc.stderr


def test_inspect_init_depth_table_runs_lsuv_on_a_batch() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "inspect_init.py"), "init=lsuv", "--depth", "5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[-6:]]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(abs(float(r[1]) ** 2 - 1) < 0.02 for r in rows)  # LSUV: unit output variance per layer
