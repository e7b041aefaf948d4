"""The trainability phase diagram (Schoenholz et al. 2017, "Deep Information Propagation", fig. 6).

For a sweep over ``init.sigma_w2`` and ``model.depth`` (``experiment=edge_of_chaos``): per (σ_w², depth) the
target metric's best value (val/acc: the highest reached, step 0 left out) averaged over the seeds, as a
heatmap, with the mean-field theory's depth scale drawn over it. A signal's correlations reach their fixed
point like exp(−l/ξ_c) (meanfield.py), so a network much deeper than ξ_c forgets which input it saw: the paper
finds the trainable region bounded by about 6 ξ_c, widest at the edge of chaos (χ₁ = 1, σ_w² ≈ 1.76 for tanh
at σ_b² = 0.05), where ξ_c diverges.

Drawn only when exactly those two keys vary (seeds aside) and every job is a ``mean_field`` init of one
activation the theory covers (tanh, relu) at one σ_b²; otherwise the heatmap is drawn without the curve, or,
where other keys vary too, not at all (which of their values would a cell show?).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import patheffects
from matplotlib.figure import Figure

from trainstudy import meanfield
from trainstudy.report.figures import WIDTH_IN, save_figure
from trainstudy.report.jobs import Report

AXES = ("init.sigma_w2", "model.depth")
FIGURE = "phase_diagram.png"
MULTIPLE = 6  # the paper's bound on trainable depth, in units of ξ_c
DPI = 150


@dataclass
class Phase:
    """The grid of a phase-diagram sweep: ``values[i, j]`` is the seeds' mean of the best ``metric`` at
    depths[i] and sigma_w2[j] (NaN: no trained job there), ``seeds[i, j]`` how many seeds it averages."""

    sigma_w2: list[float]
    depths: list[int]
    values: np.ndarray
    seeds: np.ndarray
    metric: str
    activation: str | None  # the theory's activation (None: no curve, see the module's docstring)
    sigma_b2: float | None

    def xi_c(self, sigma_w2: float) -> float:
        """The theory's depth scale at ``sigma_w2`` (NaN without a theory)."""
        if self.activation is None or self.sigma_b2 is None:
            return math.nan
        return meanfield.theory(self.activation, sigma_w2, self.sigma_b2).xi_c

    @property
    def critical(self) -> float:
        """The σ_w² of the edge of chaos (NaN without a theory)."""
        if self.activation is None or self.sigma_b2 is None:
            return math.nan
        return meanfield.critical_sigma_w2(self.activation, self.sigma_b2)


def _theory_of(report: Report) -> tuple[str | None, float | None]:
    """(activation, σ_b²) when every trained job is a mean_field init of one covered activation at one σ_b²."""
    hp = [(j.result or {}).get("hparams") or {} for g in report.groups for j in g.trained]
    inits = {h.get("init") for h in hp}
    activations = {h.get("activation") for h in hp}
    biases = {h.get("init.sigma_b2") for h in hp}
    if inits != {"mean_field"} or len(activations) != 1 or len(biases) != 1:
        return None, None
    activation, bias = activations.pop(), biases.pop()
    if activation not in meanfield.ACTIVATIONS or bias is None:
        return None, None
    return activation, float(bias)


def phase_diagram(report: Report) -> Phase | None:
    """The sweep's grid, or None when it is not a sweep over exactly σ_w² and depth (seeds aside)."""
    if sorted(report.varied) != sorted(AXES) or not report.metric:
        return None
    cells: dict[tuple[int, float], tuple[float, int]] = {}
    for g in report.groups:
        try:
            key = (int(g.values[AXES[1]]), float(g.values[AXES[0]]))
        except (KeyError, TypeError, ValueError):
            return None
        best = g.best
        if best.mean is not None:
            cells[key] = (best.mean, len(best.values))
    if not cells:
        return None
    depths = sorted({d for d, _ in cells})
    sigmas = sorted({s for _, s in cells})
    values = np.full((len(depths), len(sigmas)), np.nan)
    seeds = np.zeros((len(depths), len(sigmas)), dtype=int)
    for (d, s), (value, n) in cells.items():
        values[depths.index(d), sigmas.index(s)] = value
        seeds[depths.index(d), sigmas.index(s)] = n
    activation, bias = _theory_of(report)
    return Phase(sigmas, depths, values, seeds, report.metric, activation, bias)


