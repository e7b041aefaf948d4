"""The report's ranking of step-0 diagnostics by Spearman's ρ with steps to target, censored runs the slowest."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import yaml
from scipy.stats import t as student_t

from trainstudy.report import build_report, render
from trainstudy.report.predictors import rank_predictors

# (steps to target or None, status, q per layer, c per layer, the Hessian's top eigenvalue)
JOBS = [
    (10, "ok", [1.0, 0.1], [0.5, 0.9], 4.0),
    (20, "ok", [2.0, 0.2], [0.1, 0.8], 1.0),
    (30, "ok", [3.0, 0.3], [0.4, 0.7], 3.0),
    (None, "ok", [4.0, 0.4], [0.2, 0.6], 2.0),        # not reached, in fewer steps than the others made
    (None, "ok", [5.0, 0.5], [0.3, 0.5], 6.0),
    (None, "diverged", [6.0, 0.6], [0.0, 0.4], 5.0),  # diverged at step 3
]


def write_sweep(root: Path, jobs: list[tuple]) -> None:
    for i, (steps, status, q, c, eig) in enumerate(jobs):
        folder = root / str(i)
        (folder / ".hydra").mkdir(parents=True)
        overrides = [f"init={'ab'[i % 2]}", f"seed={i}"]
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        layers = [{"index": k + 1, "name": str(2 * k + 1), "kind": "Linear", "q": q[k], "c": c[k],
                   "weight_std": 0.1, "weight_std_target": None, "weight_rank": 7 - i, "act_std": 1.0,
                   "jac_sv_std": None}
                  for k in range(2)]
        observed = 3 if status == "diverged" else (steps or (5 if i == 3 else 100))
        result = {"status": status, "overrides": overrides, "hparams": {"seed": i},
                  "metrics": {"conv/reached": int(steps is not None), "conv/steps_to_target": steps,
                              "conv/steps_observed": observed, "conv/steps": observed,
                              "conv/diverged": int(status == "diverged")},
                  "target": {"metric": "val/acc", "value": 0.9}, "curve": [{"step": 0, "val/acc": 0.1}],
                  "diagnostics": {"layers": layers, "hessian": {"max_eig": eig, "iterations": 9, "tol": 1e-3,
                                                               "converged": True}}}
        (folder / "metrics.json").write_text(json.dumps(result))


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties given the mean of the ranks they span."""
    ordered = sorted(values)
    return [statistics.fmean(i + 1 for i, v in enumerate(ordered) if v == x) for x in values]


def spearman_by_hand(xs: list[float], ys: list[float]) -> tuple[float, float]:
    rho = statistics.correlation(ranks(xs), ranks(ys))
    n = len(xs)
    t = rho * math.sqrt((n - 2) / (1 - rho**2))
    return rho, 2 * student_t.sf(abs(t), n - 2)


def test_each_diagnostic_ranked_by_spearman_with_the_censored_runs_slowest(tmp_path: Path) -> None:
    write_sweep(tmp_path, JOBS)
    ranked = rank_predictors(build_report(tmp_path))
    # the outcome: reached runs by their steps, every other run tied behind them (not at the steps it made)
    outcome = [10, 20, 30, math.inf, math.inf, math.inf]
    slowest = [s if math.isfinite(s) else 1000 for s in outcome]
    expected = {
        ("q", "mean over layers"): [statistics.fmean(j[2]) for j in JOBS],
        ("q", "last layer"): [j[2][-1] for j in JOBS],
        ("c", "mean over layers"): [statistics.fmean(j[3]) for j in JOBS],
        ("c", "last layer"): [j[3][-1] for j in JOBS],
        ("hessian_max_eig", "whole net"): [j[4] for j in JOBS],
    }
    got = {(r.diagnostic, r.summary): r for r in ranked}
    assert set(got) == set(expected)  # constant ones (weight_std, act_std), the aim, the end-of-run rank: left out
    for key, xs in expected.items():
        rho, p = spearman_by_hand(xs, slowest)
        assert got[key].rho == pytest.approx(rho, abs=1e-12) and got[key].p == pytest.approx(p, rel=1e-6), key
        assert got[key].n == len(JOBS)
    assert [abs(r.rho) for r in ranked] == sorted((abs(r.rho) for r in ranked), reverse=True)
    assert got[("q", "last layer")].rho > 0.8  # larger q, slower: the censored runs have the largest q
    observed = [10, 20, 30, 5, 100, 3]  # had the censored runs been ranked at the steps they made
    assert got[("q", "last layer")].rho != pytest.approx(spearman_by_hand(expected[("q", "last layer")], observed)[0])


def test_report_md_has_the_table_and_leaves_it_out_when_nothing_varies(tmp_path: Path) -> None:
    write_sweep(tmp_path / "sweep", JOBS)
    report = build_report(tmp_path / "sweep")
    text = render(report, [])
    section = text.split("## Step-0 diagnostics against steps to target")[1].split("## Plots")[0]
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert table[0].split("|")[1].strip() == "diagnostic at step 0"
    first = rank_predictors(report)[0]
    assert [c.strip() for c in table[1].split("|")[1:-1]] == [first.diagnostic, first.summary, f"{first.rho:+.3f}",
                                                            f"{first.p:.2g}", "6"]
    assert len(table) == 1 + len(rank_predictors(report))
    never = [(None, "ok", j[2], j[3], j[4]) for j in JOBS]  # no run reached the target: nothing to rank against
    write_sweep(tmp_path / "never", never)
    assert "Step-0 diagnostics" not in render(build_report(tmp_path / "never"), [])
