"""The Pythonic API: Client, LiveFeed, Subscription iterators, typed exceptions, Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

import tvdatafeed_rs as tv
from tvdatafeed_rs.events import Bar, Closed, Reconnected


def test_get_hist_is_a_utc_frame_with_the_forming_bar_apart(sim):
    df = tv.Client(url=sim.url).get_hist("BINANCE:BTCUSDT", "1H", 300)
    assert len(df) == 300 and str(df.index.tz) == "UTC" and df.index.name == "time"
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert all(df[c].dtype == np.float64 for c in df.columns)
    forming = df.attrs["forming"]
    assert isinstance(forming, Bar) and forming.time == df.index[-1].timestamp() + 3600
    for ts, row in df.iloc[[0, 150, -1]].iterrows():
        assert tuple([int(ts.timestamp())] + list(row)) == sim.expected_bar("BINANCE:BTCUSDT", "1H", int(ts.timestamp()))


def test_an_index_has_nan_volume(sim):
    df = tv.Client(url=sim.url).get_hist("SP:SPX", "1D", 10)
    assert df["volume"].isna().all()


def test_get_hist_many_gives_one_result_per_symbol_with_its_exception(sim):
    out = tv.Client(url=sim.url).get_hist_many([("BINANCE:BTCUSDT", "1D", 5), ("BINANCE:INVALIDX", "1D", 5), ("SP:SPX", "60", 7)])
    assert isinstance(out[0], pd.DataFrame) and len(out[0]) == 5
    assert isinstance(out[1], tv.SymbolError) and out[1].symbol == "BINANCE:INVALIDX"
    assert isinstance(out[2], pd.DataFrame) and len(out[2]) == 7


# -- errors -----------------------------------------------------------------------------------


def test_symbol_error(sim):
    with pytest.raises(tv.SymbolError) as e:
        tv.Client(url=sim.url).get_hist("BINANCE:INVALIDX", "1D", 5)
    assert not e.value.retryable and isinstance(e.value, tv.SeriesError)


def test_permission_denied(sim):
    with pytest.raises(tv.PermissionDenied):
        tv.Client(url=sim.url).get_hist("ECONOMICS:USGDP", "1D", 5)


def test_entitlement_error():
    with tv.Simulator(entitled_seconds=False) as sim:
        with pytest.raises(tv.EntitlementError):
            tv.Client(url=sim.url).get_hist("BINANCE:BTCUSDT", "5S", 5)


def test_timeout_against_a_server_that_never_answers():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    try:
        start = time.monotonic()
        with pytest.raises(tv.Timeout) as e:
            tv.Client(url=f"ws://127.0.0.1:{port}/socket.io/websocket", timeout=0.5).get_hist("BINANCE:BTCUSDT", "1D", 5)
        assert time.monotonic() - start < 3
        assert isinstance(e.value, TimeoutError) and e.value.retryable
    finally:
        srv.close()


def test_transport_error_on_a_refused_connection():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(tv.TransportError) as e:
        tv.Client(url=f"ws://127.0.0.1:{port}/socket.io/websocket", timeout=5).get_hist("BINANCE:BTCUSDT", "1D", 5)
    assert isinstance(e.value, ConnectionError)


def test_protocol_error_on_garbage(sim):
    sim.fault("absurd_length", target="next")
    with pytest.raises(tv.ProtocolError):
        tv.Client(url=sim.url, timeout=5).get_hist("BINANCE:BTCUSDT", "1D", 5)


def test_invalid_request_is_a_value_error(sim):
    with pytest.raises(tv.InvalidRequest) as e:
        tv.Client(url=sim.url).get_hist("NOEXCHANGE", "1D", 5)
    assert isinstance(e.value, ValueError)


def test_credentials_never_show():
    tok = tv._native.Token("secret-token-value")
    assert "secret" not in repr(tok) and "secret" not in str(tok)


# -- live ----------------------------------------------------------------------------------------


def test_closed_bars_once_in_order_and_reconnected_across_a_restart(sim):
    with tv.LiveFeed(url=sim.url, reconnect_backoff=(0.05, 0.5)) as feed:
        seis = feed.new_seis("BINANCE:BTCUSDT", "1S")
        sub = feed.subscribe(seis)
        closed, reconnected = [], []
        deadline = time.monotonic() + 20
        restarted = False
        while time.monotonic() < deadline and not (reconnected and len(closed) >= 6 and closed[-1] > reconnected[0][1]):
            ev = sub.recv(timeout=1.0)
            if isinstance(ev, Closed):
                closed.append(ev.bar.time)
                assert tuple(vars_of(ev.bar)) == sim.expected_bar("BINANCE:BTCUSDT", "1S", ev.bar.time)
                if len(closed) == 2 and not restarted:
                    sim.restart(1.5)
                    restarted = True
            elif isinstance(ev, Reconnected):
                reconnected.append((ev, closed[-1] if closed else None))
        assert reconnected, "no Reconnected event"
        assert closed == list(range(closed[0], closed[0] + len(closed))), closed
        assert feed.stats()["reconnects"] >= 1


def vars_of(bar):
    return (bar.time, bar.open, bar.high, bar.low, bar.close, bar.volume)


def test_a_raising_callback_goes_to_unraisablehook_and_the_others_go_on(sim, monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    calls = {"bad": 0, "good": 0}

    def bad(ev):
        calls["bad"] += 1
        raise RuntimeError("boom")

    def good(ev):
        if isinstance(ev, Closed):
            calls["good"] += 1

    with tv.LiveFeed(url=sim.url) as feed:
        seis = feed.new_seis("BINANCE:BTCUSDT", "1S")
        feed.new_consumer(seis, bad)
        feed.new_consumer(seis, good)
        end = time.monotonic() + 8
        while calls["good"] < 3 and time.monotonic() < end:
            time.sleep(0.05)
    assert calls["good"] >= 3 and calls["bad"] == 1
    assert len(seen) == 1 and str(seen[0]) == "boom"


def test_async_for_under_asyncio(sim):
    async def main():
        with tv.LiveFeed(url=sim.url) as feed:
            seis = feed.new_seis("BINANCE:BTCUSDT", "1S")
            got = []
            async for ev in feed.subscribe(seis):
                if isinstance(ev, Closed):
                    got.append(ev.bar.time)
                    if len(got) == 2:
                        break
            return got

    got = asyncio.run(asyncio.wait_for(main(), 10))
    assert got[1] == got[0] + 1


def test_the_iterator_ends_when_the_subscription_ends(sim):
    feed = tv.LiveFeed(url=sim.url)
    seis = feed.new_seis("BINANCE:BTCUSDT", "1S")
    sub = feed.subscribe(seis)
    threading.Timer(1.5, lambda: feed.shutdown(5)).start()
    events = list(sub)  # ends: the feed shut down
    assert events and type(events[-1]).__name__ == "Failed"


def test_ctrl_c_interrupts_recv(sim):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    with tv.Simulator(quiet_symbols=["BINANCE:QUIET"]) as quiet:
        with tv.LiveFeed(url=quiet.url) as feed:
            seis = feed.new_seis("BINANCE:QUIET", "1D")  # nothing will arrive
            sub = feed.subscribe(seis)
            threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
            start = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                sub.recv()
            assert time.monotonic() - start < 2


def test_stats_is_a_dict(sim):
    with tv.LiveFeed(url=sim.url) as feed:
        seis = feed.new_seis("BINANCE:BTCUSDT", "1S")
        s = feed.stats()
        assert s["connected"] and s["seises"][0]["symbol"] == "BINANCE:BTCUSDT"
        report = feed.shutdown(5)
        assert report.clean and report.unfinished == []


def test_a_simulator_behind_a_relay_adds_its_round_trip_and_stops_in_time():
    """`relay_one_way` (the benchmarks' network): a fresh connection's upgrade and its request
    each wait a round trip (2 x 50 ms), the answer is the server's, and `stop` is bounded."""
    with tv.Simulator(relay_one_way=0.05) as sim:
        start = time.monotonic()
        df = tv.Client(url=sim.url).get_hist("BINANCE:BTCUSDT", "1", 20)
        took = time.monotonic() - start
        assert len(df) == 20 and took >= 0.2, took
        ts = int(df.index[0].timestamp())
        assert tuple([ts] + list(df.iloc[0])) == sim.expected_bar("BINANCE:BTCUSDT", "1", ts)
        start = time.monotonic()
        assert sim.stop(timeout=3.0)
        assert time.monotonic() - start < 3.5
