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

from catalog import table as _table
from exchange.parse import CZLX, CZSJ, OPERATIONS, d14_to_int, make_rejects

META_COLUMNS = ("_key", "_ts", "_deleted", "_batch", "_bdate")

_INS, _UPD, _DEL, _UNCH, _STALE = range(5)
_LIVE, _TOMB, _UNKNOWN = 1, 2, 0


@dataclass
class Applied:
    current: pd.DataFrame  # the new Source frame
    counts: dict[str, int]  # inserted, updated, deleted, unchanged, ignored_stale
    changes: pd.DataFrame  # _key, op, _ts, _line: one row per op that changed something; implied deletes _line 0
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


# --------------------------------------------------------------------------------------------
# the steps of apply_delivery


@dataclass
class _Current:
    """The current Source frame as column arrays, so that the input frame is never modified."""

    cols: dict[str, np.ndarray]  # source_columns(table) → object array
    n: int
    ts: np.ndarray  # int64 _ts, 0 when empty or unreadable
    deleted: np.ndarray  # bool: a tombstone


@dataclass
class _Rows:
    """The delivered rows as arrays, with each row's reject verdict, so checks can be added one by one."""

    lines: np.ndarray  # int64 _line
    keys: np.ndarray  # trimmed key
    ts: np.ndarray  # int64 operation timestamp (GXSJ, else the business date; incremental: CZSJ first)
    is_d: np.ndarray  # bool: a D operation
    rej: np.ndarray  # bool
    why: np.ndarray  # reject reason
    detail: np.ndarray  # reject detail

    def reject(self, mask: np.ndarray, reason: str, detail: str) -> None:
        """Mark the rows of boolean ``mask`` rejected for ``reason``."""
        self.why[mask], self.detail[mask] = reason, detail
        self.rej |= mask


@dataclass
class _Replay:
    """The loaded rows (operations, in file order) and the per-key state they are replayed into."""

    full: bool
    fields: list[str]
    cur: _Current
    dcols: dict[str, np.ndarray]  # catalogue field → delivered column (all delivered rows)
    rows: np.ndarray  # per op: its position in the delivered frame
    op_g: np.ndarray  # per op: key id
    op_ts: np.ndarray
    op_d: np.ndarray
    op_line: np.ndarray
    st: np.ndarray  # per key id: _LIVE, _TOMB or _UNKNOWN
    st_ts: np.ndarray  # per key id: _ts (-1: none)
    src: np.ndarray  # per key id: -1 stored values; ≥0 the op holding the values
    touched: np.ndarray  # per key id: an op of this delivery was applied
    outcome: np.ndarray  # per op: _INS … _STALE (-1 until decided)


def _current_arrays(current: pd.DataFrame | None, table: str) -> _Current:
    """Column arrays of ``current`` (absent columns filled), its parsed ``_ts`` and tombstone flags."""
    t = _table(table)
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
    return _Current(ccols, ncur, cur_ts, ccols["_deleted"] == "1")


def _delivered_rows(d: pd.DataFrame, table: str, full: bool, bd_start: np.int64) -> _Rows:
    """Lines, trimmed keys and operation timestamps of the delivered rows; rejects EMPTY_KEY."""
    t = _table(table)
    n = len(d)
    if t.key not in d.columns:
        raise ValueError(f"delivered {table} frame has no key column {t.key}")
    lines = d["_line"].to_numpy(dtype=np.int64) if "_line" in d.columns else np.arange(2, n + 2, dtype=np.int64)
    keys = _strip(_obj(d[t.key]))
    gx = d14_to_int(_obj(d["GXSJ"])) if "GXSJ" in d.columns else np.full(n, -1, np.int64)
    r = _Rows(
        lines=lines,
        keys=keys,
        ts=np.where(gx < 0, bd_start, gx),
        is_d=np.zeros(n, dtype=bool),
        rej=np.zeros(n, dtype=bool),
        why=np.full(n, "", dtype=object),
        detail=np.full(n, "", dtype=object),
    )
    r.reject(keys == "", "EMPTY_KEY", f"主键 {t.key} 为空 (record key {t.key} is empty)")
    if not full:
        _check_operations(d, table, r)
    return r


