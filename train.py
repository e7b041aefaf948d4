"""Entry point: ``python train.py init=kaiming loss=ce`` (one run) or ``python train.py -m ...`` (a sweep)."""

import sys

from trainstudy import interrupts

if __name__ == "__main__":  # before the heavy imports: a Ctrl-C or SIGTERM while torch loads ends in one line
    interrupts.install(interrupts.exit_process)

import hydra
from omegaconf import DictConfig

from trainstudy.cli import command_line, exit_status, run
from trainstudy.objective import objective_value


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return objective_value(cfg, run(cfg))  # what a sweeper that optimizes (hparams_search=lr_optuna) reads


if __name__ == "__main__":
    sys.argv[1:] = command_line(sys.argv[1:])
    main()
    sys.exit(interrupts.exit_status() or exit_status())  # 128 + the signal that stopped a sweep, else 0 or 1
