"""What a live subscription yields: small frozen objects.

A consumer of one seis sees its closed bars in order, each once (across reconnects too); a
correction of a bar already delivered comes as :class:`Revised`, never as a second
:class:`Closed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


class _Frozen:
    """Immutable values: copies are the value itself; pickling rebuilds from the fields
    (frozen dataclasses with ``__slots__`` need this before Python 3.11's ``slots=True``)."""

    __slots__ = ()

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return (type(self), tuple(getattr(self, f) for f in self.__slots__))


@dataclass(frozen=True)
class Bar(_Frozen):
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
class Closed(_Frozen):
    """A bar closed, with its final values."""

    __slots__ = ("bar",)
    bar: Bar


@dataclass(frozen=True)
class Revised(_Frozen):
    """The server changed a bar already delivered as :class:`Closed`."""

    __slots__ = ("bar",)
    bar: Bar


@dataclass(frozen=True)
class Update(_Frozen):
    """New values of the bar still forming (only when asked for)."""

    __slots__ = ("bar",)
    bar: Bar


@dataclass(frozen=True)
class Lagged(_Frozen):
    """This consumer fell behind and ``missed`` events were dropped for it; ``lost_closed`` of
    them were closed bars (fetch them with ``get_hist`` from ``first_time``)."""

    __slots__ = ("missed", "first_time", "lost_closed")
    missed: int
    first_time: Optional[int]
    lost_closed: int


@dataclass(frozen=True)
class Disconnected(_Frozen):
    """The connection was lost; bars that close meanwhile come after :class:`Reconnected`."""

    __slots__ = ("cause",)
    cause: str


@dataclass(frozen=True)
class Reconnected(_Frozen):
    """The connection is back and the gap was filled with ``gap_bars`` closed bars, delivered
    just before this event. ``down`` is in seconds."""

    __slots__ = ("down", "gap_bars")
    down: float
    gap_bars: int


@dataclass(frozen=True)
class Failed(_Frozen):
    """The seis ended for good; ``error`` is the typed exception. Nothing follows."""

    __slots__ = ("error",)
    error: BaseException


@dataclass(frozen=True)
class Other(_Frozen):
    """An event this version of the package does not know (described in ``text``)."""

    __slots__ = ("text",)
    text: str


__all__ = ["Bar", "Closed", "Revised", "Update", "Lagged", "Disconnected", "Reconnected", "Failed", "Other"]
