"""A self-contained HTML report of the advisor's measurements (:mod:`vecpress.report.page`)."""

from __future__ import annotations

from .page import MISSING, pareto_front, write_report

__all__ = ["MISSING", "pareto_front", "write_report"]
