"""The report: its numbers equal the ones computed here from the same metrics.json files; a sweep in progress
says what is missing; the plots are real pictures; fair_lr's best lr per init; the CLI."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import random
import statistics
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from matplotlib.image import imread

from trainstudy.errors import UserError
from trainstudy.report import (
    act_std_curves,
    build_report,
    job_rows,
    markdown_table,
    write_report,
)

INITS = ["xavier_uniform", "kaiming_normal", "zeros"]


def write_job(folder: Path, overrides: list[str], *, status: str = "ok", steps: int | None = None,
              best: float = 0.5, auc: float = 1.0, time_s: float | None = None, diverged_step: int | None = None,
              layers: list[dict] | None = None, n_steps: int = 100, error: str | None = None) -> dict:
    """A job folder as train/cli leave it: .hydra/overrides.yaml and metrics.json (status failed: no metrics)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status == "failed":
        result = {"status": "failed", "error": error or "ValueError: boom", "overrides": overrides}
    else:
        curve = [{"step": s, "val/loss": 2.0 - s / n_steps, "val/acc": best * s / n_steps} for s in range(0, n_steps + 1, 10)]
        last = (diverged_step - 1) if diverged_step else n_steps  # the losses before the first non-finite one
        train_loss = [2.3 * math.exp(-s * best / 30) + auc / 100 for s in range(1, last + 1)]
        result = {
            "status": status, "overrides": overrides,
            "hparams": {"init": next(o.split("=")[1] for o in overrides if o.startswith("init=")),
                        "seed": int(next(o.split("=")[1] for o in overrides if o.startswith("seed=")))},
            "metrics": {"conv/reached": int(steps is not None), "conv/steps_to_target": steps,
                        "conv/time_to_target_s": time_s, "conv/loss_auc": auc, "conv/best_val_acc": best,
                        "conv/diverged": int(status == "diverged"), "conv/diverged_step": diverged_step,
                        "conv/steps": diverged_step or n_steps, "test/acc": best - 0.02, "test/loss": 0.5},
            "target": {"metric": "val/acc", "value": 0.9},
            "curve": curve,
            "train_loss": train_loss,
            "diagnostics": {"layers": layers} if layers is not None else None,
        }
    (folder / "metrics.json").write_text(json.dumps(result))
    return result


def layer_rows(act_stds: list[float], ranks: list[int | None]) -> list[dict]:
    """Diagnostics rows in the format train writes (issue 3): one per Linear layer, forward order."""
    return [{"index": i + 1, "name": str(2 * i + 1), "preact_mean": 0.0, "preact_std": s, "act_mean": 0.0,
             "act_std": s, "grad_std": 0.01, "weight_std": 0.1, "weight_std_target": None, "weight_rank": r}
            for i, (s, r) in enumerate(zip(act_stds, ranks))]


def write_multirun_yaml(sweep: Path, task: list[str], params: dict[str, str] | None = None) -> None:
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"overrides": {"task": task}, "sweeper": {"params": params}}}))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A finished 3 inits × 3 seeds sweep with made-up numbers: zeros never reaches the target, one
    kaiming seed diverges, one xavier seed fails; diagnostics on every trained job."""
    rng = random.Random(0)
    root = tmp_path / "sweep"
    write_multirun_yaml(root, [f"init={','.join(INITS)}", "seed=0,1,2", "data=digits"])
    n = 0
    for init in INITS:
        for seed in range(3):
            overrides = [f"init={init}", f"seed={seed}", "data=digits"]
            folder = root / str(n)
            n += 1
            if init == "xavier_uniform" and seed == 2:
                write_job(folder, overrides, status="failed", error="ValueError: Precision 'bogus' is invalid")
                continue
            stds = {"xavier_uniform": [0.5, 0.25, 0.12], "kaiming_normal": [1.0, 1.1, 0.9], "zeros": [0.0, 0.0, 0.0]}
            layers = layer_rows([s * (1 + 0.1 * seed) for s in stds[init]], [0, 0, None] if init == "zeros" else [64, 64, None])
            if init == "zeros":
                write_job(folder, overrides, best=0.1 + 0.01 * seed, auc=2.3, layers=layers)
            elif init == "kaiming_normal" and seed == 1:
                write_job(folder, overrides, status="diverged", diverged_step=37, best=0.4, auc=5.0, layers=layers)
            else:
                write_job(folder, overrides, steps=rng.randrange(20, 90, 10), best=rng.uniform(0.9, 0.99),
                          auc=rng.uniform(0.2, 0.6), time_s=rng.uniform(0.5, 3), layers=layers)
    return root


def expected_by_init(root: Path) -> dict[str, dict]:
    """The table's numbers computed here, straight from the metrics.json files."""
    out = {}
    for init in INITS:
        results = [json.loads(p.read_text()) for p in sorted(root.glob("*/metrics.json"))]
        results = [r for r in results if f"init={init}" in r["overrides"]]
        trained = [r for r in results if r["status"] != "failed"]
        steps = [r["metrics"]["conv/steps_to_target"] for r in trained if r["metrics"]["conv/steps_to_target"] is not None]
        times = [r["metrics"]["conv/time_to_target_s"] for r in trained if r["metrics"]["conv/time_to_target_s"] is not None]
        best = [max(p["val/acc"] for p in r["curve"]) for r in trained]
        test = [r["metrics"]["test/acc"] for r in trained]
        auc = [r["metrics"]["conv/loss_auc"] for r in trained]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else None  # noqa: E731
        out[init] = {
            "reached": len(steps), "trained": len(trained), "failed": len(results) - len(trained),
            "diverged": sum(r["status"] == "diverged" for r in trained),
            "steps_mean": statistics.mean(steps) if steps else None, "steps_std": sd(steps),
            "time_mean": statistics.mean(times) if times else None, "time_std": sd(times),
            "best_mean": statistics.mean(best), "best_std": sd(best),
            "auc_mean": statistics.mean(auc), "auc_std": sd(auc),
            "test_mean": statistics.mean(test), "test_std": sd(test),
        }
    return out