def _check_operations(d: pd.DataFrame, table: str, r: _Rows) -> None:
    """Incremental: read CZLX into ``r.is_d`` and CZSJ into ``r.ts`` (over GXSJ), rejecting BAD_OPERATION."""
    n = len(d)
    if CZLX not in d.columns:
        raise ValueError(f"incremental {table} frame has no {CZLX} column")
    op = np.array(list(map(str.upper, _strip(_obj(d[CZLX])))), dtype=object) if n else np.empty(0, object)
    r.reject(~pd.Series(op, dtype=object).isin(OPERATIONS).to_numpy(dtype=bool) & ~r.rej,
             "BAD_OPERATION", "操作类型 CZLX 不是 I/U/D (CZLX is not I, U or D)")
    r.is_d = op == "D"
    cz = d14_to_int(_obj(d[CZSJ])) if CZSJ in d.columns else np.full(n, -1, np.int64)
    r.reject((cz == -2) & ~r.rej, "BAD_OPERATION", "操作时间 CZSJ 无法识别 (CZSJ is not a readable timestamp)")
    r.ts = np.where(cz >= 0, cz, r.ts)


def _key_ids(cur: _Current, r: _Rows, table: str) -> tuple[np.ndarray, pd.Index]:
    """One hash pass over current keys (ids 0..ncur-1 = positions) and the keys of unrejected rows.

    Returns the key id of each delivered row (-1 when rejected) and the keys by id.
    """
    ncur = cur.n
    ok = np.flatnonzero(~r.rej)
    allk = np.concatenate([cur.cols["_key"], r.keys[ok]]) if ncur else r.keys[ok]
    gid_all, uniq = pd.factorize(allk)
    if ncur and gid_all[ncur - 1] != ncur - 1:
        raise ValueError(f"current {table} frame has duplicate _key values")
    gid_ok = np.full(len(r.keys), -1, dtype=np.int64)
    gid_ok[ok] = gid_all[ncur:]
    return gid_ok, uniq


def _reject_duplicate_keys(r: _Rows, gid_ok: np.ndarray, n_keys: int) -> None:
    """Full files: of rows sharing a key keep the latest GXSJ (ties: last line), reject the rest."""
    ok = np.flatnonzero(~r.rej)
    if not len(ok):
        return
    per_key = np.bincount(gid_ok[ok], minlength=n_keys)
    dup = ok[per_key[gid_ok[ok]] > 1]
    if not len(dup):
        return
    order = np.lexsort((r.lines[dup], r.ts[dup], gid_ok[dup]))
    sg = gid_ok[dup][order]
    last = np.ones(len(sg), dtype=bool)
    last[:-1] = sg[1:] != sg[:-1]
    winner_line = np.zeros(n_keys, dtype=np.int64)
    winner_line[sg[last]] = r.lines[dup[order[last]]]
    losers = dup[order[~last]]
    r.rej[losers] = True
    r.why[losers] = "DUPLICATE_KEY"
    r.detail[losers] = [
        f"主键重复, 保留第 {w} 行 (duplicate key, line {w} kept: latest GXSJ, then last line)"
        for w in winner_line[sg[~last]]
    ]


def _rejects_frame(d: pd.DataFrame, r: _Rows) -> pd.DataFrame:
    """The rejected rows as a parse.REJECT_COLUMNS frame, each with its cells as one CSV line."""
    records = []
    if r.rej.any():
        pos = np.flatnonzero(r.rej)
        for p, raw in zip(pos, _raw_lines(d, pos)):
            records.append(
                {"line": int(r.lines[p]), "reason": r.why[p], "detail": r.detail[p], "raw": raw, "key": r.keys[p]}
            )
    return make_rejects(records)


def _replay_state(d: pd.DataFrame, fields: list[str], full: bool, cur: _Current, r: _Rows,
                  gid_ok: np.ndarray, n_keys: int) -> _Replay:
    """The loaded rows as operations, and each key's state before the delivery."""
    rows = np.flatnonzero(~r.rej)
    ncur = cur.n
    st = np.full(n_keys, _UNKNOWN, dtype=np.int8)
    st[:ncur] = np.where(cur.deleted, _TOMB, _LIVE)
    st_ts = np.full(n_keys, -1, dtype=np.int64)
    st_ts[:ncur] = cur.ts
    n = len(d)
    return _Replay(
        full=full,
        fields=fields,
        cur=cur,
        dcols={f: (_obj(d[f]) if f in d.columns else np.full(n, "", dtype=object)) for f in fields},
        rows=rows,
        op_g=gid_ok[rows],
        op_ts=r.ts[rows],
        op_d=r.is_d[rows],
        op_line=r.lines[rows],
        st=st,
        st_ts=st_ts,
        src=np.full(n_keys, -1, dtype=np.int64),
        touched=np.zeros(n_keys, dtype=bool),
        outcome=np.full(len(rows), -1, dtype=np.int8),
    )


