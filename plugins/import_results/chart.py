"""The geometry of the server-rendered SVG chart: patients per day, stacked by outcome, one per practice.

Drawn by the `chart` macro of the templates; no JavaScript and no network.
"""

from __future__ import annotations

from dataclasses import dataclass

from include.patient_import.queries import DayCounts

# (series, colour): bottom to top of each stacked bar.
SERIES: tuple[tuple[str, str], ...] = (("inserted", "#2e7d32"), ("updated", "#1565c0"), ("rejected", "#c62828"))

WIDTH, HEIGHT = 440, 150
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 10, 22


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True)
class Chart:
    practice_id: str
    name: str
    bars: list[Bar]
    y_ticks: list[tuple[float, str]]
    x_labels: list[tuple[float, str, str]]  # (x, label, text-anchor)
    width: int = WIDTH
    height: int = HEIGHT
    plot_left: int = LEFT
    plot_right: int = WIDTH - RIGHT
    plot_bottom: int = HEIGHT - BOTTOM


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least `value` (an axis maximum)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def practice_chart(practice_id: str, name: str, days: list[DayCounts]) -> Chart:
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    top = _nice_ceiling(max([d.inserted + d.updated + d.rejected for d in days] + [1]))
    slot = plot_width / max(len(days), 1)
    bars: list[Bar] = []
    for i, day in enumerate(days):
        base = HEIGHT - BOTTOM
        for series, colour in SERIES:
            value = getattr(day, series)
            if not value:
                continue
            height = value / top * plot_height
            base -= height
            bars.append(Bar(x=round(LEFT + i * slot + slot * 0.15, 2), y=round(base, 2),
                            width=round(slot * 0.7, 2), height=round(height, 2), colour=colour,
                            title=f"{day.day:%Y-%m-%d}: {value} {series}"))
    ticks = [(HEIGHT - BOTTOM, "0"), (TOP, str(top))]
    if top % 2 == 0:
        ticks.insert(1, (TOP + plot_height / 2, str(top // 2)))
    labelled = sorted({0, len(days) // 2, len(days) - 1}) if days else []
    x_labels: list[tuple[float, str, str]] = []
    for i in labelled:
        # The end labels hug the plot's edges so that they are not clipped.
        if i == 0:
            x, anchor = LEFT, "start"
        elif i == len(days) - 1:
            x, anchor = WIDTH - RIGHT, "end"
        else:
            x, anchor = round(LEFT + (i + 0.5) * slot, 2), "middle"
        x_labels.append((x, f"{days[i].day:%b %d}", anchor))
    return Chart(practice_id=practice_id, name=name, bars=bars, y_ticks=ticks, x_labels=x_labels)
