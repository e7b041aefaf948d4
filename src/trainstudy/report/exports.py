"""The report as files for other tools: jobs.csv and curves.csv for pandas, report.html for a browser.

jobs.csv has one row per job (every hparam, its status, every conv/* and test/* number); curves.csv is long
format (job, step, metric, value: train/loss at every step, each validation metric at each validation), so
``pd.read_csv("curves.csv").merge(pd.read_csv("jobs.csv"), on="job")`` gives a tidy table. report.html is
report.md rendered by Python-Markdown (so the two always say the same), every figure embedded as a base64
PNG: one file that opens offline and can be mailed.
"""

from __future__ import annotations

import base64
import csv
import html
import re
from pathlib import Path

import markdown

from trainstudy.report.jobs import Job, Report
from trainstudy.report.tables import job_rows

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; white-space: nowrap; }
th { background: #f0f0f0; position: sticky; top: 0; }
tr:nth-child(even) td { background: #fafafa; }
td { font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
img { max-width: 100%; height: auto; display: block; margin: 1em 0; border: 1px solid #eee; }
"""


def _job_name(report: Report, job: Job) -> str:
    return str(job.folder.relative_to(report.root)) or "."


def _cell(value) -> object:
    """A number as itself (csv writes repr: full precision, inf, nan), None as an empty cell."""
    return "" if value is None else value


def write_jobs_csv(report: Report, path: Path) -> None:
    """jobs.csv: job (its folder under the report's root), group, status, note (what the job table says: why it
    failed, where it diverged), then every hparam and every conv/* and test/* number any job has."""
    hparams = list(dict.fromkeys(k for j in report.jobs for k in ((j.result or {}).get("hparams") or {})))
    metrics = list(dict.fromkeys(k for j in report.jobs for k in j.metrics if k.startswith(("conv/", "test/"))))
    notes = {row[0]: (row[1], row[5]) for row in job_rows(report)[1]}
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", "group", "status", "note", *hparams, *metrics])
        for j in report.jobs:
            name = _job_name(report, j)
            params = (j.result or {}).get("hparams") or {}
            writer.writerow([name, notes[name][0], j.status, notes[name][1],
                             *(_cell(params.get(k)) for k in hparams), *(_cell(j.metrics.get(k)) for k in metrics)])


def curve_rows(job: Job):
    """(step, metric, value) of one job: train/loss at steps 1..n, then every validation point's metrics."""
    result = job.result or {}
    for step, value in enumerate(result.get("train_loss") or [], start=1):
        yield step, "train/loss", value
    for point in result.get("curve") or []:
        for metric, value in point.items():
            if metric != "step":
                yield point["step"], metric, value


def write_curves_csv(report: Report, path: Path) -> None:
    """curves.csv: long format, one row per job, step and metric (a diverged point is written as nan or inf)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", "step", "metric", "value"])
        for j in report.jobs:
            name = _job_name(report, j)
            writer.writerows((name, step, metric, _cell(value)) for step, metric, value in curve_rows(j))


def figure_files(out: Path, first: list[Path]) -> list[Path]:
    """Every PNG in ``out``: ``first`` in its order, then any other (another module's figures) by name."""
    present = [p for p in first if p.exists()]
    return present + sorted(p for p in out.glob("*.png") if p not in present)


def write_html(report_md: str, out: Path, path: Path) -> None:
    """report.html from report.md's text: the same tables and headings, each image ``![x](x.png)`` replaced by
    the PNG's bytes (base64), so the page needs nothing beside it."""
    body = markdown.markdown(report_md, extensions=["tables"], output_format="html")
    body = body.replace("<table>", '<div class="scroll"><table>').replace("</table>", "</table></div>")

    def embed(match: re.Match) -> str:
        src = html.unescape(match.group(1))
        png = out / src
        if "/" in src or not png.is_file():
            return match.group(0)
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    title = html.escape(next((line[2:] for line in report_md.splitlines() if line.startswith("# ")), "Study report"))
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
    path.write_text(page, encoding="utf-8")
