"""Applying a parsed delivery to a table's Source frame (spec section 2, architecture "Source frame").

Public API: :func:`apply_delivery` → :class:`Applied`; :func:`empty_source`, :func:`source_columns`,
:data:`META_COLUMNS`.

Semantics (each delivered, loaded row is counted exactly once, so
``inserted + updated + unchanged + ignored_stale + deleted_by_ops == loaded_rows``; a full file's
implied deletions add to ``deleted`` on top):

* Operation timestamp ``_ts``: incremental → ``CZSJ``; full (or an empty ``CZSJ``) → ``GXSJ``; else
  ``business_date + "000000"``. Timestamps are normalised to D14 (see ``parse.d14_to_int``); an
  unreadable ``GXSJ`` counts as empty; an unreadable non-empty ``CZSJ`` is ``BAD_OPERATION``.
* Operations on one key are applied in ``(_ts, _line)`` order. An operation older than the record's
  ``_ts`` (stored, or set by an earlier operation of this delivery) is ``ignored_stale``; an equal
  timestamp is applied.
* ``I``/``U`` on a live record: ``updated`` when any catalogue field differs, else ``unchanged``;
  on an unknown key or a tombstone: ``inserted`` (resurrection, unless stale against the tombstone).
  ``D`` on a live record: ``deleted`` (tombstone keeps the last values, gets the ``D``'s ``_ts``);
  on an unknown key or a tombstone: ``unchanged``.
* Every applied (non-stale) operation advances ``_ts``/``_batch``/``_bdate``, even when ``unchanged``,
  so a later-arriving older operation cannot roll the record back. Consequently a ``D`` on an unknown
  key leaves a tombstone (values from the ``D`` row) that blocks older ``I``/``U``; it is not live and
  not a change (not in ``changes``). Use ``changes`` (not ``_ts``) to see content changes.
* ``full``: duplicate keys → keep the latest ``GXSJ`` (ties: last line), the others are rejected
  ``DUPLICATE_KEY``; each kept row is an upsert with ``GXSJ`` as ``_ts``, except that a row identical
  to the live record is ``unchanged`` and leaves it untouched (``_ts``/``_batch``/``_bdate`` kept) even
  when its ``GXSJ`` is older than ``_ts`` (a ``_ts`` set by a later ``CZSJ``): a full file describes
  state, and an identical row rolls nothing back. Live records absent from the file become tombstones
  (``_batch``/``_bdate`` of this delivery) and add to ``deleted``; the tombstone keeps the record's
  ``_ts`` (absence carries no operation time), so if a later full file lists the record again with the
  same ``GXSJ`` (a department's extract that missed rows one day) it comes back as ``inserted`` instead
  of being lost as stale. Not deleted: records whose ``_ts`` is after the end of the business date (the
  snapshot cannot know them; counted in ``Applied.kept_newer``) and ``protected_keys`` (keys of rows
  the parser rejected: an unreadable row does not delete its record).
* Values are compared exactly as delivered (no trimming, no case folding): a department's bytes are the
  record, so a whitespace-only difference is an update. Only ``_key`` is trimmed (surrounding whitespace
  in a key is never meaningful). Catalogue fields absent from the file are ``""``.
* Row order of ``current``: existing rows keep their positions; new keys are appended in order of first
  appearance in the file.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

from exchange.parse import CZLX, CZSJ, OPERATIONS, d14_to_int, make_rejects
from exchange.tables import table as _table

META_COLUMNS = ("_key", "_ts", "_deleted", "_batch", "_bdate")
COUNT_KEYS = ("inserted", "updated", "deleted", "unchanged", "ignored_stale")
CHANGE_COLUMNS = ("_key", "op", "_ts", "_line")

_INS, _UPD, _DEL, _UNCH, _STALE = range(5)
_LIVE, _TOMB, _UNKNOWN = 1, 2, 0


@dataclass
class Applied:
    current: pd.DataFrame  # the new Source frame
    counts: dict[str, int]  # COUNT_KEYS
    changes: pd.DataFrame  # CHANGE_COLUMNS: one row per op that changed something; implied deletes _line 0
    rejects: pd.DataFrame  # parse.REJECT_COLUMNS (DUPLICATE_KEY, EMPTY_KEY, BAD_OPERATION)
    loaded_rows: int = 0  # delivered rows not rejected here
    kept_newer: int = 0  # full only: live records absent from the file but newer than its snapshot


def source_columns(table: str) -> list[str]:
    return list(_table(table).fields) + list(META_COLUMNS)


def empty_source(table: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in source_columns(table)})


def _raw_lines(frame: pd.DataFrame, pos: np.ndarray) -> list[str]:
    """The delivered cells of rejected rows, each as one CSV line."""
    cols = [c for c in frame.columns if c != "_line"]
    values = [frame[c].to_numpy()[pos] for c in cols]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="")
    out = []
    for cells in zip(*values):  # rejected rows only
        buf.seek(0)
        buf.truncate()
        w.writerow(["" if v is None else str(v) for v in cells])
        out.append(buf.getvalue())
    return out


def _obj(series: pd.Series) -> np.ndarray:
    a = series.to_numpy()
    return a if a.dtype == object else a.astype(object)


def _strip(a: np.ndarray) -> np.ndarray:
    return np.array(list(map(str.strip, a)), dtype=object) if len(a) else np.empty(0, dtype=object)


def _int_to_str(v: np.ndarray) -> np.ndarray:
    """int64 → object array of str, converting each distinct value once."""
    if len(v) == 0:
        return np.empty(0, dtype=object)
    codes, uniq = pd.factorize(v)
    return np.asarray(uniq).astype(str).astype(object)[codes]


def apply_delivery(
    current: pd.DataFrame | None,
    delivered: pd.DataFrame,
    table: str,
    extract_type: str,
    business_date: str,
    batch_id: str,
    protected_keys=None,
) -> Applied:
    """Apply one parsed delivery (``Parsed.frame``) of ``table`` to its Source frame ``current``.

    ``current`` may be ``None``/empty (first load); it is not modified. ``extract_type`` is ``"full"``
    or ``"incremental"``. ``protected_keys``: full files only, keys that must not be deleted as absent
    (pass ``Parsed.rejects["key"]``, see module doc).
    """
    t = _table(table)
    if extract_type not in ("full", "incremental"):
        raise ValueError(f"apply_delivery handles full and incremental extracts, not {extract_type!r}")
    full = extract_type == "full"
    fields = list(t.fields)
    bd_start = np.int64(int(business_date + "000000"))
    bd_end = np.int64(int(business_date + "235959"))

    # ---- current state: column arrays (the input frame is never modified)
    ncur = 0 if current is None else len(current)
    ccols: dict[str, np.ndarray] = {}
    for c in source_columns(table):
        if ncur and c in current.columns:
            ccols[c] = _obj(current[c])
        elif c == "_key" and ncur:
            ccols[c] = _strip(_obj(current[t.key]))
        else:
            ccols[c] = np.full(ncur, "0" if c == "_deleted" else "", dtype=object)
    cur_ts = d14_to_int(ccols["_ts"])
    cur_ts = np.where(cur_ts < 0, 0, cur_ts)
    cur_del = ccols["_deleted"] == "1"

    # ---- delivered rows
    d = delivered
    n = len(d)
    if t.key not in d.columns:
        raise ValueError(f"delivered {table} frame has no key column {t.key}")
    lines = d["_line"].to_numpy(dtype=np.int64) if "_line" in d.columns else np.arange(2, n + 2, dtype=np.int64)
    keys_arr = _strip(_obj(d[t.key]))
    rej = np.zeros(n, dtype=bool)
    why = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)
    e = keys_arr == ""
    rej |= e
    why[e], detail[e] = "EMPTY_KEY", f"主键 {t.key} 为空 (record key {t.key} is empty)"

    gx = d14_to_int(_obj(d["GXSJ"])) if "GXSJ" in d.columns else np.full(n, -1, np.int64)
    gx = np.where(gx < 0, bd_start, gx)
    if full:
        is_d = np.zeros(n, dtype=bool)
        ts = gx
    else:
        if CZLX not in d.columns:
            raise ValueError(f"incremental {table} frame has no {CZLX} column")
        op = np.array(list(map(str.upper, _strip(_obj(d[CZLX])))), dtype=object) if n else np.empty(0, object)
        b = ~pd.Series(op, dtype=object).isin(OPERATIONS).to_numpy(dtype=bool) & ~rej
        why[b], detail[b] = "BAD_OPERATION", "操作类型 CZLX 不是 I/U/D (CZLX is not I, U or D)"
        rej |= b
        is_d = op == "D"
        cz = d14_to_int(_obj(d[CZSJ])) if CZSJ in d.columns else np.full(n, -1, np.int64)
        b = (cz == -2) & ~rej
        why[b], detail[b] = "BAD_OPERATION", "操作时间 CZSJ 无法识别 (CZSJ is not a readable timestamp)"
        rej |= b
        ts = np.where(cz >= 0, cz, gx)

    # ---- key ids: one hash pass over current keys (unique, so ids 0..ncur-1 = positions) + delivered keys
    ok = np.flatnonzero(~rej)
    allk = np.concatenate([ccols["_key"], keys_arr[ok]]) if ncur else keys_arr[ok]
    gid_all, uniq = pd.factorize(allk)
    if ncur and gid_all[ncur - 1] != ncur - 1:
        raise ValueError(f"current {table} frame has duplicate _key values")
    G = len(uniq)
    gid_ok = np.full(n, -1, dtype=np.int64)
    gid_ok[ok] = gid_all[ncur:]
    del allk, gid_all

    if full and len(ok):  # duplicate keys: keep latest GXSJ, ties → last line
        per_key = np.bincount(gid_ok[ok], minlength=G)
        dup = ok[per_key[gid_ok[ok]] > 1]
        if len(dup):
            order = np.lexsort((lines[dup], ts[dup], gid_ok[dup]))
            sg = gid_ok[dup][order]
            last = np.ones(len(sg), dtype=bool)
            last[:-1] = sg[1:] != sg[:-1]
            winner_line = np.zeros(G, dtype=np.int64)
            winner_line[sg[last]] = lines[dup[order[last]]]
            losers = dup[order[~last]]
            rej[losers] = True
            why[losers] = "DUPLICATE_KEY"
            detail[losers] = [
                f"主键重复, 保留第 {w} 行 (duplicate key, line {w} kept: latest GXSJ, then last line)"
                for w in winner_line[sg[~last]]
            ]

    rejects_records = []
    if rej.any():
        pos = np.flatnonzero(rej)
        for p, raw in zip(pos, _raw_lines(d, pos)):
            rejects_records.append(
                {"line": int(lines[p]), "reason": why[p], "detail": detail[p], "raw": raw, "key": keys_arr[p]}
            )
    rejects = make_rejects(rejects_records)

    # ---- operations (loaded rows), in file order
    rows = np.flatnonzero(~rej)  # row positions into the delivered frame
    m = len(rows)
    op_g = gid_ok[rows]
    op_ts = ts[rows]
    op_d = is_d[rows]
    op_line = lines[rows]
    known_g = np.arange(G) < ncur
    st = np.full(G, _UNKNOWN, dtype=np.int8)
    st[:ncur] = np.where(cur_del, _TOMB, _LIVE)
    st_ts = np.full(G, -1, dtype=np.int64)
    st_ts[:ncur] = cur_ts
    src = np.full(G, -1, dtype=np.int64)  # -1: stored values; ≥0: delivered row position holding the values
    touched = np.zeros(G, dtype=bool)
    outcome = np.full(m, -1, dtype=np.int8)

    dcols = {f: (_obj(d[f]) if f in d.columns else np.full(n, "", dtype=object)) for f in fields}

    def differs(a: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Do ops ``a`` (positions into rows) carry values different from their key's current state?"""
        s = src[k]
        from_d = s >= 0
        new_rows = rows[a]
        diff = np.zeros(len(a), dtype=bool)
        if not from_d.any():
            for f in fields:
                diff |= dcols[f][new_rows] != ccols[f][k]
            return diff
        d_rows = np.where(from_d, s, 0)
        c_rows = np.where(from_d, 0, k)
        for f in fields:
            old = np.where(from_d, dcols[f][d_rows], ccols[f][c_rows] if ncur else "")
            diff |= dcols[f][new_rows] != old
        return diff

    if m:
        per_key = np.bincount(op_g, minlength=G)
        multi = np.flatnonzero(per_key[op_g] > 1)
        rank = np.zeros(m, dtype=np.int64)
        if len(multi):  # rank of each op within its key, in (_ts, _line) order
            order = multi[np.lexsort((op_line[multi], op_ts[multi], op_g[multi]))]
            sg = op_g[order]
            starts = np.flatnonzero(np.r_[True, sg[1:] != sg[:-1]])
            grp_start = np.repeat(starts, np.diff(np.r_[starts, len(sg)]))
            rank[order] = np.arange(len(order)) - grp_start
        passes = [np.arange(m)] if not len(multi) else [np.flatnonzero(rank == r) for r in range(int(rank.max()) + 1)]
        for ops in passes:  # one op per key per pass; usually 1–3 passes
            k = op_g[ops]
            stale = op_ts[ops] < st_ts[k]
            if full and stale.any():
                # a full file describes state: a row equal to the live record confirms it (unchanged, untouched)
                sl = np.flatnonzero(stale & (st[k] == _LIVE))
                if len(sl):
                    confirm = sl[~differs(ops[sl], k[sl])]
                    outcome[ops[confirm]] = _UNCH
                    keep = np.ones(len(ops), dtype=bool)
                    keep[confirm] = False
                    ops, k, stale = ops[keep], k[keep], stale[keep]
            outcome[ops[stale]] = _STALE
            a = ops[~stale]
            ka = k[~stale]
            dmask = op_d[a]
            live = st[ka] == _LIVE
            # D: live → deleted, else unchanged; an unknown key's tombstone takes the D row's values
            outcome[a[dmask]] = np.where(live[dmask], _DEL, _UNCH)
            ghost = dmask & (st[ka] == _UNKNOWN)
            src[ka[ghost]] = a[ghost]
            # I / U: live → updated / unchanged, else inserted
            iu = ~dmask
            outcome[a[iu & ~live]] = _INS
            upd = np.flatnonzero(iu & live)
            apply_mask = np.ones(len(a), dtype=bool)
            if len(upd):
                diff = differs(a[upd], ka[upd])
                outcome[a[upd]] = np.where(diff, _UPD, _UNCH)
                if full:  # identical rows of a full file leave the record untouched
                    apply_mask[upd[~diff]] = False
            a, ka, dmask = a[apply_mask], ka[apply_mask], dmask[apply_mask]
            src[ka[~dmask]] = a[~dmask]
            st[ka] = np.where(dmask, _TOMB, _LIVE)
            st_ts[ka] = op_ts[a]
            touched[ka] = True

    # ---- full: live records absent from the file
    implied = np.zeros(0, dtype=np.int64)
    kept_newer = 0
    if full and ncur:
        present = np.zeros(ncur, dtype=bool)
        og = op_g[op_g < ncur]
        present[og] = True
        if protected_keys is not None:
            pk = pd.Index(_strip(np.asarray(list(map(str, protected_keys)), dtype=object)))
            present |= pd.Index(ccols["_key"]).isin(pk)
        absent_live = ~present & ~cur_del
        newer = absent_live & (cur_ts > bd_end)
        kept_newer = int(newer.sum())
        implied = np.flatnonzero(absent_live & ~newer)

    # ---- new Source frame
    upd_g = np.flatnonzero(touched & known_g)  # = positions in current
    new_g = np.flatnonzero(touched & ~known_g)  # ids in order of first appearance
    up_src = src[upd_g]
    up_from_d = up_src >= 0
    out: dict[str, np.ndarray] = {}
    for f in fields:
        col = ccols[f].copy()
        if len(upd_g):
            col[upd_g[up_from_d]] = dcols[f][rows[up_src[up_from_d]]]
        if len(new_g):
            col = np.concatenate([col, dcols[f][rows[src[new_g]]]])
        out[f] = col
    meta = {c: ccols[c].copy() for c in META_COLUMNS}
    if len(upd_g):
        meta["_ts"][upd_g] = _int_to_str(st_ts[upd_g])
        meta["_deleted"][upd_g] = np.where(st[upd_g] == _TOMB, "1", "0").astype(object)
        meta["_batch"][upd_g] = batch_id
        meta["_bdate"][upd_g] = business_date
    if len(implied):
        meta["_deleted"][implied] = "1"
        meta["_batch"][implied] = batch_id
        meta["_bdate"][implied] = business_date
    if len(new_g):
        k_new = len(new_g)
        add = {
            "_key": np.asarray(uniq[new_g], dtype=object),
            "_ts": _int_to_str(st_ts[new_g]),
            "_deleted": np.where(st[new_g] == _TOMB, "1", "0").astype(object),
            "_batch": np.full(k_new, batch_id, dtype=object),
            "_bdate": np.full(k_new, business_date, dtype=object),
        }
        meta = {c: np.concatenate([meta[c], add[c]]) for c in META_COLUMNS}
    out.update(meta)
    new_current = pd.DataFrame(out, copy=False)

    # ---- counts and changes
    cnt = np.bincount(outcome[outcome >= 0], minlength=5) if m else np.zeros(5, np.int64)
    counts = {
        "inserted": int(cnt[_INS]),
        "updated": int(cnt[_UPD]),
        "deleted": int(cnt[_DEL]) + len(implied),
        "unchanged": int(cnt[_UNCH]),
        "ignored_stale": int(cnt[_STALE]),
    }
    ch = np.flatnonzero(outcome <= _DEL) if m else np.zeros(0, np.int64)
    ch = ch[outcome[ch] >= 0]
    letters = np.array(["I", "U", "D"], dtype=object)
    changes = pd.DataFrame(
        {
            "_key": np.asarray(uniq[op_g[ch]], dtype=object) if len(ch) else np.empty(0, dtype=object),
            "op": letters[outcome[ch]] if len(ch) else np.empty(0, dtype=object),
            "_ts": _int_to_str(op_ts[ch]),
            "_line": op_line[ch].astype(np.int64),
        }
    )
    if len(implied):
        imp = pd.DataFrame(
            {
                "_key": ccols["_key"][implied],
                "op": np.full(len(implied), "D", dtype=object),
                "_ts": ccols["_ts"][implied],
                "_line": np.zeros(len(implied), dtype=np.int64),
            }
        )
        changes = pd.concat([changes, imp], ignore_index=True)
    return Applied(new_current, counts, changes, rejects, loaded_rows=m, kept_newer=kept_newer)
