"""Width scaling: μP's coordinate check (Yang et al. 2022, microsoft/mup) for any config's init, loss, optimizer.

A network is trained for a few steps at each of several widths, on one fixed batch, and the mean absolute value
of each layer's activations (its "coordinates") is recorded before every step and after the last. Under a
parametrization that transfers across widths every layer's coordinates stay the same size as the width grows;
under standard parametrization (SP) with Adam the hidden layers that read a width-sized input and the readout's
logits grow ∝ width after one step: Adam's first step moves every weight by about lr (the sign of its
gradient, correlated with the unit's input), and a unit sums ``fan_in`` of those moves times its inputs.

Measure into a tidy table (a row per width, layer, step, seed), fit a slope per layer from the table, plot
from the table.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from matplotlib import rc_context
from matplotlib.figure import Figure
from omegaconf import DictConfig, open_dict
from scipy import stats
from torch import nn

from trainstudy.data import load_data
from trainstudy.errors import UserError
from trainstudy.inits import INIT_LAYERS, apply_init, init_layers
from trainstudy.losses import build_loss, out_features
from trainstudy.models import ACTIVATIONS, build_model

COLUMNS = ("width", "layer", "name", "step", "seed", "mean_abs_act")
# A layer "grows with width" when its log-log slope exceeds this: halfway between width-stable coordinates
# (slope 0, what μP keeps at every step) and coordinates ∝ width (slope 1, SP + Adam's readout after one step).
# Over widths 64 … 2048 a slope of 0.5 means coordinates √32 ≈ 5.7× larger at the widest than at the narrowest.
GROWTH_THRESHOLD = 0.5
ACTIVATION_TYPES = tuple({type(make()) for make in ACTIVATIONS.values()})


def watched_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module whose output is recorded) per Linear/Conv layer, in forward order: a hidden layer's
    nonlinearity (its activations), the last layer itself (the readout's logits)."""
    layers = [m for _, m in init_layers(model)]
    modules = list(model.modules())
    watched: list[tuple[str, nn.Module]] = []
    for i, layer in enumerate(layers):
        if i == len(layers) - 1:
            watched.append(("readout", layer))
            break
        after = modules[modules.index(layer) + 1:]
        nxt = next((m for m in after if isinstance(m, INIT_LAYERS + ACTIVATION_TYPES)), layer)
        watched.append((f"hidden {i + 1}", nxt if isinstance(nxt, ACTIVATION_TYPES) else layer))
    return watched


def measure(model: nn.Module, loss: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
            steps: int) -> list[dict[str, Any]]:
    """Mean |activation| per watched layer after 0, 1, …, ``steps`` optimizer steps, all on the batch (x, y).

    The forward pass at step t is the one whose gradient takes step t + 1 (as mup's coord check records it)."""
    rows: list[dict[str, Any]] = []
    step = 0

    def record(index: int, name: str):
        def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            rows.append({"layer": index, "name": name, "step": step, "mean_abs_act": out.detach().abs().mean().item()})
        return hook

    handles = [m.register_forward_hook(record(i + 1, name)) for i, (name, m) in enumerate(watched_layers(model))]
    model.train()
    try:
        for step in range(steps + 1):
            outputs = model(x)
            if step < steps:
                optimizer.zero_grad(set_to_none=True)
                loss(outputs, y).backward()
                optimizer.step()
    finally:
        for h in handles:
            h.remove()
    return rows


