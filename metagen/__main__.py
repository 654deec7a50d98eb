"""Entry point: `python -m metagen [overrides]` or the `metagen` console script."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from metagen.config import register_configs
from metagen.jobs import finish, run_job
from metagen.pipeline import RunResult

register_configs()
# An absolute path, so `python -m metagen` and the `metagen` script find the same tree.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def app(cfg: DictConfig) -> RunResult:
    return run_job(cfg)


def main() -> None:
    finish(app)


if __name__ == "__main__":
    main()
