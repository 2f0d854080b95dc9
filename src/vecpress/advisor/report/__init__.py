"""A self-contained HTML report of the advisor's measurements.

:func:`write_report` renders one HTML file that needs nothing else to be read:
the plots are PNG images embedded as ``data:`` URIs, the style sheet is inline
and there is no JavaScript (what the page holds: :mod:`vecpress.advisor.report.page`).
:func:`pareto_front` is the frontier the plots draw and the advisor chooses on.

The package's modules, by job:

* :mod:`~vecpress.advisor.report.page`: :func:`write_report` and the HTML page;
* :mod:`~vecpress.advisor.report.plots`: the plots (matplotlib, imported only there);
* :mod:`~vecpress.advisor.report.style`: sizes, markers, colours and the style sheet;
* :mod:`~vecpress.advisor.report.values`: formatting of values and argument checks;
* :mod:`~vecpress.advisor.report.pareto`: :func:`pareto_front`.
"""

from __future__ import annotations

from .page import write_report
from .pareto import pareto_front
from .values import MISSING

__all__ = ["MISSING", "pareto_front", "write_report"]
