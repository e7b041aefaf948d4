"""The report's figures as a paper would take them: every one written at its stated size (PNG at 150 dpi and an
SVG of the same size beside it), sample std, one colour per group, 16 groups in panels, every seed of the steps
plot drawn as what it was, labels off the error bars, integer layer ticks, a zero std at zero, depths apart."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import pytest
from matplotlib.colors import to_rgba
from PIL import Image
from test_report import INITS, layer_rows, sweep, write_job  # noqa: F401  (sweep: the fixture)

from trainstudy.report import (
    act_std_figure,
    build_report,
    curves_figure,
    group_colors,
    group_rows,
    mean_curve,
    mean_train_loss,
    steps_figure,
    train_loss_figure,
    write_report,
)
from trainstudy.report.figures import DPI, PANELS_FROM, WIDTH_IN


def test_every_figure_is_a_150_dpi_png_with_an_svg_of_the_same_size_beside_it(sweep: Path) -> None:
    written = write_report(build_report(sweep))
    for key in ("curves", "steps", "train_loss", "act_std"):
        png = Image.open(written[key])
        assert png.info["dpi"] == pytest.approx((DPI, DPI), abs=0.05)  # PNG stores dots per metre
        assert png.width == round(WIDTH_IN * DPI) == 1050, key
        assert png.height >= 2.4 * DPI
        pixels = png.convert("L")
        assert max(pixels.getdata()) - min(pixels.getdata()) > 100  # not a blank canvas
        svg = written[key].with_suffix(".svg").read_text()
        width, height = (float(re.search(rf'<svg[^>]* {k}="([\d.]+)pt"', svg).group(1)) for k in ("width", "height"))
        assert (width / 72 * DPI, height / 72 * DPI) == pytest.approx((png.width, png.height), abs=1), key
    md = written["md"].read_text()
    assert all(f"![{name}]({name})" in md for name in ("curves.png", "train_loss.png", "act_std_by_depth.png"))


def test_bands_are_the_sample_std_and_the_train_loss_is_geometric_on_its_log_axis(sweep: Path) -> None:
    report = build_report(sweep)
    group = next(g for g in report.groups if g.name == "init=zeros")
    curves = [json.loads((j.folder / "metrics.json").read_text()) for j in group.trained]
    steps, mean, std = mean_curve(group.trained, "val/acc")
    at = steps.index(50)
    values = [next(p["val/acc"] for p in c["curve"] if p["step"] == 50) for c in curves]
    assert (mean[at], std[at]) == pytest.approx((statistics.mean(values), statistics.stdev(values)))
    steps, gmean, gstd = mean_train_loss(group.trained)
    logs = [math.log(c["train_loss"][9]) for c in curves]  # step 10
    assert steps[9] == 10
    assert (gmean[9], gstd[9]) == pytest.approx((math.exp(statistics.mean(logs)), math.exp(statistics.stdev(logs))))
    ax = train_loss_figure(report).axes[0]
    assert ax.get_yscale() == "log"


def test_one_colour_per_group_in_every_figure(sweep: Path) -> None:
    report = build_report(sweep)
    colors = group_colors(report)
    assert list(colors) == [f"init={i}" for i in INITS]  # the sweep's own order
    assert len(set(colors.values())) == len(colors)
    for make in (curves_figure, train_loss_figure):
        lines = {line.get_label(): line.get_color() for line in make(report).axes[0].get_lines()}
        assert all(to_rgba(lines[name]) == to_rgba(color) for name, color in colors.items())
    act = {line.get_label(): line.get_color() for line in act_std_figure(report).axes[0].get_lines()}
    assert all(to_rgba(act[name]) == to_rgba(colors[name]) for name in colors)  # only init varies: the groups
    bars = steps_figure(report).axes[0].patches
    reached = [g for g in report.groups if g.reached]
    assert [to_rgba(b.get_facecolor())[:3] for b in bars] == [to_rgba(colors[g.name])[:3] for g in reached]


def sixteen_groups(root: Path) -> Path:
    """4 inits × 4 lrs × 2 seeds, every group reaching at its own step."""
    n = 0
    for i, init in enumerate(INITS + ["orthogonal"]):
        for k, lr in enumerate(["0.01", "0.03", "0.1", "0.3"]):
            for seed in range(2):
                write_job(root / str(n), [f"init={init}", f"optim.lr={lr}", f"seed={seed}"], steps=10 + 10 * i + k,
                          best=0.9 + 0.01 * k, n_steps=60)
                n += 1
    return root


def test_sixteen_groups_are_sixteen_panels_each_named_and_told_apart(tmp_path: Path) -> None:
    report = build_report(sixteen_groups(tmp_path / "sweep"))
    assert len(report.groups) == 16 >= PANELS_FROM
    colors = group_colors(report)
    rgb = [to_rgba(c)[:3] for c in colors.values()]
    assert min(math.dist(a, b) for i, a in enumerate(rgb) for b in rgb[i + 1:]) > 0.08  # no tab20 look-alikes
    fig = curves_figure(report)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 16 and not fig.legends
    for ax, g in zip(panels, report.groups):
        assert ax.get_title().replace("\n", " ") == g.name.replace(",", ", ")
        own = [line for line in ax.get_lines() if to_rgba(line.get_color()) == to_rgba(colors[g.name])]
        assert len(own) == 1 and list(own[0].get_xdata()) == mean_curve(g.trained, "val/acc")[0]


def test_steps_plot_draws_every_seed_as_what_it_was_with_the_numbers_beside_the_axes(sweep: Path) -> None:
    report = build_report(sweep)
    fig = steps_figure(report)
    ax = fig.axes[0]
    marks = {m: [(x, y) for line in ax.get_lines() if line.get_marker() == m
                 for x, y in zip(line.get_xdata(), line.get_ydata())] for m in ("o", ">", "x")}
    jobs = [j for g in report.groups for j in g.trained]
    assert sorted(x for x, _ in marks["o"]) == sorted(j.metrics["conv/steps_to_target"] for j in jobs
                                                      if j.metrics["conv/steps_to_target"] is not None)
    assert [x for x, _ in marks["x"]] == [37]  # the diverged kaiming seed, at its step: no short bar
    zeros = [g.name for g in report.groups].index("init=zeros")
    assert sorted(round(y) for _, y in marks[">"]) == [zeros] * 3  # not reached: ▷ at its last step
    assert [x for x, _ in marks[">"]] == [100] * 3
    assert len(ax.patches) == sum(bool(g.reached) for g in report.groups)  # no bar for a group that never reached
    fig.canvas.draw()
    right = ax.get_window_extent().x1
    labels = [t for t in ax.texts if t.get_text()]
    assert len(labels) == len(report.groups)
    assert all(t.get_window_extent().x0 > right for t in labels)  # off the bars and error bars
    assert any(t.get_text() == "not reached (0/3)" for t in labels)


def test_act_std_keeps_depths_apart_ticks_whole_layers_and_draws_zero_at_zero(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    n = 0
    for depth, stds in ((2, [0.8, 0.7]), (4, [0.6, 0.4, 0.2, 0.1])):
        for init in ("kaiming_normal", "zeros"):
            for seed, lr in enumerate(("0.1", "0.3")):
                values = [0.0] * depth if init == "zeros" else [s * (1 + 0.1 * seed) for s in stds]
                write_job(root / str(n), [f"init={init}", f"model.depth={depth}", f"optim.lr={lr}", f"seed={seed}"],
                          steps=20, best=0.95, layers=layer_rows(values, [None] * depth))
                n += 1
    report = build_report(root)
    fig = act_std_figure(report)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    # lr does not change a net at init: its jobs are one curve; depth does: one curve per depth
    assert sorted(lines) == sorted(f"init={i},model.depth={d}" for i in ("kaiming_normal", "zeros") for d in (2, 4))
    deep = lines["init=kaiming_normal,model.depth=4"]
    assert list(deep.get_xdata()) == [1, 2, 3, 4]
    assert list(deep.get_ydata()) == pytest.approx([statistics.mean([s, s * 1.1]) for s in (0.6, 0.4, 0.2, 0.1)])
    assert list(lines["init=zeros,model.depth=2"].get_ydata()) == [0.0, 0.0]
    fig.canvas.draw()
    assert ax.get_yscale() == "symlog" and ax.get_ylim()[0] == 0 and 0 in ax.get_yticks()  # 0 is 0, not a floor
    lo, hi = ax.get_xlim()
    assert all(float(t).is_integer() for t in ax.get_xticks() if lo <= t <= hi)


def test_a_group_whose_seeds_all_diverged_shows_diverged_as_its_loss_auc(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    write_job(root / "0", ["init=normal", "seed=0"], status="diverged", diverged_step=12, auc=2e34)
    write_job(root / "1", ["init=normal", "seed=1"], status="diverged", diverged_step=9, auc=3e34)
    write_job(root / "2", ["init=kaiming_normal", "seed=0"], steps=30, best=0.95, auc=0.4)
    write_job(root / "3", ["init=kaiming_normal", "seed=1"], status="diverged", diverged_step=50, auc=1e30)
    write_job(root / "4", ["init=kaiming_normal", "seed=2"], steps=50, best=0.95, auc=0.6)
    header, rows = group_rows(build_report(root))
    auc = {row[0]: row[header.index("loss AUC")] for row in rows}
    assert auc["init=normal"] == "diverged"
    assert auc["init=kaiming_normal"] == f"0.5 ± {statistics.stdev([0.4, 0.6]):.2g} (1 diverged)"
