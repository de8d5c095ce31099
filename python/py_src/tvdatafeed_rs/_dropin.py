"""The drop-in: ``TvDatafeed`` and ``TvDatafeedLive`` with the signatures, defaults and return
shapes of ``tradingview-datafeed`` 2.1.1 (``tvDatafeed``), on the Rust engine.

Differences on purpose (each is a fault of the original, see the package README):

- Every blocking call honours its ``timeout`` (seconds; ``-1``: the engine's own command
  timeout, 10 s by default, bounds it instead of nothing). A call that timed out returns
  ``False``, as the original does when its lock is not acquired in time.
- ``shutdown(timeout)``/``del_tvdatafeed(timeout)`` are bounded and log the consumers that did
  not stop (``last_shutdown`` holds their names).
- A callback that raises ends its own consumer only; the traceback goes to logging.
- A slow consumer gets a bounded backlog and a logged lag report, never unbounded memory.
- One connection carries every seis, with reconnects and gap fill: no bar is skipped or
  repeated across an outage. The feed can be used again after a shutdown.
- ``new_seis`` checks the symbol by subscribing to it (the original's symbol search endpoint
  is gone), so a bad symbol raises the same ``ValueError`` in one round trip.
- ``utc=True`` gives tz-aware UTC indexes; the default keeps the original's naive local times.
- ``interval`` also accepts a TradingView resolution string (``"1S"``, ``"60"``).
- ``TvDatafeedLive(callback_threads=n)`` (an addition; the default is the original's thread per
  consumer) runs every consumer's callbacks on ``n`` shared threads. Under the GIL, ``1`` loses
  no parallelism and saves a thread per consumer; a callback that blocks then delays the others.
"""

from __future__ import annotations

import datetime as _dt
import enum
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import pandas as pd

from . import _frames, _native
from .errors import NotSubscribed, SeriesError, ShutdownError, SymbolError, Timeout, TransportError, TvDatafeedError
from .events import Closed, Disconnected, Failed, Lagged, Reconnected, Revised

logger = logging.getLogger("tvdatafeed_rs")


class Interval(enum.Enum):
    """The original's intervals, with the values it sends."""

    in_1_minute = "1"
    in_3_minute = "3"
    in_5_minute = "5"
    in_15_minute = "15"
    in_30_minute = "30"
    in_45_minute = "45"
    in_1_hour = "1H"
    in_2_hour = "2H"
    in_3_hour = "3H"
    in_4_hour = "4H"
    in_daily = "1D"
    in_weekly = "1W"
    in_monthly = "1M"


def _interval_value(interval: Union[Interval, str]) -> str:
    return interval.value if isinstance(interval, Interval) else str(interval)


def _format_symbol(symbol: str, exchange: str, contract: Optional[int] = None) -> str:
    # The original's __format_symbol, exactly.
    if ":" in symbol:
        pass
    elif contract is None:
        symbol = f"{exchange}:{symbol}"
    elif isinstance(contract, int):
        symbol = f"{exchange}:{symbol}{contract}!"
    else:
        raise ValueError("not a valid contract")
    return symbol


def _index_dtype() -> Any:
    # The dtype the original's index gets from `set_index` on datetime objects, which depends
    # on the pandas version (ns before pandas 3, us from 3 on).
    df = pd.DataFrame([[_dt.datetime(2020, 1, 1), 0.0]], columns=["datetime", "x"]).set_index("datetime")
    return df.index.dtype


_INDEX_DTYPE = _index_dtype()


_INDEX_UNIT = "datetime64[%s]" % np.datetime_data(_INDEX_DTYPE)[0]
_VALUE_COLUMNS = list(_frames.COLUMNS)
# Copied into each frame: `_from_arrays` keeps the Index it is given, and a caller renaming one
# frame's columns must not rename the next one's.
_ALL_COLUMNS = pd.Index(["symbol"] + _VALUE_COLUMNS)


def _index(t: np.ndarray, utc: bool) -> pd.DatetimeIndex:
    idx = _frames.utc_index(t, _INDEX_UNIT) if utc else _frames.local_naive(t, _INDEX_UNIT)
    idx.name = "datetime"
    return idx