def _differs(rp: _Replay, a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Do ops ``a`` carry values different from the current state of their keys ``k``?"""
    s = rp.src[k]
    from_d = s >= 0
    new_rows = rp.rows[a]
    diff = np.zeros(len(a), dtype=bool)
    if not from_d.any():
        for f in rp.fields:
            diff |= rp.dcols[f][new_rows] != rp.cur.cols[f][k]
        return diff
    d_rows = np.where(from_d, rp.rows[np.maximum(s, 0)], 0)  # the row of the op holding the values
    c_rows = np.where(from_d, 0, k)
    for f in rp.fields:
        old = np.where(from_d, rp.dcols[f][d_rows], rp.cur.cols[f][c_rows] if rp.cur.n else "")
        diff |= rp.dcols[f][new_rows] != old
    return diff


def _passes(rp: _Replay, n_keys: int) -> list[np.ndarray]:
    """Split the ops into passes of at most one op per key, a key's ops in (_ts, _line) order."""
    m = len(rp.rows)
    if not m:
        return []
    per_key = np.bincount(rp.op_g, minlength=n_keys)
    multi = np.flatnonzero(per_key[rp.op_g] > 1)
    if not len(multi):
        return [np.arange(m)]
    rank = np.zeros(m, dtype=np.int64)  # rank of each op within its key
    order = multi[np.lexsort((rp.op_line[multi], rp.op_ts[multi], rp.op_g[multi]))]
    sg = rp.op_g[order]
    starts = np.flatnonzero(np.r_[True, sg[1:] != sg[:-1]])
    grp_start = np.repeat(starts, np.diff(np.r_[starts, len(sg)]))
    rank[order] = np.arange(len(order)) - grp_start
    return [np.flatnonzero(rank == r) for r in range(int(rank.max()) + 1)]


def _confirm_identical(rp: _Replay, ops: np.ndarray, k: np.ndarray, stale: np.ndarray):
    """Full files describe state: a stale row equal to the live record is unchanged and leaves the pass."""
    sl = np.flatnonzero(stale & (rp.st[k] == _LIVE))
    if not len(sl):
        return ops, k, stale
    confirm = sl[~_differs(rp, ops[sl], k[sl])]
    rp.outcome[ops[confirm]] = _UNCH
    keep = np.ones(len(ops), dtype=bool)
    keep[confirm] = False
    return ops[keep], k[keep], stale[keep]


def _run_pass(rp: _Replay, ops: np.ndarray) -> None:
    """Decide the outcome of ops (one per key) and advance their keys' state."""
    k = rp.op_g[ops]
    stale = rp.op_ts[ops] < rp.st_ts[k]
    if rp.full and stale.any():
        ops, k, stale = _confirm_identical(rp, ops, k, stale)
    rp.outcome[ops[stale]] = _STALE
    a = ops[~stale]
    ka = k[~stale]
    dmask = rp.op_d[a]
    live = rp.st[ka] == _LIVE
    # D: live → deleted, else unchanged; an unknown key's tombstone takes the D row's values
    rp.outcome[a[dmask]] = np.where(live[dmask], _DEL, _UNCH)
    ghost = dmask & (rp.st[ka] == _UNKNOWN)
    rp.src[ka[ghost]] = a[ghost]
    # I / U: live → updated / unchanged, else inserted
    iu = ~dmask
    rp.outcome[a[iu & ~live]] = _INS
    upd = np.flatnonzero(iu & live)
    apply_mask = np.ones(len(a), dtype=bool)
    if len(upd):
        diff = _differs(rp, a[upd], ka[upd])
        rp.outcome[a[upd]] = np.where(diff, _UPD, _UNCH)
        if rp.full:  # identical rows of a full file leave the record untouched
            apply_mask[upd[~diff]] = False
    a, ka, dmask = a[apply_mask], ka[apply_mask], dmask[apply_mask]
    rp.src[ka[~dmask]] = a[~dmask]
    rp.st[ka] = np.where(dmask, _TOMB, _LIVE)
    rp.st_ts[ka] = rp.op_ts[a]
    rp.touched[ka] = True


def _implied_deletions(rp: _Replay, protected_keys, bd_end: np.int64) -> tuple[np.ndarray, int]:
    """Full files: positions of live records absent from the file (to delete), and how many were kept as newer."""
    cur = rp.cur
    present = np.zeros(cur.n, dtype=bool)
    og = rp.op_g[rp.op_g < cur.n]
    present[og] = True
    if protected_keys is not None:
        pk = pd.Index(_strip(np.asarray(list(map(str, protected_keys)), dtype=object)))
        present |= pd.Index(cur.cols["_key"]).isin(pk)
    absent_live = ~present & ~cur.deleted
    newer = absent_live & (cur.ts > bd_end)
    return np.flatnonzero(absent_live & ~newer), int(newer.sum())


def _new_source(rp: _Replay, uniq: pd.Index, implied: np.ndarray, batch_id: str, business_date: str) -> pd.DataFrame:
    """The new Source frame: touched rows rewritten in place, implied deletions marked, new keys appended."""
    ccols, ncur = rp.cur.cols, rp.cur.n
    known_g = np.arange(len(rp.st)) < ncur
    upd_g = np.flatnonzero(rp.touched & known_g)  # = positions in current
    new_g = np.flatnonzero(rp.touched & ~known_g)  # ids in order of first appearance
    up_src = rp.src[upd_g]
    up_from_d = up_src >= 0
    out: dict[str, np.ndarray] = {}
    for f in rp.fields:
        col = ccols[f].copy()
        if len(upd_g):
            col[upd_g[up_from_d]] = rp.dcols[f][rp.rows[up_src[up_from_d]]]
        if len(new_g):
            col = np.concatenate([col, rp.dcols[f][rp.rows[rp.src[new_g]]]])
        out[f] = col
    meta = {c: ccols[c].copy() for c in META_COLUMNS}
    if len(upd_g):
        meta["_ts"][upd_g] = _int_to_str(rp.st_ts[upd_g])
        meta["_deleted"][upd_g] = np.where(rp.st[upd_g] == _TOMB, "1", "0").astype(object)
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
            "_ts": _int_to_str(rp.st_ts[new_g]),
            "_deleted": np.where(rp.st[new_g] == _TOMB, "1", "0").astype(object),
            "_batch": np.full(k_new, batch_id, dtype=object),
            "_bdate": np.full(k_new, business_date, dtype=object),
        }
        meta = {c: np.concatenate([meta[c], add[c]]) for c in META_COLUMNS}
    out.update(meta)
    return pd.DataFrame(out, copy=False)


