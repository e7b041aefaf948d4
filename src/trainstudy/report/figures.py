"""The report's figures, drawn from the grouped jobs: each a PNG at 150 dpi with an SVG of it beside.

Every band and error bar is the sample std over seeds (n − 1, as the tables); a group keeps one colour in
every figure (``group_colors``). Above ``PANELS_FROM`` groups a curve plot becomes small multiples, one
panel per group with the others in gray behind, since one legend of 16 colours can't be read.
"""

from __future__ import annotations

import colorsys
import math
import statistics
import textwrap
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import matplotlib
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from trainstudy.report.jobs import Group, Job, Report
from trainstudy.sweeps import run_name

PLOTS = ("curves.png", "steps_to_target.png", "train_loss.png", "act_std_by_depth.png")
DPI = 150
WIDTH_IN = 7.0      # a page's text width: every figure is 1050 px wide at DPI
PANELS_FROM = 9     # this many groups or more: one panel per group
PANEL_COLUMNS = 4
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "trainstudy"}
DIVERGED = dict(marker="x", ls="none", ms=6, mew=1.5)

Series = tuple[list[int], list[float], list[float]]


def figure(height_in: float) -> Figure:
    """A figure WIDTH_IN wide at DPI, laid out so that nothing is cut (labels, outside legends)."""
    return Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")


def save_figure(fig: Figure, path: Path) -> list[Path]:
    """``path`` (a .png, at DPI) and the same figure as an SVG beside it; both without a date, so a re-run
    that draws the same thing writes the same bytes."""
    svg = path.with_suffix(".svg")
    with matplotlib.rc_context(STYLE):  # ticks are made when drawn: in the figure's style too
        fig.savefig(path, dpi=DPI, metadata={"Software": None})
        fig.set_layout_engine("none")  # laid out once, for the PNG: the SVG keeps those positions
        fig.savefig(svg, metadata={"Date": None})
    return [path, svg]


def group_colors(report: Report) -> dict[str, tuple]:
    """One colour per group, the same in every figure: tab10 in the sweep's own order (first job first) up to
    10 groups; beyond, hues a golden angle apart at three lightnesses, so that neighbours never look alike."""
    first = {id(j): i for i, j in enumerate(report.jobs)}
    names = [g.name for g in sorted(report.groups, key=lambda g: min((first[id(j)] for j in g.jobs), default=0))]
    if len(names) <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return {name: cmap(i) for i, name in enumerate(names)}
    return {name: colorsys.hls_to_rgb((i * 0.618034) % 1, (0.32, 0.45, 0.58)[i % 3], 0.7) + (1.0,)
            for i, name in enumerate(names)}


def _stats(values_by_step: dict[int, list[float]]) -> Series:
    steps = sorted(values_by_step)
    return (steps, [statistics.fmean(values_by_step[s]) for s in steps],
            [statistics.stdev(values_by_step[s]) if len(values_by_step[s]) > 1 else 0.0 for s in steps])


def _log_stats(values_by_step: dict[int, list[float]]) -> Series:
    """For a log axis: the mean and sample std of log(value), as their exp (geometric mean and std)."""
    steps, mean, std = _stats({s: [math.log(v) for v in vs if v > 0] for s, vs in values_by_step.items()
                               if any(v > 0 for v in vs)})
    return steps, [math.exp(m) for m in mean], [math.exp(s) for s in std]


def mean_curve(jobs: list[Job], metric: str, log: bool = False) -> Series:
    """Steps, mean and sample std (0 for one value) over the jobs that have the metric at that step (NaN/Inf
    points left out: a diverged seed drops out of the mean from there); ``log``: geometric (see _log_stats)."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for j in jobs:
        for p in (j.result or {}).get("curve") or []:
            v = p.get(metric)
            if v is not None and math.isfinite(v):
                by_step[p["step"]].append(v)
    return (_log_stats if log else _stats)(by_step)


def mean_train_loss(jobs: list[Job]) -> Series:
    """The training loss at steps 1..n (metrics.json's train_loss): geometric mean and std over the jobs."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for j in jobs:
        for step, v in enumerate((j.result or {}).get("train_loss") or [], start=1):
            if v is not None and math.isfinite(v):
                by_step[step].append(v)
    return _log_stats(by_step)


def _diverged_at(g: Group, steps: list[int], mean: list[float]) -> tuple[list[int], list[float]]:
    """Where each diverged seed of ``g`` ended, drawn on the group's mean: the last mean point at or before it."""
    xs, ys = [], []
    for j in g.trained:
        at = j.metrics.get("conv/diverged_step")
        before = [i for i, s in enumerate(steps) if s <= at] if at is not None else []
        if before:
            xs.append(steps[before[-1]])
            ys.append(mean[before[-1]])
    return xs, ys


def _band(ax, series: Series, color, label: str | None, log: bool) -> None:
    """The mean and a band of ± one std; on a log axis × and ÷ the geometric std."""
    steps, mean, std = series
    low = [m / s for m, s in zip(mean, std)] if log else [m - s for m, s in zip(mean, std)]
    high = [m * s for m, s in zip(mean, std)] if log else [m + s for m, s in zip(mean, std)]
    ax.plot(steps, mean, color=color, lw=1.3, label=label)
    ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)


