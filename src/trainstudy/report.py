"""The answer of a study: a sweep's jobs grouped by what they vary, mean ± std over seeds, a table and plots.

A group is the set of jobs whose overrides agree on every key the sweep varies except ``seed``; each
number in the table is the mean ± sample std over a group's finished jobs that have it. Steps and time
to target average over the seeds that reached it ("reached k/n" says how many did); a group none of
whose seeds reached it says "not reached", never a made-up number. The report reads only the job
folders, so it runs on a sweep in progress and says how many jobs it is still missing.
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from trainstudy.errors import UserError
from trainstudy.results import read_metrics
from trainstudy.sweeps import NOT_IN_RUN_NAMES, run_name, sweep_plan
from trainstudy.targets import best_value

log = logging.getLogger(__name__)

PLOTS = ("curves.png", "steps_to_target.png", "act_std_by_depth.png")


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
    groups: list[Group]          # sorted: fewest steps to target first, unreached after, by best value
    varied: list[str]
    expected: int | None         # jobs the sweep(s) will have in all, when the plan says
    metric: str | None           # the target metric (val/acc or val/loss ...)
    target: float | None
    best_of: str | None = None  # a varied key whose best value the report picks per setting of the others

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


# --- reading the folders -----------------------------------------------------------------------------


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


def build_report(root: Path, best_of: str | None = "optim.lr") -> Report:
    """Read every job under ``root`` and group them; raise UserError when there is nothing to report.

    ``best_of``: when the sweep varies this key next to others, the report also picks its best value for
    each setting of the others (by default each init's best lr, as fair_lr asks).
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
                  best_of)


def sort_groups(groups: list[Group], metric: str | None) -> list[Group]:
    """Fewest mean steps to target first; groups that never reached it after, best value first; then
    groups with no trained job (all failed or missing)."""
    sign = -1 if metric == "val/acc" else 1

    def key(g: Group) -> tuple:
        steps, best = g.steps.mean, g.best.mean
        return (not g.trained, steps is None, steps if steps is not None else 0,
                sign * best if best is not None else math.inf, g.name)

    return sorted(groups, key=key)


# --- tables ------------------------------------------------------------------------------------------


def group_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """The report's table: header and one row per group, as text."""
    metric = report.metric or "val metric"
    ranks = any(g.hidden_rank.values for g in report.groups)
    test = report.test_metric
    header = ["group", "reached", "steps to target", "time to target (s)", f"best {metric}", "loss AUC",
              "diverged"] + (["hidden rank"] if ranks else []) + ([test] if test else []) + ["failed"]
    rows = []
    for g in report.groups:
        n = len(g.trained)
        steps = g.steps.text(integer=True) if g.reached else ("not reached" if n else "—")
        row = [g.name, f"{g.reached}/{n}", steps, g.stat("conv/time_to_target_s").text(2),
               g.best.text(3), g.stat("conv/loss_auc").text(3), f"{g.count('diverged')}/{n}"]
        if ranks:
            row.append(g.hidden_rank.text(3))
        if test:
            row.append(g.stat(test).text(3))
        rows.append(row + [f"{g.failed}/{len(g.finished)}"])
    return header, rows


def job_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """Every job with its status: what a failed or diverged job says, and what is still missing."""
    groups = {id(j): g.name for g in report.groups for j in g.jobs}
    rows = []
    for j in report.jobs:
        m = j.metrics
        if j.status == "unreadable":
            note = j.unreadable
        elif j.status == "failed":
            note = j.result.get("error", "")
        elif j.status == "diverged":
            note = f"diverged at step {m.get('conv/diverged_step')}"
        elif j.status == "missing":
            note = "no metrics.json yet (running, or the process died)"
        else:
            steps = m.get("conv/steps_to_target")
            note = f"reached at step {steps}" if steps is not None else f"not reached in {m.get('conv/steps')} steps"
        best = j.best()
        rows.append([str(j.folder.relative_to(report.root)) or ".", groups[id(j)], j.seed, j.status,
                     f"{best:.4g}" if best is not None else "—", note])
    return ["job", "group", "seed", "status", f"best {report.metric or ''}".strip(), "note"], rows


