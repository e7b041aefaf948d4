"""A sweep's TensorBoard views that no single run holds, written with TensorBoard's own APIs (no torch).

- One run per group, ``<sweep>/tb/groups/<group name>/``: per step the mean of each curve (train/loss, val/acc,
  val/loss, val/mse) over the group's seeds that have a finite value there, the band mean ± sample std
  (n - 1 in the denominator, as the report's tables; zero width with one seed) and n, the seeds counted.
  Tags ``seeds/<curve>/mean``, ``/lower``, ``/upper``, ``/n``; a seed that stopped early (stop_on_reach,
  diverged) counts up to its last step only, which n shows.
- A Custom Scalars layout (in each group run; TensorBoard merges identical charts): one margin chart per curve,
  one line with its band per group.
- The HParams experiment at the sweep level (``<sweep>/tb/``, TensorBoard's run "."): its table shows the first
  five hparams after sorting the ones whose values differ between jobs first, and the first five metrics in
  the experiment's order; so the hparams the sweep varies are marked as differing and the censored pair and
  the headline numbers come first. ``conv/steps_to_target`` comes sixth: a visible column without a value drops
  that run from the parallel-coordinates view, and unreached runs have none.
"""

from __future__ import annotations

import math
import shutil
import statistics
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as layout_metadata
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2, summary_v2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.summary import Writer
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from trainstudy.report.jobs import Group, Report
from trainstudy.sweeps import folder_name
from trainstudy.targets import best_key

GROUPS = "groups"
CURVES = ("train/loss", "val/acc", "val/loss", "val/mse")
LAYOUT_TITLE = "seeds: mean ± sample std per group"
HPARAMS_SUFFIX = ".trainstudy-hparams"  # the sweep-level experiment's event file, replaced on each write
# what the first page filters to (see tensorboard_url): the curves, not the one-point conv/* cards
CURVES_FILTER = "^(train|val)/"

# the censored pair (defined for every run), then the headline numbers; conv/steps_to_target sixth (see above)
METRIC_DEFINITIONS = {
    "conv/steps_observed": "steps to target where reached, else the steps the run made (censored: see conv/reached)",
    "conv/reached": "1 when the run reached the target, 0 when not (conv/steps_observed is then censored)",
    "conv/steps_to_target": "first step whose validation reached the target; empty when not reached",
}


def seed_curve(job_result: dict[str, Any], curve: str) -> dict[int, float]:
    """One job's curve as {step: value}, finite values only (train/loss at steps 1..n, validations at theirs)."""
    if curve == "train/loss":
        points = enumerate(job_result.get("train_loss") or [], start=1)
    else:
        points = ((p["step"], p[curve]) for p in job_result.get("curve") or [] if curve in p)
    return {int(step): float(v) for step, v in points if v is not None and math.isfinite(v)}


def group_curve(group: Group, curve: str) -> list[tuple[int, float, float, int]]:
    """(step, mean, sample std, n) at every step where at least one of the group's trained seeds has a value."""
    per_seed = [seed_curve(j.result or {}, curve) for j in group.trained]
    steps = sorted(set().union(*per_seed)) if per_seed else []
    rows = []
    for step in steps:
        values = [s[step] for s in per_seed if step in s]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append((step, statistics.fmean(values), std, len(values)))
    return rows


def layout(curves: list[str]) -> layout_pb2.Layout:
    """The Custom Scalars page: one margin chart per curve (a line per group with its band)."""
    charts = [layout_pb2.Chart(title=f"{curve} (mean ± sample std over seeds)", margin=layout_pb2.MarginChartContent(
        series=[layout_pb2.MarginChartContent.Series(value=f"seeds/{curve}/mean", lower=f"seeds/{curve}/lower",
                                                      upper=f"seeds/{curve}/upper")])) for curve in curves]
    return layout_pb2.Layout(category=[layout_pb2.Category(title=LAYOUT_TITLE, chart=charts)])


def _layout_event(scalars_layout: layout_pb2.Layout) -> event_pb2.Event:
    """The custom_scalars plugin's summary, as its summary.pb makes it (which needs TensorFlow)."""
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=layout_metadata.CONFIG_SUMMARY_TAG, metadata=layout_metadata.create_summary_metadata(),
        tensor=tensor_util.make_tensor_proto(scalars_layout.SerializeToString()))])
    return event_pb2.Event(step=0, summary=summary)


