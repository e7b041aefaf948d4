"""Show what an init strategy does, the way the tutorial prints it, and check its std against the formula.

    python scripts/inspect_init.py init=constant init.value=7.7          # Linear(2, 4), as in the tutorial
    python scripts/inspect_init.py init=kaiming_normal init.mode=fan_out --small 1 4 --large 500 1000

Takes the same Hydra overrides as train.py (init=..., init.<param>=..., model.activation=...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch import nn

from trainstudy.errors import UserError
from trainstudy.inits import apply_init

CONF = Path(__file__).resolve().parents[1] / "conf"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", nargs=2, type=int, default=[2, 4], metavar=("IN", "OUT"),
                        help="the Linear layer printed in full (default: 2 4)")
    parser.add_argument("--large", nargs=2, type=int, default=[1000, 1000], metavar=("IN", "OUT"),
                        help="the Linear layer whose statistics are measured (default: 1000 1000)")
    args, overrides = parser.parse_known_args(argv)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    activation = cfg.model.get("activation")
    torch.manual_seed(cfg.seed)
    try:
        small = nn.Linear(*args.small)
        apply_init(nn.Sequential(small), cfg.init, activation)
        large = nn.Linear(*args.large)
        aim = apply_init(nn.Sequential(large), cfg.init, activation)["0"]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"init={cfg.init.name} on nn.Linear({args.small[0]}, {args.small[1]}):")
    print(small.weight)
    print(small.bias)
    w = large.weight
    print(f"\nnn.Linear({args.large[0]}, {args.large[1]}), {w.numel():,} weights: "
          f"mean {w.mean().item():+.5f}  std {w.std().item():.5f}  "
          f"aim {'n/a (no formula fixes it)' if aim is None else f'{aim:.5f}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
