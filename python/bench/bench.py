"""Figures for BENCHMARKS.md: tvdatafeed_rs against the original tradingview-datafeed 2.1.1,
same run, same simulator (loopback). Usage, from the repository root, in a venv with both
packages (python/ci.sh builds one: target/py-ci/dev):

    TZ=UTC python python/bench/bench.py hist        # get_hist of 5,000 bars, in-process
    TZ=UTC python python/bench/bench.py latency     # bar close -> Python callback, 30 seises
    TZ=UTC python python/bench/bench.py cost ours   # threads and RSS at 1,000 seises
    TZ=UTC python python/bench/bench.py cost original
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import tvdatafeed_rs as tv  # noqa: E402
from conftest import original_pointed_at  # noqa: E402


def rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def hist(runs: int = 30) -> None:
    with tv.Simulator() as sim:
        orig = original_pointed_at(sim.url)
        o, ours, client = orig.TvDatafeed(), tv.TvDatafeed(url=sim.url), tv.Client(url=sim.url)
        t = {"original": [], "drop-in": [], "Client": []}
        o.get_hist("BTCUSDT", "BINANCE", orig.Interval.in_1_minute, n_bars=5000)  # untimed warm-up
        ours.get_hist("BTCUSDT", "BINANCE", tv.Interval.in_1_minute, n_bars=5000)
        for _ in range(runs):
            for name, f in (
                ("original", lambda: o.get_hist("BTCUSDT", "BINANCE", orig.Interval.in_1_minute, n_bars=5000)),
                ("drop-in", lambda: ours.get_hist("BTCUSDT", "BINANCE", tv.Interval.in_1_minute, n_bars=5000)),
                ("Client", lambda: client.get_hist("BINANCE:BTCUSDT", "1", 5000)),
            ):
                s = time.perf_counter()
                df = f()
                t[name].append(time.perf_counter() - s)
                assert df is not None and len(df) >= 4999
            if o.ws is not None:
                o.ws.close()
        med = {k: statistics.median(v) * 1000 for k, v in t.items()}
        for k, v in med.items():
            print(f"get_hist 5000 bars {k:9}: median {v:8.2f} ms  (min {min(t[k]) * 1000:.2f}, max {max(t[k]) * 1000:.2f}, n={runs})")
        print(f"speed-up drop-in {med['original'] / med['drop-in']:.1f}x, Client {med['original'] / med['Client']:.1f}x")


def latency(n: int = 30) -> None:
    """Both libraries consume the same 30 symbols at 1 minute; a sample is the wall time from
    the bar's close (its open + 60 s) to the callback receiving it."""
    with tv.Simulator() as sim:
        orig = original_pointed_at(sim.url)
        # The original validates symbols through TradingView's (gone) search endpoint.
        orig.TvDatafeedLive._args_invalid = lambda *a, **k: False
        syms = [f"SYM{i:02d}" for i in range(n)]
        lat = {"original": [], "ours": []}
        lock = threading.Lock()

        def make(name, boundary):
            def cb(seis, data):
                now = time.time()
                opened = data.index[0].timestamp()
                if opened + 60 == boundary:  # the bar that closed at the measured boundary
                    with lock:
                        lat[name].append(now - boundary)
            return cb

        # Start early in a minute so that both are set up before the next boundary.
        while time.time() % 60 > 20:
            time.sleep(0.5)
        boundary = (int(time.time()) // 60 + 1) * 60
        ours = tv.TvDatafeedLive(url=sim.url)
        o = orig.TvDatafeedLive()
        for s in syms:
            ours.new_seis(s, "BINANCE", tv.Interval.in_1_minute).new_consumer(make("ours", boundary))
            seis = o.new_seis(s, "BINANCE", orig.Interval.in_1_minute)
            o.new_consumer(seis, make("original", boundary))
        while time.time() < boundary + 20 and (len(lat["ours"]) < n or len(lat["original"]) < n):
            time.sleep(0.2)
        ours.shutdown(5)
        threading.Thread(target=o.del_tvdatafeed, daemon=True).start()
        for k, v in lat.items():
            if v:
                print(f"bar close -> callback, {n} seises, {k:8}: median {statistics.median(v) * 1000:8.2f} ms  (min {min(v) * 1000:.2f}, max {max(v) * 1000:.2f}, samples {len(v)})")
            else:
                print(f"{k}: no samples")
        if lat["ours"] and lat["original"]:
            print(f"ours sooner by {statistics.median(lat['original']) / statistics.median(lat['ours']):.0f}x at the median")
        os._exit(0)  # the original's non-daemon threads may not stop (its shutdown bugs)


def cost(which: str, n: int = 1000) -> None:
    with tv.Simulator() as sim:
        base_t, base_rss = threads(), rss_mib()
        if which == "ours":
            live = tv.TvDatafeedLive(url=sim.url)
            new_seis = lambda s: live.new_seis(s, "BINANCE", tv.Interval.in_1_minute)  # noqa: E731
        else:
            orig = original_pointed_at(sim.url)
            orig.TvDatafeedLive._args_invalid = lambda *a, **k: False
            live = orig.TvDatafeedLive()
            new_seis = lambda s: live.new_seis(s, "BINANCE", orig.Interval.in_1_minute)  # noqa: E731
        start = time.perf_counter()
        for i in range(n):
            seis = new_seis(f"SYM{i:04d}")
            live.new_consumer(seis, lambda s, d: None)
        took = time.perf_counter() - start
        time.sleep(1)
        print(f"{which}: {n} seises with one consumer each in {took:.1f} s: threads +{threads() - base_t}, RSS +{rss_mib() - base_rss:.0f} MiB ({(rss_mib() - base_rss) * 1024 / n:.0f} KiB per consumer)")
        os._exit(0)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "hist"
    {"hist": hist, "latency": latency, "cost": lambda: cost(sys.argv[2] if len(sys.argv) > 2 else "ours")}[what]()
