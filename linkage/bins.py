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


def components(*groupings: np.ndarray, pairs: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Component number of each row: rows sharing a value ("" = none) of any of `groupings` (arrays of one
    length), or joined by one of `pairs` (two arrays of row numbers), are in one component, and so on
    transitively."""
    n = len(groupings[0]) if groupings else 0
    rows, cols = [np.arange(n)], [np.arange(n)]
    if pairs is not None:
        rows.append(np.asarray(pairs[0], dtype=np.int64))
        cols.append(np.asarray(pairs[1], dtype=np.int64))
    for values in groupings:
        values = np.asarray(values, dtype=object)
        codes, _ = pd.factorize(values)
        has = np.flatnonzero((values != "") & (codes >= 0))
        if not len(has):
            continue
        # each member to its group's first member: one edge a row, a star per group
        rows.append(has)
        cols.append(pd.Series(has).groupby(codes[has]).transform("min").to_numpy(np.int64))
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    return connected_components(graph, directed=False)[1] if n else np.zeros(0, dtype=np.int64)


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
