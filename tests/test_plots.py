"""plots.LiveCurves: readable live curves, at most three panels a row, one scale per panel."""

import pytest

from rlhf_lessons.plots import LiveCurves, figure_png


def _grid(fig):
    return [ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes]


def test_panels_wrap_at_three_a_row():
    curves = LiveCurves([["a"], ["b"], ["c"], ["d"], ["e", "f"]], every=1)
    for x in range(4):
        curves.add(x, a=x, b=-x, c=1, d=2, e=3, f=4)
    fig = curves.figure()
    assert _grid(fig) == [(2, 3)] * 5
    assert fig.get_size_inches()[0] <= 13  # no longer one row 21 inches wide
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c", "d", ""]
    assert fig.axes[4].get_legend() is not None and fig.axes[0].get_legend() is None
    assert figure_png(fig).startswith(b"\x89PNG")


def test_few_panels_stay_on_one_row_and_series_are_kept():
    curves = LiveCurves([["loss"], ["accuracy"]], every=100)
    curves.add(0, loss=1.0, accuracy=None)
    assert _grid(curves.figure()) == [(1, 2)] * 2
    assert curves.series == {"loss": [(0, 1.0)], "accuracy": []}


@pytest.mark.parametrize("panels, columns", [([], 3), ([[]], 3), ([["a"]], 0)])
def test_bad_layouts_are_refused(panels, columns):
    with pytest.raises(ValueError, match="panels"):
        LiveCurves(panels, columns=columns)
