"""What the pages draw with: plotly figures built from engine snapshots (:mod:`.charts`) and
number formats (:mod:`.fmt`). Nothing here reads an engine or calls Streamlit.

Example:
    >>> from core.ui import charts, fmt
    >>> fmt.fmt_ms(0.4213)
    '0.42 ms'
"""

from __future__ import annotations

from . import charts, fmt

__all__ = ["charts", "fmt"]
