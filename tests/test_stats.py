"""Statistics that count every seed, and performance profiles: each against values worked out by hand on a
small fixture (the arithmetic is in the comments), the Kaplan–Meier curve also against scipy's."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
from test_report import image, write_job

from trainstudy.report import build_report, group_rows, headline, write_report
from trainstudy.report.profiles import compared_key, profile, ratios, score
from trainstudy.report.stats import (Observation, bootstrap, censored_median, fraction_reached, median_interval,
                                     observe, paired, wilson)
from trainstudy.report.tables import paired_rows, profile_rows

R, U = True, False  # reached, not reached


def obs(*rows: tuple) -> list[Observation]:
    return [Observation(*row) for row in rows]


@pytest.mark.parametrize("k, n, low, high", [
    # p = 1/5, z = 1.95996, z² = 3.84146: centre (0.2 + 0.384146) / 1.768292 = 0.330345,
    # half width 1.95996 / 1.768292 · sqrt(0.2·0.8/5 + 3.84146/100) = 1.108390 · 0.265358 = 0.294121
    (1, 5, 0.036224, 0.624466),
    # p = 0: centre = half width = (3.84146/6) / (1 + 3.84146/3) = 0.280749: (0, 0.561498); p = 1 mirrors it
    (0, 3, 0.0, 0.561498),
    (3, 3, 0.438502, 1.0),
])
def test_wilson_interval_is_the_hand_computed_one(k: int, n: int, low: float, high: float) -> None:
    got = wilson(k, n)
    assert got == pytest.approx((low, high), abs=2e-6)


@pytest.mark.parametrize("rows, fraction, median", [
    # 3 of 5 reached: 1/5, 2/5, 3/5 by steps 50, 60, 80 (the diverged seed stays in the denominator): 80
    (((50, R), (60, R), (80, R), (37, U, True), (100, U)), [0.2, 0.4, 0.6], "80"),
    # 2 of 5: the fraction never gets to 1/2: more than the 100 steps seen
    (((50, R), (60, R), (100, U), (37, U, True), (100, U)), [0.2, 0.4], "> 100"),
    # exactly half of 4 reached: 1/4 at 30, 2/4 at 70, which is the median
    (((30, R), (70, R), (100, U), (100, U)), [0.25, 0.5], "70"),
    # a seed stopped at step 40 without reaching (censored): at 50 one of the 3 still running reaches it,
    # S = 2/3; at 60 one of 2, S = 1/3: fractions 1/3, 2/3, median 60
    (((50, R), (60, R), (40, U), (100, U)), [1 / 3, 2 / 3], "60"),
    # the same seed diverged at 40 instead: it can't reach later, so it stays at risk: 1/4, 2/4
    (((50, R), (60, R), (40, U, True), (100, U)), [0.25, 0.5], "60"),
    # none reached
    (((100, U), (100, U), (12, U, True)), [], "> 100"),
])
def test_censored_median_and_fraction_reached_by_hand(rows, fraction: list[float], median: str) -> None:
    o = obs(*rows)
    steps, got = fraction_reached(o)
    assert got == pytest.approx(fraction)
    assert list(steps) == sorted(r[0] for r in rows if r[1])
    assert censored_median(o).text() == median


def test_fraction_reached_equals_scipys_kaplan_meier() -> None:
    # only non-diverged seeds (scipy censors at a finite step; a diverged seed is at risk to the end here)
    o = obs((50, R), (60, R), (40, U), (100, U), (60, U), (70, R), (20, U))
    steps, fraction = fraction_reached(o)
    cdf = scipy_stats.ecdf(scipy_stats.CensoredData(uncensored=[x.steps for x in o if x.reached],
                                                    right=[x.steps for x in o if not x.reached])).cdf
    assert list(steps) == [50, 60, 70]
    assert fraction == pytest.approx(cdf.evaluate(steps))
    assert set(cdf.probabilities) - set(cdf.evaluate(steps)) <= {0.0}  # scipy's other points: censoring steps


def test_bootstrap_interval_is_seeded_and_censored_above() -> None:
    # 3 seeds at 10, 20, 30: a resample's median is 10 when 2 or 3 of its 3 picks are 10, p = 7/27 > 2.5%;
    # 30 likewise: the interval spans all three values
    assert median_interval(obs((10, R), (20, R), (30, R))) == (10, 30)
    # 2 of 5 reached: the median itself is "> 100", so are most resamples': an unbounded interval
    two_of_five = obs((50, R), (60, R), (100, U), (37, U, True), (100, U))
    assert median_interval(two_of_five)[1] == math.inf
    values = list(np.random.default_rng(1).normal(size=20))
    low, high = bootstrap(values, np.median)
    assert (low, high) == bootstrap(values, np.median)  # the same numbers, the same interval
    assert low < np.median(values) < high


def test_observation_prefers_the_censored_pair_and_derives_it_otherwise() -> None:
    assert observe({"conv/steps_observed": 70, "conv/reached": 0, "conv/steps": 70}, "ok") == Observation(70, False)
    assert observe({"conv/steps_to_target": 40, "conv/steps": 100}, "ok") == Observation(40, True)
    assert observe({"conv/steps_to_target": None, "conv/steps": 37, "conv/diverged": 1}, "diverged") == \
        Observation(37, False, True)
    assert observe({}, "ok") is None


def test_paired_comparison_by_hand() -> None:
    a = {"0": Observation(40, R), "1": Observation(50, R), "2": Observation(100, U), "3": Observation(90, R),
         "5": Observation(40, U), "6": Observation(100, U), "7": Observation(30, R)}
    b = {"0": Observation(60, R), "1": Observation(50, R), "2": Observation(80, R), "3": Observation(30, U, True),
         "4": Observation(10, R), "5": Observation(70, R), "6": Observation(100, U), "7": Observation(45, R)}
    p = paired(a, b)
    # seed 4 is B's alone; 0 and 7: A first (40 < 60, 30 < 45); 3: A first (B diverged); 1: a tie; 2: B first;
    # 5: A stopped at 40 before B reached it at 70: undecided; 6: neither
    assert (p.seeds, p.a_first, p.b_first, p.ties, p.undecided, p.neither) == (7, 3, 1, 1, 1, 1)
    assert sorted(p.differences) == [-20, -15, 0]  # where both reached: 40−60, 30−45, 50−50
    assert p.median_difference == -15
    low, high = p.interval()
    assert low <= -15 <= high and low >= -20 and high <= 0


def test_performance_profile_has_the_known_answer() -> None:
    inf = math.inf
    times = {"w1": {"a": 100, "b": 200, "c": inf}, "w2": {"a": 300, "b": 100, "c": 500},
             "w3": {"a": inf, "b": inf, "c": inf}, "w4": {"a": 50, "b": 50}}
    r = ratios(times)
    # w2's c is 5× the best: beyond 4, so ∞; nobody reached w3: ∞ for all; c is missing from w4
    assert r == {"w1": {"a": 1, "b": 2, "c": inf}, "w2": {"a": 3, "b": 1, "c": inf},
                 "w3": {"a": inf, "b": inf, "c": inf}, "w4": {"a": 1, "b": 1}}
    taus = np.array([1, 1.5, 2, 3, 4])
    rho = profile(r, taus)
    assert list(rho["a"]) == [0.5, 0.5, 0.5, 0.75, 0.75]  # a's ratios 1, 3, ∞, 1 out of 4 workloads
    assert list(rho["b"]) == [0.5, 0.5, 0.75, 0.75, 0.75]  # 2, 1, ∞, 1
    assert list(rho["c"]) == [0.0] * 5
    # area over [1, 4] / 3: a (3 + 1 + 0 + 3) / 12, b (2 + 3 + 0 + 3) / 12
    s = score(r)
    assert s == pytest.approx({"a": 7 / 12, "b": 8 / 12, "c": 0.0})
    fine = np.linspace(1, 4, 30001)
    for g, curve in profile(r, fine).items():  # the exact area is the integral of the step function
        assert np.trapezoid(curve, fine) / 3 == pytest.approx(s[g], abs=1e-3)


def test_compared_key() -> None:
    assert compared_key(["data", "init"], "init") == "init"
    assert compared_key(["loss"], "init") == "loss"  # the only key the sweep varies
    assert compared_key(["data", "loss"], "init") is None


def benchmark_sweep(root: Path) -> Path:
    """2 workloads × 2 inits × 3 seeds. digits: a reaches at 40, 50, 60, b at 80, 90 and not in 100 → a 50, b 90
    (ratio 1.8). fmnist: a never, b at 30, 30, 40 → b 30, a ∞."""
    steps = {("digits", "a"): [40, 50, 60], ("digits", "b"): [80, 90, None],
             ("fmnist", "a"): [None, None, None], ("fmnist", "b"): [30, 30, 40]}
    n = 0
    for (data, init), per_seed in steps.items():
        for seed, s in enumerate(per_seed):
            write_job(root / str(n), [f"data={data}", f"init={init}", f"seed={seed}"], steps=s,
                      best=0.95 if s else 0.5)
            n += 1
    return root


def test_report_has_the_profile_the_paired_table_the_csv_columns_and_the_figures(tmp_path: Path) -> None:
    report = build_report(benchmark_sweep(tmp_path / "sweep"))
    header, rows = profile_rows(report)
    assert header == ["init", "data=digits", "data=fmnist", "score"]
    # b: ratios 1.8 and 1 → ((4 − 1.8) + 3) / 6 = 0.867; a: 1 and ∞ → 3 / 6 = 0.5
    assert rows == [["b", "90 (×1.80)", "30 (×1.00)", "0.867"], ["a", "50 (×1.00)", "> 100 (not reached)", "0.500"]]
    header, rows = paired_rows(report)
    by = {(r[0], r[1]): r for r in rows}
    # digits, b vs a: b later in all 3 seeds; differences 80−40, 90−50 over the 2 seeds both reached
    assert by[("data=digits", "b")][2:8] == ["a", "3", "0", "3", "0", "0/0"]
    assert by[("data=digits", "b")][8].startswith("+40 (+40–+40), 2 seeds")
    assert by[("data=fmnist", "a")][2:8] == ["b", "3", "0", "3", "0", "0/0"]
    written = write_report(report)
    md = written["md"].read_text()
    assert "## Performance profile across workloads" in md and "## Paired comparisons (shared seeds)" in md
    assert "Wilson" in md and "Kaplan–Meier" in md  # the definitions in the header
    groups = {r["group"]: r for r in csv.DictReader(written["csv"].open())}
    digits_b = groups["data=digits,init=b"]
    assert float(digits_b["median_steps"]) == 90 and digits_b["median_steps_bound"] == ""
    assert float(groups["data=fmnist,init=a"]["median_steps"]) == math.inf
    assert float(groups["data=fmnist,init=a"]["median_steps_bound"]) == 100
    assert float(digits_b["reached_ci_low"]) == pytest.approx(wilson(2, 3)[0])
    # the two figures: 150 dpi PNGs of the stated size, an SVG beside each, shown in report.md
    from PIL import Image

    for key, inches in (("fraction_reached", (9.6, 4.1)), ("performance_profile", (6.4, 4.0))):
        png = written[key]
        image(png)  # not blank
        with Image.open(png) as im:
            assert im.size == (round(inches[0] * 150), round(inches[1] * 150))
            assert im.info["dpi"] == pytest.approx((150, 150), abs=0.05)
        assert png.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
        assert f"![{png.name}]({png.name})" in md


def test_one_workload_has_no_profile(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for n, (init, s) in enumerate([("a", 10), ("a", 20), ("b", 30), ("b", None)]):
        write_job(root / str(n), [f"init={init}", f"seed={n % 2}"], steps=s)
    report = build_report(root)
    written = write_report(report)
    assert profile_rows(report) is None and "performance_profile" not in written
    assert "fraction_reached" in written and paired_rows(report)[1][0][:3] == ["all", "b", "a"]


def test_workloads_with_other_targets_name_no_single_metric(tmp_path: Path) -> None:
    root = benchmark_sweep(tmp_path / "sweep")
    for path in root.glob("*/metrics.json"):  # fmnist's jobs judged by val/loss, as a regression workload is
        if "data=fmnist" in path.read_text():
            text = path.read_text().replace('"metric": "val/acc", "value": 0.9', '"metric": "val/loss", "value": 0.1')
            path.write_text(text)
    report = build_report(root)
    assert group_rows(report)[0][4] == "best target metric"
    assert headline(report).endswith("sorted by median steps to target")


def _group(name: str, seeds: list[tuple[float, bool]]):  # -> report.jobs.Group
    """A group of finished seeds: (steps to target where reached, else the steps it trained; reached)."""
    from trainstudy.report.jobs import Group, Job
    jobs = [Job(Path(f"{name}/{i}"), [f"init={name}", f"seed={i}"],
                {"status": "ok", "metrics": {"conv/reached": reached, "conv/steps_observed": steps,
                                             "conv/steps_to_target": steps if reached else None},
                 "curve": [{"step": 0, "val/acc": 0.1}, {"step": steps, "val/acc": 0.96 if reached else 0.5}],
                 "target": {"metric": "val/acc"}})
            for i, (steps, reached) in enumerate(seeds)]
    return Group(f"init={name}", {"init": name}, jobs)


def test_groups_are_ranked_by_the_censored_median_not_the_mean_of_those_that_reached() -> None:
    from trainstudy.report.jobs import sort_groups
    lucky = _group("lucky", [(100, True), (400, False), (400, False)])    # 1 of 3, fast: median > 400
    steady = _group("steady", [(150, True), (160, True), (170, True)])   # 3 of 3: median 160
    most = _group("most", [(120, True), (160, True), (400, False)])      # 2 of 3: median 160, fewer reached
    never = _group("never", [(400, False)] * 3)
    order = [g.name for g in sort_groups([lucky, never, most, steady], "val/acc")]
    assert order == ["init=steady", "init=most", "init=lucky", "init=never"]
    assert lucky.steps.mean < most.steps.mean < steady.steps.mean  # the old order was the reverse
