"""The report's tables as text (Markdown) and report.csv."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from trainstudy.report import profiles
from trainstudy.report.jobs import Group, Report, Stat
from trainstudy.report.phase import MULTIPLE, phase_rows
from trainstudy.report.predictors import NOTE, predictor_rows
from trainstudy.report.stats import Median, Observation, censored_median, median_interval, observe, paired, wilson

PHASE_NOTE = (f"the best value of the target metric (step 0 left out), mean over seeds, per depth and σ_w²; "
              f"below, the mean-field theory's depth scale ξ_c and the depth {MULTIPLE} ξ_c that bounds the trainable "
              "region in Schoenholz et al. 2017 (phase_diagram.png draws it over the grid)")


def observations(g: Group) -> dict[str, Observation]:
    """A group's trained seeds, each one's steps to target or censored steps (``stats.observe``)."""
    return {j.seed: o for j in g.trained if (o := observe(j.metrics, j.status)) is not None}


def reached_text(g: Group) -> str:
    """``k/n (low–high)``: seeds that reached the target, with the 95% Wilson interval of the fraction."""
    n = len(g.trained)
    if not n:
        return "0/0"
    low, high = wilson(g.reached, n)
    return f"{g.reached}/{n} ({low:.2f}–{high:.2f})"


def median_text(obs: list[Observation]) -> str:
    """``median (low–high)`` over every seed, "> N" where fewer than half reached; — without seeds."""
    if not obs:
        return "—"
    median = censored_median(obs)
    if not any(o.reached for o in obs):
        return f"not reached ({median.text()})"
    low, high = median_interval(obs)
    return f"{median.text()} ({_steps(low)}–{_steps(high)})"


def _steps(x: float) -> str:
    return f"{x:.0f}" if math.isfinite(x) else "∞"


def mixed_targets(report: Report) -> bool:
    """Whether the jobs have different targets (workloads of a benchmark: val/acc 0.95 on one, val/loss on another)."""
    return len({(j.target_metric, (j.result.get("target") or {}).get("value")) for j in report.jobs if j.result
                and j.target_metric}) > 1


def group_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """The report's table: header and one row per group, as text."""
    metric = "target metric" if mixed_targets(report) else report.metric or "val metric"
    ranks = any(g.hidden_rank.values for g in report.groups)
    test = report.test_metric
    header = ["group", "reached (95% CI)", "median steps to target (95% CI)", "time to target (s)", f"best {metric}",
              "loss AUC", "diverged"] + (["hidden rank"] if ranks else []) + ([test] if test else []) + ["failed"]
    rows = []
    for g in report.groups:
        n = len(g.trained)
        row = [g.name, reached_text(g), median_text(list(observations(g).values())),
               g.stat("conv/time_to_target_s").text(2), g.best.text(3), _loss_auc(g),
               f"{g.count('diverged')}/{n}"]
        if ranks:
            row.append(g.hidden_rank.text(3))
        if test:
            row.append(g.stat(test).text(3))
        rows.append(row + [f"{g.failed}/{len(g.finished)}"])
    return header, rows


def _loss_auc(g: Group) -> str:
    """The mean training loss over the seeds that did not diverge (a diverged one's is ~1e30: no number),
    "diverged" when none is left."""
    diverged = g.count("diverged")
    kept = Stat([float(j.metrics["conv/loss_auc"]) for j in g.trained
                 if j.status != "diverged" and j.metrics.get("conv/loss_auc") is not None])
    if diverged and not kept.values:
        return "diverged"
    return kept.text(3) + (f" ({diverged} diverged)" if diverged else "")


