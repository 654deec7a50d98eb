"""Entry point: `python -m metagen [overrides]` or the `metagen` console script."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from metagen.config import CONF_DIR, register_configs
from metagen.jobs import finish, run_job
from metagen.pipeline import RunResult

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def app(cfg: DictConfig) -> RunResult:
    return run_job(cfg)


def main() -> None:
    finish(app)


if __name__ == "__main__":
    main()
