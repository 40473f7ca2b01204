"""One matplotlib style for every static figure (PNG, SVG and PDF)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib as mpl

__all__ = ["paper_style", "STYLE", "FORMATS"]

FORMATS = ("png", "svg", "pdf")

STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
    "savefig.bbox": "tight",
    "savefig.dpi": 150,
    "pdf.fonttype": 42,  # TrueType in PDFs (editable text for journals)
    "svg.fonttype": "none",
}


@contextmanager
def paper_style() -> Iterator[None]:
    """Apply :data:`STYLE` while the figures of an experiment are drawn."""
    with mpl.rc_context(STYLE):  # type: ignore[arg-type]
        yield