def close(a: str, b: float | None) -> bool:
    return (a == "" and b is None) or (a != "" and b is not None and math.isclose(float(a), b, rel_tol=1e-9))


def test_report_numbers_equal_those_computed_from_metrics_json(sweep: Path) -> None:
    report = build_report(sweep)
    assert report.varied == ["init"]
    written = write_report(report)
    want = expected_by_init(sweep)
    rows = {r["init"]: r for r in csv.DictReader(written["csv"].open())}
    assert set(rows) == set(INITS)
    for init, w in want.items():
        row = rows[init]
        assert row["group"] == f"init={init}"
        assert int(row["reached"]) == w["reached"] and int(row["diverged"]) == w["diverged"]
        assert int(row["failed"]) == w["failed"] and int(row["jobs"]) == 3
        assert row["test_metric"] == "test/acc"
        for key in ("steps", "time_to_target_s", "best", "loss_auc", "test"):
            mine = {"steps": "steps", "time_to_target_s": "time", "best": "best", "loss_auc": "auc", "test": "test"}[key]
            assert close(row[f"{key}_mean"], w[f"{mine}_mean"]), (init, key)
            assert close(row[f"{key}_std"], w[f"{mine}_std"]), (init, key)
    # sorted by median steps to target (here the same order as the mean over the seeds that reached it; see
    # test_stats for where they differ); the group that never reached it is last and says so
    order = [r["init"] for r in csv.DictReader(written["csv"].open())]
    reached = sorted((i for i in INITS if want[i]["steps_mean"] is not None), key=lambda i: want[i]["steps_mean"])
    assert order == [*reached, "zeros"]
    md = written["md"].read_text()
    zeros_line = next(line for line in md.splitlines() if line.startswith("| init=zeros "))
    assert "not reached" in zeros_line and "| 0/3 " in zeros_line
    kaiming_line = next(line for line in md.splitlines() if line.startswith("| init=kaiming_normal "))
    assert "| 2/3 " in kaiming_line and "| 1/3 " in kaiming_line  # 2 of 3 reached, 1 of 3 diverged
    steps = [r["metrics"]["conv/steps_to_target"] for r in map(json.loads, (p.read_text() for p in sweep.glob("*/metrics.json")))
             if "init=kaiming_normal" in r["overrides"] and r["status"] == "ok"]
    # the median over all 3 seeds, the diverged one counted as never reaching: the later of the two that did
    assert f"| {max(steps)} (" in kaiming_line
    header = md.splitlines()[next(i for i, line in enumerate(md.splitlines()) if line.startswith("| group "))]
    assert "| test/acc " in header  # a column beside the others; the order above is by validation alone
    tests = [r["metrics"]["test/acc"] for r in map(json.loads, (p.read_text() for p in sweep.glob("*/metrics.json")))
             if "init=kaiming_normal" in r["overrides"] and r["status"] != "failed"]
    assert f"{statistics.mean(tests):.3g} ± {statistics.stdev(tests):.2g}" in kaiming_line


