"""QCMetrics core: quality measures, rule checks, verdicts and QC reports (R-9, R-10, Appendix D).

Metric kernels need only arrays and spacing; case readers use RTSSBridge's geometry and
readers. Pure Python (no slicer, qt, ctk or vtk); scene adapters live in :mod:`QCMetricsLib.mrml`.
"""

from __future__ import annotations

__version__ = "0.1.0"
