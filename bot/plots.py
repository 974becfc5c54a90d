"""The admin tab's charts, as matplotlib figures (shown with gr.Plot).

Figures are built with the object-oriented API (`matplotlib.figure.Figure`), never pyplot, so
no global figure registry grows and handlers can draw from several threads at once. Each
function takes plain data (as the store returns it) and returns a new figure; an empty input
gives a figure that says there is no data yet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

UP, DOWN, ACCENT = "#2e9d5b", "#d0533f", "#3a6fd8"
SOURCE_COLORS = {"memory": "#8a5cd1", "rag": "#e0a528", "model": ACCENT}
EMOTION_COLORS = {"positive": UP, "neutral": "#8c8c8c", "negative": DOWN}
# The lines of rating_by_version_and_source, in drawing order; each is drawn only if it has ratings.
SOURCE_LINES = {"memory": "served from memory", "model": "model on its own", "rag": "model with retrieved facts"}
# Where each line's "n=" labels go (points), so that two lines at the same point do not overprint.
SOURCE_LABEL_OFFSETS = {"memory": (0, 8, "center", "bottom"), "model": (0, -8, "center", "top"),
                        "rag": (9, 0, "left", "center")}
MAX_LABELLED_VERSIONS = 15  # beyond this, the marker area alone shows the counts


def _figure(title: str, size: tuple[float, float] = (6, 3.2)) -> tuple[Figure, Axes]:
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _empty(ax: Axes, message: str = "No data yet") -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#888888")
    ax.set_xticks([])
    ax.set_yticks([])


def _up_rate(rows: Sequence[tuple[str, int, int]], title: str, xlabel: str) -> Figure:
    fig, ax = _figure(title)
    if not rows:
        _empty(ax)
        return fig
    labels = [str(r[0]) for r in rows]
    rates = [100.0 * up / (up + down) if up + down else 0.0 for _, up, down in rows]
    counts = [up + down for _, up, down in rows]
    ax.bar(labels, rates, color=ACCENT, alpha=0.85, width=0.6)
    for x, (rate, n) in enumerate(zip(rates, counts, strict=True)):
        ax.annotate(f"{rate:.0f}% (n={n})", (x, rate), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 2), textcoords="offset points")
    ax.set_ylim(0, 110)
    pad = max(0.0, (3 - len(rows)) / 2)  # one or two bars should not fill the whole width
    ax.set_xlim(-0.5 - pad, len(rows) - 0.5 + pad)
    ax.set_ylabel("thumbs-up rate (%)")  # words, not 👍: matplotlib's default font has no emoji
    ax.set_xlabel(xlabel)
    ax.tick_params(axis="x", labelrotation=30 if len(rows) > 4 else 0, labelsize=8)
    return fig


def rating_over_time(rows: Sequence[tuple[str, int, int]]) -> Figure:
    """Thumbs-up rate per day, from store.rating_by_day: (day, ups, downs)."""
    return _up_rate(rows, "Thumbs-up rate by day", "day")


def rating_by_adapter(rows: Sequence[tuple[str, int, int]]) -> Figure:
    """Thumbs-up rate per adapter version, from store.rating_by_adapter: (version, ups, downs)."""
    return _up_rate(rows, "Thumbs-up rate by adapter version", "adapter")


def rating_by_version_and_source(rows: Sequence[tuple[str, str, int, int]]) -> Figure:
    """Thumbs-up rate per adapter version, one line for replies served from memory and one for replies the
    model generated on its own (and one for the model with retrieved facts, when those were rated).

    `rows` are (version, source, ratings, ups) in version order, from admin_views.rates_by_version_and_source.
    Each point's marker area grows with its number of ratings, which is also written beside it.
    """
    fig, ax = _figure("Thumbs-up rate by adapter version: memory vs model", size=(10, 3.4))
    points = [(str(v), s, n, up) for v, s, n, up in rows if n > 0]
    if not points:
        _empty(ax, "No ratings yet")
        return fig
    versions = list(dict.fromkeys(v for v, *_ in points))
    x_of = {v: i for i, v in enumerate(versions)}
    most = max(n for *_, n, _up in points)
    labelled = len(versions) <= MAX_LABELLED_VERSIONS
    for source in [*SOURCE_LINES, *sorted({s for _, s, *_ in points} - set(SOURCE_LINES))]:
        line = [(x_of[v], 100.0 * up / n, n) for v, s, n, up in points if s == source]
        if not line:
            continue
        xs, rates, counts = zip(*line, strict=True)
        color = SOURCE_COLORS.get(source, "#999999")
        ax.plot(xs, rates, color=color, marker="o", markersize=4, linewidth=1.6,
                label=SOURCE_LINES.get(source, source))
        ax.scatter(xs, rates, s=[25 + 200 * n / most for n in counts], color=color, alpha=0.45,
                   edgecolors="white", linewidths=0.8, zorder=3)
        if labelled:
            dx, dy, ha, va = SOURCE_LABEL_OFFSETS.get(source, (0, 8, "center", "bottom"))
            for x, rate, n in line:
                ax.annotate(f"n={n}", (x, rate), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                            fontsize=7, color=color)
    ax.set_xticks(range(len(versions)), versions)
    pad = max(0.0, (3 - len(versions)) / 2)  # one or two versions should not sit at the edges
    ax.set_xlim(-0.5 - pad, len(versions) - 0.5 + pad)
    ax.set_ylim(-10, 115)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.set_ylabel("thumbs-up rate (%)")
    ax.set_xlabel("adapter version being served (marker area: number of ratings)")
    ax.tick_params(axis="x", labelrotation=30 if len(versions) > 8 else 0, labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _shares(counts: Mapping[str, int], title: str, colors: Mapping[str, str]) -> Figure:
    fig, ax = _figure(title)
    items = [(k, v) for k, v in counts.items() if v]
    if not items:
        _empty(ax)
        return fig
    labels, values = zip(*items, strict=True)
    total = sum(values)
    bars = ax.barh(labels, values, color=[colors.get(k, "#999999") for k in labels], height=0.6)
    for bar, v in zip(bars, values, strict=True):
        ax.annotate(f"{v} ({100 * v / total:.0f}%)", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                    va="center", fontsize=8, xytext=(3, 0), textcoords="offset points")
    ax.set_xlim(0, max(values) * 1.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("exchanges")
    return fig


def emotion_distribution(counts: Mapping[str, int]) -> Figure:
    """Exchanges per detected emotion, from store.emotion_counts."""
    return _shares(counts, "Emotion of user messages", EMOTION_COLORS)


def answer_sources(counts: Mapping[str, int]) -> Figure:
    """Exchanges answered from memory, with retrieved facts (rag), or by the model alone."""
    return _shares(counts, "Where answers came from", SOURCE_COLORS)


def loss_curve(curve: Sequence[float], total_steps: int = 0) -> Figure:
    """Training loss per step of a run (training_runs.loss_curve)."""
    fig, ax = _figure("Training loss")
    if not curve:
        _empty(ax, "No steps yet")
        return fig
    steps = range(1, len(curve) + 1)
    ax.plot(steps, curve, color=ACCENT, marker="o" if len(curve) <= 40 else None, markersize=3)
    ax.set_xlim(0.5, max(total_steps, len(curve)) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    return fig
