"""Performance profiles across workloads, scored the way MLCommons AlgoPerf scores training algorithms
(Dahl et al. 2023, "Benchmarking Neural Network Training Algorithms", sec. 4.5; its scoring/performance_profile.py).

A workload is one setting of every varied key but the compared one (data × model × loss in init_benchmark); the
compared key (init by default) is what is ranked. Per workload, a group's time is its censored median steps to
target over its seeds (``stats.censored_median``: ∞ when fewer than half reached it). Then

- ratio r = time / the workload's best time; r > 4 (``CAP``) counts as not reached, r = ∞;
- the profile ρ(τ) = (workloads with r ≤ τ) / (all workloads of the study), a step function of τ ∈ [1, 4];
- the score: its area over [1, 4] divided by 3, in [0, 1]: (1/3) ∫₁⁴ ρ(τ) dτ = mean over workloads of
  (4 − r) / 3 (0 where r = ∞). 1 = fastest on every workload; 0 = nowhere within 4× of the fastest.

A workload where no group reached the target has no best: every ratio there is ∞.
"""

from __future__ import annotations

import math

import numpy as np

CAP = 4.0


def ratios(times: dict[str, dict[str, float]], cap: float = CAP) -> dict[str, dict[str, float]]:
    """``times[workload][group]`` (∞ = not reached) to the ratio to each workload's best, ∞ beyond ``cap``."""
    out: dict[str, dict[str, float]] = {}
    for workload, by_group in times.items():
        best = min(by_group.values(), default=math.inf)
        out[workload] = {g: (t / best if math.isfinite(best) and t / best <= cap else math.inf)
                         for g, t in by_group.items()}
    return out


def _per_group(ratio: dict[str, dict[str, float]]) -> dict[str, list[float]]:
    """Each group's ratios, one per workload of the study (a workload it is missing from: ∞)."""
    groups = sorted({g for by_group in ratio.values() for g in by_group})
    return {g: [ratio[w].get(g, math.inf) for w in ratio] for g in groups}


def profile(ratio: dict[str, dict[str, float]], taus: np.ndarray) -> dict[str, np.ndarray]:
    """ρ(τ) per group at each τ: the fraction of workloads on which its ratio is ≤ τ."""
    return {g: np.mean(np.array(r)[:, None] <= np.asarray(taus)[None, :], axis=0) for g, r in _per_group(ratio).items()}


def score(ratio: dict[str, dict[str, float]], cap: float = CAP) -> dict[str, float]:
    """The area under ρ(τ) over [1, cap] divided by (cap − 1): exact, since ρ is a step function."""
    return {g: float(np.mean([(cap - x) / (cap - 1) if x <= cap else 0.0 for x in r]))
            for g, r in _per_group(ratio).items()}


def ratio_text(r: float) -> str:
    """A ratio as the table shows it: 1, 1.25, or ∞ (not reached, or beyond 4× the best)."""
    return f"{r:.3g}" if math.isfinite(r) else "∞"


def compared_key(varied: list[str], compare: str | None) -> str | None:
    """The key a study compares: ``compare`` where the sweep varies it, else the only varied key (None: none)."""
    if compare in varied:
        return compare
    return varied[0] if len(varied) == 1 else None


def split_workloads(groups: list, varied: list[str], key: str) -> dict[str, dict[str, object]]:
    """``groups`` (report.Group) by workload (the values of every varied key but ``key``, "all" when there is
    none; in name order) and then by their value of ``key`` (in the groups' order)."""
    out: dict[str, dict[str, object]] = {}
    for g in groups:
        workload = ",".join(f"{k}={g.values.get(k, '')}" for k in varied if k != key) or "all"
        out.setdefault(workload, {})[g.values.get(key, "")] = g
    return dict(sorted(out.items()))
