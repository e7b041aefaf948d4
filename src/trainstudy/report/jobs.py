"""A sweep's job folders read back and grouped: a group is the set of jobs whose overrides agree on every key the
sweep varies except ``seed``."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainstudy.errors import UserError
from trainstudy.results import read_metrics
from trainstudy.sweeps import NOT_IN_RUN_NAMES, run_name, sweep_plan
from trainstudy.targets import best_value


@dataclass
class Job:
    """One job folder: its overrides and its metrics.json (None while it runs, when it died, or when the file
    is unreadable: then ``unreadable`` says why)."""

    folder: Path
    overrides: list[str]
    result: dict[str, Any] | None
    unreadable: str | None = None

    @property
    def status(self) -> str:
        if self.unreadable:
            return "unreadable"
        return self.result.get("status", "?") if self.result else "missing"

    @property
    def done(self) -> bool:
        """Finished: it left a metrics.json, readable or not."""
        return self.result is not None or self.unreadable is not None

    @property
    def metrics(self) -> dict[str, Any]:
        return (self.result or {}).get("metrics") or {}

    @property
    def seed(self) -> str:
        return next((o.split("=", 1)[1] for o in self.overrides if o.split("=", 1)[0].lstrip("+~") == "seed"),
                    str(((self.result or {}).get("hparams") or {}).get("seed", "")))

    @property
    def target_metric(self) -> str | None:
        return ((self.result or {}).get("target") or {}).get("metric")

    def best(self) -> float | None:
        """The best value of the target metric the training reached (highest acc, lowest loss; step 0 left out)."""
        return best_value((self.result or {}).get("curve") or [], self.target_metric)

    def layers(self) -> list[dict[str, Any]]:
        """The init diagnostics' per-layer rows (empty when the run had none)."""
        return ((self.result or {}).get("diagnostics") or {}).get("layers") or []


@dataclass
class Stat:
    """Mean and sample std of the values a group has for one number (std None below two values)."""

    values: list[float]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def text(self, digits: int = 3, integer: bool = False) -> str:
        """``mean ± std`` (std to 2 significant digits), the mean alone for one value, — for none."""
        if not self.values:
            return "—"
        if integer:
            return f"{self.mean:.0f}" + (f" ± {self.std:.0f}" if self.std is not None else "")
        return f"{self.mean:.{digits}g}" + (f" ± {self.std:.2g}" if self.std is not None else "")


@dataclass
class Group:
    """The jobs of one setting of the varied keys, over seeds."""

    name: str
    values: dict[str, str]
    jobs: list[Job] = field(default_factory=list)

    @property
    def finished(self) -> list[Job]:
        return [j for j in self.jobs if j.done]

    @property
    def trained(self) -> list[Job]:
        return [j for j in self.finished if j.status in ("ok", "diverged")]

    def count(self, status: str) -> int:
        return sum(j.status == status for j in self.jobs)

    @property
    def failed(self) -> int:
        """Jobs that ended without numbers: failed, or whose metrics.json can't be read."""
        return self.count("failed") + self.count("unreadable")

    @property
    def reached(self) -> int:
        return sum(bool(j.metrics.get("conv/reached")) for j in self.trained)

    def stat(self, key: str) -> Stat:
        return Stat([float(j.metrics[key]) for j in self.trained if j.metrics.get(key) is not None])

    @property
    def steps(self) -> Stat:
        return self.stat("conv/steps_to_target")

    @property
    def best(self) -> Stat:
        return Stat([b for j in self.trained if (b := j.best()) is not None])

    @property
    def hidden_rank(self) -> Stat:
        """Per job the mean numerical rank of its hidden weight matrices at the end, then over seeds."""
        per_job = []
        for j in self.trained:
            ranks = [row["weight_rank"] for row in j.layers() if row.get("weight_rank") is not None]
            if ranks:
                per_job.append(statistics.fmean(ranks))
        return Stat(per_job)

    @property
    def max_steps(self) -> int:
        return max((int(j.metrics.get("conv/steps") or 0) for j in self.trained), default=0)


@dataclass
class Report:
    root: Path
    jobs: list[Job]
    groups: list[Group]          # sorted: by censored median steps to target (sort_groups)
    varied: list[str]
    expected: int | None         # jobs the sweep(s) will have in all, when the plan says
    metric: str | None           # the target metric (val/acc or val/loss ...)
    target: float | None
    best_of: str | None = None  # a varied key whose best value the report picks per setting of the others
    compare: str | None = "init"  # the key paired comparisons and performance profiles rank (profiles.compared_key)

    @property
    def finished(self) -> int:
        return sum(j.done for j in self.jobs)

    @property
    def missing(self) -> int:
        unfinished = len(self.jobs) - self.finished
        return max(unfinished, (self.expected or 0) - self.finished)

    @property
    def test_metric(self) -> str | None:
        """test/acc or test/mse, whichever the jobs recorded (None for runs from before the test split). Shown
        beside the others, never sorted or picked by: nothing selects on the test split."""
        return next((k for k in ("test/acc", "test/mse") if any(j.metrics.get(k) is not None for j in self.jobs)),
                    None)


