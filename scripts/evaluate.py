"""Evaluate a finished run's final weights on one of its splits, with the run's own configuration.

    python scripts/evaluate.py outputs/runs/2026-12-02/14-17-40               # the test split
    python scripts/evaluate.py outputs/runs/2026-12-02/14-17-40 split=val     # or val, or train
    python scripts/evaluate.py <run folder> data_dir=/elsewhere/data          # the data moved since

Prints one line, e.g. ``test/acc 0.9530 · test/loss 0.1612 · 10,000 samples``: the numbers the run recorded
in its metrics.json (it loads checkpoints/last.ckpt, the weights the run ended with).
"""

from __future__ import annotations

import sys
from pathlib import Path

from trainstudy.errors import EXIT_USER_ERROR, UserError
from trainstudy.evaluation import evaluate_run, metrics_line

USAGE = "usage: python scripts/evaluate.py <run folder> [split=test|val|train] [data_dir=<folder>]"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() if argv else USAGE, file=sys.stderr if not argv else sys.stdout)
        return 0 if argv else EXIT_USER_ERROR
    options = dict(a.split("=", 1) for a in argv[1:] if "=" in a)
    unknown = [a for a in argv[1:] if "=" not in a or a.split("=", 1)[0] not in ("split", "data_dir")]
    try:
        if unknown:
            raise UserError(f"unknown argument {unknown[0]!r}; {USAGE}")
        metrics, samples = evaluate_run(Path(argv[0]), options.get("split", "test"), options.get("data_dir"))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(metrics_line(metrics, samples))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
