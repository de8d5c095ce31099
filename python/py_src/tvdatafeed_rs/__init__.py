"""tvdatafeed_rs: TradingView market data on a lock-free Rust engine.

- The drop-in for ``tvDatafeed`` (``tradingview-datafeed`` 2.1.1)::

      from tvdatafeed_rs import TvDatafeed, TvDatafeedLive, Interval

- The Pythonic API: :class:`Client` (history as DataFrames with a UTC index),
  :class:`LiveFeed` (subscriptions as iterators and async iterators of
  :mod:`tvdatafeed_rs.events`), typed exceptions in :mod:`tvdatafeed_rs.errors`, and
  :class:`Simulator`, a TradingView-protocol server on loopback for examples and tests.

Every blocking call releases the GIL; Ctrl-C interrupts it. On a free-threaded CPython build
every native class is ``Sync`` (its mutable state behind a mutex), so concurrent calls on one
object are safe; the extension does not yet declare ``gil_used = false``, so such a build
re-enables the GIL when it is imported.
"""

from . import errors, events
from ._api import Client, LiveFeed, ShutdownReport, Simulator, Subscription
from ._dropin import Consumer, Interval, Seis, TvDatafeed, TvDatafeedLive
from ._native import __version__
from .errors import (
    AuthError,
    EntitlementError,
    InvalidRequest,
    NotSubscribed,
    PermissionDenied,
    ProtocolError,
    RateLimited,
    SeriesError,
    ShutdownError,
    SymbolError,
    Timeout,
    TransportError,
    TvDatafeedError,
)

__all__ = [
    "TvDatafeed",
    "TvDatafeedLive",
    "Interval",
    "Seis",
    "Consumer",
    "Client",
    "LiveFeed",
    "Subscription",
    "ShutdownReport",
    "Simulator",
    "errors",
    "events",
    *errors.__all__,
    "__version__",
]
