"""Shared fixtures: a simulator per test, the original tvDatafeed pointed at it, thread counts.

Everything runs on loopback (127.0.0.1) against ``tvdatafeed_rs.Simulator``.
"""

from __future__ import annotations

import os
import time

import pytest

import tvdatafeed_rs as tv

# The original's hard-coded endpoint, and the Origin websocket-client sends there by default.
HARD_CODED = "wss://data.tradingview.com/socket.io/websocket"
ORIGIN = "https://data.tradingview.com"


@pytest.fixture
def sim():
    with tv.Simulator() as s:
        yield s


def original_pointed_at(url: str):
    """The original ``tvDatafeed.TvDatafeed`` class with its websocket redirected to ``url``
    (as tests/python/conformance.py does). Skipped when the package is not installed, unless
    TVDATAFEED_RS_REQUIRE_ORIGINAL is set (CI sets it)."""
    if os.environ.get("TVDATAFEED_RS_REQUIRE_ORIGINAL"):
        import tvDatafeed  # noqa: F401  (fail loudly)
    orig = pytest.importorskip("tvDatafeed")
    import websocket
    from tvDatafeed import main as tv_main

    real = websocket.create_connection

    def redirected(target, *args, **kwargs):
        assert target == HARD_CODED, target
        kwargs["origin"] = ORIGIN
        return real(url, *args, **kwargs)

    tv_main.create_connection = redirected
    return orig


def os_threads() -> int:
    """Threads of this process, native ones included (tv-io, tv-consumer-N)."""
    return len(os.listdir("/proc/self/task"))


def wait_until(pred, timeout: float, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()