def _per_group_figure(report: Report, series: Callable[[Group], Series], ylabel: str, log: bool,
                    title: str, hline: float | None = None) -> list[Path]:
    """One curve per group (mean ± sample std over seeds, × where a seed diverged; on a log axis the geometric
    mean ×÷ geometric std, the mean and sample std of log values), on one axes below
    PANELS_FROM groups, else one panel per group with every other group's mean in gray behind it."""
    groups = [g for g in report.groups if g.trained]
    colors = group_colors(report)
    drawn = {g.name: series(g) for g in groups}
    with matplotlib.rc_context(STYLE):
        if len(groups) < PANELS_FROM:
            fig = figure(3.6)
            ax = fig.subplots()
            axes_of = {g.name: ax for g in groups}
        else:
            rows = math.ceil(len(groups) / PANEL_COLUMNS)
            fig = figure(0.6 + 1.45 * rows)
            grid = fig.subplots(rows, PANEL_COLUMNS, sharex=True, sharey=True, squeeze=False).ravel()
            axes_of = {g.name: grid[i] for i, g in enumerate(groups)}
            for ax in grid[len(groups):]:
                ax.set_axis_off()
            for i, g in enumerate(groups):
                ax = grid[i]
                others = [list(zip(*drawn[o.name][:2])) for o in groups if o is not g]
                ax.add_collection(LineCollection(others, colors="0.82", lw=0.6, zorder=1))
                ax.set_title(textwrap.fill(g.name.replace(",", ", "), 34), fontsize=7)
        single = len(groups) < PANELS_FROM
        # a log axis spans the means from a third of the lowest to 3× the highest start: a diverging seed's 1e30
        # (or a band's 1e-11) would squash every other curve
        top = 3 * max((d[1][0] for d in drawn.values() if d[1]), default=1.0)
        bottom = min((m for d in drawn.values() for m in d[1]), default=1.0) / 3
        marked = False
        for g in groups:
            ax = axes_of[g.name]
            _band(ax, drawn[g.name], colors[g.name], g.name if single else None, log)
            xs, ys = _diverged_at(g, *drawn[g.name][:2])
            if xs:
                ax.plot(xs, [min(y, top) for y in ys] if log else ys, color=colors[g.name], **DIVERGED, clip_on=False,
                        label=None if marked else "a seed diverged")
                marked = True
        for ax in set(axes_of.values()):
            if hline is not None:
                ax.axhline(hline, color="k", ls="--", lw=0.7, label=f"target {hline:g}" if single else None)
            if log:
                ax.set_yscale("log")
                ax.set_ylim(max(ax.get_ylim()[0], bottom), min(ax.get_ylim()[1], top))
                if not single:
                    ax.yaxis.set_minor_locator(NullLocator())  # 16 panels of log minor ticks: seconds of layout
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5 if not single else "auto"))
        if single:
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            fig.legend(loc="outside right upper")
        else:
            fig.supxlabel("step", fontsize=8)
            fig.supylabel(ylabel, fontsize=8)
            fig.suptitle(title + "; gray: the other groups" + ("; ×: a seed diverged" if marked else ""), fontsize=8)
        return fig


def curves_figure(report: Report) -> Figure:
    """The target metric over steps per group: the mean over seeds with a band of ± one sample std."""
    log = report.metric != "val/acc"
    spread = "geometric mean ×÷ std" if log else "mean ± sample std"
    return _per_group_figure(report, lambda g: mean_curve(g.trained, report.metric, log), report.metric, log,
                           f"{report.metric} per group ({spread} over seeds)", report.target)


def train_loss_figure(report: Report) -> Figure:
    """The training loss of every step per group, on a log axis: the geometric mean over seeds, a band ×÷ the
    geometric std (an arithmetic mean − std would fall below 0 wherever the seeds disagree)."""
    return _per_group_figure(report, lambda g: mean_train_loss(g.trained), "train/loss", True,
                           "train/loss per group (geometric mean ×÷ std over seeds)")