def _float_columns(cols: Dict[str, np.ndarray], start: int = 0, last: Optional[Tuple[float, ...]] = None) -> List[np.ndarray]:
    """The five columns from row ``start`` on, ``last`` (one value per column) appended, as
    new arrays (one copy each: the history's columns are read-only views of the engine's
    buffers, and a frame the caller gets is theirs to write to); volume 0.0 where NaN."""
    data = []
    for i, c in enumerate(_frames.COLUMNS):
        src = np.asarray(cols[c], dtype=np.float64)[start:]
        if last is None:
            a = src.copy()
        else:
            a = np.empty(len(src) + 1, dtype=np.float64)
            a[:-1] = src
            a[-1] = last[i]
        data.append(a)
    v = data[-1]
    nan = np.isnan(v)
    if nan.any():
        v[nan] = 0.0
    return data


def _frame_public(symbol: str, t: np.ndarray, data: List[np.ndarray], utc: bool) -> pd.DataFrame:
    """The original's DataFrame through pandas' public constructors only, from
    ``_float_columns``' arrays (taken, not copied)."""
    df = pd.DataFrame(dict(zip(_VALUE_COLUMNS, data)), index=_index(t, utc), copy=False)
    df.insert(0, "symbol", value=symbol)
    return df


def _bar_index(t: int, utc: bool) -> pd.DatetimeIndex:
    if utc:
        return pd.DatetimeIndex(np.array([t], dtype="datetime64[s]").astype(_INDEX_UNIT), name="datetime").tz_localize("UTC")
    off = time.localtime(t).tm_gmtoff
    return pd.DatetimeIndex(np.array([t + off], dtype="datetime64[s]").astype(_INDEX_UNIT), name="datetime")


def _bar_frame_public(symbol: str, t: int, o: float, h: float, lo: float, c: float, v: Optional[float], utc: bool) -> pd.DataFrame:
    """One bar's frame through pandas' public constructors only."""
    vol = 0.0 if v is None or v != v else v
    df = pd.DataFrame(np.array([[o, h, lo, c, vol]], dtype=np.float64), columns=_VALUE_COLUMNS, index=_bar_index(t, utc))
    df.insert(0, "symbol", value=symbol)
    return df


# The symbol column's dtype as the public path makes it (object before pandas 3, str from 3).
_SYMBOL_DTYPE = _bar_frame_public("X", 0, 0.0, 0.0, 0.0, 0.0, None, True)["symbol"].dtype


def _frame_fast(symbol: str, t: np.ndarray, data: List[np.ndarray], utc: bool) -> pd.DataFrame:
    """``_frame_public``'s frame from its six columns at once (``DataFrame._from_arrays``), the
    symbol column repeated from one element: a third of the public path's time at 5,000 rows."""
    n = len(t)
    symbols = pd.array([symbol], dtype=_SYMBOL_DTYPE).take(np.zeros(n, dtype=np.intp))
    return pd.DataFrame._from_arrays([symbols] + data, columns=_ALL_COLUMNS.copy(), index=_index(t, utc), verify_integrity=False)


def _bar_frame_fast(symbol: str, t: int, o: float, h: float, lo: float, c: float, v: Optional[float], utc: bool) -> pd.DataFrame:
    """The same frame from its six columns at once (``DataFrame._from_arrays``: a quarter of
    the public path's time, which builds a float block, then inserts a column into it)."""
    vol = 0.0 if v is None or v != v else v
    arrays = [pd.array([symbol], dtype=_SYMBOL_DTYPE), np.array([o]), np.array([h]), np.array([lo]), np.array([c]), np.array([vol])]
    return pd.DataFrame._from_arrays(arrays, columns=_ALL_COLUMNS.copy(), index=_bar_index(t, utc), verify_integrity=False)


def _fast_path_works() -> bool:
    # `_from_arrays` is pandas-internal (present from 0.24 to 3.x): used only where it gives
    # exactly the public path's frames, checked once here.
    try:
        t = np.array([1_765_000_000, 1_765_000_060], dtype=np.int64)
        cols = {"open": [1.0, 2.0], "high": [2.0, 3.0], "low": [0.5, 1.5], "close": [1.5, 2.5], "volume": [np.nan, 4.0]}
        for utc in (False, True):
            a = _bar_frame_fast("BINANCE:BTCUSDT", 1_765_000_000, 1.0, 2.0, 0.5, 1.5, None, utc)
            b = _bar_frame_public("BINANCE:BTCUSDT", 1_765_000_000, 1.0, 2.0, 0.5, 1.5, None, utc)
            pd.testing.assert_frame_equal(a, b, check_exact=True)
            for n in (0, 2):
                c = {k: np.array(v[:n]) for k, v in cols.items()}
                fast = _frame_fast("X:Y", t[:n], _float_columns(c), utc)
                pd.testing.assert_frame_equal(fast, _frame_public("X:Y", t[:n], _float_columns(c), utc), check_exact=True)
        return True
    except Exception:
        return False


