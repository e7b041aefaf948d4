"""The report's figures, drawn from the grouped jobs."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure

from trainstudy.report.jobs import Job, Report

PLOTS = ("curves.png", "steps_to_target.png", "act_std_by_depth.png")


def mean_curve(jobs: list[Job], metric: str) -> tuple[list[int], list[float], list[float]]:
    """Steps, mean and std over the jobs that have the metric at that step (NaN/None points left out)."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for j in jobs:
        for p in (j.result or {}).get("curve") or []:
            v = p.get(metric)
            if v is not None and math.isfinite(v):
                by_step[p["step"]].append(v)
    steps = sorted(by_step)
    return (steps, [statistics.fmean(by_step[s]) for s in steps],
            [statistics.pstdev(by_step[s]) for s in steps])


def _colors(n: int) -> list:
    from matplotlib import colormaps
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_curves(report: Report, path: Path) -> None:
    """The target metric over steps per group: the mean over seeds, with a band of ± one std."""
    fig = Figure(figsize=(7, 4.2), dpi=90)
    ax = fig.subplots()
    groups = [g for g in report.groups if g.trained]
    for g, color in zip(groups, _colors(len(groups))):
        steps, mean, std = mean_curve(g.trained, report.metric)
        ax.plot(steps, mean, color=color, label=g.name, lw=1.4)
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=color, alpha=0.2, lw=0)
    if report.target is not None:
        ax.axhline(report.target, color="k", ls="--", lw=0.8, label=f"target {report.target:g}")
    if report.metric != "val/acc":
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(report.metric)
    ax.set_title(f"{report.metric} per group (mean ± std over seeds)", fontsize=10)
    ax.legend(fontsize=7, loc="best", ncol=2 if len(groups) > 8 else 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def plot_steps(report: Report, path: Path) -> None:
    """Mean steps to target per group (std as error bar); a group that never reached it: a hatched bar
    the length of its run, labelled "not reached"."""
    groups = [g for g in report.groups if g.trained]
    fig = Figure(figsize=(7, max(2.4, 0.9 + 0.32 * len(groups))), dpi=90)
    ax = fig.subplots()
    for i, g in enumerate(groups):
        steps = g.steps
        if g.reached:
            ax.barh(i, steps.mean, xerr=steps.std or 0, color="tab:blue", capsize=3)
            label = f" {steps.mean:.0f}" + (f" ({g.reached}/{len(g.trained)})" if g.reached < len(g.trained) else "")
            ax.text(steps.mean, i, label, va="center", fontsize=7)
        else:
            ax.barh(i, g.max_steps, color="none", edgecolor="tab:gray", hatch="//")
            ax.text(g.max_steps, i, " not reached", va="center", fontsize=7, color="tab:gray")
    ax.set_yticks(range(len(groups)), [g.name for g in groups], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"steps to {report.metric} target {report.target:g}" if report.target is not None else "steps")
    ax.margins(x=0.25)
    fig.tight_layout()
    fig.savefig(path)


def act_std_by_init(report: Report) -> dict[str, tuple[list[int], list[float]]]:
    """Per init: layer number and mean activation std at init over its jobs (from the init diagnostics)."""
    by_init: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for j in report.jobs:
        init = ((j.result or {}).get("hparams") or {}).get("init", "?")
        for row in j.layers():
            if row.get("act_std") is not None and math.isfinite(row["act_std"]):
                by_init[init][row["index"]].append(row["act_std"])
    return {init: (sorted(rows), [statistics.fmean(rows[i]) for i in sorted(rows)]) for init, rows in by_init.items()}


def plot_act_std(report: Report, path: Path) -> bool:
    """Activation std against depth per init (He et al. 2015 fig. 2 / Glorot & Bengio fig. 3); False when no
    job has diagnostics. Log scale: a std of 0 (zeros init) is drawn at the bottom edge as an open marker."""
    curves = act_std_by_init(report)
    if not curves:
        return False
    fig = Figure(figsize=(7, 4.2), dpi=90)
    ax = fig.subplots()
    positive = [v for _, stds in curves.values() for v in stds if v > 0]
    floor = min(positive) / 3 if positive else 1e-3
    for (init, (depth, stds)), color in zip(sorted(curves.items()), _colors(len(curves))):
        ax.plot(depth, [max(v, floor) for v in stds], color=color, marker=".", label=init, lw=1.2)
        zeros = [d for d, v in zip(depth, stds) if v <= 0]
        ax.plot(zeros, [floor] * len(zeros), ls="none", marker="o", mfc="none", color=color)
    ax.set_yscale("log")
    ax.set_xlabel("layer (1 = first Linear/Conv)")
    ax.set_ylabel("activation std at init")
    ax.set_title("activation std against depth, per init (open marker: exactly 0)", fontsize=10)
    ax.legend(fontsize=7, ncol=2 if len(curves) > 8 else 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return True
