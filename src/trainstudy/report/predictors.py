"""Which measurement at init predicts convergence in this study: every step-0 diagnostic against steps to target.

Per job, each per-layer diagnostic (act_std, q, c, jac_sv_mean_sq, ...) is summarised twice, as its mean over
the layers and as its value at the last layer (the readout); the Hessian's top eigenvalue is one number per
job. Across the sweep's trained jobs (all groups and seeds together) each summary is ranked against steps to
target by Spearman's ρ (scipy.stats.spearmanr, with its two-sided p). A run that never reached the target —
diverged ones included — counts as slower than every run that did, all such runs tied. The table lists them
by |ρ|: ρ < 0 means a larger value at init goes with fewer steps.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from scipy.stats import spearmanr

from trainstudy.report.jobs import Job, Report

# not step-0 measurements: the layer's position, the strategy's aim (a setting), the rank at the end of the run
NOT_DIAGNOSTICS = {"index", "weight_std_target", "weight_rank"}
SUMMARIES = ("mean over layers", "last layer")
MIN_JOBS = 3


@dataclass(frozen=True)
class Predictor:
    diagnostic: str
    summary: str
    rho: float
    p: float
    n: int


def steps_outcome(job: Job) -> float:
    """Steps to target; inf (slowest, all tied) for a run that did not reach it."""
    m = job.metrics
    return float(m["conv/steps_to_target"]) if m.get("conv/reached") and m.get("conv/steps_to_target") is not None \
        else math.inf


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def step0_features(job: Job) -> dict[tuple[str, str], float]:
    """The job's step-0 diagnostics, each summarised as in SUMMARIES: {(diagnostic, summary): value}."""
    rows = job.layers()
    features: dict[tuple[str, str], float] = {}
    keys = dict.fromkeys(k for row in rows for k in row if k not in NOT_DIAGNOSTICS)
    for key in keys:
        values = [row.get(key) for row in rows]
        if not all(v is None or _finite(v) for v in values):
            continue  # the layers' names and kinds
        present = [v for v in values if v is not None]
        if present:
            features[(key, SUMMARIES[0])] = statistics.fmean(present)
        if values and values[-1] is not None:
            features[(key, SUMMARIES[1])] = values[-1]
    hessian = ((job.result or {}).get("diagnostics") or {}).get("hessian") or {}
    if _finite(hessian.get("max_eig")):
        features[("hessian_max_eig", "whole net")] = float(hessian["max_eig"])
    return features


def rank_predictors(report: Report) -> list[Predictor]:
    """Spearman's ρ of every step-0 diagnostic with steps to target over the trained jobs, largest |ρ| first.
    A diagnostic that fewer than MIN_JOBS jobs have, or that is the same in all of them, is left out."""
    jobs = [j for g in report.groups for j in g.trained]
    outcomes = [steps_outcome(j) for j in jobs]
    finite = [s for s in outcomes if math.isfinite(s)]
    slowest = max(finite, default=0.0) + 1.0  # the censored runs' shared, slowest rank
    outcomes = [s if math.isfinite(s) else slowest for s in outcomes]
    per_job = [step0_features(j) for j in jobs]
    found = []
    for name in dict.fromkeys(k for features in per_job for k in features):
        pairs = [(f[name], s) for f, s in zip(per_job, outcomes) if name in f]
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        if len(pairs) < MIN_JOBS or len(set(xs)) < 2 or len(set(ys)) < 2:
            continue
        rho, p = spearmanr(xs, ys)
        found.append(Predictor(name[0], name[1], float(rho), float(p), len(pairs)))
    return sorted(found, key=lambda r: (-abs(r.rho), r.diagnostic, r.summary))


NOTE = ("Spearman's ρ over the trained jobs; a run that did not reach the target counts as the slowest (all such "
        "tied); ρ < 0: a larger value at init, fewer steps.")


def predictor_rows(report: Report) -> tuple[list[str], list[list[str]]] | None:
    """The ranking as a table's header and rows (None when no diagnostic varies with the outcome)."""
    ranked = rank_predictors(report)
    if not ranked:
        return None
    return (["diagnostic at step 0", "per job", "ρ", "p", "jobs"],
            [[r.diagnostic, r.summary, f"{r.rho:+.3f}", f"{r.p:.2g}", str(r.n)] for r in ranked])
