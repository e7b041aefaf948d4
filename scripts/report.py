"""Turn a sweep (or a folder of runs) into a table and plots.

    python scripts/report.py outputs/multirun/2026-11-27/13-30-20          # one sweep, finished or not
    python scripts/report.py outputs/runs                                   # single runs side by side
    python scripts/report.py <sweep> --out docs/studies/deep_relu          # write the files elsewhere
    python scripts/report.py <sweep> --compare loss                         # rank losses across the workloads

Writes report.md (what every number means; groups with reached k/n and the median steps to target over every
seed, censored where not reached, with 95% intervals; paired comparisons; a performance profile across
workloads; every job's status) and the same as a self-contained report.html, report.csv (per group), jobs.csv
(per job), curves.csv (per job, step and metric), and figures as PNG + SVG (validation curve and train loss per
group, steps to target, activation std against depth, fraction reached by step t, the performance profile) into
the folder, and prints the tables. For a sweep, also its TensorBoard views: one run per group under
<sweep>/tb/groups/ (mean ± sample std over seeds, a Custom Scalars chart each) and the HParams experiment.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainstudy.errors import UserError
from trainstudy.report import (
    best_of_rows,
    build_report,
    group_rows,
    headline,
    markdown_table,
    unreadable_lines,
    write_report,
)
from trainstudy.report.tbgroups import GROUPS, tensorboard_url, write_tensorboard
from trainstudy.report.tables import paired_rows, profile_rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a sweep folder (outputs/multirun/<date>/<time>) or outputs/runs")
    parser.add_argument("--out", type=Path, default=None, help="where to write the files (default: the folder)")
    parser.add_argument("--best-of", default="optim.lr", metavar="KEY",
                        help="when the sweep varies KEY next to other keys, pick its best value for each "
                             "setting of the others (default: optim.lr; '' to turn off)")
    parser.add_argument("--compare", default="init", metavar="KEY",
                        help="the key that paired comparisons and the performance profile rank, within each setting "
                             "of the other varied keys (a workload); default: init, or the only key the sweep varies")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.folder, best_of=args.best_of or None, compare=args.compare or None)
        written = write_report(report, args.out)
        tensorboard = write_tensorboard(report)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(headline(report), "", markdown_table(*group_rows(report)), sep="\n")
    for line in unreadable_lines(report):
        print(line)
    picked = best_of_rows(report)
    if picked:
        print(f"\nbest {report.best_of}:", markdown_table(*picked), sep="\n")
    for title, table in (("paired, over shared seeds", paired_rows(report)),
                         ("performance profile", profile_rows(report))):
        if table:
            print(f"\n{title}:", markdown_table(*table), sep="\n")
    print(f"\nwrote {', '.join(str(p) for p in written.values())}")
    if tensorboard.get("groups"):
        print(f"TensorBoard: {len(tensorboard['groups'])} group runs (mean ± sample std over seeds) in "
              f"{report.root / 'tb' / GROUPS}, the HParams experiment in {report.root / 'tb'}; "
              f"tensorboard --logdir {report.root / 'tb'}, then open {tensorboard_url()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