if _fast_path_works():
    _bar_frame, _frame = _bar_frame_fast, _frame_fast
else:
    _bar_frame, _frame = _bar_frame_public, _frame_public
_frame.__doc__ = """The original's DataFrame: index ``datetime``; columns symbol, open, high, low, close,
volume (float64, 0.0 where the symbol has no volume)."""
_bar_frame.__doc__ = """``_frame`` of one bar, equal to it (tests/test_dropin_live.py checks), built the short
way: a live callback gets one per closed bar, on the path whose latency users measure, and
``_frame``'s general steps (the zone bisection, a dict of columns, a column inserted) cost
several times as much for a single row."""


def _hist_frame(h: dict, symbol: str, n_bars: int, utc: bool) -> pd.DataFrame:
    n_bars = max(n_bars, 1)  # as asked of the engine
    t, cols = _frames.columns(h)
    f = _frames.forming_arrays(h)
    if f is not None:
        start = max(len(t) - max(n_bars - 1, 0), 0)
        times = np.empty(len(t) - start + 1, dtype=np.int64)
        times[:-1] = t[start:]
        times[-1] = f[0]
        return _frame(symbol, times, _float_columns(cols, start, f[1]), utc)
    start = max(len(t) - n_bars, 0)
    return _frame(symbol, t[start:], _float_columns(cols, start), utc)


def _token_from(username: Optional[str], password: Optional[str], token: Optional[str]) -> Optional[_native.Token]:
    if token:
        return _native.Token(token)
    if username is not None and password is not None:
        try:
            return _native.sign_in(username, password)
        except TvDatafeedError as e:
            # The error names neither the user nor the password.
            logger.error("error while signin: %s", e)
    return None


class TvDatafeed:
    """``TvDatafeed(username=None, password=None)``: historical bars as the original's
    DataFrames. Also honours ``TVDATAFEED_URL`` and ``TV_AUTH_TOKEN``; ``url``, ``token`` and
    ``utc`` are keyword-only extensions."""

    def __init__(self, username: Optional[str] = None, password: Optional[str] = None, *, url: Optional[str] = None, token: Optional[str] = None, utc: bool = False, timeout: float = 60.0) -> None:
        self.ws_debug = False
        self._token = _token_from(username, password, token)
        if self._token is None and not os.environ.get("TV_AUTH_TOKEN", "").strip():
            logger.warning("you are using nologin method, data you access may be limited")
        self._url = url
        self._utc = utc
        self._timeout = timeout
        self._client = _native.NativeClient(url=url, token=self._token, timeout=timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self._client.url!r})"

    def get_hist(self, symbol: str, exchange: str = "NSE", interval: Union[Interval, str] = Interval.in_daily, n_bars: int = 10, fut_contract: Optional[int] = None, extended_session: bool = False) -> Optional[pd.DataFrame]:
        """``n_bars`` bars, oldest first, the last one still forming; ``None`` (logged) when
        the server refuses or nothing comes back in time."""
        symbol = _format_symbol(symbol, exchange, fut_contract)
        try:
            # `n_bars` bars in all, the forming one among them, in one request: the original's.
            h = self._client.get_hist(symbol, _interval_value(interval), max(int(n_bars), 1), extended_session, forming_counted=True)
        except TransportError:
            raise  # the original lets connection errors through too
        except TvDatafeedError as e:
            logger.error(e)
            logger.error("no data, please check the exchange and symbol")
            return None
        return _hist_frame(h, symbol, int(n_bars), self._utc)

    def search_symbol(self, text: str, exchange: str = "") -> list:
        """TradingView's symbol search (its current endpoint); ``[]`` (logged) on failure."""
        try:
            return _native.search(text, exchange or None)
        except Exception as e:  # the original logs every failure and returns []
            logger.error(e)
            return []