def _edges(centres: list[float]) -> np.ndarray:
    """Cell edges halfway between neighbouring centres (the outer ones as far out as the inner)."""
    c = np.asarray(centres, dtype=float)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def phase_figure(phase: Phase) -> Figure:
    """The heatmap (σ_w² across, depth up), each cell's mean written in it, and MULTIPLE·ξ_c over it."""
    fig = Figure(figsize=(WIDTH_IN, 4.6), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    x, y = _edges(phase.sigma_w2), _edges(phase.depths)
    mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(phase.values), cmap="viridis", shading="flat")
    fig.colorbar(mesh, ax=ax, label=f"best {phase.metric} (mean over seeds)")
    finite = phase.values[np.isfinite(phase.values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i, d in enumerate(phase.depths):
        for j, s in enumerate(phase.sigma_w2):
            v = phase.values[i, j]
            if np.isfinite(v):
                ax.text(s, d, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if v > middle else "white")
    if phase.activation is not None:
        dense = np.linspace(x[0], x[-1], 400)
        bound = np.array([MULTIPLE * phase.xi_c(s) for s in dense])
        bound[~np.isfinite(bound)] = y[-1] * 10  # ξ_c diverges at the edge: off the top
        ax.plot(dense, bound, color="black", lw=1.0, label=f"{MULTIPLE} ξ_c (mean-field theory)",
                path_effects=[patheffects.withStroke(linewidth=2.6, foreground="white")])  # seen on any cell
        crit = phase.critical
        if math.isfinite(crit) and x[0] <= crit <= x[-1]:
            ax.axvline(crit, color="red", lw=0.8, ls=":", label=f"edge of chaos, χ₁ = 1 (σ_w² = {crit:.2f})")
        fig.legend(loc="outside lower center", ncols=2, fontsize=7, frameon=False)  # off the cells' numbers
        title = f"{phase.activation} MLP, σ_b² = {phase.sigma_b2:g}: trainable depth against σ_w²"
    else:
        title = "best value against σ_w² and depth"
    ax.set(xlim=(x[0], x[-1]), ylim=(y[0], y[-1]), xlabel="σ_w²", ylabel="depth (hidden layers)", title=title)
    return fig


def plot_phase(report: Report, path: Path) -> bool:
    """The phase diagram into ``path`` (PNG + SVG); False when the sweep is not one (see phase_diagram)."""
    phase = phase_diagram(report)
    if phase is None:
        return False
    save_figure(phase_figure(phase), path)
    return True


def phase_rows(report: Report) -> tuple[list[str], list[list[str]]] | None:
    """report.md's table: a row per depth, a column per σ_w² (the seeds' mean best value, ``—`` for none),
    then the theory's ξ_c and MULTIPLE·ξ_c per σ_w² when there is one."""
    phase = phase_diagram(report)
    if phase is None:
        return None
    header = ["depth", *(f"σ_w² {s:g}" for s in phase.sigma_w2)]
    rows = [[str(d), *(f"{v:.3f}" if np.isfinite(v) else "—" for v in phase.values[i])]
            for i, d in enumerate(phase.depths)]
    if phase.activation is not None:
        xi = [phase.xi_c(s) for s in phase.sigma_w2]
        rows.append(["ξ_c (theory)", *(f"{v:.1f}" if math.isfinite(v) else "∞" for v in xi)])
        rows.append([f"{MULTIPLE} ξ_c", *(f"{MULTIPLE * v:.0f}" if math.isfinite(v) else "∞" for v in xi)])
    return header, rows
