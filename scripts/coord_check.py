"""μP's coordinate check for any init: does each layer's mean |activation| stay put as the net gets wider?

    python scripts/coord_check.py data=digits model=mlp init=kaiming optim=adam optim.lr=0.01
    python scripts/coord_check.py data=digits init=xavier optim=sgd optim.lr=0.1 --widths 64 256 1024 --steps 2
    python scripts/coord_check.py data=digits init=kaiming optim=adam --out docs/studies/coord_check --name sp_adam

Trains the config's model at each width (model.width) for a few steps on one batch of data.batch_size training
samples, once per seed (seed, seed+1, ...), and writes to --out:
  <name>.csv         a row per width, layer, step, seed: mean |activation| (the readout's: its logits)
  <name>_slopes.csv  per layer and step, the least-squares slope of log mean|act| on log width
  <name>.png/.svg    a log-log panel per step, a line per layer (mean over seeds)
and prints each layer's slope at the last step, flagged where it exceeds --threshold (grows with width).

Takes the same Hydra overrides as train.py (data=, model.*, init=, init.*, loss=, optim=, optim.lr=, seed=,
threads=); a mistake in them ends in one line, as train.py's do.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from trainstudy.coordcheck import COLUMNS, GROWTH_THRESHOLD, coord_check, fit_slopes, plot_coord_check
from trainstudy.errors import UserError, report_user_errors
from trainstudy.train import set_threads, validate

CONF = Path(__file__).resolve().parents[1] / "conf"
WIDTHS = [64, 128, 256, 512, 1024, 2048]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", nargs="+", type=int, default=WIDTHS, metavar="W",
                        help=f"the widths (model.width) to train (default: {' '.join(map(str, WIDTHS))})")
    parser.add_argument("--steps", type=int, default=3,
                        help="optimizer steps; activations are recorded at steps 0 (init) to STEPS (default: 3)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds to average over, from `seed` on (default: 3)")
    parser.add_argument("--threshold", type=float, default=GROWTH_THRESHOLD,
                        help=f"a slope above it flags a layer as growing with width (default: {GROWTH_THRESHOLD}: "
                             "halfway between width-stable, 0, and growing like width, 1)")
    parser.add_argument("--out", type=Path, default=Path("outputs/coord_check"), help="the folder written to (default: outputs/coord_check)")
    parser.add_argument("--name", default="coord_check", help="the files' name (default: coord_check)")
    args, overrides = parser.parse_known_args(argv)
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    validate(cfg)
    set_threads(cfg.threads)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {args.out} cannot be created ({e.strerror}); use --out <a writable folder>") from None

    table = coord_check(cfg, args.widths, args.steps, range(cfg.seed, cfg.seed + args.seeds))
    slopes = fit_slopes(table, args.threshold)
    stem = args.out / args.name
    write_csv(table, stem.with_name(f"{args.name}.csv"), COLUMNS)
    write_csv(slopes, stem.with_name(f"{args.name}_slopes.csv"), list(slopes[0]))
    lr = cfg.optim.get("lr")
    title = (f"{cfg.model.name} ({cfg.model.get('activation', '')}, depth {cfg.model.get('depth')}) "
             f"on {cfg.data.name}, "
             f"init={cfg.init.name}, loss={cfg.loss.name}, {cfg.optim._target_.rsplit('.', 1)[-1]} lr={lr}, "
             f"{args.seeds} seed{'s' if args.seeds > 1 else ''}")
    figures = plot_coord_check(table, slopes, stem, title)

    last = max(s["step"] for s in slopes)
    print(f"coordinate check: {title}")
    print(f"slope of log mean|act| on log width at step {last} (widths {min(args.widths)}-{max(args.widths)}; "
          f"flagged above {args.threshold:g}):")
    for s in (s for s in slopes if s["step"] == last):
        flag = "  grows with width" if s["grows"] else ""
        print(f"  {s['name']:>10}  {s['slope']:+.2f} ± {s['stderr']:.2f}{flag}")
    print(f"wrote {stem.with_name(args.name + '.csv')}, {stem.with_name(args.name + '_slopes.csv')}, "
          + ", ".join(map(str, figures)))
    return 0


def write_csv(rows: list[dict], path: Path, columns: list[str] | tuple[str, ...]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    sys.exit(report_user_errors(lambda: main(sys.argv[1:]))())