DEFINITIONS = [
    "**reached k/n**: seeds (of the group's trained ones) that reached the target, with the 95% Wilson score "
    "interval of that fraction",
    "**median steps to target**: over every seed; a seed that did not reach the target counts as censored at its "
    "last step (a diverged one as never reaching it): the first step at which the Kaplan–Meier fraction reached "
    "is ½ or more, \"> N\" when fewer than half reached it (N: the last step seen); in brackets its 95% "
    "percentile bootstrap interval over seeds (2,000 resamples, seed 0; ∞: more than 2.5% of the resamples "
    "never reach ½)",
    "**time to target**: training seconds to the target, mean ± sample std over the seeds that reached it",
    "**best**, **loss AUC** (mean training loss over the run), **test/\\***, **hidden rank**: mean ± sample std "
    "(n − 1) over the group's trained seeds",
    "**fraction reached by step t** (fraction_reached.png): the Kaplan–Meier estimate, censored as above",
    "**paired**: two groups of one workload over the seeds they share (same seed, same data order): in how many "
    "each reached the target first (a seed that reached it beats one that did not, if that one ran at least as "
    "long or diverged); the median of steps(group) − steps(vs) over the seeds where both reached it, with its "
    "95% bootstrap interval",
    "**performance profile**: per workload, ratio = a group's median steps to target / the best group's, "
    "∞ when not reached or above 4; ρ(τ) = fraction of workloads with ratio ≤ τ; score = area under ρ over "
    "[1, 4] / 3 (1: fastest everywhere, 0: never within 4× of the fastest), as MLCommons AlgoPerf scores",
]


def paired_rows(report: Report) -> tuple[list[str], list[list[str]]] | None:
    """Per workload, each group against the workload's fastest (censored median) over the seeds they share."""
    key = profiles.compared_key(report.varied, report.compare)
    if key is None:
        return None
    rows = []
    for workload, by_value in profiles.split_workloads(report.groups, report.varied, key).items():
        obs = {v: observations(g) for v, g in by_value.items() if g.trained}
        if len(obs) < 2:
            continue
        medians = {v: censored_median(list(o.values())) for v, o in obs.items()}
        best = min(obs, key=lambda v: (medians[v].value, -sum(x.reached for x in obs[v].values()), v))
        for value, o in obs.items():
            if value == best:
                continue
            p = paired(o, obs[best])
            diff = p.median_difference
            interval = p.interval()
            diff_text = "—" if diff is None else f"{diff:+.0f} ({interval[0]:+.0f}–{interval[1]:+.0f}), " \
                                                 f"{len(p.differences)} seed{'s' if len(p.differences) != 1 else ''}"
            rows.append([workload, value, best, str(p.seeds), str(p.a_first), str(p.b_first), str(p.ties),
                         f"{p.neither}/{p.undecided}", diff_text])
    header = ["workload", key, f"vs {key}", "shared seeds", "reached first", "vs reached first", "ties",
              "neither/undecided",
              "median paired difference (95% CI)"]
    return (header, rows) if rows else None


def profile_times(report: Report) -> dict[str, dict[str, Median]] | None:
    """The censored median per workload and compared value, when the study spans two workloads or more."""
    key = profiles.compared_key(report.varied, report.compare)
    if key is None:
        return None
    split = profiles.split_workloads(report.groups, report.varied, key)
    times = {w: {v: censored_median(list(observations(g).values())) for v, g in by_value.items() if g.trained}
             for w, by_value in split.items()}
    times = {w: t for w, t in times.items() if t}
    return times if len(times) >= 2 else None


def profile_rows(report: Report) -> tuple[list[str], list[list[str]]] | None:
    """Per compared value: its median steps and ratio on each workload, and the profile's score, best first."""
    times = profile_times(report)
    if times is None:
        return None
    values = {w: {v: m.value for v, m in t.items()} for w, t in times.items()}
    uncapped, capped = profiles.ratios(values, cap=math.inf), profiles.ratios(values)
    scores = profiles.score(capped)
    key = profiles.compared_key(report.varied, report.compare)
    header = [key, *times, "score"]
    rows = []
    for value in sorted(scores, key=lambda v: (-scores[v], v)):
        cells = []
        for w, t in times.items():
            if value not in t:
                cells.append("—")
                continue
            r = uncapped[w][value]
            ratio = "not reached" if not math.isfinite(r) else \
                f"×{r:.2f}" + (" (> 4: ∞)" if r > profiles.CAP else "")
            cells.append(f"{t[value].text()} ({ratio})")
        rows.append([value, *cells, f"{scores[value]:.3f}"])
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
    best = "best" if mixed_targets(report) else f"best {report.metric or ''}".strip()
    return ["job", "group", "seed", "status", best, "note"], rows


