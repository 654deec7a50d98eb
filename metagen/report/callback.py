"""Hydra callback: build the sweep's report when a multirun ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class ReportCallback(Callback):
    """Writes <sweep dir>/report/ after the last job of a multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # Imported here: matplotlib and scipy need not load for a single run.
        from metagen.report import build_report

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            index = build_report(sweep_dir)
        except Exception:
            # The sweep itself finished; a report failure must not turn it into one.
            log.exception("Report for %s failed", sweep_dir)
            return
        log.info("Report: %s", index)
