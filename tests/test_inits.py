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
from trainstudy.models import build_model, layer_count, mlp
from trainstudy.train import validate


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
    ["init=mean_field"], ["init=mean_field", "init.sigma_w2=1.76", "init.sigma_b2=0.05"],
    ["init=sparse"], ["init=sparse", "init.nonzero=40", "init.std=0.3"],
    ["init=identity"], ["init=delta_orthogonal"], ["init=delta_orthogonal", "init.gain=2.0"],
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
    (["init=mean_field", "init.sigma_w2=0"], "init.sigma_w2 > 0"),
    (["init=mean_field", "+init.bias_init=0.1"], "instead of init.bias_init"),
    (["init=sparse", "init.nonzero=0"], "init.nonzero must be a whole number >= 1"),
    (["init=sparse", "init.nonzero=2.5"], "init.nonzero must be a whole number >= 1"),
    (["init=metainit", "init.base=zeros"], "not a strategy metainit can start from"),
    (["init=metainit", "init.lr=0"], "init.lr > 0"),
    (["init=metainit", "init.steps=0"], "init.steps must be a whole number >= 1"),
    (["init=xavier_normal", "init.zero_readout=maybe"], "init.zero_readout must be true or false"),
    (["init=xavier_normal", "init.layer_scale=[1,a]"], "init.layer_scale must be a list of numbers"),
    (["init=xavier_normal", "init.layer_scale=[1,2]"], "init.layer_scale has 2 factors but the model has 1"),
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


# --- beyond the tutorial: the mean-field knob, sparse, identity, delta-orthogonal, and the two modifiers ---


def test_mean_field_is_every_layer_readout_included_with_its_bias() -> None:
    torch.manual_seed(0)
    model = mlp(400, 3000, depth=2, width=600, activation="tanh")  # a wide readout, so its std is measured
    targets = apply_init(model, init_cfg(["init=mean_field", "init.sigma_w2=1.5", "init.sigma_b2=0.05"]), "tanh")
    layers = [model[1], model[3], model[5]]
    for layer, aim in zip(layers, targets.values()):
        assert aim == pytest.approx(math.sqrt(1.5 / layer.in_features))
        assert layer.weight.std().item() == pytest.approx(aim, rel=0.03)
    bias = torch.cat([layer.bias for layer in layers])
    assert bias.mean().item() == pytest.approx(0, abs=0.01) and bias.std().item() == pytest.approx(0.05**0.5, rel=0.05)


def test_sparse_gives_each_unit_exactly_nonzero_incoming_weights() -> None:
    torch.manual_seed(0)
    linear, conv, narrow = nn.Linear(500, 300), nn.Conv2d(64, 32, 3), nn.Linear(10, 50)
    apply_init(nn.Sequential(linear, conv, narrow), init_cfg(["init=sparse"]))
    for layer, k in ((linear, 15), (conv, 15), (narrow, 10)):  # 10 inputs: all of them
        rows = layer.weight.reshape(layer.weight.shape[0], -1)
        assert ((rows != 0).sum(dim=1) == k).all()
    values = linear.weight[linear.weight != 0]
    assert values.std().item() == pytest.approx(1.0, rel=0.05)  # Martens: a unit Gaussian


def test_identity_passes_the_input_through_exactly() -> None:
    torch.manual_seed(0)
    square = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    apply_init(square, init_cfg(["init=identity"]))
    x = torch.rand(5, 8)
    assert torch.equal(square(x), x) and torch.equal(square[0].weight, torch.eye(8))
    conv = nn.Conv2d(4, 6, 3, padding=1)
    apply_init(nn.Sequential(conv), init_cfg(["init=identity"]))
    img = torch.randn(2, 4, 7, 7)
    out = conv(img)
    assert torch.equal(out[:, :4], img) and torch.equal(out[:, 4:], torch.zeros(2, 2, 7, 7))
    torch.manual_seed(1)
    expected = nn.Linear(8, 3)
    torch.manual_seed(1)
    other = nn.Linear(8, 3)  # not square: PyTorch's own init, kept
    apply_init(nn.Sequential(other), init_cfg(["init=identity"]))
    assert torch.equal(other.weight, expected.weight)


def test_delta_orthogonal_is_an_orthogonal_centre_tap() -> None:
    torch.manual_seed(0)
    conv, linear = nn.Conv2d(4, 8, 3), nn.Linear(6, 10)
    apply_init(nn.Sequential(conv, linear), init_cfg(["init=delta_orthogonal", "init.gain=1.5"]))
    centre = conv.weight[:, :, 1, 1]
    rest = conv.weight.clone()
    rest[:, :, 1, 1] = 0
    assert torch.equal(rest, torch.zeros_like(rest))
    assert torch.allclose(centre.T @ centre, 1.5**2 * torch.eye(4), atol=1e-5)  # 8 outputs >= 4 inputs
    assert torch.allclose(linear.weight.T @ linear.weight, 1.5**2 * torch.eye(6), atol=1e-5)
    # a 3x3 kernel acts as its centre: on a 3x3 image, out = centre @ the middle pixel
    img = torch.randn(1, 4, 3, 3)
    assert torch.allclose(conv(img)[0, :, 0, 0], centre @ img[0, :, 1, 1] + conv.bias, atol=1e-6)


def test_zero_readout_and_layer_scale_act_after_any_strategy() -> None:
    torch.manual_seed(0)
    plain = mlp(20, 5, depth=2, width=30, activation="relu")
    apply_init(plain, init_cfg(["init=xavier_normal"]))
    torch.manual_seed(0)
    modified = mlp(20, 5, depth=2, width=30, activation="relu")
    apply_init(modified, init_cfg(["init=xavier_normal", "init.zero_readout=true", "init.layer_scale=[2.0,0.5,3.0]"]))
    assert torch.equal(modified[1].weight, 2.0 * plain[1].weight)
    assert torch.equal(modified[3].weight, 0.5 * plain[3].weight)
    assert torch.equal(modified[5].weight, torch.zeros(5, 30))  # zeroed, then scaled: still zero
    assert torch.equal(modified[1].bias, plain[1].bias)  # the factors scale weights (init2winit's kernels)


@pytest.mark.parametrize(("model", "data"), [("mlp", "digits"), ("linear", "diabetes"), ("cnn", "mnist"),
                                             ("cnn", "cifar10")])
def test_layer_count_is_known_before_the_data(model: str, data: str) -> None:
    cfg = make_cfg([f"model={model}", f"data={data}"])
    shape = {"digits": (64,), "diabetes": (10,), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}[data]
    built = build_model(cfg.model, shape, 10)
    assert layer_count(cfg.model, data) == sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in built.modules())


def test_a_wrong_length_layer_scale_stops_before_the_data_loads(tmp_path) -> None:
    cfg = make_cfg(["data=digits", "model.depth=3", "init.layer_scale=[1,1]", f"data_dir={tmp_path / 'data'}"])
    with pytest.raises(UserError, match=r"has 2 factors but the model has 4 Linear/Conv layers.*\[1.0,1.0,1.0,1.0\]"):
        validate(cfg)
    assert not (tmp_path / "data").exists()  # stopped before even the data folder was made