def _key(item: str) -> str:
    return item.split("=", 1)[0].lstrip("+~")


def _value(item: str) -> str:
    return item.split("=", 1)[1] if "=" in item else ""


def find_jobs(root: Path) -> list[Job]:
    """Every job or run folder under ``root``: one with a metrics.json, or a .hydra/ of a job that started."""
    folders = {p.parent for p in root.rglob("metrics.json")}
    folders |= {p.parent for p in root.rglob(".hydra") if p.is_dir()}
    jobs = []
    for folder in sorted(folders, key=lambda p: (len(p.parts), _natural(p.relative_to(root)))):
        result, unreadable = read_metrics(folder / "metrics.json")
        overrides = (result or {}).get("overrides")
        if overrides is None:
            overrides = _hydra_overrides(folder)
        jobs.append(Job(folder, [str(o) for o in overrides], result, unreadable))
    return jobs


def _hydra_overrides(folder: Path) -> list[str]:
    """The overrides Hydra recorded in the job's .hydra/overrides.yaml ([] when missing or malformed)."""
    try:
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    return overrides if isinstance(overrides, list) else []


def _natural(path: Path) -> tuple:
    """Job folders 0, 1, ..., 10 in number order."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)


def planned_jobs(root: Path) -> tuple[int | None, set[str]]:
    """How many jobs the sweeps under ``root`` will have in all (None when a plan can't say), and the keys
    they vary; read from each sweep's multirun.yaml."""
    total: int | None = 0
    keys: set[str] = set()
    sweeps = [root] if (root / "multirun.yaml").exists() else [p.parent for p in root.rglob("multirun.yaml")]
    for sweep in sweeps:
        plan = sweep_plan(sweep)
        if plan is None:
            total = None
            continue
        count = 1
        for key, override in plan.items():
            if override.is_sweep_override():
                keys.add(key.lstrip("+~"))
                count = count * len(list(override.sweep_string_iterator())) if override.is_discrete_sweep() else None
            if count is None:
                break
        total = None if total is None or count is None else total + count
    return total, keys


def varied_keys(jobs: list[Job], swept: set[str]) -> list[str]:
    """The keys whose values differ between jobs (or that a sweep varies), seed and folder keys left out."""
    seen: dict[str, set[str | None]] = defaultdict(set)
    per_job = [{_key(o): _value(o) for o in j.overrides} for j in jobs]
    keys = set().union(*per_job)
    for values in per_job:
        for key in keys:
            seen[key].add(values.get(key))
    varied = {k for k, v in seen.items() if len(v) > 1} | swept
    return sorted(k for k in varied if k != "seed" and not k.startswith(NOT_IN_RUN_NAMES))


def build_report(root: Path, best_of: str | None = "optim.lr", compare: str | None = "init") -> Report:
    """Read every job under ``root`` and group them; raise UserError when there is nothing to report.

    ``best_of``: when the sweep varies this key next to others, the report also picks its best value for
    each setting of the others (by default each init's best lr, as fair_lr asks). ``compare``: the key the
    paired comparisons and performance profiles rank, within each setting of the other varied keys (a workload).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; give a sweep folder (outputs/multirun/<date>/<time>) "
                        "or a runs folder (outputs/runs)")
    jobs = find_jobs(root)
    if not jobs:
        raise UserError(f"no runs under {root} (no metrics.json and no .hydra/ job folder); "
                        "give a sweep folder such as outputs/multirun/<date>/<time>")
    expected, swept = planned_jobs(root)
    varied = varied_keys(jobs, swept)
    groups: dict[str, Group] = {}
    for job in jobs:
        name = run_name(job.overrides, set(varied)) or "all"
        values = {_key(o): _value(o) for o in job.overrides if _key(o) in varied}
        groups.setdefault(name, Group(name, values)).jobs.append(job)
    finished = [j for j in jobs if j.result and j.target_metric]
    metric = finished[0].target_metric if finished else None
    target = (finished[0].result["target"] or {}).get("value") if finished else None
    return Report(root, jobs, sort_groups(list(groups.values()), metric), varied, expected, metric, target,
                  best_of, compare)


def sort_groups(groups: list[Group], metric: str | None) -> list[Group]:
    """By the table's own headline, the censored median steps to target over every seed (a group where fewer
    than half reached it comes after every group where half did: a mean over the seeds that reached it would put
    1 of 3 seeds at 100 steps before 3 of 3 at 150); ties by the fraction that reached it, then by the mean steps
    over those; the groups where none did by their best value; then groups with no trained job."""
    # the table's own observations and median (imported here: tables imports this module; stats brings scipy)
    from trainstudy.report.stats import censored_median
    from trainstudy.report.tables import observations

    sign = -1 if metric == "val/acc" else 1

    def key(g: Group) -> tuple:
        obs = list(observations(g).values())
        median = censored_median(obs).value if obs else math.inf
        fraction = g.reached / len(g.trained) if g.trained else 0.0
        steps, best = g.steps.mean, g.best.mean
        return (not g.trained, median, -fraction, steps if steps is not None else math.inf,
                sign * best if best is not None else math.inf, g.name)

    return sorted(groups, key=key)
