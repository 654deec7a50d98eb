"""Find run dirs under a root and merge their tables, recording broken runs."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

TABLES = ("generations", "scores")
RUN_MARKERS = ("status.json", "generations.parquet", ".hydra/config.yaml")


class ReportError(ValueError):
    """The report cannot be built at all (as opposed to a single broken run)."""


@dataclass
class RunInfo:
    """One run dir: what it holds and what is wrong with it."""

    run_dir: str  # relative to the report root, POSIX style
    status: str = "unknown"
    error: str = ""
    rows: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        return self.status != "completed" or bool(self.problems)

    @property
    def reason(self) -> str:
        reasons = list(self.problems)
        if self.status == "failed":
            error = self.error or "no error recorded"
            reasons.insert(0, f"status failed: {error} (tables left out)")
        elif self.status not in ("completed", "unknown"):
            reasons.insert(0, f"status {self.status}")
        return "; ".join(reasons)


@dataclass
class MergedRuns:
    """All runs' tables, concatenated, with a run_dir column."""

    generations: pd.DataFrame
    scores: pd.DataFrame
    runs: list[RunInfo]


def is_run_dir(path: Path) -> bool:
    return any((path / marker).exists() for marker in RUN_MARKERS)


def find_run_dirs(root: Path, skip: Path | None = None) -> list[Path]:
    """Run dirs at any depth under root (root itself included), sorted."""
    skip_resolved = skip.resolve() if skip is not None else None
    found = []
    for current, subdirs, _ in os.walk(root):
        path = Path(current)
        if is_run_dir(path):
            found.append(path)
            subdirs.clear()  # a run's own subfolders (.hydra, caches) hold no runs
            continue
        subdirs[:] = sorted(
            name
            for name in subdirs
            if not name.startswith(".")
            and not _is_report_dir(path / name, skip_resolved)
        )
    return sorted(found)


def _is_report_dir(path: Path, skip: Path | None) -> bool:
    # An earlier report holds merged parquet files that would look like a run.
    if skip is not None and path.resolve() == skip:
        return True
    return path.name == "report" and (path / "index.html").exists()


def load_runs(root: Path, skip: Path | None = None) -> MergedRuns:
    """Read every run under root; a broken run is recorded, never raised."""
    if not root.is_dir():
        raise ReportError(f"{root} is not a directory")
    run_dirs = find_run_dirs(root, skip)
    if not run_dirs:
        raise ReportError(
            f"no runs found under {root} (a run dir holds status.json, "
            "generations.parquet or .hydra/config.yaml)"
        )
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
    runs = []
    for run_dir in run_dirs:
        info, tables = _load_run(root, run_dir)
        runs.append(info)
        for name, table in tables.items():
            frames[name].append(table)
    log.info("Found %d runs under %s (%d broken)", len(runs), root, _n_broken(runs))
    return MergedRuns(_concat(frames["generations"]), _concat(frames["scores"]), runs)


def _n_broken(runs: list[RunInfo]) -> int:
    return sum(run.broken for run in runs)


def _load_run(root: Path, run_dir: Path) -> tuple[RunInfo, dict[str, pd.DataFrame]]:
    relative = run_dir.relative_to(root).as_posix()
    info = RunInfo(run_dir=relative)
    _read_status(run_dir, info)
    tables = {}
    if info.status == "failed":
        # A failed run's tables may be partial: list the run, keep them out.
        return info, tables
    for name in TABLES:
        table = _read_table(run_dir / f"{name}.parquet", info)
        if table is not None:
            table = table.drop(columns="run_dir", errors="ignore")
            table.insert(0, "run_dir", relative)
            info.rows[name] = len(table)
            tables[name] = table
    return info, tables


def _read_status(run_dir: Path, info: RunInfo) -> None:
    path = run_dir / "status.json"
    if not path.exists():
        info.problems.append("status.json missing")
        return
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
        info.status = str(status.get("status", "unknown"))
        info.error = str(status.get("error") or "")
    except (OSError, ValueError, AttributeError) as error:
        info.problems.append(f"status.json unreadable ({_describe(error)})")


def _read_table(path: Path, info: RunInfo) -> pd.DataFrame | None:
    if not path.exists():
        info.problems.append(f"{path.name} missing")
        return None
    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow raises many types for corrupt files
        info.problems.append(f"{path.name} unreadable ({_describe(error)})")
        log.warning("Cannot read %s: %s", path, _describe(error))
        return None


def _describe(error: BaseException) -> str:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first_line[:200]}"


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=["run_dir"])
    return pd.concat(frames, ignore_index=True, sort=False)
