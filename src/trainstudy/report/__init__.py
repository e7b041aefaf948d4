"""The answer of a study: a sweep's jobs grouped by what they vary, mean ± std over seeds, a table and plots.

A group is the set of jobs whose overrides agree on every key the sweep varies except ``seed``; each
number in the table is the mean ± sample std over a group's finished jobs that have it. Steps and time
to target average over the seeds that reached it ("reached k/n" says how many did); a group none of
whose seeds reached it says "not reached", never a made-up number. The report reads only the job
folders, so it runs on a sweep in progress and says how many jobs it is still missing.

Files: report.md (and the same as a self-contained report.html), report.csv (a row per group), jobs.csv (a row
per job), curves.csv (a row per job, step and metric), and the figures as PNG + SVG.
"""

from __future__ import annotations

from pathlib import Path

from trainstudy.errors import UserError
from trainstudy.report.exports import figure_files, write_curves_csv, write_html, write_jobs_csv
from trainstudy.report.figures import (PLOTS, act_std_curves, act_std_figure, curves_figure, group_colors, mean_curve,
                                       mean_train_loss, save_figure, steps_figure, train_loss_figure, write_figures)
from trainstudy.report.jobs import (Group, Job, Report, Stat, build_report, find_jobs, planned_jobs, sort_groups,
                                    varied_keys)
from trainstudy.report.phase import FIGURE as PHASE
from trainstudy.report.phase import plot_phase
from trainstudy.report.stats_figures import FRACTION_REACHED, PROFILE, plot_fraction_reached, plot_profile
from trainstudy.report.tables import (best_of_rows, group_rows, headline, job_rows, markdown_table, render,
                                      unreadable_lines, write_csv)

__all__ = ["PLOTS", "Group", "Job", "Report", "Stat", "act_std_curves", "act_std_figure", "best_of_rows",
           "build_report", "curves_figure", "figure_files", "find_jobs", "group_colors", "group_rows", "headline",
           "job_rows", "markdown_table", "mean_curve", "mean_train_loss", "planned_jobs", "render", "save_figure",
           "sort_groups", "steps_figure", "train_loss_figure", "unreadable_lines", "varied_keys", "write_csv",
           "write_curves_csv", "write_figures", "write_html", "write_jobs_csv", "write_report"]


def write_report(report: Report, out_dir: Path | None = None) -> dict[str, Path]:
    """report.md, report.html, report.csv, jobs.csv, curves.csv and the figures into ``out_dir`` (the report's
    folder by default); UserError when the folder can't be written."""
    out = Path(out_dir) if out_dir else report.root
    try:
        return _write_files(report, out)
    except OSError as e:
        where = e.filename or out
        raise UserError(f"cannot write the report to {where} ({e.strerror or e}); "
                        "give a writable folder with --out <folder>") from None


def _write_files(report: Report, out: Path) -> dict[str, Path]:
    """The tables, then the figures; report.md and report.html last, showing every PNG in ``out`` (another
    module's figures too), this module's first."""
    out.mkdir(parents=True, exist_ok=True)
    written = {"csv": out / "report.csv", "jobs_csv": out / "jobs.csv", "curves_csv": out / "curves.csv"}
    write_csv(report, written["csv"])
    write_jobs_csv(report, written["jobs_csv"])
    write_curves_csv(report, written["curves_csv"])
    figures = write_figures(report, out)
    written.update(figures)
    # the statistics' figures (stats_figures.py): fraction reached per group; across workloads, the profile;
    # over (sigma_w2, depth), the trainability phase diagram (phase.py)
    for name, plot in ((PHASE, plot_phase), (FRACTION_REACHED, plot_fraction_reached), (PROFILE, plot_profile)):
        if plot(report, out / name):
            figures[name.removesuffix(".png")] = out / name
            written[name.removesuffix(".png")] = out / name
    written["md"], written["html"] = out / "report.md", out / "report.html"
    md = render(report, [p.name for p in figure_files(out, list(figures.values()))])
    written["md"].write_text(md)
    write_html(md, out, written["html"])
    return written
