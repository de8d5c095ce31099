"""Typed exceptions, one per cause, mirroring the Rust crate's ``tvdatafeed::Error``.

Every exception has ``retryable`` (whether the same call may succeed later). A series refusal
(:class:`SeriesError` and its subclasses) also has ``symbol`` and ``interval``. No message ever
holds a token or a password.
"""

from __future__ import annotations


class TvDatafeedError(Exception):
    """Base of every error of this package."""

    retryable: bool = False


class SeriesError(TvDatafeedError):
    """The server refused a series (a reason other than the ones below)."""

    symbol: str | None = None
    interval: str | None = None


class SymbolError(SeriesError, LookupError):
    """Unknown symbol (``symbol_error "invalid symbol"``). Final: fix the symbol."""


class PermissionDenied(SeriesError, PermissionError):
    """The account may not see this symbol (``permission denied``). Sign in with one that can."""


class EntitlementError(SeriesError):
    """The interval is not entitled (seconds, custom resolutions) for this account."""


class Timeout(TvDatafeedError, TimeoutError):
    """A call did not complete within its deadline. Retrying may help."""


class TransportError(TvDatafeedError, ConnectionError):
    """The connection failed: connect, TLS, upgrade, the socket itself, or the engine gave up
    reconnecting."""


class RateLimited(TransportError):
    """The server asked us to slow down (HTTP 429)."""


class ProtocolError(TvDatafeedError):
    """The server broke the protocol or sent something unreadable. Retrying may help."""


class AuthError(TvDatafeedError):
    """The token or the credentials were rejected, or sign-in needs a code or a captcha."""


class InvalidRequest(TvDatafeedError, ValueError):
    """The request itself is invalid: a malformed symbol or interval, zero bars."""


class ShutdownError(TvDatafeedError):
    """The live feed (or the simulator) is shut down."""


class NotSubscribed(TvDatafeedError, ValueError):
    """The seis is not subscribed in this feed (released, or another feed's)."""


__all__ = [
    "TvDatafeedError",
    "SeriesError",
    "SymbolError",
    "PermissionDenied",
    "EntitlementError",
    "Timeout",
    "TransportError",
    "RateLimited",
    "ProtocolError",
    "AuthError",
    "InvalidRequest",
    "ShutdownError",
    "NotSubscribed",
]
