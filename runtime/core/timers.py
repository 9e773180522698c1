"""Workflow timers (NuvIoT ``Timer``, LagoVista/DeviceAdmin ``Timer.cs``): when one fires next. Pure: time in, time out.

A timer with an interval (``Days``, ``Hours``, ``Minutes``, ``Seconds``) fires every interval after its last firing;
one without fires daily at ``HourOfDay``:``MinuteOfDay`` (a ``MinuteOfDay`` of 60 or more counts minutes from
midnight). The weekday boxes (``Sunday`` .. ``Saturday``) restrict both kinds; none checked means every day. An
interval timer fires only between ``DailyStartTime`` and ``DailyEndTime`` (``HH:MM``) when they are given: a firing
that falls outside moves to the next window's start. Times of day and weekdays are wall-clock times in the instance's
``TimeZone`` (UTC unless the document names another; ``runtime/timezones.py``, docs/fidelity.md).

Each device keeps the next due time of each of its workflows' timers in its property bag (``_system.timers``
``{"workflow/timer": epoch s}``), stored with the device state, so a restart keeps the schedule: a firing missed
while the runtime was down happens once at start, then the schedule goes on from there.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo

from runtime.core.solution.model import Timer

TIMERS_DUE = "_system.timers"
DAY = 86400.0


def timer_id(workflow_key: str, timer_key: str) -> str:
    return f"{workflow_key}/{timer_key}"


def interval_seconds(timer: Timer) -> float:
    return float(timer.days * 86400 + timer.hours * 3600 + timer.minutes * 60 + timer.seconds)


def _weekdays(timer: Timer) -> frozenset[int]:
    """Python weekday numbers (Monday 0) the timer may fire on."""
    boxes = (timer.monday, timer.tuesday, timer.wednesday, timer.thursday, timer.friday, timer.saturday, timer.sunday)
    days = frozenset(i for i, on in enumerate(boxes) if on)
    return days or frozenset(range(7))


def _clock_seconds(text: str | None) -> float | None:
    """``HH:MM`` or ``HH:MM:SS`` as seconds after midnight; None when empty or not a time."""
    if not text or not text.strip():
        return None
    parts = text.strip().split(":")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        return None
    if len(numbers) not in (2, 3) or not 0 <= numbers[0] <= 24 or not 0 <= numbers[1] < 60:
        return None
    return numbers[0] * 3600.0 + numbers[1] * 60.0 + (numbers[2] if len(numbers) == 3 else 0)


def schedule_problem(timer: Timer) -> str | None:
    """Why the timer can never fire, or None (``validate`` warns with it)."""
    for name, text in (("dailyStartTime", timer.daily_start_time), ("dailyEndTime", timer.daily_end_time)):
        if text and text.strip() and _clock_seconds(text) is None:
            return f"{name} {text!r} is not a time of day (HH:MM)"
    if min(timer.days, timer.hours, timer.minutes, timer.seconds) < 0:
        return "a negative interval"
    return None


def _local_day(at: float, zone: tzinfo) -> date:
    return datetime.fromtimestamp(at, zone).date()


def _wall(day: date, seconds: float, zone: tzinfo) -> float:
    """Epoch s of the wall-clock time ``seconds`` after midnight of ``day`` in ``zone`` (``zoneinfo`` settles a
    time skipped or repeated by a daylight-saving change: the earlier reading, ``fold=0``)."""
    whole = int(seconds)
    if whole >= 86400:  # the end of the day: the next midnight
        return datetime.combine(day + timedelta(days=1), time(), zone).timestamp()
    clock = time(whole // 3600, whole % 3600 // 60, whole % 60)
    return datetime.combine(day, clock, zone).timestamp() + (seconds - whole)


def next_fire(timer: Timer, after: float, zone: tzinfo = UTC) -> float | None:
    """The first firing strictly after ``after`` (epoch s), or None when the timer can never fire. The time of
    day, the daily window and the weekdays are read in ``zone`` (the instance's ``TimeZone``; UTC by default)."""
    if schedule_problem(timer) is not None:
        return None
    days = _weekdays(timer)
    interval = interval_seconds(timer)
    if interval <= 0:  # daily at a time of day
        minute = timer.minute_of_day if timer.minute_of_day >= 60 else timer.hour_of_day * 60 + timer.minute_of_day
        offset = (minute * 60.0) % DAY
        day = _local_day(after, zone)
        for _ in range(9):
            at = _wall(day, offset, zone)
            if at > after and day.weekday() in days:
                return at
            day += timedelta(days=1)
        return None
    candidate = after + interval
    start = _clock_seconds(timer.daily_start_time) or 0.0
    end = _clock_seconds(timer.daily_end_time)
    end = DAY if end is None or end <= start else end
    day = _local_day(candidate, zone)
    for _ in range(9):
        window_start, window_end = _wall(day, start, zone), _wall(day, end, zone)
        if day.weekday() in days and candidate <= window_end:
            return max(candidate, window_start)
        day += timedelta(days=1)
    return None


def due_times(bag: dict[str, object]) -> dict[str, object]:
    found = bag.get(TIMERS_DUE)
    return found if isinstance(found, dict) else {}
