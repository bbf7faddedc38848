"""Business-hours calendars: due times, elapsed business time, DST, holidays, speed."""

from __future__ import annotations

import itertools
import time as clock
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from daemon.itsm.calendar import Calendar, CalendarConfig

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600.0


def berlin(*holidays: date, weekdays: tuple[int, ...] = (0, 1, 2, 3, 4)) -> Calendar:
    return Calendar.from_config(CalendarConfig(
        timezone="Europe/Berlin", always=False, weekdays=list(weekdays),
        holidays=list(holidays)))


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=BERLIN)


def test_four_hours_from_friday_afternoon_are_due_monday_morning() -> None:
    start = at(2026, 1, 16, 15)
    assert start.weekday() == 4
    due = berlin().add_business_seconds(start, 4 * HOUR)
    assert due == at(2026, 1, 19, 11)
    assert due.tzinfo is UTC


def test_a_monday_holiday_moves_the_due_time_to_tuesday() -> None:
    due = berlin(date(2026, 1, 19)).add_business_seconds(at(2026, 1, 16, 15), 4 * HOUR)
    assert due == at(2026, 1, 20, 11)


@pytest.mark.parametrize(("friday", "monday"), [
    (at(2026, 3, 27, 15), at(2026, 3, 30, 11)),   # spring forward on Sunday 29 March
    (at(2026, 10, 23, 15), at(2026, 10, 26, 11)),  # fall back on Sunday 25 October
])
def test_due_time_across_a_dst_weekend_is_local_wall_clock(
        friday: datetime, monday: datetime) -> None:
    cal = berlin()
    assert cal.add_business_seconds(friday, 4 * HOUR) == monday
    assert cal.business_seconds(friday, monday) == 4 * HOUR


@pytest.mark.parametrize("sunday", [date(2026, 3, 29), date(2026, 10, 25)])
def test_nine_to_five_is_eight_hours_on_a_dst_day(sunday: date) -> None:
    cal = berlin(weekdays=tuple(range(7)))
    day = datetime.combine(sunday, time(0), tzinfo=BERLIN)
    assert cal.business_seconds(day, day + timedelta(days=1)) == 8 * HOUR


def test_hours_straddling_the_jump_last_as_long_as_they_really_do() -> None:
    cal = Calendar(zone=BERLIN, always=False, weekdays=frozenset({6}),
                   start=time(1, 0), end=time(4, 0))
    spring = datetime(2026, 3, 29, tzinfo=BERLIN)
    autumn = datetime(2026, 10, 25, tzinfo=BERLIN)
    assert cal.business_seconds(spring, spring + timedelta(days=1)) == 2 * HOUR
    assert cal.business_seconds(autumn, autumn + timedelta(days=1)) == 4 * HOUR


def test_an_opening_inside_the_spring_gap_opens_when_the_clock_jumps() -> None:
    cal = Calendar(zone=BERLIN, always=False, weekdays=frozenset({6}),
                   start=time(2, 30), end=time(17, 0))
    assert cal.add_business_seconds(at(2026, 3, 29), 1.0) == (
        datetime(2026, 3, 29, 1, 0, 1, tzinfo=UTC))  # 03:00:01 CEST
    gap_only = Calendar(zone=BERLIN, always=False, weekdays=frozenset({6}),
                        start=time(2, 0), end=time(2, 30))
    day = at(2026, 3, 29)
    assert gap_only.business_seconds(day, day + timedelta(days=1)) == 0.0


def test_a_weekend_start_counts_from_monday_opening() -> None:
    cal = berlin()
    saturday = at(2026, 1, 17, 10)
    assert cal.business_seconds(saturday, at(2026, 1, 19, 9)) == 0.0
    assert cal.add_business_seconds(saturday, HOUR) == at(2026, 1, 19, 10)
    assert cal.add_business_seconds(at(2026, 1, 19, 7), HOUR) == at(2026, 1, 19, 10)


def test_a_target_running_out_at_closing_time_is_due_at_closing_time() -> None:
    cal = berlin()
    assert cal.add_business_seconds(at(2026, 1, 16, 15), 2 * HOUR) == at(2026, 1, 16, 17)
    assert cal.add_business_seconds(at(2026, 1, 17, 10), 0) == at(2026, 1, 17, 10)


@pytest.mark.parametrize("monday", [at(2026, 1, 12), at(2026, 3, 23), at(2026, 10, 19)])
def test_a_week_of_nine_to_five_is_forty_hours(monday: datetime) -> None:
    assert berlin().business_seconds(monday, monday + timedelta(days=7)) == 40 * HOUR
    assert berlin().business_seconds(monday + timedelta(days=7), monday) == 0.0


def test_many_weeks_with_holidays_and_both_dst_changes() -> None:
    cal = berlin(date(2026, 4, 3), date(2026, 4, 6), date(2026, 12, 26))  # Sat costs nothing
    start, end = at(2026, 1, 5), at(2027, 1, 4)
    assert cal.business_seconds(start, end) == (52 * 5 - 2) * 8 * HOUR


