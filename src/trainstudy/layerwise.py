"""Init over a model's layers rather than one tensor: which layers a strategy initializes, the explicit values
of one layer (init=fixed), LSUV's layer-by-layer rescaling, and the two modifiers any strategy takes
(init.zero_readout, init.layer_scale)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from trainstudy.errors import UserError

INIT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def init_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The layers a strategy initializes, in forward order: every Linear and Conv."""
    return ((name, m) for name, m in model.named_modules() if isinstance(m, INIT_LAYERS))


def validate_modifiers(cfg: Mapping[str, Any], n_layers: int | None = None) -> None:
    """init.zero_readout is true or false; init.layer_scale is null or one finite number per layer (``n_layers``:
    the model's count of Linear/Conv layers, where known)."""
    if cfg.get("zero_readout", False) not in (True, False):
        raise UserError(f"init.zero_readout must be true or false, got {cfg['zero_readout']!r}")
    scale = cfg.get("layer_scale")
    if scale is None:
        return
    if not isinstance(scale, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scale):
        raise UserError(f"init.layer_scale must be a list of numbers, one per layer, got {scale!r} "
                        "(e.g. init.layer_scale=[1.0,1.0,0.5])")
    if n_layers is not None and len(scale) != n_layers:
        raise UserError(f"init.layer_scale has {len(scale)} factor{'s' * (len(scale) != 1)} but the model has "
                        f"{n_layers} Linear/Conv layers; give one per layer (e.g. init.layer_scale="
                        f"[{','.join(['1.0'] * n_layers)}])")


def apply_modifiers(model: nn.Module, cfg: Mapping[str, Any]) -> None:
    """After the strategy: init.zero_readout zeroes the last layer's weight; init.layer_scale multiplies layer i's
    weight by its factor (init2winit's layer_rescale_factors, which scale kernels), in forward order."""
    layers = [layer for _, layer in init_layers(model)]
    validate_modifiers(cfg, len(layers))
    if cfg.get("zero_readout"):
        nn.init.zeros_(layers[-1].weight)
    for layer, factor in zip(layers, cfg.get("layer_scale") or ()):
        layer.weight.mul_(factor)


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