def steps_figure(report: Report) -> Figure:
    """Steps to target per group, every seed drawn as what it is: a dot where it reached the target, ▷ at
    its last step where it did not (censored: it would have needed more), × where it diverged. The bar is the
    mean over the seeds that reached it, the error bar their sample std; the numbers stand right of the axes."""
    groups = [g for g in report.groups if g.trained]
    colors = group_colors(report)
    with matplotlib.rc_context(STYLE):
        fig = figure(max(2.4, 1.1 + 0.3 * len(groups)))
        ax = fig.subplots()
        for i, g in enumerate(groups):
            color, n = colors[g.name], len(g.trained)
            steps = g.steps
            if g.reached:
                ax.barh(i, steps.mean, height=0.6, color=color, alpha=0.35, lw=0)
                if steps.std is not None:
                    ax.errorbar(steps.mean, i, xerr=steps.std, color="k", capsize=2.5, lw=0.9)
            for k, j in enumerate(g.trained):
                y = i + (k - (n - 1) / 2) * min(0.12, 0.5 / n)
                m = j.metrics
                if m.get("conv/steps_to_target") is not None:
                    ax.plot(m["conv/steps_to_target"], y, "o", color=color, ms=3.5)
                elif j.status == "diverged":
                    ax.plot(m.get("conv/diverged_step") or m.get("conv/steps") or 0, y, color="firebrick", **DIVERGED)
                else:
                    ax.plot(m.get("conv/steps") or 0, y, ">", mfc="none", color=color, ms=5)
            ax.annotate(_steps_label(g), (1.01, i), xycoords=("axes fraction", "data"), va="center", fontsize=7)
        ax.set_yticks(range(len(groups)), [g.name for g in groups])
        ax.set_ylim(len(groups) - 0.5, -0.5)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="x", alpha=0.3)
        goal = f"{report.metric} {'≥' if report.metric == 'val/acc' else '≤'} {report.target:g}" \
            if report.target is not None else "the target"
        ax.set_xlabel(f"steps to {goal}")
        ax.set_title("●: a seed reached it · bar ± error bar: mean ± sample std of those · ▷: not reached by its "
                     "last step · ×: diverged there", fontsize=7)
        return fig


def _steps_label(g: Group) -> str:
    n, diverged = len(g.trained), g.count("diverged")
    if not g.reached:
        return f"diverged {diverged}/{n}" if diverged == n else f"not reached (0/{n})" + (
            f", {diverged} diverged" if diverged else "")
    text = f"{g.steps.text(integer=True)} ({g.reached}/{n} reached)"
    return text + (f", {diverged} diverged" if diverged else "")


AT_INIT = ("init", "model", "data")  # the keys that change a network's activations at init (not optim, loss ...)


def act_std_curves(report: Report) -> dict[str, Series]:
    """Per setting of the varied keys that shape the net at init (init, model, data: never lr or loss), and per
    number of layers: layer number, mean and sample std of the activation std at init over its jobs."""
    shaping = {k for k in report.varied if k.split(".")[0].split("/")[0] in AT_INIT}
    by_key: dict[tuple[str, int], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for j in report.jobs:
        rows = [r for r in j.layers() if r.get("act_std") is not None and math.isfinite(r["act_std"])]
        name = run_name(j.overrides, shaping) or ((j.result or {}).get("hparams") or {}).get("init", "all")
        for row in rows:
            by_key[name, len(j.layers())][row["index"]].append(row["act_std"])
    several = len({layers for _, layers in by_key}) > len({name for name, _ in by_key})
    return {(f"{name} ({layers} layers)" if several else name): _stats(values)
            for (name, layers), values in sorted(by_key.items())}


def act_std_figure(report: Report) -> Figure | None:
    """Activation std against layer per init (He et al. 2015 fig. 2 / Glorot & Bengio fig. 3); [] when no job has
    diagnostics (None then). A symlog axis: logarithmic above the smallest std drawn, linear below, so 0 is drawn at 0."""
    curves = act_std_curves(report)
    if not curves:
        return None
    colors = group_colors(report)
    own = {label: matplotlib.colormaps["tab10"](i % 10) for i, label in enumerate(curves)}
    positive = [v for _, means, _ in curves.values() for v in means if v > 0]
    with matplotlib.rc_context(STYLE):
        fig = figure(3.6)
        ax = fig.subplots()
        for label, (layers, means, stds) in curves.items():
            color = colors.get(label, own[label])
            ax.plot(layers, means, color=color, marker=".", label=label, lw=1.2, clip_on=False, zorder=3)
            ax.fill_between(layers, [max(m - s, 0) for m, s in zip(means, stds)],
                            [m + s for m, s in zip(means, stds)], color=color, alpha=0.2, lw=0)
        linthresh = 10 ** math.floor(math.log10(min(positive))) if positive else 1.0
        ax.set_yscale("symlog", linthresh=linthresh, linscale=0.5)
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0.5)  # layers are numbered from 1
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (1 = first Linear/Conv)")
        ax.set_ylabel("activation std at init")
        ax.set_title(f"activation std per layer at init (mean ± sample std over seeds; linear below {linthresh:g})")
        ax.grid(alpha=0.3)
        fig.legend(loc="outside right upper")
        return fig


def write_figures(report: Report, out: Path) -> dict[str, Path]:
    """Every figure this module draws into ``out``: name → PNG (its SVG beside it)."""
    drawn = report.metric and any(g.trained for g in report.groups)
    has_loss = any((j.result or {}).get("train_loss") for g in report.groups for j in g.trained)
    figures = {"curves": curves_figure if drawn else None, "steps": steps_figure if drawn else None,
               "train_loss": train_loss_figure if drawn and has_loss else None, "act_std": act_std_figure}
    written = {}
    for (name, make), file in zip(figures.items(), PLOTS):
        fig = make(report) if make else None
        if fig is not None:
            written[name] = save_figure(fig, out / file)[0]
    return written
