"""What a live subscription yields: small frozen objects.

A consumer of one seis sees its closed bars in order, each once (across reconnects too); a
correction of a bar already delivered comes as :class:`Revised`, never as a second
:class:`Closed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Bar:
    """One OHLCV bar. ``time`` is its open time in UTC seconds; ``volume`` is ``None`` for a
    symbol without volume (an index)."""

    __slots__ = ("time", "open", "high", "low", "close", "volume")
    time: int
    open: float
    high: float
    low: float
    close: float
    volume: Optional[float]


@dataclass(frozen=True)
class Closed:
    """A bar closed, with its final values."""

    __slots__ = ("bar",)
    bar: Bar


@dataclass(frozen=True)
class Revised:
    """The server changed a bar already delivered as :class:`Closed`."""

    __slots__ = ("bar",)
    bar: Bar


@dataclass(frozen=True)
class Update:
    """New values of the bar still forming (only when asked for)."""

    __slots__ = ("bar",)
    bar: Bar


@dataclass(frozen=True)
class Lagged:
    """This consumer fell behind and ``missed`` events were dropped for it; ``lost_closed`` of
    them were closed bars (fetch them with ``get_hist`` from ``first_time``)."""

    __slots__ = ("missed", "first_time", "lost_closed")
    missed: int
    first_time: Optional[int]
    lost_closed: int


@dataclass(frozen=True)
class Disconnected:
    """The connection was lost; bars that close meanwhile come after :class:`Reconnected`."""

    __slots__ = ("cause",)
    cause: str


@dataclass(frozen=True)
class Reconnected:
    """The connection is back and the gap was filled with ``gap_bars`` closed bars, delivered
    just before this event. ``down`` is in seconds."""

    __slots__ = ("down", "gap_bars")
    down: float
    gap_bars: int


@dataclass(frozen=True)
class Failed:
    """The seis ended for good; ``error`` is the typed exception. Nothing follows."""

    __slots__ = ("error",)
    error: BaseException


@dataclass(frozen=True)
class Other:
    """An event this version of the package does not know (described in ``text``)."""

    __slots__ = ("text",)
    text: str


__all__ = ["Bar", "Closed", "Revised", "Update", "Lagged", "Disconnected", "Reconnected", "Failed", "Other"]