def _counts(rp: _Replay, implied: np.ndarray) -> dict[str, int]:
    """Applied.counts: each loaded row once by outcome, plus the implied deletions."""
    outcome = rp.outcome
    cnt = np.bincount(outcome[outcome >= 0], minlength=5) if len(outcome) else np.zeros(5, np.int64)
    return {
        "inserted": int(cnt[_INS]),
        "updated": int(cnt[_UPD]),
        "deleted": int(cnt[_DEL]) + len(implied),
        "unchanged": int(cnt[_UNCH]),
        "ignored_stale": int(cnt[_STALE]),
    }


def _changes(rp: _Replay, uniq: pd.Index, implied: np.ndarray) -> pd.DataFrame:
    """Applied.changes: the ops that inserted, updated or deleted, then the implied deletions (_line 0)."""
    outcome = rp.outcome
    ch = np.flatnonzero(outcome <= _DEL) if len(outcome) else np.zeros(0, np.int64)
    ch = ch[outcome[ch] >= 0]
    letters = np.array(["I", "U", "D"], dtype=object)
    changes = pd.DataFrame(
        {
            "_key": np.asarray(uniq[rp.op_g[ch]], dtype=object) if len(ch) else np.empty(0, dtype=object),
            "op": letters[outcome[ch]] if len(ch) else np.empty(0, dtype=object),
            "_ts": _int_to_str(rp.op_ts[ch]),
            "_line": rp.op_line[ch].astype(np.int64),
        }
    )
    if len(implied):
        imp = pd.DataFrame(
            {
                "_key": rp.cur.cols["_key"][implied],
                "op": np.full(len(implied), "D", dtype=object),
                "_ts": rp.cur.cols["_ts"][implied],
                "_line": np.zeros(len(implied), dtype=np.int64),
            }
        )
        changes = pd.concat([changes, imp], ignore_index=True)
    return changes


# --------------------------------------------------------------------------------------------


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
    bd_start = np.int64(int(business_date + "000000"))
    bd_end = np.int64(int(business_date + "235959"))

    cur = _current_arrays(current, table)
    rows = _delivered_rows(delivered, table, full, bd_start)
    gid_ok, uniq = _key_ids(cur, rows, table)
    if full:
        _reject_duplicate_keys(rows, gid_ok, len(uniq))
    rejects = _rejects_frame(delivered, rows)

    rp = _replay_state(delivered, list(t.fields), full, cur, rows, gid_ok, len(uniq))
    for ops in _passes(rp, len(uniq)):  # usually 1–3 passes
        _run_pass(rp, ops)

    implied, kept_newer = np.zeros(0, dtype=np.int64), 0
    if full and cur.n:
        implied, kept_newer = _implied_deletions(rp, protected_keys, bd_end)

    return Applied(
        _new_source(rp, uniq, implied, batch_id, business_date),
        _counts(rp, implied),
        _changes(rp, uniq, implied),
        rejects,
        loaded_rows=len(rp.rows),
        kept_newer=kept_newer,
    )
