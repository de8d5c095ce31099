"""TvDatafeedLive, the drop-in: the seed's concurrency tests and live delivery, on loopback.

Intervals are "1S" (a TradingView resolution string, which the drop-in accepts besides its
Interval enum) so that bars close every second.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest

import tvdatafeed_rs as tv
from conftest import os_threads, wait_until


@pytest.fixture
def live(sim):
    t = tv.TvDatafeedLive(url=sim.url, utc=True)
    yield t
    t.shutdown(5)


def test_ten_racing_new_seis_get_one_object(live):
    barrier = threading.Barrier(10)
    got = []

    def race():
        barrier.wait()
        got.append(live.new_seis("BTCUSDT", "BINANCE", tv.Interval.in_1_minute))

    threads = [threading.Thread(target=race) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 10
    assert all(s is got[0] for s in got), got
    assert isinstance(got[0], tv.Seis) and got[0].tvdatafeed is live


def test_a_bad_symbol_raises_value_error(live):
    with pytest.raises(ValueError, match="not listed in TradingView"):
        live.new_seis("INVALIDX", "BINANCE", "1S")


def test_shutdown_while_a_callback_sleeps_returns_in_time_and_names_it(sim, caplog):
    live = tv.TvDatafeedLive(url=sim.url)
    entered, release = threading.Event(), threading.Event()

    def sleepy(seis, data):
        entered.set()
        release.wait(10)  # a callback stuck for 10 s

    seis = live.new_seis("BTCUSDT", "BINANCE", "1S")
    consumer = live.new_consumer(seis, sleepy)
    assert entered.wait(5), "no bar within 5 s"
    caplog.set_level(logging.WARNING)
    start = time.monotonic()
    clean = live.del_tvdatafeed(timeout=1.0)
    took = time.monotonic() - start
    release.set()
    assert clean is False
    assert took < 2.0, took
    assert live.last_shutdown["unfinished"] == [consumer.name]
    assert consumer.name in caplog.text


def test_every_closed_bar_once_in_order_equal_to_truth_across_a_restart(sim):
    live = tv.TvDatafeedLive(url=sim.url, utc=True)
    bars, lock = [], threading.Lock()

    def collect(seis, data):
        assert list(data.columns) == ["symbol", "open", "high", "low", "close", "volume"] and len(data) == 1
        row = data.iloc[0]
        with lock:
            bars.append((int(data.index[0].timestamp()), row.open, row.high, row.low, row.close, row.volume, seis))

    seis = live.new_seis("BTCUSDT", "BINANCE", "1S")
    live.new_consumer(seis, collect)
    assert wait_until(lambda: len(bars) >= 2, 5)
    sim.restart(1.5)
    before = len(bars)
    assert wait_until(lambda: len(bars) >= before + 4, 15), "no bars after the restart"
    assert live.shutdown(5)
    times = [b[0] for b in bars]
    assert times == list(range(times[0], times[0] + len(times))), times  # contiguous, once, in order
    for t, o, h, l, c, v, s in bars:
        assert s is seis
        assert (t, o, h, l, c, v) == sim.expected_bar("BINANCE:BTCUSDT", "1S", t)


def test_a_raising_callback_ends_only_its_own_consumer(sim, caplog):
    live = tv.TvDatafeedLive(url=sim.url)
    calls = {"bad": 0, "good": 0}

    def bad(seis, data):
        calls["bad"] += 1
        raise RuntimeError("boom")

    def good(seis, data):
        calls["good"] += 1

    caplog.set_level(logging.ERROR)
    seis = live.new_seis("BTCUSDT", "BINANCE", "1S")
    cb = live.new_consumer(seis, bad)
    cg = live.new_consumer(seis, good)
    assert wait_until(lambda: calls["good"] >= 3, 8)
    assert calls["bad"] == 1
    assert seis.get_consumers() == [cg]
    assert cb.seis is None and not cb.is_alive()
    assert "boom" in caplog.text and cb.name in caplog.text
    assert live.shutdown(5)


def test_ten_threads_of_mixed_calls_finish_without_deadlock_or_leaked_threads(sim):
    baseline = os_threads()
    live = tv.TvDatafeedLive(url=sim.url)
    keys = [("BTCUSDT", "BINANCE", "1S"), ("ETHUSDT", "BINANCE", "1S"), ("SPX", "SP", "1S")]
    errors = []

    def worker(seed):
        rnd = random.Random(seed)
        mine = []
        try:
            for _ in range(100):
                op = rnd.randrange(4)
                try:
                    if op == 0 or not mine:
                        s = live.new_seis(*rnd.choice(keys), timeout=10)
                        if s is not False:
                            mine.append(s)
                    elif op == 1:
                        live.new_consumer(rnd.choice(mine), lambda s, d: None, timeout=10)
                    elif op == 2:
                        cs = rnd.choice(mine).get_consumers()
                        if cs:
                            live.del_consumer(rnd.choice(cs), timeout=10)
                    else:
                        live.del_seis(mine.pop(rnd.randrange(len(mine))), timeout=10)
                except (ValueError, NameError):
                    pass  # another thread removed it first: the original's answers
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    took = time.monotonic() - start
    assert not any(t.is_alive() for t in threads), "deadlock: a worker is still running"
    assert took < 30, took
    assert not errors, errors
    assert live.shutdown(5)
    assert wait_until(lambda: os_threads() <= baseline, 5), (os_threads(), baseline)