def test_report_lists_every_job_with_its_status(sweep: Path) -> None:
    report = build_report(sweep)
    header, rows = job_rows(report)
    by_job = {r[0]: r for r in rows}
    assert len(rows) == 9 and list(by_job) == [str(i) for i in range(9)]
    assert by_job["2"][3] == "failed" and "Precision 'bogus'" in by_job["2"][5]
    assert by_job["4"][3] == "diverged" and "step 37" in by_job["4"][5]
    assert by_job["6"][3] == "ok" and "not reached" in by_job["6"][5]
    assert "## Jobs" in write_report(report)["md"].read_text()


def test_report_on_a_sweep_in_progress_says_what_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    write_multirun_yaml(root, ["seed=0,1"], params={"init": "xavier_uniform,kaiming_normal,zeros"})  # 6 jobs
    write_job(root / "0", ["init=xavier_uniform", "seed=0"], steps=40, best=0.95, time_s=1.0)
    write_job(root / "1", ["init=xavier_uniform", "seed=1"], steps=60, best=0.93, time_s=1.2)
    (root / "2" / ".hydra").mkdir(parents=True)  # started, no metrics.json yet
    (root / "2" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["init=kaiming_normal", "seed=0"]))
    report = build_report(root)
    assert (report.expected, report.finished, report.missing) == (6, 2, 4)
    assert report.varied == ["init"]  # the preset's sweep, although only one init has finished yet
    written = write_report(report)
    text = written["md"].read_text()
    assert "2 of 6 jobs finished; 4 missing (1 started without a metrics.json yet)" in text
    assert [r[:4] for r in job_rows(report)[1] if r[3] == "missing"] == [["2", "init=kaiming_normal", "0", "missing"]]
    rows = {r["group"]: r for r in csv.DictReader(written["csv"].open())}
    assert rows["init=xavier_uniform"]["steps_mean"] == "50.0"
    assert rows["init=kaiming_normal"]["finished"] == "0"


