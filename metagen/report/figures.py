"""Report figures, each drawn on one Axes so the dashboard can reuse them."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from metagen.compare import scorer_pairs, wide_by_scorer
from metagen.report import stats

# Reports are built by headless runs and sweeps; figures never go to a screen.
matplotlib.use("Agg")

NATS = "nats/byte"


@dataclass
class FigureData:
    """What the figures draw from, prepared once."""

    texts: pd.DataFrame
    wide: pd.DataFrame  # per-byte LL, text x scorer
    matrix: pd.DataFrame  # M[scorer, generator]
    preferences: pd.DataFrame  # by generator and sampler

    @classmethod
    def build(cls, texts: pd.DataFrame, matrix: pd.DataFrame) -> FigureData:
        wide = wide_by_scorer(texts, "text_id")
        pivot = stats.matrix_pivot(matrix)
        prefs = stats.preference_rates(texts, ["generator", "sampler"])
        return cls(texts, wide, pivot, prefs)

    @property
    def n_temperatures(self) -> int:
        return self.texts["temperature"].dropna().nunique()


@dataclass
class RenderedFigure:
    png: bytes
    pdf: bytes


def _no_data(ax: Axes, title: str, why: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_ratio_hist(ax: Axes, data: FigureData) -> None:
    title = "Likelihood ratio per text"
    pairs = scorer_pairs(data.wide)
    if not pairs:
        return _no_data(ax, title, "needs two scorers")
    for a, b in pairs:
        ratio = (data.wide[b] - data.wide[a]).dropna()
        ax.hist(ratio, bins=30, alpha=0.5, label=f"{b} − {a} (n={len(ratio)})")
    ax.axvline(0, color="black", linewidth=1, linestyle="--")
    ax.set(title=title, xlabel=f"likelihood ratio ({NATS})", ylabel="texts")
    ax.legend(fontsize="small")


def plot_matrix_heatmap(ax: Axes, data: FigureData) -> None:
    title = f"Mean per-byte log-likelihood ({NATS})"
    matrix = data.matrix
    if matrix.empty:
        return _no_data(ax, title, "no scored texts")
    image = ax.imshow(matrix.to_numpy(dtype=float), cmap="viridis", aspect="auto")
    middle = np.nanmean(matrix.to_numpy(dtype=float))
    for (row, col), value in np.ndenumerate(matrix.to_numpy(dtype=float)):
        colour = "black" if value > middle else "white"
        ax.text(col, row, f"{value:.3f}", ha="center", va="center", color=colour)
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=30, ha="right")
    ax.set_yticks(range(matrix.shape[0]), matrix.index)
    ax.set(title=title, xlabel="generator (whose text)", ylabel="scorer")
    ax.figure.colorbar(image, ax=ax, label=NATS)


def plot_perplexity_scatter(ax: Axes, data: FigureData) -> None:
    title = "Perplexity per token, scorer vs scorer"
    pairs = scorer_pairs(data.wide)
    if not pairs:
        return _no_data(ax, title, "needs two scorers")
    a, b = pairs[0]
    scored = data.texts[data.texts["perplexity"] > 0]
    ppl = scored.pivot_table("perplexity", "text_id", "scorer").reindex(columns=[a, b])
    generator = stats.text_info(data.texts)["generator"]
    ppl = ppl.dropna().join(generator)
    for name, group in ppl.groupby("generator"):
        ax.scatter(group[a], group[b], s=12, alpha=0.7, label=f"generator {name}")
    limits = [ppl[[a, b]].min().min(), ppl[[a, b]].max().max()] if len(ppl) else [1, 2]
    ax.plot(limits, limits, color="grey", linestyle="--", linewidth=1, label="equal")
    ax.set(xscale="log", yscale="log", title=f"{title} ({b} vs {a})")
    ax.set(xlabel=f"perplexity under {a}", ylabel=f"perplexity under {b}")
    ax.legend(fontsize="small")


def plot_preference_rates(ax: Axes, data: FigureData) -> None:
    title = "Share of texts each scorer likes most"
    prefs = data.preferences
    if prefs.empty:
        return _no_data(ax, title, "needs two scorers on the same texts")
    columns = ["rate", "ci_low", "ci_high"]
    table = prefs.set_index(["generator", "sampler", "scorer"])[columns]
    table = table.unstack("scorer") * 100
    labels = [f"{generator}\n{sampler}" for generator, sampler in table.index]
    scorers = list(table["rate"].columns)
    width = 0.8 / len(scorers)
    for index, scorer in enumerate(scorers):
        rate = table["rate"][scorer].to_numpy(dtype=float)
        bounds = np.vstack([table["ci_low"][scorer], table["ci_high"][scorer]])
        x = np.arange(len(labels)) + (index - (len(scorers) - 1) / 2) * width
        errors = np.abs(bounds - rate)
        ax.bar(x, rate, width, yerr=errors, capsize=3, label=f"scorer {scorer}")
    ax.set_xticks(range(len(labels)), labels, fontsize="small")
    ax.set_ylim(0, 105)
    ylabel = "texts preferred (%, 95% CI)"
    ax.set(title=title, xlabel="generator / sampler", ylabel=ylabel)
    ax.legend(fontsize="small")


def plot_ll_vs_temperature(ax: Axes, data: FigureData) -> None:
    title = "Per-byte log-likelihood vs temperature"
    scored = data.texts[data.texts["ll_per_byte"].notna()]
    if scored.empty:
        return _no_data(ax, title, "no scored texts")
    generators = sorted(scored["generator"].unique())
    dashes = ["-", "--", ":", "-."]
    styles = {name: dashes[i % len(dashes)] for i, name in enumerate(generators)}
    colours = {
        name: f"C{i}" for i, name in enumerate(sorted(scored["scorer"].unique()))
    }
    for (scorer, generator), group in scored.groupby(["scorer", "generator"]):
        by_t = group.groupby("temperature")["ll_per_byte"].agg(["mean", "sem"])
        label = f"scorer {scorer}"
        if len(generators) > 1:
            label += f", generator {generator}"
        yerr = 1.96 * by_t["sem"].fillna(0)
        style = dict(linestyle=styles[generator], color=colours[scorer], capsize=3)
        ax.errorbar(by_t.index, by_t["mean"], yerr, marker="o", label=label, **style)
    ylabel = f"mean log-likelihood ({NATS}, 95% CI)"
    ax.set(title=title, xlabel="sampling temperature", ylabel=ylabel)
    ax.legend(fontsize="small")


PLOTS: dict[str, Callable[[Axes, FigureData], None]] = {
    "ratio_hist": plot_ratio_hist,
    "matrix_heatmap": plot_matrix_heatmap,
    "perplexity_scatter": plot_perplexity_scatter,
    "preference_rates": plot_preference_rates,
    "ll_vs_temperature": plot_ll_vs_temperature,
}


def figure_names(data: FigureData) -> list[str]:
    """The figures this data supports; temperature needs more than one value."""
    names = list(PLOTS)
    if data.n_temperatures < 2:
        names.remove("ll_vs_temperature")
    return names


def _render(figure: Figure) -> RenderedFigure:
    figure.tight_layout()
    png, pdf = io.BytesIO(), io.BytesIO()
    figure.savefig(png, format="png", dpi=110)
    figure.savefig(pdf, format="pdf", metadata={"CreationDate": None})
    return RenderedFigure(png.getvalue(), pdf.getvalue())


def render_figures(
    texts: pd.DataFrame, matrix: pd.DataFrame
) -> dict[str, RenderedFigure]:
    """Every figure as PNG and PDF bytes, plus the dashboard combining them."""
    data = FigureData.build(texts, matrix)
    names = figure_names(data)
    rendered = {}
    for name in names:
        figure = Figure(figsize=(7, 5))
        PLOTS[name](figure.add_subplot(), data)
        rendered[name] = _render(figure)
    dashboard = Figure(figsize=(21, 11))
    for index, name in enumerate(names):
        PLOTS[name](dashboard.add_subplot(2, 3, index + 1), data)
    dashboard.suptitle("metagen: how the scorers judge each other's text", fontsize=16)
    rendered["dashboard"] = _render(dashboard)
    return rendered
