"""Plots the lessons share: live training curves that redraw in place while a loop runs."""

from __future__ import annotations

from matplotlib.figure import Figure


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"
    except ImportError:
        return False


class LiveCurves:
    """Curves that grow while training runs: one panel per group of series, redrawn every `every` points.

        curves = LiveCurves([["train_loss", "eval_loss"], ["lr"]], title="SFT")
        for step ...: curves.add(step, train_loss=..., eval_loss=...)
        curves.done()

    Outside a notebook nothing is drawn; the series are still kept in `curves.series`.
    """

    def __init__(self, panels: list[list[str]], title: str = "", every: int = 5, xlabel: str = "step"):
        self.panels, self.title, self.every, self.xlabel = panels, title, every, xlabel
        self.series: dict[str, list[tuple[float, float]]] = {name: [] for panel in panels for name in panel}
        self._handle = None
        self._calls = 0

    def add(self, x: float, **values: float | None) -> None:
        for name, value in values.items():
            if value is not None:
                self.series.setdefault(name, []).append((x, float(value)))
        self._calls += 1
        if self._calls % self.every == 0:
            self._draw()

    def figure(self) -> Figure:
        fig = Figure(figsize=(4.2 * len(self.panels), 3.0))
        for i, panel in enumerate(self.panels):
            ax = fig.add_subplot(1, len(self.panels), i + 1)
            for name in panel:
                points = self.series.get(name, [])
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, marker="o" if len(points) < 15 else None, ms=3, label=name)
            ax.set_xlabel(self.xlabel)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        if self.title:
            fig.suptitle(self.title)
        fig.tight_layout()
        return fig

    def _draw(self) -> None:
        if not _in_notebook():
            return
        from IPython.display import display

        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)

    def done(self) -> None:
        """Draw the final state."""
        self._draw()


def html_table(header: list[str], rows: list[list], caption: str = ""):
    """An HTML table for notebooks; every cell is escaped, so model text such as `<script>` shows as text."""
    from html import escape

    from IPython.display import HTML

    def cell(value) -> str:
        return escape(f"{value:.2f}" if isinstance(value, float) else str(value))

    head = "".join(f"<th style='text-align:left'>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left;vertical-align:top'>{cell(v)}</td>" for v in row)
                   + "</tr>" for row in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return HTML(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
