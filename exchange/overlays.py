"""The departments' answers laid over their records (overlays), without modifying what they sent.

An answer 1 (corrected), 2 (correct as is), 3 (cancel) or a suppression holds "until the record next
changes": it is stored with a fingerprint of the record's content and is in force while that
fingerprint is unchanged (`live_overlays`). `overlay_sources` is the view linking and states read.
"""
from __future__ import annotations

import pandas as pd

from catalog import TABLES


def record_fingerprints(sources: dict[str, pd.DataFrame], bh: str) -> pd.Series:
    """A hash of each live record's catalogue fields, by key: it changes exactly when the content changes.

    `_ts` is not enough: an applied operation that changes nothing still moves it forward.
    """
    src = sources.get(bh)
    if src is None or src.empty:
        return pd.Series(dtype=object)
    live = src[src["_deleted"] != "1"] if "_deleted" in src.columns else src
    fields = [f for f in TABLES[bh].fields if f in live.columns]
    fp = pd.util.hash_pandas_object(live[fields].astype(str), index=False).astype(str)
    return pd.Series(fp.to_numpy(), index=live["_key"].to_numpy())


def record_fp(sources: dict[str, pd.DataFrame], frame: pd.DataFrame) -> pd.Series:
    """The current content fingerprint of the record each overlay row is about ('' if the record is gone)."""
    out = pd.Series("", index=frame.index, dtype=object)
    for bh, part in frame.groupby("BH"):
        out.loc[part.index] = part["YWZJ"].map(record_fingerprints(sources, bh)).fillna("").astype(str)
    return out


def live_overlays(overlays: pd.DataFrame, sources) -> pd.DataFrame:
    """Overlays still in force: the record's content has not changed since the answer."""
    if overlays.empty:
        return overlays
    current = record_fp(sources, overlays)
    return overlays[(current != "") & (current == overlays["record_fp"])]


def overlay_sources(sources: dict[str, pd.DataFrame], overlays: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Live records as the base sees them: answers 3 (cancelled) removed, answers 1 (corrections) applied.

    The stored department records are never modified; this is a view for linking and states.
    """
    out = {}
    for name, src in sources.items():
        live = src[src["_deleted"] != "1"] if "_deleted" in src.columns else src
        ov = overlays[overlays["BH"] == name] if len(overlays) else overlays
        if len(ov):
            cancel = ov.loc[ov["kind"] == "CANCEL", "YWZJ"]
            live = live[~live["_key"].isin(cancel)]
            corr = ov[(ov["kind"] == "CORRECT") & ov["field"].isin(TABLES[name].fields)]
            if len(corr):
                live = live.copy()
                for fld, part in corr.groupby("field"):
                    mapping = part.set_index("YWZJ")["value"]
                    hit = live["_key"].isin(mapping.index)
                    live.loc[hit, fld] = live.loc[hit, "_key"].map(mapping).astype(str)
        out[name] = live
    return out
