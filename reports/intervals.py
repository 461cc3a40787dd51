"""Pure interval arithmetic on epoch seconds: the building blocks of the sharing figures.

Intervals are (start, end) pairs with start < end, half-open. Lists called "merged" are sorted and
disjoint.
"""

from __future__ import annotations

from collections.abc import Iterable

Interval = tuple[int, int]


def merged(intervals: Iterable[Interval]) -> list[Interval]:
    """The union as a sorted list of disjoint intervals (touching ones joined)."""
    result: list[Interval] = []
    for start, end in sorted(intervals):
        if start >= end:
            continue
        if result and start <= result[-1][1]:
            if end > result[-1][1]:
                result[-1] = (result[-1][0], end)
        else:
            result.append((start, end))
    return result


def length(intervals: Iterable[Interval]) -> int:
    return sum(end - start for start, end in intervals)


def intersection_length(a: list[Interval], b: list[Interval]) -> int:
    """Total overlap of two merged lists, in one pass over both (plain comparisons: this runs per instrument
    over a year of sessions and open hours)."""
    i = j = total = 0
    na, nb = len(a), len(b)
    while i < na and j < nb:
        a_start, a_end = a[i]
        b_start, b_end = b[j]
        start = a_start if a_start > b_start else b_start
        end = a_end if a_end < b_end else b_end
        if start < end:
            total += end - start
        if a_end < b_end:
            i += 1
        else:
            j += 1
    return total


def subtract(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """The parts of merged list `a` outside merged list `b`."""
    result: list[Interval] = []
    j = 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k, cursor = j, start
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cursor:
                result.append((cursor, b[k][0]))
            cursor = max(cursor, b[k][1])
            k += 1
        if cursor < end:
            result.append((cursor, end))
    return result


def clipped(start: int, end: int, lo: int, hi: int) -> Interval | None:
    start, end = max(start, lo), min(end, hi)
    return (start, end) if start < end else None
