"""The simulated calendar: one row per day, precomputed once so the order process stays vectorised.

Chinese public holidays (and the weekend make-up workdays, 调休) come from ``chinese_calendar``;
it only knows the years the State Council has published, so outside them we fall back to
weekends plus the fixed-date holidays, which keeps long or future simulations running.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from models.schemas import CATEGORIES

from .config import SimulationConfig

WORKDAY, WEEKEND, HOLIDAY = 0, 1, 2
REGIONS = ("south", "north")

#: Fixed-date holidays used when ``chinese_calendar`` has no data for a year.
_FIXED_HOLIDAYS = {(1, 1), (5, 1), (5, 2), (5, 3), (10, 1), (10, 2), (10, 3), (10, 4), (10, 5)}


def _day_type(day: dt.date) -> int:
    """Workday, weekend or public holiday, with 调休 make-up days counted as workdays."""
    try:
        import chinese_calendar

        is_off, name = chinese_calendar.get_holiday_detail(day)
        if not is_off:
            return WORKDAY
        return HOLIDAY if name is not None else WEEKEND
    except NotImplementedError:  # year not published in chinese_calendar
        if (day.month, day.day) in _FIXED_HOLIDAYS:
            return HOLIDAY
        return WEEKEND if day.weekday() >= 5 else WORKDAY


@dataclass(frozen=True)
class Timeline:
    """Per-day tables of the simulated window (plus a tail for the 30-day look-ahead).

    Attributes
    ----------
    start
        First simulated day (midnight, Asia/Shanghai local time).
    n_days
        Days in the window: orders are reported in ``[0, n_days)`` (days since ``start``).
    day_type
        ``WORKDAY``/``WEEKEND``/``HOLIDAY`` for each day, tail included.
    intensity
        ``[region, category, day]`` relative report intensity per day (season × day type);
        the expected reports of a unit on day d are ``rate / 365 * intensity[..., d]``.
    cum_intensity
        Cumulative sums of ``intensity`` with a leading 0 (``cum[..., d]`` = days before d).
    hour_cdf
        Cumulative share of a day's reports by the end of each hour (length 25, from 0).
    """

    start: np.datetime64
    n_days: int
    day_type: np.ndarray
    intensity: np.ndarray
    cum_intensity: np.ndarray
    hour_cdf: np.ndarray

    def hour_fraction(self, hours: np.ndarray) -> np.ndarray:
        """Share of a day's report intensity before the given (fractional) hour of day."""
        h = np.clip(hours, 0.0, 24.0 - 1e-9)
        i = h.astype(np.int64)
        return self.hour_cdf[i] + (self.hour_cdf[i + 1] - self.hour_cdf[i]) * (h - i)

    def integrated_intensity(
        self, region: np.ndarray, category: np.ndarray, t0: np.ndarray, t1: np.ndarray
    ) -> np.ndarray:
        """Integral of the report intensity over ``(t0, t1]`` (days since start).

        Exact for the piecewise-constant (day × hour) intensity the simulator samples from,
        which is what makes the ground-truth background hazard exact.
        """
        total = self.cum_intensity.shape[-1] - 1
        t0 = np.clip(t0, 0.0, total - 1e-6)
        t1 = np.clip(t1, 0.0, total - 1e-6)

        def g(t: np.ndarray) -> np.ndarray:
            d = t.astype(np.int64)
            frac = self.hour_fraction((t - d) * 24.0)
            return (
                self.cum_intensity[region, category, d] + self.intensity[region, category, d] * frac
            )

        return g(t1) - g(t0)


def build_timeline(
    start: str, months: int, config: SimulationConfig, tail_days: int = 100
) -> Timeline:
    """Precompute the per-day calendar, seasonality and report intensity.

    Parameters
    ----------
    start
        First day, ``YYYY-MM-DD``.
    months
        Length of the window in calendar months.
    config
        Seasonal bumps, day-type factors and hour profile.
    tail_days
        Extra days after the window, so that hazards of orders completed near the end (and
        reworks reported after it) can still be integrated.
    """
    start_d = np.datetime64(start, "D")
    end_d = (start_d.astype("datetime64[M]") + months).astype("datetime64[D]")
    n_days = int((end_d - start_d).astype(int))
    days = start_d + np.arange(n_days + tail_days)
    dates = days.astype(dt.date)
    day_type = np.fromiter((_day_type(d) for d in dates), dtype=np.int8, count=len(dates))
    doy = (days - days.astype("datetime64[Y]")).astype(np.int64) + 1

    season = np.ones((len(REGIONS), len(CATEGORIES), len(days)))
    for bump in config.seasons:
        c = CATEGORIES.index(bump.category)
        diff = np.abs(doy - bump.center_doy)
        diff = np.minimum(diff, 365.25 - diff)  # circular: a January peak wraps into December
        shape = bump.amplitude * np.exp(-0.5 * (diff / bump.width_days) ** 2)
        for r, region in enumerate(REGIONS):
            if bump.region in ("all", region):
                season[r, c] += shape
    day_factor = np.asarray(config.report_day_factor)[day_type]
    intensity = season * day_factor
    cum = np.concatenate([np.zeros(intensity.shape[:2] + (1,)), np.cumsum(intensity, -1)], -1)

    hours = np.asarray(config.hour_profile, dtype=float)
    hour_cdf = np.concatenate([[0.0], np.cumsum(hours / hours.sum())])
    hour_cdf[-1] = 1.0
    return Timeline(
        start=start_d.astype("datetime64[s]"),
        n_days=n_days,
        day_type=day_type,
        intensity=intensity,
        cum_intensity=cum,
        hour_cdf=hour_cdf,
    )


def sample_hours(timeline: Timeline, u: np.ndarray) -> np.ndarray:
    """Inverse of :meth:`Timeline.hour_fraction`: fractional hours of day from uniforms."""
    cdf = timeline.hour_cdf
    i = np.clip(np.searchsorted(cdf, u, side="right") - 1, 0, 23)
    width = np.maximum(cdf[i + 1] - cdf[i], 1e-12)
    return i + np.clip((u - cdf[i]) / width, 0.0, 1.0 - 1e-9)