def test_skipped_weeks_still_see_a_transition_inside_the_hours() -> None:
    night = Calendar(zone=BERLIN, always=False, weekdays=frozenset({6}),
                     start=time(1, 0), end=time(4, 0))
    start, end = at(2026, 1, 5), at(2026, 7, 6)  # 26 Sundays, one of them 29 March
    assert night.business_seconds(start, end) == (26 * 3 - 1) * HOUR
    assert night.add_business_seconds(start, (26 * 3 - 1) * HOUR) == at(2026, 7, 5, 4)


def test_a_target_of_exactly_whole_weeks_ends_at_the_last_closing() -> None:
    cal = berlin()
    assert cal.add_business_seconds(at(2026, 1, 11, 12), 40 * HOUR) == at(2026, 1, 16, 17)
    assert cal.add_business_seconds(at(2026, 1, 11, 12), 80 * HOUR) == at(2026, 1, 23, 17)


def test_always_is_plain_elapsed_time() -> None:
    cal = Calendar.from_config(CalendarConfig(timezone="Europe/Berlin"))
    start = at(2026, 3, 28, 12)
    assert cal.business_seconds(start, at(2026, 3, 29, 12)) == 23 * HOUR
    assert cal.add_business_seconds(start, 1.5) == start + timedelta(seconds=1.5)
    assert cal.is_open(at(2026, 3, 29, 3))


def test_is_open() -> None:
    cal = berlin(date(2026, 1, 20))
    assert cal.is_open(at(2026, 1, 19, 9))
    assert not cal.is_open(at(2026, 1, 19, 17))
    assert not cal.is_open(at(2026, 1, 19, 8, 59))
    assert not cal.is_open(at(2026, 1, 20, 12))  # holiday
    assert not cal.is_open(at(2026, 1, 17, 12))  # Saturday
    assert cal.is_open(datetime(2026, 1, 19, 8, 30, tzinfo=UTC))  # 09:30 in Berlin


def test_bad_inputs_are_refused() -> None:
    cal = berlin()
    with pytest.raises(ValueError, match="aware"):
        cal.business_seconds(datetime(2026, 1, 1), at(2026, 1, 2))
    with pytest.raises(ValueError, match=">= 0"):
        cal.add_business_seconds(at(2026, 1, 1), -1)
    with pytest.raises(ValueError, match="finite"):
        cal.add_business_seconds(at(2026, 1, 1), float("nan"))
    blink = Calendar(zone=BERLIN, always=False, weekdays=frozenset({0}),
                     start=time(9, 0), end=time(9, 0, 1))
    with pytest.raises(ValueError, match="century"):
        blink.add_business_seconds(at(2026, 1, 1), 30 * 86400)


@pytest.mark.parametrize(("fields", "message"), [
    ({"timezone": "Europe/Berlln"}, "unknown time zone 'Europe/Berlln'"),
    ({"timezone": "../etc/passwd"}, "unknown time zone"),
    ({"timezone": ""}, "unknown time zone"),
    ({"start": "17:00", "end": "09:00"}, "must be after start"),
    ({"start": "09:00", "end": "09:00"}, "must be after start"),
    ({"weekdays": [0, 7]}, r"0 \(Monday\) .. 6 \(Sunday\), got \[7\]"),
    ({"weekdays": [-1]}, "got \\[-1\\]"),
    ({"always": False, "weekdays": []}, "at least one weekday"),
    ({"start": "09:00+02:00"}, "local times"),
    ({"hours": "9-5"}, "Extra inputs"),
])
def test_config_validation(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CalendarConfig.model_validate(fields)


def test_config_parses_yaml_style_values() -> None:
    cfg = CalendarConfig.model_validate({
        "timezone": "America/New_York", "always": False, "weekdays": [0, 2],
        "start": "08:30", "end": "18:00", "holidays": ["2026-07-03"]})
    cal = Calendar.from_config(cfg)
    assert cal.start == time(8, 30) and date(2026, 7, 3) in cal.holidays


def test_ninety_days_is_fast() -> None:
    cal = berlin(*(date(2026, 1, 1) + timedelta(days=11 * i) for i in range(20)))
    start = datetime(2026, 1, 5, 10, 17, tzinfo=UTC)
    end = start + timedelta(days=90)
    runs = 200
    began = clock.perf_counter()
    for _ in range(runs):
        cal.business_seconds(start, end)
        cal.add_business_seconds(start, 500 * HOUR)
    per_call = (clock.perf_counter() - began) / (2 * runs)
    assert per_call < 1e-3


# -- properties ----------------------------------------------------------------

ZONES = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
         "Pacific/Apia", "Asia/Gaza", "UTC"]
EARLY, LATE = datetime(2010, 1, 1), datetime(2045, 1, 1)


