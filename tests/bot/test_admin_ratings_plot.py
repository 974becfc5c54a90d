"""The dashboard's thumbs-up rate per adapter version, one line per answer source (bot/plots.py), from the
admin service's ratings by version (bot/admin_views.rates_by_version_and_source)."""

from matplotlib.figure import Figure
from matplotlib.text import Annotation

from bot import plots
from bot.admin_models import RatingGroup, RatingsByVersion, VersionRatings
from bot.admin_views import rates_by_version_and_source


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def _group(source: str, applied: bool | None, ratings: int, ups: int) -> RatingGroup:
    return RatingGroup(source=source, adapter_applied=applied, ratings=ratings, thumbs_up=ups,
                       up_rate=round(ups / ratings, 3))


def _version(version: str, *groups: RatingGroup) -> VersionRatings:
    ratings, ups = sum(g.ratings for g in groups), sum(g.thumbs_up for g in groups)
    return VersionRatings(version=version, ratings=ratings, thumbs_up=ups, up_rate=round(ups / ratings, 3),
                          groups=list(groups))


def test_no_ratings_draw_a_figure_that_says_so():
    for rows in ([], [("v1", "model", 0, 0)]):
        fig = plots.rating_by_version_and_source(rows)
        assert isinstance(fig, Figure)
        assert _texts(fig) == ["No ratings yet"] and not fig.axes[0].lines
        fig.canvas.draw()  # renders without an error


def test_one_line_for_memory_and_one_for_the_model_with_the_counts_visible():
    rows = [("base", "model", 4, 1), ("v1", "memory", 2, 2), ("v1", "model", 3, 2), ("v2", "memory", 6, 3)]
    fig = plots.rating_by_version_and_source(rows)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    assert set(lines) == {"served from memory", "model on its own"}
    memory, model = lines["served from memory"], lines["model on its own"]
    assert (list(memory.get_xdata()), list(memory.get_ydata())) == ([1, 2], [100.0, 50.0])
    assert list(model.get_xdata()) == [0, 1] and [round(y, 1) for y in model.get_ydata()] == [25.0, 66.7]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["base", "v1", "v2"]
    assert sorted(t.get_text() for t in ax.texts if isinstance(t, Annotation)) == \
        ["n=2", "n=3", "n=4", "n=6"]
    sizes = {tuple(c.get_offsets()[:, 0]): list(c.get_sizes()) for c in ax.collections}
    assert sizes[(1.0, 2.0)][0] < sizes[(1.0, 2.0)][1]  # marker area grows with the number of ratings
    assert "thumbs-up rate" in ax.get_ylabel() and "adapter version" in ax.get_xlabel()
    assert "memory" in ax.get_title() and "model" in ax.get_title()
    fig.canvas.draw()


def test_rag_replies_get_their_own_line_only_when_rated():
    fig = plots.rating_by_version_and_source([("v1", "model", 1, 1), ("v1", "rag", 2, 1)])
    assert [line.get_label() for line in fig.axes[0].lines] == ["model on its own", "model with retrieved facts"]


def test_many_versions_leave_the_counts_to_the_marker_area():
    rows = [(f"v{i}", "model", i, 1) for i in range(1, 31)]
    ax = plots.rating_by_version_and_source(rows).axes[0]
    assert len(ax.lines[0].get_xdata()) == 30 and not [t for t in ax.texts if isinstance(t, Annotation)]


def test_the_points_sum_adapter_applied_per_version_and_source_in_version_order():
    view = RatingsByVersion(versions=[
        _version("base", _group("model", False, 2, 1), _group("model", None, 1, 1)),
        _version("v1", _group("memory", False, 1, 0), _group("model", False, 1, 1), _group("model", True, 3, 2)),
    ])
    assert rates_by_version_and_source(view) == [("base", "model", 3, 2), ("v1", "memory", 1, 0),
                                                 ("v1", "model", 4, 3)]
    assert rates_by_version_and_source(RatingsByVersion(versions=[])) == []