class _Pending:
    """A ``new_seis`` in flight: racing callers wait on it and get the same object."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.seis: Optional[Seis] = None
        self.error: Optional[BaseException] = None
        self.timed_out = False


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def _deadline(timeout: float) -> Optional[float]:
    return None if timeout is None or timeout < 0 else time.monotonic() + timeout


class Seis:
    """A symbol-exchange-interval set, as the original's."""

    def __init__(self, symbol: str, exchange: str, interval: Union[Interval, str]) -> None:
        self._symbol = symbol
        self._exchange = exchange
        self._interval = interval
        self._tvdatafeed: Optional[TvDatafeedLive] = None
        self._consumers: List[Consumer] = []
        self._native: Optional[_native.NativeSeis] = None

    symbol = property(lambda self: self._symbol)
    exchange = property(lambda self: self._exchange)
    interval = property(lambda self: self._interval)

    @property
    def tvdatafeed(self) -> Optional["TvDatafeedLive"]:
        return self._tvdatafeed

    @tvdatafeed.setter
    def tvdatafeed(self, value: "TvDatafeedLive") -> None:
        if self._tvdatafeed is not None:
            raise AttributeError("Cannot overwrite attribute, delete it first")
        if not isinstance(value, TvDatafeedLive):
            raise ValueError("Argument must be instance of TvDatafeedLive")
        self._tvdatafeed = value

    @tvdatafeed.deleter
    def tvdatafeed(self) -> None:
        self._tvdatafeed = None

    def _key(self) -> Tuple[str, str, str]:
        return (self._symbol, self._exchange, _interval_value(self._interval))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Seis) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f'Seis("{self._symbol}","{self._exchange}",{self._interval})'

    def _feed(self) -> "TvDatafeedLive":
        if self._tvdatafeed is None:
            raise NameError("TvDatafeed not provided")
        return self._tvdatafeed

    def new_consumer(self, callback: Callable[["Seis", pd.DataFrame], Any], timeout: float = -1) -> Union["Consumer", bool]:
        return self._feed().new_consumer(self, callback, timeout)

    def del_consumer(self, consumer: "Consumer", timeout: float = -1) -> bool:
        return self._feed().del_consumer(consumer, timeout)

    def get_hist(self, n_bars: int = 10, timeout: float = -1) -> Union[pd.DataFrame, None, bool]:
        return self._feed().get_hist(symbol=self._symbol, exchange=self._exchange, interval=self._interval, n_bars=n_bars, timeout=timeout)

    def del_seis(self, timeout: float = -1) -> bool:
        return self._feed().del_seis(self, timeout)

    def get_consumers(self) -> List["Consumer"]:
        """The consumers, as a copy (the original handed out its internal list)."""
        return list(self._consumers)


class Consumer:
    """A callback on a seis. Its callback runs on the engine's consumer thread
    (``tv-consumer-N``), one call at a time, with ``callback(seis, data)``; ``data`` is a
    one-row DataFrame of the bar that closed."""

    def __init__(self, seis: Seis, callback: Callable[[Seis, pd.DataFrame], Any]) -> None:
        self._seis: Optional[Seis] = seis
        self._callback: Optional[Callable[[Seis, pd.DataFrame], Any]] = callback
        self.name = f"{getattr(callback, '__name__', 'callback')}_{seis.symbol}_{seis.exchange}_{_interval_value(seis.interval)}"
        self._native: Optional[_native.NativeConsumer] = None

    seis = property(lambda self: self._seis)
    callback = property(lambda self: self._callback)

    def __repr__(self) -> str:
        return f"Consumer({self.name!r})"

    def del_consumer(self, timeout: float = -1) -> bool:
        if self._seis is None:
            raise NameError("Consumer is not listed")
        return self._seis.del_consumer(self, timeout)

    def is_alive(self) -> bool:
        return self._seis is not None


