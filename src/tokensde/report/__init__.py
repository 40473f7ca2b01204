"""Reports: the offline HTML report of a run (plotly, a 3-D sphere viewer) and the static figure style."""

from .html import build_report, compare_reports
from .style import paper_style

__all__ = ["build_report", "compare_reports", "paper_style"]