def write_group_runs(report: Report, tb_root: Path) -> list[Path]:
    """One TensorBoard run per group under ``tb_root/groups`` (replaced as a whole); the folders written."""
    out = Path(tb_root) / GROUPS
    shutil.rmtree(out, ignore_errors=True)  # a second report after more jobs ended: no duplicate points
    written = []
    for group in report.groups:
        curves = {c: rows for c in CURVES if (rows := group_curve(group, c))}
        if not curves:
            continue
        folder = out / folder_name(group.name)
        writer = Writer(str(folder))
        for curve, rows in curves.items():
            for step, mean, std, n in rows:
                writer.add_scalar(f"seeds/{curve}/mean", mean, step,
                                  description=f"mean of {curve} over the group's seeds that have this step")
                writer.add_scalar(f"seeds/{curve}/lower", mean - std, step, description="mean - sample std")
                writer.add_scalar(f"seeds/{curve}/upper", mean + std, step, description="mean + sample std")
                writer.add_scalar(f"seeds/{curve}/n", n, step, description="seeds with a finite value here")
        writer.close()
        layout_writer = EventFileWriter(str(folder), filename_suffix=".layout")
        layout_writer.add_event(_layout_event(layout(list(curves))))
        layout_writer.close()
        written.append(folder)
    return written


def _domain(values: list[Any]) -> summary_v2.Domain | None:
    """The discrete domain of an hparam's values as the runs' session infos hold them (numbers as floats)."""
    distinct = set(values)
    if all(isinstance(v, bool) for v in distinct):
        return summary_v2.Discrete(distinct)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct):
        return summary_v2.Discrete({float(v) for v in distinct})
    if all(isinstance(v, str) for v in distinct):
        return summary_v2.Discrete(distinct)
    return None


def headline_metrics(report: Report) -> list[str]:
    """The HParams metrics in the order the table shows them (its first five visible): the censored pair, the
    target metric's best, the test split's, then conv/steps_to_target and the rest by name."""
    seen = {k for j in report.jobs for k in j.metrics if k.startswith(("conv/", "test/"))}
    first = ["conv/steps_observed", "conv/reached", best_key(report.metric or "val/acc"),
             report.test_metric or "test/acc", "test/loss", "conv/steps_to_target"]
    return [k for k in first if k in seen] + sorted(seen - set(first))


def experiment_summary(report: Report) -> summary_pb2.Summary | None:
    """The sweep's HParams experiment: every flat hparam the jobs recorded (differs: its values differ between
    jobs) and the metrics in headline order; None before any job recorded its hparams."""
    values: dict[str, list[Any]] = {}
    for job in report.jobs:
        for key, value in ((job.result or {}).get("hparams") or {}).items():
            values.setdefault(key, []).append(value)
    if not values:
        return None
    infos = []
    for name, seen in values.items():
        info = api_pb2.HParamInfo(name=name, differs=len(set(seen)) > 1)
        if (domain := _domain(seen)) is not None:
            domain.update_hparam_info(info)
        infos.append(info)
    metrics = [summary_v2.Metric(tag, description=METRIC_DEFINITIONS.get(tag)).as_proto()
               for tag in headline_metrics(report)]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)
    content = plugin_data_pb2.HParamsPluginData(experiment=experiment)
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=hparams_metadata.EXPERIMENT_TAG, metadata=hparams_metadata.create_summary_metadata(content),
        tensor=hparams_metadata.NULL_TENSOR)])


def write_hparams_config(report: Report, tb_root: Path) -> Path | None:
    """The sweep-level HParams experiment into ``tb_root`` (replacing an earlier one); the event file."""
    summary = experiment_summary(report)
    if summary is None:
        return None
    for old in Path(tb_root).glob(f"events.out.tfevents.*{HPARAMS_SUFFIX}"):
        old.unlink()
    writer = EventFileWriter(str(tb_root), filename_suffix=HPARAMS_SUFFIX)
    writer.add_event(event_pb2.Event(step=0, summary=summary))
    writer.close()
    return next(Path(tb_root).glob(f"events.out.tfevents.*{HPARAMS_SUFFIX}"))


def write_tensorboard(report: Report) -> dict[str, Any]:
    """The group runs and the HParams experiment of a sweep whose jobs share ``<sweep>/tb`` (nothing for a folder
    of single runs, which has none); what was written."""
    tb_root = report.root / "tb"
    if not tb_root.is_dir():
        return {}
    return {"groups": write_group_runs(report, tb_root), "hparams": write_hparams_config(report, tb_root)}


def tensorboard_url(port: int = 6006) -> str:
    """TensorBoard's first page filtered to the curves (its tagFilter URL parameter); the conv/* numbers are
    in the HParams tab, the groups' mean ± std in Custom Scalars."""
    return f"http://localhost:{port}/?tagFilter={quote(CURVES_FILTER, safe='')}#timeseries"