def test_the_command_line_wins_over_the_preset_in_the_plan(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    write_multirun_yaml(root, ["experiment=x", "seed=0"], params={"init": "a,b,c", "seed": "0,1,2"})
    write_job(root / "0", ["init=a", "seed=0", "experiment=x"], steps=10)
    report = build_report(root)
    assert report.expected == 3 and report.varied == ["init"]


def image(path: Path):
    pixels = imread(path)
    assert pixels.shape[0] >= 200 and pixels.shape[1] >= 400, pixels.shape
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    return pixels


def test_act_std_by_depth_is_the_mean_over_each_inits_jobs(sweep: Path) -> None:
    curves = act_std_curves(build_report(sweep))
    assert sorted(curves) == sorted(f"init={i}" for i in INITS)
    for init in INITS:
        results = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
        layers = [r["diagnostics"]["layers"] for r in results
                  if r["status"] != "failed" and r["hparams"]["init"] == init]
        depth, means, stds = curves[f"init={init}"]
        assert depth == [1, 2, 3]
        for i, (mean, std) in enumerate(zip(means, stds)):
            assert math.isclose(mean, statistics.mean(rows[i]["act_std"] for rows in layers))
            assert math.isclose(std, statistics.stdev(rows[i]["act_std"] for rows in layers))  # sample std


def test_no_diagnostics_no_act_std_plot(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for i, init in enumerate(INITS):
        write_job(root / str(i), [f"init={init}", "seed=0"], steps=10 * (i + 1), best=0.95)
    written = write_report(build_report(root))
    assert "act_std" not in written and not (root / "act_std_by_depth.png").exists()
    assert "act_std_by_depth" not in written["md"].read_text()
    image(written["curves"])


def test_best_lr_per_init(tmp_path: Path) -> None:
    root = tmp_path / "fair_lr"
    # kaiming is best at 0.1 (both seeds fast); xavier only reaches at 0.3; 0.3 is fastest for kaiming's
    # seed 0 but its seed 1 never reaches: most seeds reaching wins over speed.
    table = {("kaiming_normal", "0.1"): [30, 40], ("kaiming_normal", "0.3"): [20, None],
             ("xavier_normal", "0.1"): [None, None], ("xavier_normal", "0.3"): [60, 80]}
    n = 0
    for (init, lr), steps in table.items():
        for seed, s in enumerate(steps):
            write_job(root / str(n), [f"init={init}", f"optim.lr={lr}", f"seed={seed}"], steps=s, best=0.95 if s else 0.8)
            n += 1
    written = write_report(build_report(root))
    md = written["md"].read_text()
    assert "## Best optim.lr per init" in md
    section = md.split("## Best optim.lr per init")[1].split("##")[0]
    assert "| init=kaiming_normal | 0.1 " in section and "| 2/2 " in section
    assert "| init=xavier_normal  | 0.3 " in section


def test_markdown_table_lines_up() -> None:
    lines = markdown_table(["a", "long header"], [["xx", "1"], ["y", "22"]]).splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[2] == "| xx | 1           |"


def load_script():
    spec = importlib.util.spec_from_file_location("report_script", ROOT / "scripts" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_prints_the_table_and_writes_elsewhere(sweep: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "docs"
    assert load_script().main([str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| init=zeros " in printed and "not reached" in printed
    assert (out / "report.md").exists() and (out / "curves.png").exists()
    assert not (sweep / "report.md").exists()


def test_script_on_a_folder_without_runs_says_so_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert load_script().main([str(tmp_path)]) == 2
    err = capsys.readouterr()
    lines = [line for line in (err.out + err.err).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no runs under")
    with pytest.raises(UserError, match="is not a folder"):
        build_report(tmp_path / "nope")


# ------------------------------------------------------------------------------------------ bad files


def cut_in_half(text: str) -> str:
    return text[: len(text) // 2]  # as a disk that filled up or a copy cut short leaves it


def non_numeric_metric(text: str) -> str:
    result = json.loads(text)
    result["metrics"]["conv/loss_auc"] = "n/a"
    return json.dumps(result)


@pytest.mark.parametrize("damage, says", [
    (lambda text: "\x00garbage{{", "not JSON: Expecting value"),
    (cut_in_half, "not JSON (cut short)"),
    (non_numeric_metric, "metrics['conv/loss_auc'] is 'n/a', not a number"),
    (lambda text: "[1, 2]", "the file is a list, not an object"),
], ids=["garbage", "truncated", "non-numeric", "not-an-object"])
def test_a_bad_metrics_json_is_shown_and_the_rest_reported(sweep: Path, tmp_path: Path, capsys, damage, says) -> None:
    bad = sweep / "3" / "metrics.json"  # kaiming_normal, seed 0: a job that reached the target
    bad.write_text(damage(bad.read_text()))
    assert load_script().main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert [line for line in printed.splitlines() if "unreadable metrics.json:" in line][0].startswith(
        f"3: unreadable metrics.json: {says}")
    assert "(1 with an unreadable metrics.json)" in printed

    report = build_report(sweep)
    rows = {r[0]: r for r in job_rows(report)[1]}
    assert rows["3"][3] == "unreadable" and rows["3"][5].startswith(f"unreadable metrics.json: {says}")
    assert sorted(r[3] for r in rows.values()) == ["diverged", "failed"] + ["ok"] * 6 + ["unreadable"]
    groups = {g.name: g for g in report.groups}
    assert len(groups["init=kaiming_normal"].trained) == 2 and groups["init=kaiming_normal"].failed == 1
    assert report.missing == 0  # a bad file is a finished job, not one still running
    assert "| 3 " in (tmp_path / "out" / "report.md").read_text()


def test_a_non_utf8_metrics_json_is_unreadable(tmp_path: Path) -> None:
    from trainstudy.results import read_metrics

    path = tmp_path / "metrics.json"
    assert read_metrics(path) == (None, None)  # not written yet: the job runs
    path.write_bytes(b"\xff\xfe{}")
    result, error = read_metrics(path)
    assert result is None and error.startswith("unreadable metrics.json: UnicodeDecodeError")


@pytest.mark.parametrize("content", ["hydra: [not closed", "- a list\n- not a mapping\n",
                                     yaml.safe_dump({"hydra": {"overrides": {"task": ["init=[oops"]}}})],
                         ids=["yaml-syntax", "a-list", "bad-override"])
def test_a_malformed_multirun_yaml_leaves_the_plan_unknown(sweep: Path, content: str, caplog) -> None:
    (sweep / "multirun.yaml").write_text(content)
    report = build_report(sweep)
    assert report.expected is None and report.finished == 9 and report.missing == 0
    assert report.varied == ["init"]  # still seen from the jobs' own overrides
    assert any("cannot read" in r.getMessage() and "multirun.yaml" in r.getMessage() for r in caplog.records)


def test_an_unwritable_out_is_a_one_line_error(sweep: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "a-file").write_text("")
    assert load_script().main([str(sweep), "--out", str(tmp_path / "a-file" / "report")]) == 2
    err = capsys.readouterr()
    lines = [line for line in (err.out + err.err).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write the report to {tmp_path / 'a-file'}")