class TvDatafeedLive(TvDatafeed):
    """``TvDatafeedLive(username=None, password=None)``: live closed bars to callbacks, on one
    connection for every seis. See the module doc for what differs from the original."""

    def __init__(self, username: Optional[str] = None, password: Optional[str] = None, *, url: Optional[str] = None, token: Optional[str] = None, utc: bool = False, timeout: float = 60.0, command_timeout: float = 10.0, consumer_backlog: Optional[int] = None, callback_threads: Optional[int] = None) -> None:
        super().__init__(username, password, url=url, token=token, utc=utc, timeout=timeout)
        self._command_timeout = command_timeout
        self._backlog = consumer_backlog
        self._callback_threads = callback_threads
        # Guards the three dicts below only: never held across an engine call, so no call
        # waits behind another's network round trip (the original held its lock over I/O).
        self._lock = threading.Lock()
        self._feed: Optional[_native.NativeFeed] = None
        self._seises: Dict[Tuple[str, str, str], Union[Seis, _Pending]] = {}
        self._by_native: Dict[int, Consumer] = {}
        self.last_shutdown: Optional[Dict[str, Any]] = None

    # -- plumbing ---------------------------------------------------------------------------

    def _native_feed(self) -> _native.NativeFeed:
        with self._lock:
            if self._feed is None:
                self._feed = _native.NativeFeed(url=self._url, token=self._token, command_timeout=self._command_timeout, hist_timeout=self._timeout, consumer_backlog=self._backlog, callback_threads=self._callback_threads)
            return self._feed

    def _acquire(self, deadline: Optional[float]) -> bool:
        r = _remaining(deadline)
        return self._lock.acquire(timeout=-1 if r is None else r)

    def _handler(self, consumer: Consumer) -> Callable[[Any], bool]:
        utc = self._utc

        symbol: Optional[str] = None

        def on_event(event: Any) -> bool:
            nonlocal symbol
            seis, callback = consumer.seis, consumer.callback
            if seis is None or callback is None:
                return False
            if isinstance(event, Closed):
                b = event.bar
                if symbol is None:
                    symbol = _format_symbol(seis.symbol, seis.exchange)
                data = _bar_frame(symbol, b.time, b.open, b.high, b.low, b.close, b.volume, utc)
                try:
                    callback(seis, data)
                except Exception:
                    logger.exception("callback of consumer %s raised: that consumer is removed, the others go on", consumer.name)
                    self._forget(consumer)
                    return False
            elif isinstance(event, Lagged):
                logger.warning("consumer %s fell behind: %d events dropped (%d closed bars lost, from %s)", consumer.name, event.missed, event.lost_closed, event.first_time)
            elif isinstance(event, Revised):
                logger.info("consumer %s: bar %s revised by the server", consumer.name, event.bar.time)
            elif isinstance(event, Disconnected):
                logger.warning("connection lost (%s): reconnecting, the gap will be filled", event.cause)
            elif isinstance(event, Reconnected):
                logger.info("reconnected after %.1f s, %d bars filled", event.down, event.gap_bars)
            elif isinstance(event, Failed):
                # The feed shutting down ends every consumer: not an error.
                level = logging.DEBUG if isinstance(event.error, ShutdownError) else logging.ERROR
                logger.log(level, "consumer %s ended: %s", consumer.name, event.error)
                self._forget(consumer)
                return False
            return True

        return on_event

    def _forget(self, consumer: Consumer) -> None:
        with self._lock:
            seis = consumer._seis
            if seis is not None and consumer in seis._consumers:
                seis._consumers.remove(consumer)
            if consumer._native is not None:
                self._by_native.pop(consumer._native.id, None)
            consumer._seis = None
            consumer._callback = None

    # -- the original's API ----------------------------------------------------------------

    def new_seis(self, symbol: str, exchange: str, interval: Union[Interval, str], timeout: float = -1) -> Union[Seis, bool]:
        """The seis of ``symbol``/``exchange``/``interval``, subscribing it if new. Callers
        racing on one key all get the same object. Raises ``ValueError`` if the server does
        not know the symbol; returns ``False`` past ``timeout``."""
        deadline = _deadline(timeout)
        key = (symbol, exchange, _interval_value(interval))
        feed = self._native_feed()
        if not self._acquire(deadline):
            return False
        try:
            cur = self._seises.get(key)
            if isinstance(cur, Seis):
                return cur
            owner = cur is None
            pending = _Pending() if owner else cur
            if owner:
                self._seises[key] = pending
        finally:
            self._lock.release()
        if not owner:
            if not pending.done.wait(_remaining(deadline)) or pending.timed_out:
                return False
            if pending.error is not None:
                raise pending.error
            return pending.seis
        try:
            native = feed.new_seis(_format_symbol(symbol, exchange), key[2], _remaining(deadline))
        except BaseException as e:
            with self._lock:
                self._seises.pop(key, None)
            if isinstance(e, Timeout):
                pending.timed_out = True
                pending.done.set()
                return False
            err: BaseException = e
            if isinstance(e, (SeriesError, TvDatafeedError)) and isinstance(e, (SymbolError, ValueError)):
                err = ValueError("Provided symbol and exchange combination is not listed in TradingView")
                err.__cause__ = e
            pending.error = err
            pending.done.set()
            raise err
        seis = Seis(symbol, exchange, interval)
        seis._native = native
        seis.tvdatafeed = self
        with self._lock:
            self._seises[key] = seis
        pending.seis = seis
        pending.done.set()
        return seis

    def del_seis(self, seis: Seis, timeout: float = -1) -> bool:
        """Removes ``seis`` and ends its consumers. ``ValueError`` if it is not listed."""
        deadline = _deadline(timeout)
        if not self._acquire(deadline):
            return False
        try:
            if self._seises.get(seis._key()) is not seis:
                raise ValueError("Seis is not listed")
            del self._seises[seis._key()]
            consumers = list(seis._consumers)
        finally:
            self._lock.release()
        feed = self._feed
        try:
            if feed is not None and seis._native is not None:
                feed.del_seis(seis._native, _remaining(deadline))
        except Timeout:
            return False
        except NotSubscribed:
            pass
        finally:
            for c in consumers:
                self._forget(c)
            del seis.tvdatafeed
        return True

    def new_consumer(self, seis: Seis, callback: Callable[[Seis, pd.DataFrame], Any], timeout: float = -1) -> Union[Consumer, bool]:
        """Calls ``callback(seis, data)`` for each closed bar of ``seis``, on a thread of its
        own. ``ValueError`` if ``seis`` is not listed."""
        deadline = _deadline(timeout)
        if not self._acquire(deadline):
            return False
        try:
            if self._seises.get(seis._key()) is not seis:
                raise ValueError("Seis is not listed")
            feed = self._feed
        finally:
            self._lock.release()
        consumer = Consumer(seis, callback)
        try:
            native = feed.new_consumer(seis._native, self._handler(consumer), _remaining(deadline))
        except Timeout:
            return False
        consumer._native = native
        with self._lock:
            if consumer._seis is not None:  # it may have ended already
                seis._consumers.append(consumer)
                self._by_native[native.id] = consumer
        return consumer

    def del_consumer(self, consumer: Consumer, timeout: float = -1) -> bool:
        """Removes ``consumer``: after this returns its callback does not run again (unless
        called from that callback). ``NameError`` if it is not listed."""
        deadline = _deadline(timeout)
        if not self._acquire(deadline):
            return False
        try:
            seis = consumer._seis
            if seis is None or consumer not in seis._consumers:
                raise NameError("Consumer is not listed")
            seis._consumers.remove(consumer)
            feed = self._feed
        finally:
            self._lock.release()
        try:
            if feed is not None and consumer._native is not None:
                feed.del_consumer(consumer._native, _remaining(deadline))
        except Timeout:
            return False
        except (NotSubscribed, TvDatafeedError) as e:
            logger.debug("del_consumer: %s", e)
        finally:
            self._forget(consumer)
        return True

    def get_hist(self, symbol: str, exchange: str = "NSE", interval: Union[Interval, str] = Interval.in_daily, n_bars: int = 10, fut_contract: Optional[int] = None, extended_session: bool = False, timeout: float = -1) -> Union[pd.DataFrame, None, bool]:
        """As :meth:`TvDatafeed.get_hist`, over the live connection; ``False`` past
        ``timeout``."""
        symbol = _format_symbol(symbol, exchange, fut_contract)
        deadline = _deadline(timeout)
        feed = self._native_feed()
        try:
            h = feed.get_hist(symbol, _interval_value(interval), max(int(n_bars), 1), extended_session, None, _remaining(deadline), forming_counted=True)
        except Timeout:
            return False
        except TransportError:
            raise
        except TvDatafeedError as e:
            logger.error(e)
            logger.error("no data, please check the exchange and symbol")
            return None
        return _hist_frame(h, symbol, int(n_bars), self._utc)

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stops every consumer and the connection within ``timeout`` seconds. ``True`` when
        everything stopped in time; otherwise the consumers still running are logged and
        named in ``last_shutdown["unfinished"]``. The feed can be used again afterwards."""
        with self._lock:
            feed, self._feed = self._feed, None
            seises = [s for s in self._seises.values() if isinstance(s, Seis)]
            self._seises.clear()
            names = {f"tv-consumer-{k}": c.name for k, c in self._by_native.items()}
        if feed is None:
            return True
        clean, unfinished, caller, elapsed = feed.shutdown(max(float(timeout), 0.0))
        stuck = [names.get(n, n) for n in unfinished]
        self.last_shutdown = {"clean": clean, "unfinished": stuck, "caller": names.get(caller, caller), "elapsed": elapsed}
        if not clean:
            logger.warning("shutdown: not stopped within %.1f s: %s", timeout, ", ".join(stuck))
        for s in seises:
            for c in list(s._consumers):
                self._forget(c)
            del s.tvdatafeed
        return clean

    def del_tvdatafeed(self, timeout: float = 10.0) -> bool:
        """Stops the live feed, bounded by ``timeout`` (the original joined with no bound)."""
        return self.shutdown(timeout)
