"""Initialization strategies: one short function per distribution, each stating the std it aims for.

A strategy initializes one weight tensor in place and returns the standard deviation its formula aims
for (``None`` where no formula fixes one, as for LSUV, whose aim is the layer's *output* variance).
Weights of every Linear and Conv layer get the strategy; biases get their own rule (``bias_init``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainstudy.errors import UserError

INIT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
FAN_MODES = ("fan_in", "fan_out")
# The nonlinearities torch.nn.init.calculate_gain knows, plus GELU (gain of ReLU: both pass about half
# the signal's second moment, and torch has no entry of its own for it).
NONLINEARITIES = ("linear", "conv1d", "conv2d", "conv3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu", "gelu")
LEAKY_RELU_SLOPE = 0.01  # nn.LeakyReLU's default, used by models and by kaiming's gain alike


def init_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The layers a strategy initializes, in forward order: every Linear and Conv."""
    return ((name, m) for name, m in model.named_modules() if isinstance(m, INIT_LAYERS))


def fans(w: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight: in/out channels times the kernel's receptive field."""
    receptive = math.prod(w.shape[2:])
    return w.shape[1] * receptive, w.shape[0] * receptive


def gain(nonlinearity: str, a: float = 0.0) -> float:
    """torch.nn.init.calculate_gain, with GELU taken as ReLU (see NONLINEARITIES)."""
    if nonlinearity == "gelu":
        nonlinearity = "relu"
    return nn.init.calculate_gain(nonlinearity, a if nonlinearity == "leaky_relu" else None)


# --- the strategies -------------------------------------------------------------------------------------


def zeros(w: torch.Tensor) -> float:
    """W = 0. Every unit of a layer computes the same thing: symmetry is never broken."""
    nn.init.zeros_(w)
    return 0.0


def ones(w: torch.Tensor) -> float:
    """W = 1, Var(W) = 0: symmetric like zeros, and the pre-activations grow with fan_in."""
    nn.init.ones_(w)
    return 0.0


def constant(w: torch.Tensor, value: float = 7.7) -> float:
    """W = value, Var(W) = 0 (the tutorial's example uses 7.7)."""
    nn.init.constant_(w, value)
    return 0.0


def uniform(w: torch.Tensor, a: float = 0.0, b: float = 1.0) -> float:
    """W ~ U(a, b): std = (b - a) / sqrt(12)."""
    nn.init.uniform_(w, a, b)
    return (b - a) / math.sqrt(12)


def normal(w: torch.Tensor, mean: float = 0.0, std: float = 1.0) -> float:
    """W ~ N(mean, std²)."""
    nn.init.normal_(w, mean, std)
    return std


def trunc_normal(w: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> float:
    """W ~ N(mean, std²) cut to [a, b] (absolute bounds, as torch takes them).

    std of the cut distribution, with α = (a-mean)/std, β = (b-mean)/std, Z = Φ(β) - Φ(α):
    std · sqrt(1 + (αφ(α) - βφ(β))/Z - ((φ(α) - φ(β))/Z)²).
    """
    nn.init.trunc_normal_(w, mean, std, a, b)
    alpha, beta = (a - mean) / std, (b - mean) / std
    pdf = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    z = cdf(beta) - cdf(alpha)
    var = 1 + (alpha * pdf(alpha) - beta * pdf(beta)) / z - ((pdf(alpha) - pdf(beta)) / z) ** 2
    return std * math.sqrt(var)


def xavier_uniform(w: torch.Tensor, gain: float = 1.0) -> float:
    """Glorot & Bengio 2010: W ~ U(-r, r), Var(W) = gain² · 2 / (fan_in + fan_out)."""
    nn.init.xavier_uniform_(w, gain)
    fan_in, fan_out = fans(w)
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def xavier_normal(w: torch.Tensor, gain: float = 1.0) -> float:
    """Glorot & Bengio 2010: W ~ N(0, σ²), σ² = gain² · 2 / (fan_in + fan_out)."""
    nn.init.xavier_normal_(w, gain)
    fan_in, fan_out = fans(w)
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def kaiming_uniform(w: torch.Tensor, mode: str = "fan_in", nonlinearity: str = "relu", a: float = 0.0) -> float:
    """He et al. 2015: W ~ U(-r, r), Var(W) = gain² / fan (gain² = 2 for ReLU)."""
    nn.init.kaiming_uniform_(w, a=a, mode=mode, nonlinearity=_torch_nonlinearity(nonlinearity))
    return gain(nonlinearity, a) / math.sqrt(fans(w)[FAN_MODES.index(mode)])


def kaiming_normal(w: torch.Tensor, mode: str = "fan_in", nonlinearity: str = "relu", a: float = 0.0) -> float:
    """He et al. 2015: W ~ N(0, σ²), σ² = gain² / fan (gain² = 2 for ReLU)."""
    nn.init.kaiming_normal_(w, a=a, mode=mode, nonlinearity=_torch_nonlinearity(nonlinearity))
    return gain(nonlinearity, a) / math.sqrt(fans(w)[FAN_MODES.index(mode)])


def orthogonal(w: torch.Tensor, gain: float = 1.0) -> float:
    """Saxe et al. 2014: a (semi-)orthogonal matrix times gain; each entry's std = gain / sqrt(max(rows, cols))."""
    nn.init.orthogonal_(w, gain)
    fan_in, fan_out = fans(w)
    return gain / math.sqrt(max(w.shape[0], fan_in))


def default(w: torch.Tensor) -> float:
    """PyTorch's own layer init, kept: kaiming_uniform with a = sqrt(5), i.e. std = 1 / sqrt(3 · fan_in)."""
    return 1.0 / math.sqrt(3 * fans(w)[0])


def fixed(w: torch.Tensor) -> None:
    """Explicit values for one named layer (see apply_fixed); every other layer keeps PyTorch's own init."""
    return None


def lsuv(w: torch.Tensor, tol: float = 0.02, max_iter: int = 20) -> None:
    """Mishkin & Matas 2016: orthonormal, then rescaled layer by layer to unit output variance (see apply_lsuv)."""
    nn.init.orthogonal_(w)
    return None


def _torch_nonlinearity(nonlinearity: str) -> str:
    return "relu" if nonlinearity == "gelu" else nonlinearity


STRATEGIES: dict[str, Callable[..., float | None]] = {
    f.__name__: f
    for f in (default, zeros, ones, constant, fixed, uniform, normal, trunc_normal, xavier_uniform, xavier_normal,
              kaiming_uniform, kaiming_normal, orthogonal, lsuv)
}
# Keys of an init config that are not parameters of the weight function.
COMMON_KEYS = {"name", "bias_init"}
FIXED_KEYS = {"layer", "weight", "bias"}
BIAS_RULES = ("zeros", "default")


def strategy_params(cfg: Mapping[str, Any], activation: str | None = None) -> dict[str, Any]:
    """The weight function's keyword arguments from an init config (kaiming's nonlinearity from the model)."""
    params = {k: v for k, v in cfg.items() if k not in COMMON_KEYS | FIXED_KEYS}
    if "nonlinearity" in params and params["nonlinearity"] is None:
        params["nonlinearity"] = activation or "relu"
        if params["nonlinearity"] == "leaky_relu" and not params.get("a"):
            params["a"] = LEAKY_RELU_SLOPE
    return params


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """An init config as plain python values (OmegaConf lists become lists, for torch.as_tensor)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def validate_init(cfg: Mapping[str, Any]) -> None:
    """Check an init config before anything is built; raise UserError with what to type instead."""
    cfg = _plain(cfg)
    name = cfg.get("name")
    if name not in STRATEGIES:
        raise UserError(f"unknown init strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    fn = STRATEGIES[name]
    allowed = set(inspect.signature(fn).parameters) - {"w"}
    extra = set(cfg) - COMMON_KEYS - allowed - (FIXED_KEYS if name == "fixed" else set())
    if extra:
        raise UserError(f"init={name} has no parameter {', '.join(sorted(extra))}; "
                        f"its parameters are: {', '.join(sorted(allowed)) or 'none'}")
    p = dict(cfg)
    for key in sorted(allowed & {"value", "a", "b", "mean", "std", "gain", "tol", "max_iter"}):  # one order
        if p.get(key) is not None and (isinstance(p[key], bool) or not isinstance(p[key], (int, float))):
            raise UserError(f"init.{key} must be a number, got {p[key]!r} (e.g. init.{key}=0.1)")
        if p.get(key) is not None and not math.isfinite(p[key]):
            raise UserError(f"init.{key} must be a finite number, got {p[key]} (e.g. init.{key}=0.1)")
    if p.get("std") is not None and p["std"] <= 0:
        raise UserError(f"init.std must be > 0, got {p['std']} (e.g. init.std=0.01)")
    if p.get("gain") is not None and p["gain"] <= 0:
        raise UserError(f"init.gain must be > 0, got {p['gain']} (e.g. init.gain=1.0)")
    if name in ("uniform", "trunc_normal") and p["a"] >= p["b"]:
        raise UserError(f"init={name} needs init.a < init.b, got a={p['a']} b={p['b']} (e.g. init.a=-0.1 init.b=0.1)")
    if name == "trunc_normal" and not p["a"] - 2 * p["std"] <= p["mean"] <= p["b"] + 2 * p["std"]:
        # torch's own limit: further out, the cut keeps (numerically) nothing of the normal to draw from
        raise UserError(f"init=trunc_normal needs init.mean within 2 init.std of [init.a, init.b], "
                        f"got mean={p['mean']} std={p['std']} a={p['a']} b={p['b']} (e.g. init.mean=0)")
    if name.startswith("kaiming"):
        if p["mode"] not in FAN_MODES:
            raise UserError(f"init.mode must be fan_in or fan_out, got {p['mode']!r} (e.g. init.mode=fan_out)")
        if p.get("nonlinearity") is not None and p["nonlinearity"] not in NONLINEARITIES:
            raise UserError(f"unknown init.nonlinearity {p['nonlinearity']!r}; choose one of: "
                            f"{', '.join(NONLINEARITIES)} (or leave it null to follow model.activation)")
    if name == "lsuv" and (not 0 < p["tol"] < 1 or int(p["max_iter"]) < 1):
        raise UserError("init=lsuv needs 0 < init.tol < 1 and init.max_iter >= 1 (e.g. init.tol=0.02 init.max_iter=20)")
    if cfg.get("bias_init", "zeros") not in BIAS_RULES and not isinstance(cfg.get("bias_init"), (int, float)):
        raise UserError(f"init.bias_init must be zeros, default or a number, got {cfg.get('bias_init')!r}")


def apply_init(model: nn.Module, cfg: Mapping[str, Any], activation: str | None = None,
               batch: torch.Tensor | None = None) -> dict[str, float | None]:
    """Initialize every Linear/Conv layer of ``model`` by ``cfg``; return each layer's aimed-for weight std.

    ``activation`` is the model's nonlinearity (kaiming's gain follows it unless the config names one);
    ``batch`` is a training batch, needed by LSUV.
    """
    cfg = _plain(cfg)
    validate_init(cfg)
    name = cfg["name"]
    fn = STRATEGIES[name]
    params = strategy_params(cfg, activation)
    bias_rule = cfg.get("bias_init", "default" if name in ("default", "fixed") else "zeros")
    targets: dict[str, float | None] = {}
    with torch.no_grad():
        for layer_name, layer in init_layers(model):
            targets[layer_name] = fn(layer.weight, **params)
            if layer.bias is not None and bias_rule != "default":
                nn.init.constant_(layer.bias, 0.0 if bias_rule == "zeros" else float(bias_rule))
        if name == "fixed":
            apply_fixed(model, cfg)
        if name == "lsuv":
            if batch is None:
                raise ValueError("init=lsuv needs a training batch")
            apply_lsuv(model, batch, tol=params["tol"], max_iter=int(params["max_iter"]))
    return targets


def _find_layer(model: nn.Module, key: int | str) -> tuple[str, nn.Module]:
    layers = list(init_layers(model))
    if isinstance(key, int) and not isinstance(key, bool) and -len(layers) <= key < len(layers):
        return layers[key]
    for layer_name, layer in layers:
        if layer_name == str(key):
            return layer_name, layer
    names = ", ".join(n for n, _ in layers)
    raise UserError(f"init.layer={key!r} is not a layer of this model; use an index 0..{len(layers) - 1} "
                    f"or one of: {names}")


def apply_fixed(model: nn.Module, cfg: Mapping[str, Any]) -> None:
    """Assign explicit values to one layer's weight (and bias), as the tutorial assigns ``weight.data``."""
    layer_name, layer = _find_layer(model, cfg.get("layer", 0))
    for attr in ("weight", "bias"):
        values = cfg.get(attr)
        if values is None:
            continue
        param = getattr(layer, attr)
        try:
            tensor = torch.as_tensor(values, dtype=param.dtype)
        except (TypeError, ValueError) as e:
            raise UserError(f"init.{attr} must be a nested list of numbers ({e})") from None
        if param is None or tensor.shape != param.shape:
            want = "no bias" if param is None else list(param.shape)
            raise UserError(f"init.{attr} has shape {list(tensor.shape)} but layer {layer_name} needs {want}")
        param.copy_(tensor)


class _StopForward(Exception):
    pass


@torch.no_grad()
def apply_lsuv(model: nn.Module, batch: torch.Tensor, tol: float = 0.02, max_iter: int = 20) -> dict[str, float]:
    """Layer-sequential unit variance (Mishkin & Matas 2016): aims for Var(layer output) = 1 on ``batch``.

    Layer by layer in forward order: run the batch, read the layer's output variance v, divide the weight
    by sqrt(v); stop when |v - 1| < tol or after max_iter tries. Returns each layer's final output variance.
    The forward pass stops at the layer being scaled, so each try costs only the layers before it.
    """
    variances: dict[str, float] = {}
    for layer_name, layer in init_layers(model):
        seen: list[torch.Tensor] = []

        def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            seen.append(out.var())
            raise _StopForward

        handle = layer.register_forward_hook(hook)
        try:
            for _ in range(max_iter):
                seen.clear()
                try:
                    model(batch)
                except _StopForward:
                    pass
                var = float(seen[-1])
                if not math.isfinite(var) or var == 0 or abs(var - 1.0) < tol:
                    break
                layer.weight.div_(math.sqrt(var))
            seen.clear()
            try:
                model(batch)
            except _StopForward:
                pass
            variances[layer_name] = float(seen[-1])
        finally:
            handle.remove()
    return variances
