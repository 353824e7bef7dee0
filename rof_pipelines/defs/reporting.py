"""Plots and tables for Dagster metadata: what an analyst reads in the UI."""

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on workers
import matplotlib.pyplot as plt
from dagster import MetadataValue
from matplotlib.ticker import MaxNLocator


def line_plot_markdown(
    title: str,
    series: Mapping[str, Sequence[float]] | Mapping[str, Any],
    xlabel: str = "",
    ylabel: str = "",
    x: Sequence[Any] | None = None,
) -> MetadataValue:
    """A line chart embedded in markdown as a PNG data URI (the UI renders it inline)."""
    figure, axes = plt.subplots(figsize=(7, 3.2), dpi=100)
    for label, values in series.items():
        axes.plot(list(x) if x is not None else range(len(values)), list(values), label=label, linewidth=1.2)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if x is None:  # counts (episodes, generations) have whole-number ticks
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(series) > 1:
        axes.legend()
    if x is not None:  # dates: slanted labels that do not overlap
        figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def finite_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """Floats Dagster can store and show: inf/nan become readable strings."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = "inf" if value > 0 else ("-inf" if value < 0 else "n/a")
        else:
            out[key] = value
    return out


def metrics_markdown(rows: Mapping[str, Mapping[str, Any]]) -> MetadataValue:
    """A markdown table: one column per named result, one row per metric."""
    names = list(rows)
    metrics = list(dict.fromkeys(metric for row in rows.values() for metric in row))
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for metric in metrics:
        cells = [_cell(rows[name].get(metric)) for name in names]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return MetadataValue.md("\n".join(lines))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
