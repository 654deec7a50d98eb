"""The report as a document: findings in words, tables, figures, broken runs.

The document is a list of blocks rendered twice, to Markdown and to one
self-contained HTML page. Every string that reaches the HTML goes through
`esc` (or was built by `tag`, which escapes its parts), so model names,
prompts and generated text can never inject markup.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

import pandas as pd

from metagen.report import findings, stats
from metagen.report.figures import RenderedFigure
from metagen.report.findings import NATS, number, percent, temperature_label
from metagen.report.merge import RunInfo

FIGURE_CAPTIONS = {
    "dashboard": "All figures at a glance",
    "ratio_hist": "Likelihood ratio (per-byte LL of one scorer minus the other)",
    "matrix_heatmap": "Score matrix M: mean per-byte LL by scorer and generator",
    "perplexity_scatter": "Perplexity per token under two scorers, by generator",
    "preference_rates": "Preference rates by generator and sampler, 95% CI",
    "ll_vs_temperature": "Mean per-byte LL against sampling temperature",
}
CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; line-height: 1.5; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
blockquote { border-left: 3px solid #ccc; margin: 0.5em 0; padding-left: 1em; }
"""


class Markup(str):
    """HTML known to be safe: built from escaped parts only."""


def esc(value: object) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


VOID_TAGS = {"img", "meta"}


def tag(name: str, *children: object, **attrs: object) -> Markup:
    """An element; children and attribute values are escaped unless Markup."""
    attr_text = "".join(f' {key.rstrip("_")}="{esc(v)}"' for key, v in attrs.items())
    if name in VOID_TAGS:
        return Markup(f"<{name}{attr_text}>")
    return Markup(f"<{name}{attr_text}>{''.join(esc(c) for c in children)}</{name}>")


@dataclass
class Block:
    """One piece of the document; `kind` decides how it renders."""

    kind: str  # h1 | h2 | h3 | p | ul | quote | table | figure
    text: str = ""
    items: tuple[str, ...] = ()
    table: pd.DataFrame | None = None


def build_document(content: findings.ReportContent) -> list[Block]:
    """The whole report, top to bottom."""
    blocks = [
        Block("h1", "metagen report"),
        Block("p", findings.overview(content)),
        Block("h2", "Findings"),
        Block("ul", items=tuple(findings.main_findings(content))),
        Block("h2", "Key insights"),
        Block("ul", items=tuple(findings.key_insights(content))),
        Block("h2", "Interesting examples"),
    ]
    for title, quote in findings.examples(content):
        blocks += [Block("p", title), Block("quote", quote)]
    blocks.append(Block("h2", "Tables"))
    for title, table in _tables(content):
        blocks += [Block("h3", title), Block("table", table=table)]
    blocks.append(Block("h2", "Figures"))
    for name in content.figures:
        blocks.append(Block("figure", name, items=(FIGURE_CAPTIONS.get(name, name),)))
    blocks += [Block("h2", "Failed or broken runs"), _broken_runs(content.runs)]
    return blocks


def _broken_runs(runs: list[RunInfo]) -> Block:
    broken = [f"{run.run_dir}: {run.reason}" for run in runs if run.broken]
    if not broken:
        return Block("p", f"None: all {len(runs)} runs completed with their tables.")
    return Block("ul", items=tuple(broken))


def _runs_table(runs: list[RunInfo]) -> pd.DataFrame:
    records = [
        {
            "run dir": run.run_dir,
            "status": run.status,
            "generations": run.rows.get("generations", 0),
            "scores": run.rows.get("scores", 0),
            "problems": run.reason or "none",
        }
        for run in runs
    ]
    return pd.DataFrame(records)