def best_of_rows(report: Report) -> tuple[list[str], list[list[str]]] | None:
    """For each setting of the other varied keys, the value of ``best_of`` that did best (fair_lr's answer).

    Best = most seeds reaching the target, then the table's order (censored median steps, see sort_groups).
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
    target = f"median steps to {report.metric} {'≥' if report.metric == 'val/acc' else '≤'} {report.target:g}" \
        if report.metric and report.target is not None and not mixed_targets(report) else "median steps to target"
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
    """report.md: the headline, what every number means, the groups' table, the best_of pick, the paired
    comparisons, the performance profile, the plots (files beside it), every job."""
    parts = ["# Study report", "", headline(report), "", *(f"- {d}" for d in DEFINITIONS), "",
             markdown_table(*group_rows(report))]
    picked = best_of_rows(report)
    if picked:
        parts += ["", f"## Best {report.best_of} per {', '.join(k for k in report.varied if k != report.best_of)}",
                  "", markdown_table(*picked)]
    pairs = paired_rows(report)
    if pairs:
        parts += ["", "## Paired comparisons (shared seeds)", "", markdown_table(*pairs)]
    profile = profile_rows(report)
    if profile:
        parts += ["", "## Performance profile across workloads",
                  "", "median steps to target (ratio to the workload's best) per workload; score = area under ρ(τ) "
                      "over [1, 4] / 3", "", markdown_table(*profile)]
    phase = phase_rows(report)
    if phase:
        parts += ["", "## Trainability phase diagram", "", PHASE_NOTE, "", markdown_table(*phase)]
    predictors = predictor_rows(report)
    parts += ["", "## Step-0 diagnostics against steps to target", "", NOTE, "", markdown_table(*predictors)] \
        if predictors else []
    parts += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    parts += ["", "## Jobs", "", markdown_table(*job_rows(report)), ""]
    return "\n".join(parts)


def write_csv(report: Report, path: Path) -> None:
    """report.csv: one row per group, the varied keys as their own columns, numbers unformatted (median_steps: inf
    with median_steps_bound N where fewer than half reached; steps_mean/std: over the seeds that reached it)."""
    columns = ["group", *report.varied, "jobs", "finished", "reached", "reached_ci_low", "reached_ci_high",
               "median_steps", "median_steps_bound", "median_steps_ci_low", "median_steps_ci_high", "steps_mean",
               "steps_std",
               "time_to_target_s_mean", "time_to_target_s_std", "best_metric", "best_mean", "best_std",
               "loss_auc_mean", "loss_auc_std", "diverged", "failed", "hidden_rank_mean", "test_metric", "test_mean",
               "test_std"]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for g in report.groups:
            steps, time_s, best, auc = g.steps, g.stat("conv/time_to_target_s"), g.best, g.stat("conv/loss_auc")
            test = g.stat(report.test_metric) if report.test_metric else None
            obs = list(observations(g).values())
            interval = wilson(g.reached, len(g.trained)) if g.trained else (None, None)
            median = (censored_median(obs).value, censored_median(obs).bound) if obs else ("", "")
            spread = median_interval(obs) if obs else (None, None)
            writer.writerow([g.name, *(g.values.get(k, "") for k in report.varied), len(g.jobs), len(g.finished),
                             g.reached, *interval, *median, *spread, steps.mean, steps.std,
                             time_s.mean, time_s.std, report.metric, best.mean,
                             best.std, auc.mean, auc.std, g.count("diverged"), g.failed,
                             g.hidden_rank.mean, *((report.test_metric, test.mean, test.std) if test else ("",) * 3)])