@st.composite
def calendars(draw: st.DrawFn) -> Calendar:
    opens, closes = sorted(draw(st.lists(st.times(), min_size=2, max_size=2, unique=True)))
    return Calendar(
        zone=ZoneInfo(draw(st.sampled_from(ZONES))),
        always=draw(st.integers(0, 9)) == 0,  # mostly business hours
        weekdays=frozenset(draw(st.sets(st.integers(0, 6), min_size=1))),
        start=opens, end=closes,
        holidays=frozenset(draw(st.lists(
            st.dates(EARLY.date(), LATE.date()), max_size=40))))


# DST changes (Berlin, New York, Lord Howe's half hour, Gaza's shift and shift-back
# in 2040, Apia skipping 30 Dec 2011): spans starting up to ten weeks before them.
TRANSITIONS = [datetime(2026, 3, 29), datetime(2026, 10, 25), datetime(2026, 3, 8),
               datetime(2026, 11, 1), datetime(2026, 4, 5), datetime(2040, 10, 20),
               datetime(2040, 10, 27), datetime(2011, 12, 30)]


def instants() -> st.SearchStrategy[datetime]:
    near_change = st.builds(lambda t, back: t - timedelta(seconds=back),
                            st.sampled_from(TRANSITIONS), st.integers(0, 70 * 86400))
    anywhere = st.datetimes(EARLY, LATE)
    return st.one_of(anywhere, near_change).map(lambda d: d.replace(tzinfo=UTC))


def targets(cal: Calendar) -> st.SearchStrategy[float]:
    """Up to about a year of this calendar's business time (of 120 days when 24x7).

    Bounded by the calendar so that one open microsecond a week stays meaningful.
    """
    day = datetime.combine(date.min, cal.end) - datetime.combine(date.min, cal.start)
    week = 7 * 86400.0 if cal.always else len(cal.weekdays) * day.total_seconds()
    cap = min(120 * 86400.0, 50 * week)
    return st.one_of(st.floats(0, cap), st.floats(0, cap / 50),
                     st.integers(0, int(cap // 60)).map(lambda m: m * 60.0))


@settings(max_examples=400, deadline=None)
@given(st.data(), calendars(), instants())
def test_add_and_count_are_inverse(data: st.DataObject, cal: Calendar, start: datetime) -> None:
    seconds = data.draw(targets(cal))
    due = cal.add_business_seconds(start, seconds)
    assert due.tzinfo is UTC and due >= start
    assert abs(cal.business_seconds(start, due) - seconds) <= 1e-6
    if round(seconds * 1e6) > 0:  # earliest such instant: a microsecond earlier is short
        assert cal.business_seconds(start, due - timedelta(microseconds=1)) < seconds


@settings(max_examples=200, deadline=None)
@given(calendars(), instants(), st.integers(0, 80 * 24), st.integers(1, 72))
def test_whole_span_equals_the_sum_of_its_pieces(
        cal: Calendar, start: datetime, hours: int, piece: int) -> None:
    """Pieces shorter than a week never take the week fast path, so this checks it."""
    end = start + timedelta(hours=hours)
    cuts = [start + timedelta(hours=h) for h in range(0, hours, piece)] + [end]
    pieces = sum(cal.business_seconds(a, b) for a, b in itertools.pairwise(cuts))
    assert abs(cal.business_seconds(start, end) - pieces) <= 1e-6 * len(cuts)


@given(calendars(), instants())
def test_is_open_agrees_with_counting(cal: Calendar, moment: datetime) -> None:
    tick = timedelta(microseconds=1)
    assert cal.is_open(moment) == (cal.business_seconds(moment, moment + tick) > 0)


def _minutes() -> st.SearchStrategy[time]:
    # Whole minutes away from 01:00-04:00, where these zones' clocks jump or repeat:
    # there the wall clock and "first instant the clock reads it" legitimately differ.
    return st.integers(0, 24 * 60 - 1).filter(lambda m: not 60 <= m < 240).map(
        lambda m: time(m // 60, m % 60))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
       st.lists(_minutes(), min_size=2, max_size=2, unique=True),
       st.sets(st.integers(0, 6), min_size=1), st.sampled_from(TRANSITIONS[:5]),
       st.integers(-48 * 60, 24 * 60), st.integers(0, 48 * 60))
def test_counting_matches_a_minute_by_minute_wall_clock(
        zone: str, hours: list[time], weekdays: set[int], change: datetime,
        offset: int, length: int) -> None:
    """An independent oracle: look at the local clock every minute across a DST change."""
    opens, closes = sorted(hours)
    cal = Calendar(zone=ZoneInfo(zone), always=False, weekdays=frozenset(weekdays),
                   start=opens, end=closes)
    start = change.replace(tzinfo=UTC) + timedelta(minutes=offset)
    minutes = 0
    for m in range(length):
        local = (start + timedelta(minutes=m)).astimezone(cal.zone)
        minutes += local.weekday() in weekdays and opens <= local.time() < closes
    assert cal.business_seconds(start, start + timedelta(minutes=length)) == minutes * 60