def _tables(content: findings.ReportContent) -> list[tuple[str, pd.DataFrame]]:
    """The tables shown on the page, formatted as strings."""
    pivot = stats.matrix_pivot(content.matrix).map(number).reset_index()
    pivot.columns = ["scorer \\ generator", *pivot.columns[1:]]
    prefs = content.preferences[content.preferences["level"] != "cell"].copy()
    prefs["rate"] = [
        percent(*v) for v in prefs[["rate", "ci_low", "ci_high"]].to_numpy()
    ]
    prefs = prefs.drop(columns=["ci_low", "ci_high"])
    prefs["temperature"] = prefs["temperature"].map(temperature_label)
    self_pref = content.self_preference.copy()
    for column in ("estimate", "ci_low", "ci_high"):
        self_pref[column] = self_pref[column].map(lambda v: number(v, sign=True))
    agreement = content.agreement.copy()
    agreement["value"] = agreement["value"].map(number)
    return [
        ("Per scorer", _scorer_table(content.summary)),
        (f"Score matrix M: mean per-byte log-likelihood ({NATS})", pivot),
        (
            f"Self-preference ({NATS}; 95% bootstrap CI resampling prompts)",
            self_pref,
        ),
        (
            "Preference rates (share of texts a scorer likes most, 95% Wilson CI)",
            prefs,
        ),
        (f"Agreement: Spearman rho and best-of-N mean per-byte LL ({NATS})", agreement),
        ("Runs", _runs_table(content.runs)),
    ]


def _scorer_table(summary: pd.DataFrame) -> pd.DataFrame:
    rows = summary[summary["section"] == "scorer"]
    values = rows.set_index(["scorer", "metric"])["value"].unstack()
    counts = rows.set_index(["scorer", "metric"])["n"].unstack()
    if values.empty:
        return pd.DataFrame()
    columns = {
        "mean_perplexity": "mean perplexity per token",
        "mean_bits_per_byte": "mean bits per byte",
        "mean_ll_per_byte": f"mean log-likelihood ({NATS})",
    }
    table = values[list(columns)].map(number).rename(columns=columns)
    table.insert(0, "texts scored", counts["mean_ll_per_byte"])
    table["empty texts (not scored)"] = values["unscored_texts"].astype(int)
    return table.reset_index()


def _md_text(text: str) -> str:
    # Flatten to one line and neutralise table pipes and inline HTML.
    flat = " ".join(str(text).split())
    return html.escape(flat, quote=False).replace("|", "\\|")


def _md_table(table: pd.DataFrame) -> list[str]:
    if table.empty:
        return ["(no data)"]
    header = "| " + " | ".join(_md_text(c) for c in table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(_md_text(v) for v in row) + " |" for row in table.values]
    return [header, rule, *rows]


def render_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            lines.append("#" * int(block.kind[1]) + " " + _md_text(block.text))
        elif block.kind == "p":
            lines.append(_md_text(block.text))
        elif block.kind == "ul":
            lines += [f"- {_md_text(item)}" for item in block.items]
        elif block.kind == "quote":
            lines.append(f"> {_md_text(block.text)}")
        elif block.kind == "table":
            lines += _md_table(block.table)
        elif block.kind == "figure":
            caption = _md_text(block.items[0])
            lines.append(f"![{caption}](figures/{block.text}.png)")
        lines.append("")
    return "\n".join(lines)


def _html_table(table: pd.DataFrame) -> Markup:
    if table.empty:
        return tag("p", "(no data)")
    head = tag("tr", *(tag("th", column) for column in table.columns))
    rows = [tag("tr", *(tag("td", value) for value in row)) for row in table.values]
    return tag("table", tag("thead", head), tag("tbody", *rows))


def _html_block(block: Block, figures: dict[str, RenderedFigure]) -> Markup:
    if block.kind in ("h1", "h2", "h3", "p"):
        return tag(block.kind, block.text)
    if block.kind == "ul":
        return tag("ul", *(tag("li", item) for item in block.items))
    if block.kind == "quote":
        return tag("blockquote", block.text)
    if block.kind == "table":
        return _html_table(block.table)
    png = base64.b64encode(figures[block.text].png).decode("ascii")
    image = tag("img", src=f"data:image/png;base64,{png}", alt=block.items[0])
    return tag("figure", image, tag("figcaption", block.items[0]))


def render_html(blocks: list[Block], figures: dict[str, RenderedFigure]) -> str:
    """One self-contained page: inline CSS, figures as data URIs, no scripts."""
    head = tag(
        "head",
        tag("meta", charset="utf-8"),
        tag("title", "metagen report"),
        tag("style", Markup(CSS)),
    )
    body = tag("body", *(_html_block(block, figures) for block in blocks))
    return "<!DOCTYPE html>\n" + tag("html", head, body, lang="en") + "\n"
