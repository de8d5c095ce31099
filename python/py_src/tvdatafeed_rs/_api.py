"""The Pythonic API: :class:`Client` for history, :class:`LiveFeed` for live bars."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from . import _frames, _native
from .errors import TvDatafeedError
from .events import Bar

Interval = str
"""An interval string as TradingView writes it: ``"1"``, ``"15"``, ``"1H"``, ``"1D"``,
``"1W"``, ``"1M"``, ``"5S"``."""


def _token(token: Optional[str]) -> Optional[_native.Token]:
    return None if token is None else _native.Token(token)


def history_frame(h: dict) -> pd.DataFrame:
    """A native history as a DataFrame: UTC ``DatetimeIndex`` named ``time``, float64 columns
    ``open high low close volume`` (NaN volume for a symbol without volume), closed bars only.
    The forming bar is apart, in ``df.attrs["forming"]`` (a :class:`Bar` or ``None``)."""
    t, cols = _frames.columns(h)
    df = pd.DataFrame(cols, index=_frames.utc_index(t), copy=False)
    df.index.name = "time"
    f = h["forming"]
    df.attrs["symbol"] = h["symbol"]
    df.attrs["interval"] = h["interval"]
    df.attrs["forming"] = None if f is None else Bar(*f)
    df.attrs["missing"] = h["missing"]
    return df


class Client:
    """Historical bars. Blocking calls release the GIL; Ctrl-C interrupts them.

    ``url`` and ``token`` default to ``TVDATAFEED_URL`` and ``TV_AUTH_TOKEN``, then to
    TradingView anonymously. ``timeout`` (seconds) bounds each call.
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, timeout: Optional[float] = None, max_in_flight: Optional[int] = None) -> None:
        self._native = _native.NativeClient(url=url, token=_token(token), timeout=timeout, max_in_flight=max_in_flight)

    @property
    def url(self) -> str:
        return self._native.url

    def get_hist(self, symbol: str, interval: Interval, bars: int, *, extended_session: bool = False, range: Optional[Tuple[int, int]] = None) -> pd.DataFrame:
        """The last ``bars`` closed bars of ``symbol`` (``EXCH:SYM``) at ``interval``.

        Raises a :mod:`tvdatafeed_rs.errors` exception on refusal, timeout or transport failure.
        """
        return history_frame(self._native.get_hist(symbol, str(interval), int(bars), extended_session, range))

    def get_hist_many(self, requests: Iterable[Tuple[str, Interval, int]]) -> List[Union[pd.DataFrame, TvDatafeedError]]:
        """Many histories over one connection: one result per request, in order, each a
        DataFrame or the exception for that request (returned, not raised)."""
        reqs = [(s, str(i), int(n)) for s, i, n in requests]
        return [r if isinstance(r, BaseException) else history_frame(r) for r in self._native.get_hist_many(reqs)]


class ShutdownReport(NamedTuple):
    """What :meth:`LiveFeed.shutdown` did: ``clean`` when every thread stopped in time;
    ``unfinished`` names the threads that did not (``tv-consumer-N``)."""

    clean: bool
    unfinished: List[str]
    caller: Optional[str]
    elapsed: float


class Subscription:
    """A pull consumer of one seis: an iterator (``for event in sub``) and an async iterator
    (``async for event in sub``) over :mod:`tvdatafeed_rs.events`. It ends after a
    :class:`~tvdatafeed_rs.events.Failed`, when closed, when its seis is removed or the feed
    shuts down."""

    _END = object()

    def __init__(self, native: _native.NativeSubscription) -> None:
        self._native = native

    def recv(self, timeout: Optional[float] = None) -> Any:
        """The next event, or ``None`` after ``timeout`` seconds. Raises ``StopIteration``
        once the subscription ended."""
        return self._native.recv(timeout)

    def close(self) -> None:
        self._native.close()

    def __iter__(self) -> "Subscription":
        return self

    def __next__(self) -> Any:
        return self._native.recv(None)

    def __aiter__(self) -> "Subscription":
        return self

    def _recv_slice(self) -> Any:
        # StopIteration cannot travel through a Future: turn it into a sentinel.
        try:
            return self._native.recv(0.25)
        except StopIteration:
            return self._END

    async def __anext__(self) -> Any:
        loop = asyncio.get_running_loop()
        while True:
            ev = await loop.run_in_executor(None, self._recv_slice)
            if ev is self._END:
                raise StopAsyncIteration
            if ev is not None:
                return ev

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LiveFeed:
    """The live engine: one connection carries every seis; reconnects fill the gap, so a
    consumer sees every closed bar once, in order. A context manager: leaving it shuts down.

    Every blocking call releases the GIL and honours ``timeout`` (seconds; ``None``: the
    feed's ``command_timeout``).

    ``callback_threads``: ``None`` (the default) runs each callback consumer on a thread of its
    own; ``n`` runs them all on ``n`` shared dispatcher threads (``0``: one per core). Under the
    GIL only one callback runs at a time anyway, so ``1`` costs no parallelism, saves a thread
    per consumer and a GIL hand-off between callbacks; but a callback that blocks (sleeps, waits
    on I/O) delays the others on its thread.
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, *, command_timeout: float = 10.0, hist_timeout: float = 60.0, reconnect_backoff: Optional[Tuple[float, float]] = None, consumer_backlog: Optional[int] = None, callback_threads: Optional[int] = None) -> None:
        self._native = _native.NativeFeed(url=url, token=_token(token), command_timeout=command_timeout, hist_timeout=hist_timeout, reconnect_backoff=reconnect_backoff, consumer_backlog=consumer_backlog, callback_threads=callback_threads)

    def new_seis(self, symbol: str, interval: Interval, timeout: Optional[float] = None) -> _native.NativeSeis:
        """Subscribes ``symbol`` at ``interval`` (or returns the existing seis, taking one more
        hold: call :meth:`del_seis` once per ``new_seis``)."""
        return self._native.new_seis(symbol, str(interval), timeout)

    def del_seis(self, seis: _native.NativeSeis, timeout: Optional[float] = None) -> None:
        self._native.del_seis(seis, timeout)

    def subscribe(self, seis: _native.NativeSeis, timeout: Optional[float] = None) -> Subscription:
        return Subscription(self._native.subscribe(seis, timeout))

    def new_consumer(self, seis: _native.NativeSeis, callback: Callable[[Any], Any], timeout: Optional[float] = None) -> _native.NativeConsumer:
        """Runs ``callback(event)`` on a thread of its own (or a shared one: see
        ``callback_threads``). Returning ``False`` ends the consumer; an exception ends it too
        and goes to ``sys.unraisablehook``."""
        return self._native.new_consumer(seis, callback, timeout)

    def del_consumer(self, consumer: _native.NativeConsumer, timeout: Optional[float] = None) -> None:
        self._native.del_consumer(consumer, timeout)

    def get_hist(self, symbol: str, interval: Interval, bars: int, *, extended_session: bool = False, range: Optional[Tuple[int, int]] = None, timeout: Optional[float] = None) -> pd.DataFrame:
        """History over the live connection (no new connection), as :meth:`Client.get_hist`."""
        return history_frame(self._native.get_hist(symbol, str(interval), int(bars), extended_session, range, timeout))

    def stats(self) -> dict:
        return self._native.stats()

    def shutdown(self, timeout: float = 5.0) -> ShutdownReport:
        """Stops everything within ``timeout`` seconds, whatever the callbacks do."""
        return ShutdownReport(*self._native.shutdown(timeout))

    def __enter__(self) -> "LiveFeed":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown(5.0)


Simulator = _native.Simulator
