"""The report's files for other tools: jobs.csv and curves.csv loaded back with the csv module equal the
metrics.json files; report.html is one file that needs nothing beside it, with the Markdown's tables and every
figure in the folder (another module's too) embedded."""

from __future__ import annotations

import base64
import csv
import json
from html.parser import HTMLParser
from pathlib import Path

from matplotlib.figure import Figure
from test_report import sweep  # noqa: F401  (the fixture)

from trainstudy.report import build_report, group_rows, job_rows, write_curves_csv, write_jobs_csv, write_report


def number(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def test_jobs_csv_has_a_row_per_job_with_every_hparam_status_and_number(sweep: Path, tmp_path: Path) -> None:
    write_jobs_csv(build_report(sweep), tmp_path / "jobs.csv")
    rows = list(csv.DictReader((tmp_path / "jobs.csv").open()))
    results = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    assert [r["job"] for r in rows] == [str(i) for i in range(9)]
    keys = {k for r in results.values() for k in r.get("metrics", {})}
    assert {"conv/steps_to_target", "conv/reached", "conv/loss_auc", "test/acc", "test/loss"} <= keys
    for row in rows:
        result = results[row["job"]]
        assert row["status"] == result["status"]
        assert row["group"] == next(o for o in result["overrides"] if o.startswith("init="))
        if result["status"] == "failed":
            assert "Precision 'bogus'" in row["note"] and row["seed"] == row["conv/loss_auc"] == ""
            continue
        assert row["init"] == result["hparams"]["init"] and int(row["seed"]) == result["hparams"]["seed"]
        for key in keys:
            assert number(row[key]) == result["metrics"][key], (row["job"], key)
    assert next(r for r in rows if r["job"] == "4")["note"] == "diverged at step 37"


def test_curves_csv_is_long_format_every_step_and_validation_of_every_job(sweep: Path, tmp_path: Path) -> None:
    write_curves_csv(build_report(sweep), tmp_path / "curves.csv")
    rows = list(csv.DictReader((tmp_path / "curves.csv").open()))
    assert list(rows[0]) == ["job", "step", "metric", "value"]
    got: dict[tuple[str, int, str], float] = {(r["job"], int(r["step"]), r["metric"]): float(r["value"]) for r in rows}
    assert len(got) == len(rows)  # one row per job, step and metric
    want = {}
    for path in sweep.glob("*/metrics.json"):
        result = json.loads(path.read_text())
        for step, value in enumerate(result.get("train_loss") or [], start=1):
            want[path.parent.name, step, "train/loss"] = value
        for point in result.get("curve") or []:
            want.update({(path.parent.name, point["step"], m): v for m, v in point.items() if m != "step"})
    assert got == want
    assert ("4", 36, "train/loss") in got and ("4", 37, "train/loss") not in got  # diverged at 37


class Page(HTMLParser):
    """The parts of report.html the test reads: every reference to another file, the images, the tables."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.images: list[tuple[str, str]] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        self.refs += [attrs[k] for k in ("src", "href") if k in attrs and not attrs[k].startswith("data:")]
        if tag == "link" or (tag == "script" and "src" in attrs):
            self.refs.append(tag)
        if tag == "img":
            self.images.append((attrs.get("alt", ""), attrs["src"]))
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None


def test_report_html_is_one_file_with_the_tables_and_every_figure_embedded(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    other = Figure(figsize=(4, 3))  # a figure another module wrote into the folder first
    other.subplots().plot([0, 1], [1, 0])
    other.savefig(out / "fraction_reached.png")
    report = build_report(sweep)
    written = write_report(report, out)
    page = Page()
    page.feed(written["html"].read_text())
    assert page.refs == []  # nothing to fetch: opens offline, mailed alone
    embedded = dict(page.images)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert sorted(embedded) == pngs and "fraction_reached.png" in pngs and "train_loss.png" in pngs
    for name, src in embedded.items():
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (out / name).read_bytes()
    header, rows = group_rows(report)
    assert page.tables[0] == [header, *rows]  # the same rows the Markdown shows
    jobs_header, jobs = job_rows(report)
    assert page.tables[-1] == [jobs_header, *jobs]
    assert "![fraction_reached.png](fraction_reached.png)" in written["md"].read_text()
