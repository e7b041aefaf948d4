"""The report's tables as text (Markdown) and report.csv."""

from __future__ import annotations

import csv
from pathlib import Path

from trainstudy.report.jobs import Group, Report
from trainstudy.report.predictors import NOTE, predictor_rows


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
    predictors = predictor_rows(report)
    parts += ["", "## Step-0 diagnostics against steps to target", "", NOTE, "", markdown_table(*predictors)] \
        if predictors else []
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
