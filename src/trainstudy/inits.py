"""Initialization strategies: one short function per distribution, each stating the std it aims for.

A strategy initializes one weight tensor in place and returns the standard deviation its formula aims
for (``None`` where no formula fixes one, as for LSUV, whose aim is the layer's *output* variance).
Weights of every Linear and Conv layer get the strategy; biases get their own rule (``bias_init``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainstudy.errors import UserError
# the layer-wise steps live in layerwise; INIT_LAYERS, init_layers and apply_lsuv are imported from here too
from trainstudy.layerwise import INIT_LAYERS, apply_fixed, apply_lsuv, apply_modifiers, init_layers  # noqa: F401
from trainstudy.layerwise import validate_modifiers

FAN_MODES = ("fan_in", "fan_out")
# The nonlinearities torch.nn.init.calculate_gain knows, plus GELU (gain of ReLU: both pass about half
# the signal's second moment, and torch has no entry of its own for it).
NONLINEARITIES = ("linear", "conv1d", "conv2d", "conv3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu", "gelu")
LEAKY_RELU_SLOPE = 0.01  # nn.LeakyReLU's default, used by models and by kaiming's gain alike


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


def mean_field(w: torch.Tensor, bias: torch.Tensor | None = None, sigma_w2: float = 2.0,
               sigma_b2: float = 0.0) -> float:
    """The mean-field papers' knob (Poole et al. 2016, Schoenholz et al. 2017), every layer, readout included:
    W ~ N(0, σ_w²/fan_in), b ~ N(0, σ_b²). (σ_w² = 2, σ_b² = 0: ReLU's critical point, He et al.'s variance.)"""
    std = math.sqrt(sigma_w2 / fans(w)[0])
    nn.init.normal_(w, 0.0, std)
    if bias is not None:
        nn.init.normal_(bias, 0.0, math.sqrt(sigma_b2))
    return std


def sparse(w: torch.Tensor, nonzero: int = 15, std: float = 1.0) -> float:
    """Martens 2010: each unit gets exactly ``nonzero`` non-zero incoming weights, N(0, std²) (a unit Gaussian),
    the rest 0; all of them where fan_in is smaller. Per entry: std · sqrt(k / fan_in), k = min(nonzero, fan_in)."""
    rows = w.view(w.shape[0], -1)  # a unit's incoming weights: one row (a conv filter, flattened)
    k = min(int(nonzero), rows.shape[1])
    keep = torch.rand(rows.shape).argsort(dim=1)[:, :k]  # k distinct inputs per unit, uniformly drawn
    rows.zero_().scatter_(1, keep, torch.randn(rows.shape[0], k) * std)
    return std * math.sqrt(k / rows.shape[1])


def identity(w: torch.Tensor) -> float:
    """A layer that passes its input through: eye for a square Linear (nn.init.eye_), dirac for a conv (the
    centre tap's identity on the first min(out, in) channels); other layers keep PyTorch's own init (default).
    The std of the 0/1 pattern's entries, p = ones/entries: sqrt(p(1 - p))."""
    if w.dim() > 2:
        nn.init.dirac_(w)
    elif w.shape[0] == w.shape[1]:
        nn.init.eye_(w)
    else:
        return default(w)
    p = min(w.shape[:2]) / w.numel()
    return math.sqrt(p * (1 - p))


def delta_orthogonal(w: torch.Tensor, gain: float = 1.0) -> float:
    """Xiao et al. 2018: a conv kernel zero everywhere but its centre tap, an (out × in) orthogonal matrix times
    gain (dynamical isometry for CNNs); a Linear layer orthogonal. Per entry: gain / sqrt(max(out, in) · taps)."""
    if w.dim() == 2:
        nn.init.orthogonal_(w, gain)
    else:
        centre = tuple(k // 2 for k in w.shape[2:])
        nn.init.zeros_(w)
        nn.init.orthogonal_(w[(slice(None), slice(None), *centre)], gain)
    return gain / math.sqrt(max(w.shape[0], w.shape[1]) * math.prod(w.shape[2:]))


def metainit(w: torch.Tensor, base: str = "default", steps: int = 500, lr: float = 0.1, momentum: float = 0.9,
             eps: float = 1e-5, batch_size: int = 32) -> None:
    """Dauphin & Schoenholz 2019: weights drawn by ``base``, then each weight tensor's norm learned to minimise
    the gradient quotient on random data (see trainstudy.metainit); no formula fixes the resulting std."""
    fn = STRATEGIES[base]
    defaults = {k: p.default for k, p in inspect.signature(fn).parameters.items() if k not in ("w", "bias")}
    fn(w, **defaults)
    return None


def _torch_nonlinearity(nonlinearity: str) -> str:
    return "relu" if nonlinearity == "gelu" else nonlinearity


STRATEGIES: dict[str, Callable[..., float | None]] = {
    f.__name__: f
    for f in (default, zeros, ones, constant, fixed, uniform, normal, trunc_normal, xavier_uniform, xavier_normal,
              kaiming_uniform, kaiming_normal, orthogonal, lsuv, mean_field, sparse, identity, delta_orthogonal,
              metainit)
}
# Keys of an init config that are not parameters of the weight function: the bias rule and the two
# modifiers every strategy takes (conf/config.yaml sets them for all).
MODIFIERS = {"zero_readout", "layer_scale"}
COMMON_KEYS = {"name", "bias_init", *MODIFIERS}
# Where metainit's weights come from before it learns their norms: strategies that draw a tensor on their own.
METAINIT_BASES = ("default", "uniform", "normal", "trunc_normal", "xavier_uniform", "xavier_normal", "kaiming_uniform",
                  "kaiming_normal", "orthogonal", "sparse", "identity", "delta_orthogonal")
NUMBERS = ("value", "a", "b", "mean", "std", "gain", "tol", "max_iter", "sigma_w2", "sigma_b2", "lr", "momentum", "eps")
WHOLE = {"nonzero": 1, "steps": 1, "batch_size": 1, "max_iter": 1}  # and the least each may be
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
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in cfg.items()}


def validate_init(cfg: Mapping[str, Any], n_layers: int | None = None) -> None:
    """Check an init config before anything is built; raise UserError with what to type instead.
    ``n_layers``: the model's count of Linear/Conv layers, where known (init.layer_scale gives one factor each)."""
    cfg = _plain(cfg)
    name = cfg.get("name")
    if name not in STRATEGIES:
        raise UserError(f"unknown init strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    fn = STRATEGIES[name]
    allowed = set(inspect.signature(fn).parameters) - {"w", "bias"}
    extra = set(cfg) - COMMON_KEYS - allowed - (FIXED_KEYS if name == "fixed" else set())
    if extra:
        raise UserError(f"init={name} has no parameter {', '.join(sorted(extra))}; "
                        f"its parameters are: {', '.join(sorted(allowed)) or 'none'}")
    p = {**{k: v.default for k, v in inspect.signature(fn).parameters.items() if k in allowed}, **cfg}
    for key in sorted(allowed & set(NUMBERS)):  # one order
        if p.get(key) is not None and (isinstance(p[key], bool) or not isinstance(p[key], (int, float))):
            raise UserError(f"init.{key} must be a number, got {p[key]!r} (e.g. init.{key}=0.1)")
        if p.get(key) is not None and not math.isfinite(p[key]):
            raise UserError(f"init.{key} must be a finite number, got {p[key]} (e.g. init.{key}=0.1)")
    for key, least in sorted(WHOLE.items()):
        if key in allowed and key != "max_iter" and (isinstance(p[key], bool) or not isinstance(p[key], int)
                                                     or p[key] < least):
            raise UserError(f"init.{key} must be a whole number >= {least}, got {p[key]!r} (e.g. init.{key}=15)")
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
    if name == "mean_field" and not (p["sigma_w2"] > 0 and p["sigma_b2"] >= 0):
        raise UserError(f"init=mean_field needs init.sigma_w2 > 0 and init.sigma_b2 >= 0, got sigma_w2={p['sigma_w2']} "
                        f"sigma_b2={p['sigma_b2']} (e.g. init.sigma_w2=1.76 init.sigma_b2=0.05)")
    if name == "mean_field" and cfg.get("bias_init") is not None:
        raise UserError("init=mean_field draws its biases from N(0, init.sigma_b2); set init.sigma_b2 "
                        "instead of init.bias_init (e.g. init.sigma_b2=0.05)")
    if name == "metainit":
        if p["base"] not in METAINIT_BASES:
            raise UserError(f"init.base={p['base']!r} is not a strategy metainit can start from; "
                            f"choose one of: {', '.join(METAINIT_BASES)}")
        if not (p["lr"] > 0 and 0 <= p["momentum"] < 1 and p["eps"] > 0):
            raise UserError(f"init=metainit needs init.lr > 0, 0 <= init.momentum < 1 and init.eps > 0, got "
                            f"lr={p['lr']} momentum={p['momentum']} eps={p['eps']} (the paper's: 0.1, 0.9, 1e-5)")
    validate_modifiers(cfg, n_layers)
    if name == "lsuv" and (not 0 < p["tol"] < 1 or int(p["max_iter"]) < 1):
        raise UserError("init=lsuv needs 0 < init.tol < 1 and init.max_iter >= 1 (e.g. init.tol=0.02 init.max_iter=20)")
    if cfg.get("bias_init", "zeros") not in BIAS_RULES and not isinstance(cfg.get("bias_init"), (int, float)):
        raise UserError(f"init.bias_init must be zeros, default or a number, got {cfg.get('bias_init')!r}")


def apply_init(model: nn.Module, cfg: Mapping[str, Any], activation: str | None = None,
               batch: torch.Tensor | None = None, task: Any = None,
               measured: dict[str, Any] | None = None, learn: bool = True) -> dict[str, float | None]:
    """Initialize every Linear/Conv layer of ``model`` by ``cfg``, then its modifiers; return each layer's
    aimed-for weight std (before the modifiers: the strategy's own aim). ``learn=False`` leaves metainit's
    learning out (a resumed run, whose weights come from its checkpoint).

    ``activation`` is the model's nonlinearity (kaiming's gain follows it unless the config names one);
    ``batch`` is a training batch, needed by LSUV; ``task`` the random task metainit learns on (a
    metainit.RandomTask; None: cross entropy over the model's outputs), whose log goes to ``measured["metainit"]``.
    """
    cfg = _plain(cfg)
    validate_init(cfg)
    name = cfg["name"]
    fn = STRATEGIES[name]
    params = strategy_params(cfg, activation)
    own_bias = "bias" in inspect.signature(fn).parameters  # the strategy draws the biases itself
    bias_rule = cfg.get("bias_init", "default" if name in ("default", "fixed") else "zeros")
    targets: dict[str, float | None] = {}
    with torch.no_grad():
        for layer_name, layer in init_layers(model):
            targets[layer_name] = fn(layer.weight, layer.bias, **params) if own_bias else fn(layer.weight, **params)
            if layer.bias is not None and bias_rule != "default" and not own_bias:
                nn.init.constant_(layer.bias, 0.0 if bias_rule == "zeros" else float(bias_rule))
        if name == "fixed":
            apply_fixed(model, cfg)
        if name == "lsuv":
            if batch is None:
                raise ValueError("init=lsuv needs a training batch")
            apply_lsuv(model, batch, tol=params["tol"], max_iter=int(params["max_iter"]))
    if name == "metainit" and learn:
        from trainstudy.metainit import learn_norms  # torch.func's higher-order autodiff, only where needed

        log = learn_norms(model, task, steps=params["steps"], lr=params["lr"], momentum=params["momentum"],
                          eps=params["eps"], batch_size=params["batch_size"])
        if measured is not None:
            measured["metainit"] = log
    with torch.no_grad():
        apply_modifiers(model, cfg)
    return targets

