"""Figures for the HTML pages: PNG embedding and the membership ROC curve in log-log axes.

matplotlib is optional (the ``plots`` extra): :func:`roc_html` draws the ROC curves when
it is installed and writes a table of their points when it is not, so a page always
carries the curve.

Example:
    >>> page = roc_html([RocCurve(label="rmia", fpr=[0.0, 0.5, 1.0], tpr=[0.0, 0.7, 1.0])],
    ...                 use_matplotlib=False)
    >>> "<table" in page and "rmia" in page
    True
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from shieldsplit.functional.membership import dp_tpr_bound

#: Rows of the fallback table per curve (evenly spaced along it in log FPR).
TABLE_POINTS = 12


def png_base64(fig: Any) -> str:
    """A matplotlib figure as base64 PNG text, for embedding in a self-contained page.

    Args:
        fig: a matplotlib figure.

    Returns:
        The base64 text.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class RocCurve(BaseModel):
    """One ROC curve to draw.

    Attributes:
        label: the legend entry (an attack, or a defence and its attack).
        fpr: false-positive rates, ascending.
        tpr: the true-positive rates at those FPRs.
        epsilon: a DP guarantee of the model, whose TPR bound is drawn beside the curve.
        delta: its delta.
    """

    model_config = ConfigDict(extra="forbid")

    label: str
    fpr: list[float]
    tpr: list[float]
    epsilon: float | None = None
    delta: float | None = None


def _grid(n: int) -> np.ndarray:
    return np.logspace(-4, 0, n)


def roc_points_table(curves: Sequence[RocCurve], *, points: int = TABLE_POINTS) -> str:
    """The curves as an HTML table: TPR at log-spaced FPRs (and the DP bound, if any).

    Each TPR is the curve's at the largest FPR at or below the grid value (the ROC is a
    step function), so a table read down a column is the plot's curve.

    Args:
        curves: the curves.
        points: rows.

    Returns:
        HTML text.

    Example:
        >>> t = roc_points_table([RocCurve(label="a", fpr=[0, 1], tpr=[0.5, 1])], points=2)
        >>> t.count("<tr>")
        3
    """
    grid = _grid(points)
    head = "".join(f"<th>TPR {html.escape(c.label)}</th>" + (
        f"<th>bound at epsilon {c.epsilon:.3g}</th>" if c.epsilon is not None else "")
        for c in curves)
    rows = []
    for g in grid:
        cells = [f"<td>{g:.2%}</td>"]
        for c in curves:
            f, t = np.asarray(c.fpr, float), np.asarray(c.tpr, float)
            below = t[f <= g]
            cells.append(f"<td>{below.max():.1%}</td>" if len(below) else "<td>-</td>")
            if c.epsilon is not None:
                b = dp_tpr_bound([g], c.epsilon, c.delta or 0.0)[0]
                cells.append(f"<td>{b:.1%}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table><tr><th>FPR</th>{head}</tr>{''.join(rows)}</table>")


def roc_figure(curves: Sequence[RocCurve], *, title: str = "membership inference") -> Any:
    """The ROC curves in log-log axes, chance as the diagonal, a DP bound dashed.

    Args:
        curves: the curves.
        title: the figure's title.

    Returns:
        A matplotlib figure.

    Raises:
        ImportError: without matplotlib.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    floor = 1e-4
    grid = _grid(200)
    ax.plot(grid, grid, color="grey", lw=1, ls=":", label="chance")
    colours = plt.get_cmap("tab10")
    for k, c in enumerate(curves):
        f = np.clip(np.asarray(c.fpr, float), floor, 1.0)
        t = np.clip(np.asarray(c.tpr, float), floor, 1.0)
        ax.step(f, t, where="post", color=colours(k % 10), label=c.label)
        if c.epsilon is not None:
            b = np.clip(dp_tpr_bound(grid, c.epsilon, c.delta or 0.0), floor, 1.0)
            ax.plot(grid, b, color=colours(k % 10), ls="--", lw=1,
                    label=f"bound of epsilon {c.epsilon:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def roc_html(curves: Sequence[RocCurve], *, title: str = "membership inference",
             use_matplotlib: bool = True) -> str:
    """The ROC curves for an HTML page: an embedded log-log plot, or without matplotlib
    a table of their points.

    Args:
        curves: the curves (none: an empty string).
        title: the plot's title.
        use_matplotlib: False forces the table.

    Returns:
        HTML text.

    Example:
        >>> roc_html([])
        ''
    """
    if not curves:
        return ""
    if use_matplotlib:
        try:
            fig = roc_figure(curves, title=title)
        except ImportError:
            pass
        else:
            import matplotlib.pyplot as plt

            out = (f'<img alt="{html.escape(title)} ROC (log-log)" '
                   f'src="data:image/png;base64,{png_base64(fig)}">')
            plt.close(fig)
            return out
    return (f"<p>{html.escape(title)}: ROC points (install <code>shieldsplit[plots]</code> "
            f"for the log-log plot)</p>" + roc_points_table(curves))


__all__ = ["RocCurve", "png_base64", "roc_figure", "roc_html", "roc_points_table"]