def best_of_rows(report: Report) -> tuple[list[str], list[list[str]]] | None:
    """For each setting of the other varied keys, the value of ``best_of`` that did best (fair_lr's answer).

    Best = most seeds reaching the target, then fewest mean steps, then the best value (the table's order).
    """
    key = report.best_of
    if not key or key not in report.varied:
        return None
    others = [k for k in report.varied if k != key]
    picked: dict[str, Group] = {}
    for g in report.groups:  # already in the table's order
        if not g.trained:
            continue
        label = ",".join(f"{k}={g.values.get(k, '')}" for k in others) or "all"
        current = picked.get(label)
        if current is None or g.reached > current.reached:
            picked[label] = g
    header = [",".join(others) or "group", f"best {key}", "reached", "steps to target", f"best {report.metric}"]
    rows = [[label, g.values.get(key, ""), f"{g.reached}/{len(g.trained)}",
             g.steps.text(integer=True) if g.reached else "not reached", g.best.text(3)]
            for label, g in picked.items()]
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table padded to line up in a terminal too."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def headline(report: Report) -> str:
    """Which folder, which target, how many jobs are in and how many are still missing."""
    target = f"steps to {report.metric} {'≥' if report.metric == 'val/acc' else '≤'} {report.target:g}" \
        if report.metric and report.target is not None else "steps to target"
    total = report.finished + report.missing
    line = f"{report.finished} of {total} jobs finished" if report.missing else f"{report.finished} jobs"
    if report.missing:
        started = len(report.jobs) - report.finished
        line += f"; {report.missing} missing ({started} started without a metrics.json yet)"
    unreadable = sum(j.status == "unreadable" for j in report.jobs)
    if unreadable:
        line += f" ({unreadable} with an unreadable metrics.json)"
    varied = ", ".join(report.varied) or "nothing"
    return f"{report.root}: {line} · groups by {varied} (mean ± std over seeds) · sorted by {target}"


def unreadable_lines(report: Report) -> list[str]:
    """One line per job whose metrics.json can't be used: its folder and why."""
    return [f"{j.folder.relative_to(report.root)}: {j.unreadable}" for j in report.jobs if j.unreadable]


def render(report: Report, plots: list[str]) -> str:
    """report.md: the headline, the groups' table, the best_of pick, the plots (files beside it), every job."""
    parts = ["# Study report", "", headline(report), "", markdown_table(*group_rows(report))]
    picked = best_of_rows(report)
    if picked:
        parts += ["", f"## Best {report.best_of} per {', '.join(k for k in report.varied if k != report.best_of)}",
                  "", markdown_table(*picked)]
    parts += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    parts += ["", "## Jobs", "", markdown_table(*job_rows(report)), ""]
    return "\n".join(parts)


def write_csv(report: Report, path: Path) -> None:
    """report.csv: one row per group, the varied keys as their own columns, numbers unformatted."""
    columns = ["group", *report.varied, "jobs", "finished", "reached", "steps_mean", "steps_std",
               "time_to_target_s_mean", "time_to_target_s_std", "best_metric", "best_mean", "best_std",
               "loss_auc_mean", "loss_auc_std", "diverged", "failed", "hidden_rank_mean", "test_metric", "test_mean",
               "test_std"]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for g in report.groups:
            steps, time_s, best, auc = g.steps, g.stat("conv/time_to_target_s"), g.best, g.stat("conv/loss_auc")
            test = g.stat(report.test_metric) if report.test_metric else None
            writer.writerow([g.name, *(g.values.get(k, "") for k in report.varied), len(g.jobs), len(g.finished),
                             g.reached, steps.mean, steps.std, time_s.mean, time_s.std, report.metric, best.mean,
                             best.std, auc.mean, auc.std, g.count("diverged"), g.failed,
                             g.hidden_rank.mean, *((report.test_metric, test.mean, test.std) if test else ("",) * 3)])


# --- plots -------------------------------------------------------------------------------------------


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


# --- all of it ---------------------------------------------------------------------------------------


def write_report(report: Report, out_dir: Path | None = None) -> dict[str, Path]:
    """report.md, report.csv and the PNGs into ``out_dir`` (the report's folder by default); UserError when
    the folder can't be written."""
    out = Path(out_dir) if out_dir else report.root
    try:
        return _write_files(report, out)
    except OSError as e:
        where = e.filename or out
        raise UserError(f"cannot write the report to {where} ({e.strerror or e}); "
                        "give a writable folder with --out <folder>") from None


def _write_files(report: Report, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = {"csv": out / "report.csv"}
    write_csv(report, written["csv"])
    if report.metric and any(g.trained for g in report.groups):
        plot_curves(report, out / PLOTS[0])
        plot_steps(report, out / PLOTS[1])
        written["curves"], written["steps"] = out / PLOTS[0], out / PLOTS[1]
    if plot_act_std(report, out / PLOTS[2]):
        written["act_std"] = out / PLOTS[2]
    written["md"] = out / "report.md"
    written["md"].write_text(render(report, [p.name for k, p in written.items() if p.suffix == ".png"]))
    return written
