"""The statistics' figures: the fraction of seeds that reached the target by step t (Kaplan–Meier) per group, and
the performance profile ρ(τ) across workloads. PNG at 150 dpi with an SVG of the same figure beside it."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from trainstudy.report import profiles
from trainstudy.report.figures import save_figure
from trainstudy.report.jobs import Report
from trainstudy.report.stats import fraction_reached
from trainstudy.report.tables import observations, profile_times

DPI = 150
FRACTION_REACHED, PROFILE = "fraction_reached.png", "performance_profile.png"
# curves that coincide (the same steps to target) would hide each other: a dash pattern per value next to its colour
DASHES = ("-", (0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)), (0, (3, 3)))


def _styles(values: list[str]) -> dict[str, dict]:
    """One colour and one dash pattern per value of the compared key, the same in both figures."""
    cmap = matplotlib.colormaps["tab10" if len(values) <= 10 else "tab20"]
    colors = [cmap(i % cmap.N) for i in range(len(values))]
    return {v: {"color": colors[i], "ls": DASHES[i % len(DASHES)]} for i, v in enumerate(values)}


def _save(fig: Figure, path: Path) -> None:
    save_figure(fig, path)


def _panels(report: Report) -> tuple[str | None, dict[str, dict[str, object]]]:
    """The compared key and the trained groups by workload (one workload, "all", when nothing else varies)."""
    key = profiles.compared_key(report.varied, report.compare)
    trained = [g for g in report.groups if g.trained]
    if key is None:
        return None, {"all": {g.name: g for g in trained}}
    return key, profiles.split_workloads(trained, report.varied, key)


def plot_fraction_reached(report: Report, path: Path) -> bool:
    """Per workload a panel, per group a step curve: the Kaplan–Meier fraction of its seeds that reached the
    target by step t, drawn to the last step a seed ran; False when no group has an observation."""
    key, panels = _panels(report)
    curves = {w: {v: (list(observations(g).values()), g.max_steps) for v, g in by.items()} for w, by in panels.items()}
    curves = {w: {v: c for v, c in by.items() if c[0]} for w, by in curves.items()}
    curves = {w: by for w, by in curves.items() if by}
    if not curves:
        return False
    labels = sorted({v for by in curves.values() for v in by})
    style = _styles(labels)
    cols = min(len(curves), 2)
    rows = math.ceil(len(curves) / cols)
    legend_rows = math.ceil(len(labels) / 5)
    height = 3.0 * rows + 0.9 + 0.2 * legend_rows
    fig = Figure(figsize=(4.8 * cols, height), dpi=DPI)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for ax, (workload, by) in zip(axes, curves.items()):
        for value, (obs, last_step) in by.items():
            steps, fraction = fraction_reached(obs)
            end = max(last_step, *(o.steps for o in obs))  # the curve runs on to the last step a seed trained
            ax.step([0.0, *steps, end], [0.0, *fraction, fraction[-1] if len(fraction) else 0.0], where="post",
                    lw=1.5, label=value, **style[value])
        ax.axhline(0.5, color="0.4", lw=0.6)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(workload if workload != "all" else "", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[::cols]:
        ax.set_ylabel("fraction of seeds reached")
    for ax in axes[len(curves):]:
        ax.set_visible(False)
    handles = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(list(handles.values()), list(handles), title=key, fontsize=8, title_fontsize=8, loc="lower center",
               ncol=min(len(handles), 5), frameon=False)
    metrics = {j.target_metric for g in report.groups for j in g.trained}
    target = f"the {metrics.pop()} target" if len(metrics) == 1 else "their target"
    fig.suptitle(f"fraction of seeds that reached {target} by step t (Kaplan–Meier; grey line: ½, the median)",
                 fontsize=10)
    fig.tight_layout(rect=(0, (0.3 + 0.2 * legend_rows) / height, 1, 1))
    _save(fig, path)
    return True


def plot_profile(report: Report, path: Path) -> bool:
    """ρ(τ) per compared value over τ ∈ [1, 4], its score in the legend; False with fewer than two workloads."""
    times = profile_times(report)
    if times is None:
        return False
    ratio = profiles.ratios({w: {v: m.value for v, m in t.items()} for w, t in times.items()})
    taus = np.linspace(1, profiles.CAP, 601)
    rho, scores = profiles.profile(ratio, taus), profiles.score(ratio)
    order = sorted(rho, key=lambda v: (-scores[v], v))
    style = _styles(sorted(rho))
    fig = Figure(figsize=(6.4, 4.0), dpi=DPI)
    ax = fig.subplots()
    for value in order:
        ax.step(taus, rho[value], where="post", lw=1.8, label=f"{value}  (score {scores[value]:.2f})", **style[value])
    ax.set_xlim(1, profiles.CAP)
    ax.set_ylim(-0.04, 1.04)
    ax.set_xlabel("τ: ratio of median steps to target to the workload's best")
    ax.set_ylabel(f"ρ(τ): fraction of the {len(times)} workloads")
    key = profiles.compared_key(report.varied, report.compare)
    ax.set_title(f"performance profile of {key} (score: area over [1, 4] / 3)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return True
