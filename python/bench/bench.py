"""Figures for BENCHMARKS.md: tvdatafeed_rs against the original tradingview-datafeed 2.1.1,
same run, same simulator (loopback). Usage, from the repository root, in a venv with both
packages (python/ci.sh builds one: target/py-ci/dev):

    TZ=UTC python python/bench/bench.py hist [realistic]  # get_hist of 5,000 bars, in-process
    TZ=UTC python python/bench/bench.py latency [ROUNDS] [realistic]  # bar close -> Python callback, 30 seises
    TZ=UTC python python/bench/bench.py cost ours   # threads and RSS at 1,000 seises
    TZ=UTC python python/bench/bench.py cost original
    TZ=UTC python python/bench/bench.py cost ours-dispatch   # callback_threads=1
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


def hist(runs: int = 30, realistic: bool = False) -> None:
    """``get_hist`` of 5,000 bars, the three APIs in turn, ``runs`` times. ``realistic``: a
    server we did not write, 25 ms away each way (a 50 ms round trip, through a relay) and
    answering requests one at a time in 1 ms each."""
    conditions = dict(relay_one_way=0.025, request_service_time=0.001) if realistic else {}
    print(f"simulator: {conditions or 'defaults (loopback best case)'}", flush=True)
    with tv.Simulator(**conditions) as sim:
        orig = original_pointed_at(sim.url)
        o, ours, client = orig.TvDatafeed(), tv.TvDatafeed(url=sim.url), tv.Client(url=sim.url)
        t = {"original": [], "drop-in": [], "Client": []}
        o.get_hist("BTCUSDT", "BINANCE", orig.Interval.in_1_minute, n_bars=5000)  # untimed warm-up
        ours.get_hist("BTCUSDT", "BINANCE", tv.Interval.in_1_minute, n_bars=5000)
        for _ in range(runs):
            for name, f in (
                ("original", lambda: o.get_hist("BTCUSDT", "BINANCE", orig.Interval.in_1_minute, n_bars=5000)),
                ("drop-in", lambda: ours.get_hist("BTCUSDT", "BINANCE", tv.Interval.in_1_minute, n_bars=5000)),
                # 4,999 closed bars and the forming one: the 5,000 bars the others ask for.
                ("Client", lambda: client.get_hist("BINANCE:BTCUSDT", "1", 4999)),
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


def _wait_early_in_a_minute() -> int:
    """The next minute boundary, at least 40 s away (time for both libraries to subscribe)."""
    while time.time() % 60 > 20:
        time.sleep(0.5)
    return (int(time.time()) // 60 + 1) * 60


def _latency_consumers(which: str, url: str, boundary: int, n: int, lat: list, lock, callback_threads=None):
    """Subscribes ``n`` symbols at 1 minute in library ``which``, each with a consumer that
    records the wall time from ``boundary`` to its callback for the bar closing there.
    Returns a function that stops it."""
    syms = [f"SYM{i:02d}" for i in range(n)]

    def cb(seis, data):
        now = time.time()
        if data.index[0].timestamp() + 60 == boundary:  # the bar that closed at the boundary
            with lock:
                lat.append(now - boundary)

    if which == "ours":
        live = tv.TvDatafeedLive(url=url, callback_threads=callback_threads)
        for s in syms:
            live.new_seis(s, "BINANCE", tv.Interval.in_1_minute).new_consumer(cb)
        return lambda: live.shutdown(5)
    orig = original_pointed_at(url)
    # The original validates symbols through TradingView's (gone) search endpoint.
    orig.TvDatafeedLive._args_invalid = lambda *a, **k: False
    o = orig.TvDatafeedLive()
    for s in syms:
        o.new_consumer(o.new_seis(s, "BINANCE", orig.Interval.in_1_minute), cb)
    return lambda: threading.Thread(target=o.del_tvdatafeed, daemon=True).start()


def _report(lat: dict, n: int) -> None:
    for k, v in lat.items():
        if v:
            print(f"  {k:34}: median {statistics.median(v) * 1000:8.2f} ms  (min {min(v) * 1000:.2f}, max {max(v) * 1000:.2f}, samples {len(v)})")
        else:
            print(f"  {k}: no samples")
    keys = [k for k in lat if lat[k]]
    if len(keys) > 1 and keys[0] == "original":
        base = statistics.median(lat["original"])
        for k in keys[1:]:
            print(f"  {k} sooner than the original by {base / statistics.median(lat[k]):.1f}x at the median")


_SAMPLES = "LATENCY-SAMPLES "


def latency_child(which: str, url: str, boundary: int, n: int, callback_threads) -> None:
    """One library in this interpreter alone: prints its samples as JSON on the last line."""
    import json

    lat, lock = [], threading.Lock()
    stop = _latency_consumers(which, url, boundary, n, lat, lock, callback_threads)
    while time.time() < boundary + 20 and len(lat) < n:
        time.sleep(0.2)
    stop()
    # Behind a marker: the libraries may print to stdout too.
    print(_SAMPLES + json.dumps(lat), flush=True)
    os._exit(0)  # the original's non-daemon threads may not stop (its shutdown bugs)


def latency(n: int = 30, rounds: int = 2, realistic: bool = False) -> None:
    """Bar close (the bar's open + 60 s, wall clock) to the callback, 30 symbols at 1 minute.

    Each library runs in an interpreter of its own, both at the same boundary against the same
    simulator, as two users' programs would: they share the machine's cores, not a GIL. Round
    ``k`` pairs the original with ours at the default (a thread per consumer) for even ``k``,
    with ``callback_threads=1`` for odd ``k``. Then one round with both in this interpreter
    (``together``): each one's callbacks then also wait for the other's Python code."""
    import json
    import subprocess

    # `realistic`: issue 17's server we did not write, a stream ticking every 50 ms whose first
    # trade after a boundary comes 50 ms after it, answering requests one at a time in 1 ms.
    conditions = dict(update_interval=0.05, tick_phase=0.05, request_service_time=0.001) if realistic else {}
    with tv.Simulator(**conditions) as sim:
        print(f"simulator: {conditions or 'defaults (loopback best case)'}", flush=True)
        lat = {"original": [], "ours (a thread per consumer)": [], "ours (callback_threads=1)": []}
        for k in range(rounds):
            boundary = _wait_early_in_a_minute()
            threads_arg = "none" if k % 2 == 0 else "1"
            procs = {
                "original": subprocess.Popen([sys.executable, __file__, "latency-child", "original", sim.url, str(boundary), str(n), "none"], stdout=subprocess.PIPE, text=True),
                ("ours (a thread per consumer)" if k % 2 == 0 else "ours (callback_threads=1)"): subprocess.Popen([sys.executable, __file__, "latency-child", "ours", sim.url, str(boundary), str(n), threads_arg], stdout=subprocess.PIPE, text=True),
            }
            try:
                for name, p in procs.items():
                    out, _ = p.communicate(timeout=120)
                    found = [line for line in out.splitlines() if line.startswith(_SAMPLES)]
                    if p.returncode != 0 or not found:
                        sys.exit(f"round {k + 1}: the {name} child failed (exit {p.returncode}) without its samples")
                    lat[name].extend(json.loads(found[-1][len(_SAMPLES):]))
            finally:
                for p in procs.values():
                    if p.poll() is None:
                        p.kill()
            print(f"round {k + 1} of {rounds} (boundary {boundary}) done", flush=True)
        print(f"bar close -> callback, {n} seises, each library in its own interpreter, {rounds} rounds:")
        _report(lat, n)
        together = {"original": [], "ours (a thread per consumer)": []}
        lock = threading.Lock()
        boundary = _wait_early_in_a_minute()
        stops = [_latency_consumers("ours", sim.url, boundary, n, together["ours (a thread per consumer)"], lock),
                 _latency_consumers("original", sim.url, boundary, n, together["original"], lock)]
        while time.time() < boundary + 20 and any(len(v) < n for v in together.values()):
            time.sleep(0.2)
        for stop in stops:
            stop()
        print(f"bar close -> callback, {n} seises, both libraries in one interpreter (together):")
        _report(together, n)
        os._exit(0)  # the original's non-daemon threads may not stop (its shutdown bugs)


def cost(which: str, n: int = 1000) -> None:
    with tv.Simulator() as sim:
        base_t, base_rss = threads(), rss_mib()
        if which in ("ours", "ours-dispatch"):
            live = tv.TvDatafeedLive(url=sim.url, callback_threads=1 if which == "ours-dispatch" else None)
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
    if what == "latency-child":
        latency_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), None if sys.argv[6] == "none" else int(sys.argv[6]))
    {"hist": lambda: hist(realistic="realistic" in sys.argv[2:]), "latency": lambda: latency(rounds=int(sys.argv[2]) if len(sys.argv) > 2 else 2, realistic="realistic" in sys.argv[3:]), "cost": lambda: cost(sys.argv[2] if len(sys.argv) > 2 else "ours")}[what]()
