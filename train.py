"""Entry point: ``python train.py init=kaiming loss=ce`` (one run) or ``python train.py -m ...`` (a sweep)."""

import sys

import hydra
from omegaconf import DictConfig

from trainstudy.cli import exit_status, run
from trainstudy.errors import install_hydra_one_line_errors


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    install_hydra_one_line_errors()
    main()
    sys.exit(exit_status())
