"""Whole-city work in bins: the rows that read one another, kept together (docs/scale.md 2.7).

A rule or a link that reads a role's person, record or ID group gives the same answer on any set of roles
holding all of them. `components` finds the closure of such groupings; `pack` puts whole components into bins
of at most a given number of rows, so that a step can run bin by bin, its memory set by the bin, not the city.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from linkage.base import id_group_keys, usable_ids
from linkage.incremental import _Reach
from linkage.link import _id_clusters, _partner_rows
from linkage.repair import repair_candidates, repairable


def components(*groupings: np.ndarray, pairs: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Component number of each row: rows sharing a value ("" = none) of any of `groupings` (arrays of one
    length: strings, or their `group_codes`), or joined by one of `pairs` (two arrays of row numbers), are in
    one component, and so on transitively."""
    n = len(groupings[0]) if groupings else 0
    rows, cols = [np.arange(n)], [np.arange(n)]
    if pairs is not None:
        rows.append(np.asarray(pairs[0], dtype=np.int64))
        cols.append(np.asarray(pairs[1], dtype=np.int64))
    for values in groupings:
        codes = np.asarray(values)
        if codes.dtype.kind != "i":
            codes = group_codes(codes)
        has = np.flatnonzero(codes >= 0)
        if not len(has):
            continue
        # each member to its group's first member: one edge a row, a star per group
        rows.append(has)
        cols.append(pd.Series(has).groupby(codes[has]).transform("min").to_numpy(np.int64))
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    return connected_components(graph, directed=False)[1] if n else np.zeros(0, dtype=np.int64)


def group_codes(values: np.ndarray) -> np.ndarray:
    """A grouping's values as int64 codes, -1 for none (""): what `components` reads of it, in 8 bytes a row
    where a key string takes about 80 (the binned date's cut holds its groupings while it trains)."""
    values = np.asarray(values, dtype=object)
    codes, _ = pd.factorize(values)
    codes = codes.astype(np.int64)
    codes[values == ""] = -1
    return codes


def pack(component: np.ndarray, limit: int) -> np.ndarray:
    """Bin number of each row: whole components in the order of their first row, laid end to end and cut
    every `limit` rows; a component goes to the bin where it starts, so a bin holds at most `limit` rows
    plus its last component. In row order, so that a bin's rows lie near one another in memory as they did
    in the whole frame (a bin of scattered rows made the rules half as slow again)."""
    if not len(component):
        return np.zeros(0, dtype=np.int64)
    labels, first, sizes = np.unique(component, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    start = np.cumsum(sizes[order]) - sizes[order]  # rows laid before each component
    bin_of = np.empty(len(labels), dtype=np.int64)
    bin_of[order] = start // max(int(limit), 1)
    _, dense = np.unique(bin_of, return_inverse=True)  # no empty bin numbers
    return dense.astype(np.int64)[np.searchsorted(labels, component)]


def repair_edges(R: pd.DataFrame, cfg: dict, business_date: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each damaged ID's row of `R` (canonical roles) to one holder of every ID it could be repaired to
    (`repair.repair_candidates`; the ID group joins the other holders): (damaged rows, holder rows, the IDs)."""
    n = len(R)
    citizen_id, _ = usable_ids(R)
    broken = np.flatnonzero(repairable(R))
    holders = pd.Series(np.arange(n)[citizen_id != ""], index=citizen_id[citizen_id != ""])
    holders = holders[~holders.index.duplicated()]
    cand = repair_candidates(R, broken, holders.index, cfg, business_date)
    at = holders.reindex(cand["id18"].to_numpy(dtype=object)).to_numpy(dtype=np.float64)  # NaN: no holder
    found = ~np.isnan(at)
    return (cand["row"].to_numpy(np.int64)[found], at[found].astype(np.int64),
            cand["id18"].to_numpy(dtype=object)[found])


def edges_before_linking(R: pd.DataFrame, cfg: dict, model, business_date: str) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of rows of `R` (roles in the linker's canonical order, `link._canonical`) whose links can depend
    on one another in a whole-city `link_roles` run with `model`, found before linking, so that a city can
    be cut into bins first and linked bin by bin (docs/scale.md 2.7). With the ID groups and records (the
    caller's groupings), they are:

    - a damaged ID and a holder of each ID it could be repaired to (`repair.repair_candidates`);
    - every reachable pair of a possible fuzzy query (`incremental._Reach`: a superset of the kept candidate
      pairs), the possible queries being the roles the ID stage leaves unanchored (`link._id_clusters`, a
      superset of the run's queries: a repair anchors some of them later), the targets in the forms the run
      can give them (an anchored role only trusted with its ID).

    Possible queries counted from the roles alone (no usable ID, or a name or birth date that differs within
    the ID group) are too many: on a 200k-person city their reachable pairs joined 7 % of the roles into one
    component, against 445 roles at most with the ID stage's. With the targets in their actual forms and the
    spouse feature bounded by the spouses' ID groups (`blocks.spouse_keys`) the largest component at 1M is
    1,955 roles (87,986 before; 9,533 with the scored pairs), but finding them still costs more than linking:
    every form prepared at once (docs/benchmarks.md, "Bins found before linking"). A city without previous
    persons or decisions (the historical date): a base that has them must add those groupings too."""
    n = len(R)
    anchored = _id_clusters(R, cfg)["anchored"]
    citizen_id, doc = usable_ids(R)
    repair_row, repair_at, repair_ids = repair_edges(R, cfg, business_date)
    pq = ~anchored
    reach = _Reach(R, n, _partner_rows(R[["BH", "YWZJ", "JS"]]), np.full(n, "", dtype=object), citizen_id, doc,
                   repair_row, repair_ids, pq, np.zeros(n, dtype=bool), cfg, model)
    # a target in the form the run gives it: an anchored role trusted with its ID (never untrusted), an
    # unanchored one untrusted or with an ID it could be repaired to
    targets = np.flatnonzero(~(anchored[reach.src] & ~reach.trusted_form))
    q, t = reach._pairs(reach.query_forms(pq), targets, "all")
    del reach
    return (np.concatenate([repair_row, q]).astype(np.int64), np.concatenate([repair_at, t]).astype(np.int64))


def components_before_linking(R: pd.DataFrame, cfg: dict, model, business_date: str, *groupings: np.ndarray) -> np.ndarray:
    """Component of each row of `R` (canonical roles) under its ID group, its record, `groupings` (the caller's:
    the rules' ID groups, say) and `edges_before_linking`: a bin of whole components linked alone with `model`
    gives each of its roles the link a whole-city run gives it (tests/test_bins.py)."""
    record = (R["BH"].astype(str) + "|" + R["YWZJ"].astype(str)).to_numpy(dtype=object)
    return components(id_group_keys(R), record, *groupings, pairs=edges_before_linking(R, cfg, model, business_date))
