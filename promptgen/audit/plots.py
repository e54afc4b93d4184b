"""The audit's figures, drawn with matplotlib (Agg, no screen) to PNG bytes."""

from __future__ import annotations

import io

__all__ = ["histogram_png"]


def histogram_png(series: dict[str, list[float]], *, title: str, xlabel: str, bins: int = 30,
                  zero_line: bool = False) -> bytes:
    """Overlaid histograms, one per named series, as a PNG."""
    from matplotlib.figure import Figure  # a Figure draws without pyplot or a backend choice

    figure = Figure(figsize=(7, 3.2), dpi=100)
    axes = figure.add_subplot()
    values = [v for vs in series.values() for v in vs]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if low == high:
        low, high = low - 0.5, high + 0.5
    for name, data in series.items():
        if data:
            axes.hist(data, bins=bins, range=(low, high), alpha=0.55, label=f"{name} (n={len(data)})")
    if zero_line:
        axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("classes")
    if len(series) > 1 or zero_line:
        axes.legend(fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
