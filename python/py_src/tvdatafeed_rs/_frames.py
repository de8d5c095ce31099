"""DataFrames from the engine's column buffers, built from numpy arrays (never row by row)."""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

import numpy as np
import pandas as pd

COLUMNS = ("open", "high", "low", "close", "volume")

# DST transitions are months apart: within a span shorter than this, equal UTC offsets at both
# ends mean the offset is constant in between.
_SAME_OFFSET_SPAN = 60 * 86400


def _offset(t: int) -> int:
    return time.localtime(int(t)).tm_gmtoff


def local_naive(epoch: np.ndarray, unit: str = "datetime64[ns]") -> pd.DatetimeIndex:
    """What the original's ``datetime.fromtimestamp`` gives, vectorised: naive datetimes in the
    machine's local zone. The zone's offset is looked up at a few points and bisected where
    it changes (a DST transition), not once per row."""
    epoch = np.asarray(epoch, dtype=np.int64)
    offsets = np.empty(len(epoch), dtype=np.int64)

    def fill(lo: int, hi: int, off_lo: int, off_hi: int) -> None:
        # Fills offsets[lo:hi + 1], knowing the offsets at both ends.
        if off_lo == off_hi and epoch[hi] - epoch[lo] <= _SAME_OFFSET_SPAN:
            offsets[lo : hi + 1] = off_lo
            return
        if hi - lo <= 1:
            offsets[lo] = off_lo
            offsets[hi] = off_hi
            return
        mid = (lo + hi) // 2
        off_mid = _offset(epoch[mid])
        fill(lo, mid, off_lo, off_mid)
        fill(mid, hi, off_mid, off_hi)

    if len(epoch):
        fill(0, len(epoch) - 1, _offset(epoch[0]), _offset(epoch[-1]))
    return pd.DatetimeIndex((epoch + offsets).astype("datetime64[s]").astype(unit))


def utc_index(epoch: np.ndarray, unit: str = "datetime64[ns]") -> pd.DatetimeIndex:
    """A tz-aware UTC index."""
    return pd.DatetimeIndex(np.asarray(epoch, dtype=np.int64).astype("datetime64[s]").astype(unit)).tz_localize("UTC")


def columns(h: Dict[str, Any]) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """The closed bars of a native history as arrays: times (int64) and the five columns
    (float64; volume NaN where the symbol has none)."""
    t = np.frombuffer(h["time"], dtype=np.int64)
    cols = {c: np.frombuffer(h[c], dtype=np.float64) for c in COLUMNS}
    return t, cols


def forming_arrays(h: Dict[str, Any]) -> Optional[Tuple[int, Tuple[float, ...]]]:
    f = h.get("forming")
    if f is None:
        return None
    t, o, hi, lo, c, v = f
    return t, (o, hi, lo, c, np.nan if v is None else v)
