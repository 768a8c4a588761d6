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


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (what a notebook shows, whichever matplotlib backend is active)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def show(fig: Figure):
    """Display a Figure as an image in a notebook (and return the IPython Image object)."""
    from IPython.display import Image, display

    image = Image(data=figure_png(fig))
    display(image)
    return image


class LiveCurves:
    """Curves that grow while training runs: one panel per group of series, at most `columns` panels a row, redrawn
    every `every` points. Series on different scales belong in panels of their own (a panel of one series is titled
    with its name).

        curves = LiveCurves([["train_loss", "eval_loss"], ["lr"]], title="SFT")
        for step ...: curves.add(step, train_loss=..., eval_loss=...)
        curves.done()

    Outside a notebook nothing is drawn; the series are still kept in `curves.series`.
    """

    def __init__(self, panels: list[list[str]], title: str = "", every: int = 5, xlabel: str = "step",
                 columns: int = 3):
        if not panels or not all(panels) or columns < 1:
            raise ValueError("panels must be a non-empty list of non-empty lists of series names, columns >= 1")
        self.panels, self.title, self.every, self.xlabel = panels, title, every, xlabel
        self.columns = min(columns, len(panels))
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
        rows = -(-len(self.panels) // self.columns)
        fig = Figure(figsize=(4.2 * self.columns, 3.0 * rows))
        for i, panel in enumerate(self.panels):
            ax = fig.add_subplot(rows, self.columns, i + 1)
            if len(panel) == 1:
                ax.set_title(panel[0], fontsize=10)
            for name in panel:
                points = self.series.get(name, [])
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, marker="o" if len(points) < 15 else None, ms=3, label=name)
            ax.set_xlabel(self.xlabel)
            if len(panel) > 1:
                ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        if self.title:
            fig.suptitle(self.title)
        fig.tight_layout()
        return fig

    def _draw(self) -> None:
        if not _in_notebook():
            return
        from IPython.display import Image, display

        image = Image(data=figure_png(self.figure()))  # an image, not a Figure object: it renders everywhere
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)

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


def splits_table(by_split: dict, this: str, other: str,
                 keys=("gold_mean", "helpful_rate", "polite_rate", "harmful_compliance_rate", "harmful_evasion_rate",
                       "over_refusal_rate", "mean_reply_tokens")):
    """The yardstick of two models side by side on every evaluation split, from evaluate_splits(model, against=...):
    a row per measure, two columns (other, this) per split, and the win rate of `this` over `other`."""
    splits = list(by_split)
    header = ["measure"] + [f"{name} ({split})" for split in splits for name in (other, this)]
    rows = [[key] + [v for split in splits for v in (by_split[split]["other"][key], by_split[split][key])]
            for key in keys]
    rows.append([f"win rate of {this} over {other}"]
                + [v for split in splits for v in ("", by_split[split]["win_rate"])])
    sizes = ", ".join(f"{split} {by_split[split]['n']}" for split in splits)
    return html_table(header, rows, caption=f"requests per split: {sizes}; seed {by_split[splits[0]]['seed']}")
