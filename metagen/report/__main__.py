"""`python -m metagen.report DIR [--out OUT]`: (re)build the report of runs."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from metagen.report import ReportError, build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m metagen.report",
        description="Merge the runs under DIR into tables, figures and a page.",
    )
    parser.add_argument("dir", type=Path, help="a run dir, a sweep dir, or any dir")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: DIR/report)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build_report(args.dir, args.out)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
