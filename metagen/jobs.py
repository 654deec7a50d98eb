"""The Hydra side of a run: job dirs, status files, resume, and clean failures.

A job never raises into Hydra: it records its failure in `status.json` and returns,
so one failed job does not stop a sweep and the end-of-sweep report still runs.
The process exit code still says whether every job succeeded.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from metagen import score
from metagen.errors import UserError
from metagen.pipeline import TABLES, RunResult, config_hash, run, to_config
from metagen.tables import write_text_atomic

log = logging.getLogger(__name__)
STATUS_FILE = "status.json"


class _State:
    """What this process saw: its sweep, whether Hydra ended it, failed job dirs."""

    sweep_dir: Path | None = None
    sweep_ended = False
    started = 0.0
    failed: list[str] = []


def run_job(cfg: DictConfig) -> RunResult:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    cache = Path(hydra_cfg.sweep.dir if multirun else run_dir) / ".score_cache"
    started = time.time()
    try:
        config = to_config(cfg)
        digest = config_hash(asdict(config))
        if config.resume and completed(run_dir, digest):
            log.info("%s already completed with this config: skipped", run_dir)
            return RunResult("skipped", digest)
        write_status(
            run_dir, {"status": "running", "config_hash": digest, "started": started}
        )
        result = run(config, run_dir, cache)
    except UserError as err:
        log.error("%s", err)
        result = RunResult("failed", _hash_or_none(cfg), error=str(err))
    except KeyboardInterrupt:
        write_status(
            run_dir, {"status": "interrupted", "started": started, "ended": time.time()}
        )
        raise
    except Exception as err:  # a bug, not bad input: keep the traceback for the log
        log.error("run failed:\n%s", traceback.format_exc())
        result = RunResult(
            "failed", _hash_or_none(cfg), error=f"{type(err).__name__}: {err}"
        )
    result.seconds["started"] = started
    if result.status == "failed":
        _State.failed.append(str(run_dir))
    return result


def _hash_or_none(cfg: DictConfig) -> str:
    try:
        return config_hash(asdict(to_config(cfg)))
    except Exception:
        return ""


def completed(run_dir: Path, digest: str) -> bool:
    """Finished with this very config and score definitions, and its tables are
    still there."""
    status = read_status(run_dir) or {}
    return (
        status.get("status") == "completed"
        and status.get("config_hash") == digest
        and status.get("metrics_version") == score.METRICS_VERSION
        and all((run_dir / name).is_file() for name in TABLES)
    )


def read_status(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_status(run_dir: Path, status: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(status, indent=2) + "\n", run_dir / STATUS_FILE)


class StatusCallback(Callback):
    """Writes every job's status file when the job ends, whatever happened."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.runtime.output_dir)
        try:
            result = job_return.return_value
        except Exception as err:  # the job raised past run_job
            result = RunResult("failed", "", error=f"{type(err).__name__}: {err}")
        if not isinstance(result, RunResult):
            result = RunResult("failed", "", error=f"the job returned {result!r}")
        if result.status == "skipped":
            return  # the completed status from the earlier run stays
        status = asdict(result)
        status["started"] = status["seconds"].pop("started", None)
        status["ended"] = time.time()
        status["overrides"] = list(OmegaConf.to_container(config.hydra.overrides.task))
        write_status(run_dir, status)


class SweepTracker(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _State.sweep_dir = Path(config.hydra.sweep.dir)
        _State.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _State.sweep_ended = True


def finish(app: Callable[[], None]) -> None:
    """Run the Hydra app; report a sweep Hydra ended early; exit 1 on failures."""
    code = 0
    try:
        app()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except KeyboardInterrupt:
        print(
            "interrupted: no partial table was written; rerun to finish",
            file=sys.stderr,
        )
        code = 130
    except Exception as err:  # Hydra's own command-line checks raise before any job
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        code = 2
    sweep = _State.sweep_dir
    if sweep is not None and not _State.sweep_ended and code != 130:
        # Hydra skips on_multirun_end when a job crashed hard; report anyway.
        from metagen.report import build_report

        try:
            log.info("Report: %s", build_report(sweep))
        except Exception as err:
            log.error("report failed: %s", err)
    failed = set(_State.failed) | set(
        failed_runs(sweep, _State.started) if sweep else []
    )
    if failed:
        names = ", ".join(sorted(failed))
        print(f"error: {len(failed)} job(s) failed: {names}", file=sys.stderr)
        code = code or 1
    sys.exit(code)


def failed_runs(sweep: Path, since: float) -> list[str]:
    """Job dirs of this sweep (possibly run in other processes) that failed."""
    found = []
    for path in sweep.glob(f"**/{STATUS_FILE}"):
        status = read_status(path.parent) or {}
        if status.get("status") == "failed" and (status.get("ended") or 0) >= since:
            found.append(str(path.parent))
    return found
