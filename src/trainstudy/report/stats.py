"""Statistics over a group's seeds that count every seed: a seed that did not reach the target is a censored
observation (it had not reached it by its last step), never dropped and never a made-up number.

Pure functions over ``Observation``s (numpy and scipy only). The definitions, as the report's header gives them:

- reached k/n with a 95% Wilson score interval (Wilson 1927; scipy's ``binomtest(...).proportion_ci``);
- the fraction reached by step t: the Kaplan–Meier estimate, a seed that did not reach the target censored at
  its last step. A diverged seed can never reach the target later, so it stays in the denominator to the end
  (censoring it at its divergence step would assume it might still get there, and flatter a group that
  diverges); with every seed trained for the same steps this is exactly (seeds reached by t) / n;
- the median steps to target: the first step at which that fraction reaches ½, "> N" when it never does
  (N = the last step observed); for n seeds that all ran the same steps, the ⌈n/2⌉-th smallest steps to target;
- its 95% interval: the percentile bootstrap over seeds (2,000 resamples of the n seeds, numpy's seeded
  generator), the median recomputed on each; its upper end is ∞ when more than 2.5% of the resamples never reach ½;
- two groups that share seeds (same seed: same data order) compared seed by seed: in how many A reached the
  target first, and the median of steps(A) − steps(B) over the seeds where both reached it, with the same
  bootstrap over those pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Observation:
    """One seed's steps to target: where it reached it (``reached``), else the last step it trained."""

    steps: float
    reached: bool
    diverged: bool = False


def observe(metrics: dict[str, Any], status: str) -> Observation | None:
    """A job's observation from its metrics: ``conv/steps_observed`` with ``conv/reached`` when it has them,
    else steps to target where reached and ``conv/steps`` (the steps it made) where not; None without any."""
    diverged = status == "diverged" or bool(metrics.get("conv/diverged"))
    if metrics.get("conv/steps_observed") is not None and metrics.get("conv/reached") is not None:
        return Observation(float(metrics["conv/steps_observed"]), bool(metrics["conv/reached"]), diverged)
    if metrics.get("conv/steps_to_target") is not None:
        return Observation(float(metrics["conv/steps_to_target"]), True, diverged)
    if metrics.get("conv/steps") is not None:
        return Observation(float(metrics["conv/steps"]), False, diverged)
    return None


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval for k successes in n trials:
    (p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n), z the normal quantile (1.96 at 95%)."""
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def fraction_reached(obs: list[Observation]) -> tuple[np.ndarray, np.ndarray]:
    """The Kaplan–Meier fraction of seeds that reached the target by step t: (steps where a seed reached it,
    the fraction from that step on), 0 before the first. F(t) = 1 − Π_{t_i ≤ t} (1 − d_i / r_i): d_i seeds
    reached it at step t_i, r_i were still running without having reached it (unreached seeds censored at their
    last step, ties counted at risk; diverged seeds at risk to the end). Equal to scipy.stats.ecdf's (a test
    compares them); written out because the bootstrap calls it thousands of times."""
    reached = np.array([o.steps for o in obs if o.reached], float)
    at_risk_until = np.array([math.inf if o.diverged and not o.reached else o.steps for o in obs], float)
    steps = np.unique(reached)
    survive = np.cumprod([1 - np.sum(reached == t) / np.sum(at_risk_until >= t) for t in steps])
    return steps, 1 - survive


@dataclass(frozen=True)
class Median:
    """A censored median: ``value`` where at least half reached, else inf with ``bound`` (the last step seen)."""

    value: float
    bound: float | None = None

    def text(self) -> str:
        return f"{self.value:.0f}" if math.isfinite(self.value) else f"> {self.bound:.0f}"


def censored_median(obs: list[Observation]) -> Median:
    """The first step at which the fraction reached is ½ or more; ``> N`` when it never is."""
    steps, fraction = fraction_reached(obs)
    half = np.flatnonzero(fraction >= 0.5 - 1e-12)
    if half.size:
        return Median(float(steps[half[0]]))
    return Median(math.inf, max((o.steps for o in obs), default=0.0))


def bootstrap(values: list, statistic, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
              seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` resampled with replacement (seeded: the
    same data give the same interval); the ends are order statistics, so an ∞ statistic stays ∞. The statistic
    must not depend on the order of its values: it is computed once per distinct resample (a few seeds have
    few: 10 for 3 seeds, 126 for 5)."""
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.integers(0, len(values), size=(resamples, len(values))), axis=1)
    distinct, which = np.unique(picks, axis=0, return_inverse=True)
    results = np.array([statistic([values[i] for i in row]) for row in distinct], float)[np.ravel(which)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(results, [alpha, 1 - alpha], method="inverted_cdf")
    return float(low), float(high)


def median_interval(obs: list[Observation]) -> tuple[float, float]:
    """The bootstrap interval of the censored median (cached: the table and report.csv both ask)."""
    return _median_interval(tuple(obs))


@lru_cache(maxsize=1024)
def _median_interval(obs: tuple[Observation, ...]) -> tuple[float, float]:
    return bootstrap(list(obs), lambda sample: censored_median(sample).value)


@dataclass(frozen=True)
class Paired:
    """Two groups over the seeds they share."""

    seeds: int           # shared seeds
    a_first: int         # seeds where A reached the target before B (B later, or never)
    b_first: int
    ties: int            # both reached at the same step
    neither: int         # neither reached
    undecided: int       # one reached after the step where the other's run ended without reaching
    differences: list[float]   # steps(A) − steps(B) where both reached

    @property
    def median_difference(self) -> float | None:
        return float(np.median(self.differences)) if self.differences else None

    def interval(self) -> tuple[float, float] | None:
        return bootstrap(self.differences, np.median) if self.differences else None


def _first(a: Observation, b: Observation) -> str:
    """Which of two seeds' runs reached the target first: "a", "b", "tie", "neither" or "undecided"."""
    if a.reached and b.reached:
        return "tie" if a.steps == b.steps else ("a" if a.steps < b.steps else "b")
    if not (a.reached or b.reached):
        return "neither"
    won, lost, name = (a, b, "a") if a.reached else (b, a, "b")
    return name if lost.diverged or lost.steps >= won.steps else "undecided"


def paired(a: dict[str, Observation], b: dict[str, Observation]) -> Paired:
    """A against B over the seeds both have (keys: seeds)."""
    shared = sorted(set(a) & set(b))
    outcome = [_first(a[s], b[s]) for s in shared]
    return Paired(len(shared), outcome.count("a"), outcome.count("b"), outcome.count("tie"),
                  outcome.count("neither"), outcome.count("undecided"),
                  [a[s].steps - b[s].steps for s in shared if a[s].reached and b[s].reached])

