"""Business-hours calendars for SLA clocks: pure time arithmetic, no I/O.

A calendar is either 24x7 (business time is plain elapsed time) or business hours:
local wall-clock hours on chosen weekdays in an IANA time zone, minus whole local
holidays. Durations are real elapsed seconds inside those hours, so 09:00-17:00 is
8 hours on a DST-change day too; only hours that themselves straddle a transition
are one hour shorter or longer, because that is how long they really last.

Internally everything is integer microseconds (datetime's resolution), so that
`add_business_seconds` and `business_seconds` are exact inverses up to rounding the
requested float seconds to a microsecond.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from daemon.config import CalendarConfig

_US = timedelta(microseconds=1)
_DAY = timedelta(days=1)
_WEEK = timedelta(days=7)
# A due time further out than this is a misconfiguration (hours of a few seconds a
# week); refusing it keeps the walk bounded instead of running to year 9999.
_HORIZON = timedelta(days=100 * 366)


@dataclass(frozen=True)
class Calendar:
    zone: ZoneInfo
    always: bool = True
    weekdays: frozenset[int] = frozenset(range(5))
    start: time = time(9, 0)
    end: time = time(17, 0)
    holidays: frozenset[date] = frozenset()
    # Derived: holidays that fall on an open weekday (others cost nothing), sorted so
    # a week's count is a bisect; and the nominal lengths used by the week fast path.
    _closed_days: tuple[date, ...] = field(init=False, repr=False, compare=False)
    _day_us: int = field(init=False, repr=False, compare=False)
    _week_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.always:
            if self.end <= self.start:
                raise ValueError("end must be after start")
            if not self.weekdays:
                raise ValueError("a business-hours calendar needs at least one weekday")
        day = datetime.combine(date.min, self.end) - datetime.combine(date.min, self.start)
        closed = tuple(sorted(h for h in self.holidays if h.weekday() in self.weekdays))
        object.__setattr__(self, "_closed_days", closed)
        object.__setattr__(self, "_day_us", day // _US)
        object.__setattr__(self, "_week_us", len(self.weekdays) * (day // _US))

    @classmethod
    def from_config(cls, cfg: CalendarConfig) -> Calendar:
        return cls(zone=ZoneInfo(cfg.timezone), always=cfg.always,
                   weekdays=frozenset(cfg.weekdays), start=cfg.start, end=cfg.end,
                   holidays=frozenset(cfg.holidays))

    # -- public API ----------------------------------------------------------

    def is_open(self, at: datetime) -> bool:
        at = _utc(at)
        if self.always:
            return True
        # The next day too: where a zone falls back across midnight, the local date
        # of an instant can lag behind the day whose hours it lies in.
        day = at.astimezone(self.zone).date()
        return any(hours is not None and hours[0] <= at < hours[1]
                   for hours in (self._hours(day), self._hours(day + _DAY)))

    def business_seconds(self, start: datetime, end: datetime) -> float:
        """Business time between two instants, in seconds (0 if end <= start)."""
        start, end = _utc(start), _utc(end)
        if end <= start:
            return 0.0
        if self.always:
            return (end - start) / _US / 1e6
        first = start.astimezone(self.zone).date()
        last = end.astimezone(self.zone).date()
        total = 0
        cursor = start  # never count an instant twice (days cannot overlap; belt and braces)
        day = first
        while day <= last + _DAY:  # one day more, for the same reason as in is_open
            # Whole weeks strictly between the end days cannot touch start or end.
            if day > first and day.weekday() == 0 and day + _WEEK <= last:
                week = self._clean_week_us(day)
                if week is not None:
                    total += week
                    day += _WEEK
                    continue
            hours = self._hours(day)
            if hours is not None:
                lo, hi = max(hours[0], cursor), min(hours[1], end)
                if hi > lo:
                    total += (hi - lo) // _US
                    cursor = hi
            day += _DAY
        return total / 1e6

    def add_business_seconds(self, start: datetime, seconds: float) -> datetime:
        """The earliest instant by which `seconds` of business time have elapsed.

        Counting begins at `start`, or at the next opening when `start` is outside
        hours. A target that runs out exactly at closing time is due at closing time,
        not at the next opening. Zero seconds gives `start` itself.
        """
        start = _utc(start)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
        remaining = round(seconds * 1e6)
        if remaining == 0 or self.always:
            if remaining > _HORIZON // _US:
                raise ValueError(f"{seconds} seconds is more than a century")
            return start + remaining * _US
        first = start.astimezone(self.zone).date()
        cursor = start
        day = first
        horizon = first + min(_HORIZON, date.max - first - _WEEK * 2)
        while True:
            if day > horizon:
                raise ValueError(f"{seconds} business seconds after {start.isoformat()} "
                                 "lie more than a century away; check the calendar")
            # Skip only while the target lies strictly beyond the week, so an exact
            # fit still ends at that week's last closing time.
            if day > first and day.weekday() == 0:
                week = self._clean_week_us(day)
                if week is not None and remaining > week:
                    remaining -= week
                    day += _WEEK
                    continue
            hours = self._hours(day)
            if hours is not None:
                lo = max(hours[0], cursor)
                if hours[1] > lo:
                    available = (hours[1] - lo) // _US
                    if remaining <= available:
                        return lo + remaining * _US
                    remaining -= available
                    cursor = hours[1]
            day += _DAY

    # -- internals -----------------------------------------------------------

    def _hours(self, day: date) -> tuple[datetime, datetime] | None:
        """That local day's business hours as UTC instants, or None when closed."""
        if day.weekday() not in self.weekdays or day in self.holidays:
            return None
        opens, closes = self._instant(day, self.start), self._instant(day, self.end)
        # Both ends inside one spring-forward gap: the hours never happen that day.
        return (opens, closes) if closes > opens else None

    def _instant(self, day: date, at: time) -> datetime:
        """The first instant at which the local clock on `day` reads `at` or later.

        In a fall-back fold that is the first occurrence; in a spring-forward gap
        (the time is never shown) it is the moment the clock jumps past it.
        """
        # fold=0 explicitly: a time built with fold=1 would swap the two probes below.
        local = datetime.combine(day, at.replace(fold=0), tzinfo=self.zone)
        first = local.astimezone(UTC)
        second = local.replace(fold=1).astimezone(UTC)
        if first <= second:  # ordinary time or a fold: fold=0 is the earlier one
            return first
        # A gap: fold=1 maps before the jump, fold=0 after it. Bisect for the jump
        # in whole POSIX seconds (tzdata transitions fall on whole seconds); the
        # wall clock is below `at` before the jump and above it after.
        target = local.replace(tzinfo=None)
        lo, hi = math.floor(second.timestamp()), math.ceil(first.timestamp())
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self.zone).replace(tzinfo=None) >= target:
                hi = mid
            else:
                lo = mid
        return datetime.fromtimestamp(hi, UTC)

    def _clean_week_us(self, monday: date) -> int | None:
        """Business microseconds of the local week from `monday`, when it is regular.

        Regular means the UTC offset is the same at both ends of the week, so every
        day has its nominal length (tzdata since 1970 has no zone that shifts and
        shifts back inside one Monday-to-Monday week). Otherwise the caller walks
        the week day by day.
        """
        begin = datetime.combine(monday, time(0), tzinfo=self.zone).utcoffset()
        finish = datetime.combine(monday + _WEEK, time(0), tzinfo=self.zone).utcoffset()
        if begin != finish:
            return None
        lo = bisect.bisect_left(self._closed_days, monday)
        hi = bisect.bisect_left(self._closed_days, monday + _WEEK)
        return self._week_us - (hi - lo) * self._day_us


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"calendar arithmetic needs an aware datetime, got {at!r}")
    return at.astimezone(UTC)
