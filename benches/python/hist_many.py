#!/usr/bin/env python3
"""The seed's way to fetch many symbols, timed: Python tvdatafeed 2.1.1 (PyPI
`tradingview-datafeed==2.1.1`, import name `tvDatafeed`) `get_hist` in a
`ThreadPoolExecutor(max_workers=WORKERS)`, one call per symbol, against our simulator.

Usage: hist_many.py WS_URL N_BARS WORKERS CA_FILE SYMBOL [SYMBOL ...]

CA_FILE is the simulator's PEM root for a wss:// URL (`-` for ws://). As in
tests/python/conformance.py, the library's hard-coded `wss://data.tradingview.com` URL is
redirected to WS_URL by wrapping websocket-client's `create_connection`, with the Origin
websocket-client sends to TradingView; for wss the wrapper passes `sslopt={"ca_certs": CA_FILE}`
so that Python trusts the simulator's self-signed root. Each `get_hist` opens its own
websocket (a TCP connect, a TLS handshake for wss, an upgrade), as the library does.

`TvDatafeed` keeps the socket of the call in progress in `self.ws`, so one instance shared by
several threads mixes their sockets up; each worker thread therefore gets its own instance
(created on its first call: without a login that is a few random ids, no I/O).

Prints one JSON object: {"wall_s": seconds for all calls, "cpu_s": CPU seconds this process
(all its threads) used meanwhile, "rows": rows received in total,
"ok": calls that returned a DataFrame of N_BARS rows, "calls": calls, "connections": websockets
opened}. Exit codes: 0 ok, 3 a package is missing.
"""

import json
import os
import resource
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

os.environ["TZ"] = "UTC"
time.tzset()

try:
    import websocket
    from tvDatafeed import main as tv_main
    from tvDatafeed import Interval, TvDatafeed
except ImportError as e:  # pragma: no cover
    print(
        f"hist_many.py: missing Python package ({e}); install with: "
        "python3 -m pip install tradingview-datafeed==2.1.1 websocket-client pandas",
        file=sys.stderr,
    )
    sys.exit(3)

HARD_CODED = "wss://data.tradingview.com/socket.io/websocket"
ORIGIN = "https://data.tradingview.com"


def main() -> int:
    if len(sys.argv) < 6:
        print(__doc__, file=sys.stderr)
        return 2
    url, n_bars, workers, ca_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    symbols = sys.argv[5:]
    real_create_connection = websocket.create_connection
    opened = []
    lock = threading.Lock()

    def redirected(target, *args, **kwargs):
        if target != HARD_CODED:
            raise RuntimeError(f"unexpected URL from tvDatafeed: {target}")
        kwargs["origin"] = ORIGIN
        if url.startswith("wss://"):
            kwargs["sslopt"] = {"ca_certs": ca_file}
        with lock:
            opened.append(target)
        return real_create_connection(url, *args, **kwargs)

    websocket.create_connection = redirected
    tv_main.create_connection = redirected

    local = threading.local()

    def client():
        if not hasattr(local, "tv"):
            local.tv = TvDatafeed()
        return local.tv

    def fetch(symbol):
        tv = client()
        df = tv.get_hist(symbol=symbol, exchange="", interval=Interval.in_1_minute, n_bars=n_bars)
        if tv.ws is not None:
            tv.ws.close()
        return 0 if df is None else len(df)

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    cpu0, start = cpu(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        counts = list(pool.map(fetch, symbols))
    wall, cpu_s = time.perf_counter() - start, cpu() - cpu0
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": cpu_s,
                "rows": sum(counts),
                "ok": sum(1 for c in counts if c == n_bars),
                "calls": len(symbols),
                "connections": len(opened),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