def coord_check(cfg: DictConfig, widths: Sequence[int], steps: int, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The tidy table: a row per (width, layer, step, seed) of ``cfg``'s model, init, loss and optimizer, each
    width trained from its own init on one batch of ``cfg.data.batch_size`` training samples drawn by the seed."""
    if len(widths) < 2 or min(widths) < 1:
        raise UserError(f"a coordinate check needs at least two widths >= 1, got {list(widths)} "
                        "(e.g. --widths 64 128 256)")
    if steps < 0:
        raise UserError(f"--steps must be >= 0, got {steps}")
    splits = load_data(cfg.data, cfg.data_dir)
    task = splits.task
    loss = build_loss(cfg.loss, task, splits.num_classes)
    n_out = out_features(cfg.loss.name, task, splits.num_classes,
                         splits.y_train.shape[1] if task == "regression" else 1)
    _check_width_matters(cfg, splits.input_shape, n_out, widths)
    batch_size = min(int(cfg.data.batch_size), len(splits.x_train))
    table: list[dict[str, Any]] = []
    for seed in seeds:
        pick = torch.randperm(len(splits.x_train), generator=torch.Generator().manual_seed(seed))[:batch_size]
        x, y = splits.x_train[pick], splits.y_train[pick]
        for width in widths:
            torch.manual_seed(seed)
            model = build_model(at_width(cfg.model, width), splits.input_shape, n_out)
            apply_init(model, cfg.init, getattr(model, "activation", None), x)
            optimizer = instantiate(cfg.optim)(model.parameters())
            for row in measure(model, loss, optimizer, x, y, steps):
                table.append({"width": int(width), **row, "seed": seed})
    return [{k: r[k] for k in COLUMNS} for r in table]


def at_width(model_cfg: DictConfig, width: int) -> DictConfig:
    """A copy of a model config with ``width`` as its model.width."""
    resized = model_cfg.copy()
    with open_dict(resized):
        resized.width = int(width)
    return resized


def _check_width_matters(cfg: DictConfig, input_shape: tuple[int, ...], n_out: int, widths: Sequence[int]) -> None:
    """Stop a model whose size model.width does not change (model=linear, a depth-0 MLP, LeNet on 28x28)."""
    sizes = []
    for width in (min(widths), max(widths)):
        with torch.device("meta"):
            model = build_model(at_width(cfg.model, width), input_shape, n_out)
        sizes.append(sum(p.numel() for p in model.parameters()))
    if sizes[0] == sizes[1]:
        depth = cfg.model.get("depth")
        raise UserError(f"model.width does not change model={cfg.model.name}"
                        + (f" with model.depth={depth}" if depth is not None else "")
                        + f" on {'x'.join(map(str, input_shape))} inputs: nothing to scale; use model=mlp with "
                        "model.depth >= 1 (or model=cnn on data=cifar10)")


def fit_slopes(table: Sequence[dict[str, Any]], threshold: float = GROWTH_THRESHOLD) -> list[dict[str, Any]]:
    """Per (layer, step): the least-squares slope of log mean|act| on log width over every seed's rows, its
    standard error, and whether it exceeds ``threshold`` (the layer grows with width). Rows that are 0, NaN
    or Inf (a zero init, a diverged step) are left out; fewer than two widths left give a NaN slope."""
    points: dict[tuple[int, str, int], list[tuple[float, float]]] = {}
    for r in table:
        kept = points.setdefault((r["layer"], r["name"], r["step"]), [])
        v = r["mean_abs_act"]
        if v > 0 and math.isfinite(v):
            kept.append((math.log(r["width"]), math.log(v)))
    slopes = []
    for (layer, name, step), xy in sorted(points.items()):
        slope = stderr = math.nan
        if len({x for x, _ in xy}) >= 2:
            fit = stats.linregress([x for x, _ in xy], [v for _, v in xy])
            slope, stderr = float(fit.slope), float(fit.stderr)
        slopes.append({"layer": layer, "name": name, "step": step, "slope": slope, "stderr": stderr,
                       "widths": len({x for x, _ in xy}), "grows": bool(slope > threshold)})
    return slopes


def seed_means(table: Sequence[dict[str, Any]]) -> dict[tuple[int, str, int], tuple[list[int], list[float]]]:
    """Per (layer, name, step): the widths and the mean over seeds of mean|act| at each."""
    acc: dict[tuple[int, str, int], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in table:
        acc[(r["layer"], r["name"], r["step"])][r["width"]].append(r["mean_abs_act"])
    return {k: (sorted(v), [sum(v[w]) / len(v[w]) for w in sorted(v)]) for k, v in sorted(acc.items())}


def plot_coord_check(table: Sequence[dict[str, Any]], slopes: Sequence[dict[str, Any]], stem: Path,
                     title: str) -> list[Path]:
    """One log-log panel per step (width on x, mean |act| over seeds on y, a line per layer, its slope in the
    legend, a dashed ∝ width line for scale); written as ``stem``.png (150 dpi) and .svg. Returns the paths."""
    means = seed_means(table)
    steps = sorted({k[2] for k in means})
    slope_of = {(s["layer"], s["step"]): s["slope"] for s in slopes}
    names = sorted({(k[0], k[1]) for k in means})
    from matplotlib import colormaps
    cmap = colormaps["tab10"]
    fig = Figure(figsize=(3.2 * len(steps) + 0.6, 3.6))
    axes = fig.subplots(1, len(steps), sharey=True, squeeze=False)[0]
    all_widths = sorted({r["width"] for r in table})
    for ax, step in zip(axes, steps):
        lowest = math.inf
        for i, (layer, name) in enumerate(names):
            widths, values = means[(layer, name, step)]
            kept = [(w, v) for w, v in zip(widths, values) if v > 0 and math.isfinite(v)]
            lowest = min([lowest, *(v for _, v in kept)])
            ax.plot([w for w, _ in kept], [v for _, v in kept], marker="o", ms=3, color=cmap(i % cmap.N),
                    label=f"{name} ({slope_of.get((layer, step), math.nan):+.2f})")
        if math.isfinite(lowest):
            ax.plot(all_widths, [lowest * w / all_widths[0] for w in all_widths], ls="--", lw=0.8, color="gray",
                    label="∝ width")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"step {step}", fontsize=10)
        ax.set_xlabel("width")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, title="layer (slope)", title_fontsize=6)
    axes[0].set_ylabel("mean |activation| (mean over seeds)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=150)
    with rc_context({"svg.hashsalt": "coord_check"}):  # the same table gives the same file: fixed ids, no date
        fig.savefig(paths[1], metadata={"Date": None})
    return paths
