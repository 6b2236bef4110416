"""The broken numbers a daily date looks up near a valid ID (`linkage.ids.NearIDs`, store/scope.py) are
exactly those one keystroke from it (`keystroke_neighbours`), found by three shared keys instead of
listing some 300 neighbours per ID."""
from __future__ import annotations

import random

from linkage.ids import NEAR_COLUMNS, NearIDs, keystroke_neighbours, near_keys


def _number(rng: random.Random) -> str:
    digits = "0123456789"
    return ("".join(rng.choice(digits) for _ in range(6)) + rng.choice(["19", "20"])
            + "".join(rng.choice(digits) for _ in range(9)) + rng.choice(digits + "X"))


def test_lookup_by_shared_keys_finds_exactly_the_keystroke_neighbours():
    rng = random.Random(3)
    valid = [_number(rng) for _ in range(200)]
    brute = set()
    for v in valid:
        brute.update(keystroke_neighbours(v))
        if v[6:8] == "19":
            brute.update(keystroke_neighbours(v[:6] + v[8:17]))
    # every neighbour (both lengths, swaps across the cuts included), numbers two keystrokes away, noise
    twice = [keystroke_neighbours(n)[rng.randrange(100)] for n in rng.sample(sorted(brute), 3000)]
    numbers = sorted(brute) + twice + [_number(rng) for _ in range(3000)] + [_number(rng)[:15] for _ in range(3000)]
    index = NearIDs(valid)
    keys = index.keys()
    found = set()
    for b in numbers:
        shared = any(k and k in keys[c] for c, k in zip(NEAR_COLUMNS, near_keys(b))) or b in keys["broken_id"]
        if shared and index.near(b):
            found.add(b)
    assert found == {b for b in numbers if b in brute}
    assert sum(len(k) for k in keys.values()) < 10 * len(valid)  # a handful of keys per ID, not 300
