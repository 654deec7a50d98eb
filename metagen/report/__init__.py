"""Cross-run report: merge runs, compute statistics, write tables, figures, page.

`build_report(root)` reads every run dir under root and writes root/report/.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from metagen.analyze import summarize
from metagen.report import page, stats
from metagen.report.figures import render_figures
from metagen.report.findings import ReportContent
from metagen.report.merge import MergedRuns, ReportError, load_runs
from metagen.tables import replace_atomic

__all__ = ["ReportError", "build_report"]

log = logging.getLogger(__name__)


def build_report(root: Path, out: Path | None = None) -> Path:
    """Write the report for every run under root; return the path of index.html.

    Broken runs are listed in the report; only a root without runs raises
    ReportError.
    """
    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    merged = load_runs(root, skip=out)
    content = _analyse(root, merged)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    _write_tables(out, merged, content)
    _write_figures(out / "figures", content)
    blocks = page.build_document(content)
    _write_atomic(out / "report.md", page.render_markdown(blocks).encode())
    html = page.render_html(blocks, content.figures)
    index = out / "index.html"
    _write_atomic(index, html.encode())
    log.info("Report for %d runs written: %s", len(merged.runs), index)
    return index


def _analyse(root: Path, merged: MergedRuns) -> ReportContent:
    texts = stats.scored_texts(merged.generations, merged.scores)
    matrix = stats.score_matrix(texts)
    return ReportContent(
        root=str(root),
        runs=merged.runs,
        texts=texts,
        summary=_summarize_all(merged),
        matrix=matrix,
        self_preference=stats.self_preference(texts),
        preferences=stats.preference_table(texts),
        agreement=stats.agreement(texts),
        figures=render_figures(texts, matrix),
    )


def _summarize_all(merged: MergedRuns) -> pd.DataFrame:
    """The per-run summary over all runs, keyed so ids stay unique across runs."""
    tables = []
    for table in (merged.generations, merged.scores):
        if "generation_id" not in table.columns:
            table = table.assign(generation_id=pd.Series(dtype="str"))
        run_dir = table["run_dir"].astype(str)
        tables.append(
            table.assign(generation_id=run_dir + "/" + table["generation_id"])
        )
    return summarize(*tables)


def _write_atomic(path: Path, data: bytes | Callable[[Path], None]) -> None:
    write = data if callable(data) else (lambda tmp: tmp.write_bytes(data))
    replace_atomic(path, write)


def _write_tables(out: Path, merged: MergedRuns, content: ReportContent) -> None:
    for name, table in (("generations", merged.generations), ("scores", merged.scores)):
        _write_atomic(out / f"{name}.parquet", lambda p, t=table: t.to_parquet(p))
    csvs = {
        "matrix": content.matrix,
        "self_preference": content.self_preference,
        "preferences": content.preferences,
        "agreement": content.agreement,
    }
    for name, table in csvs.items():
        _write_atomic(out / f"{name}.csv", lambda p, t=table: t.to_csv(p, index=False))


def _write_figures(folder: Path, content: ReportContent) -> None:
    for name, figure in content.figures.items():
        _write_atomic(folder / f"{name}.png", figure.png)
        _write_atomic(folder / f"{name}.pdf", figure.pdf)
    # A figure this data no longer supports must not linger from an older report.
    for stale in [*folder.glob("*.png"), *folder.glob("*.pdf")]:
        if stale.stem not in content.figures:
            stale.unlink()
