"""The answer of a study: a sweep's jobs grouped by what they vary, mean ± std over seeds, a table and plots.

A group is the set of jobs whose overrides agree on every key the sweep varies except ``seed``; each
number in the table is the mean ± sample std over a group's finished jobs that have it. Steps and time
to target average over the seeds that reached it ("reached k/n" says how many did); a group none of
whose seeds reached it says "not reached", never a made-up number. The report reads only the job
folders, so it runs on a sweep in progress and says how many jobs it is still missing.
"""

from __future__ import annotations

from pathlib import Path

from trainstudy.errors import UserError
from trainstudy.report.figures import PLOTS, act_std_by_init, mean_curve, plot_act_std, plot_curves, plot_steps
from trainstudy.report.jobs import (Group, Job, Report, Stat, build_report, find_jobs, planned_jobs, sort_groups,
                                    varied_keys)
from trainstudy.report.stats_figures import FRACTION_REACHED, PROFILE, plot_fraction_reached, plot_profile
from trainstudy.report.tables import (best_of_rows, group_rows, headline, job_rows, markdown_table, render,
                                      unreadable_lines, write_csv)

__all__ = ["PLOTS", "Group", "Job", "Report", "Stat", "act_std_by_init", "best_of_rows", "build_report",
           "find_jobs", "group_rows", "headline", "job_rows", "markdown_table", "mean_curve", "planned_jobs",
           "plot_act_std", "plot_curves", "plot_steps", "render", "sort_groups", "unreadable_lines", "varied_keys",
           "write_csv", "write_report"]


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
    # the statistics' figures (stats_figures.py): fraction reached per group; across workloads, the profile
    for name, plot in ((FRACTION_REACHED, plot_fraction_reached), (PROFILE, plot_profile)):
        if plot(report, out / name):
            written[name.removesuffix(".png")] = out / name
    written["md"] = out / "report.md"
    written["md"].write_text(render(report, [p.name for k, p in written.items() if p.suffix == ".png"]))
    return written
