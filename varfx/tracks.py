"""Track metadata and track selection (``--tracks``)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .errors import OptionError

_INDEX_LIST = re.compile(r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$")


def select_tracks(table: pd.DataFrame, spec: str | None) -> list[int]:
    """Indices of the tracks chosen by ``spec``, in the table's order.

    ``spec`` is one of: None (all tracks); a list of indices and ranges
    (``0,5,10-19``); the path of a file with one track identifier per line; or a
    regular expression searched in each track's description (``CAGE:.*K562``).
    """
    n = len(table)
    if spec is None or str(spec).strip() == "":
        return list(range(n))
    spec = str(spec)
    if _INDEX_LIST.match(spec):
        chosen: set[int] = set()
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            a, b = int(lo), int(hi) if hi else int(lo)
            if b < a:
                raise OptionError(f"--tracks {spec!r}: the range {part.strip()} runs backwards (write {b}-{a})")
            if b >= n:
                raise OptionError(f"--tracks {spec!r}: {part.strip()} is outside 0..{n - 1}")
            chosen.update(range(a, b + 1))
        return sorted(chosen)
    if re.fullmatch(r"[\s\d,-]+", spec):  # "-1", ",", "3,,4": a mistyped index list, not a regular expression
        raise OptionError(f"--tracks {spec!r} is not an index list: give indices and ranges from 0 to {n - 1}, "
                          "e.g. 0,5,10-19")
    path = Path(spec)
    if path.is_file():
        wanted = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        if not wanted:
            raise OptionError(f"--tracks {path}: the file names no track identifier (one per line)")
        index = {tid: i for i, tid in enumerate(table["id"])}
        missing = [w for w in wanted if w not in index]
        if missing:
            raise OptionError(f"--tracks {path}: {len(missing)} identifier(s) not among the model's tracks, "
                              f"first {missing[0]!r} (list them with `varfx tracks`)")
        return sorted({index[w] for w in wanted})
    try:
        pattern = re.compile(spec)
    except re.error as exc:
        raise OptionError(f"--tracks {spec!r} is not an index list, a file or a valid regular expression ({exc})")
    hits = [i for i, d in enumerate(table["description"]) if pattern.search(str(d))]
    if not hits:
        looks_like_file = "/" in spec or re.search(r"\.(txt|tsv|csv|list|ids)$", spec)
        raise OptionError(f"--tracks {spec!r} matches no track description (list them with `varfx tracks`)"
                          + ("; as a file of identifiers, it does not exist" if looks_like_file else ""))
    return hits


def with_strand_partners(indices: list[int], strand_pairs: list[tuple[int, int]]) -> list[int]:
    """``indices`` plus the strand partner of each (needed to reverse-complement them)."""
    partner = {}
    for a, b in strand_pairs:
        partner[a], partner[b] = b, a
    return sorted(set(indices) | {partner[i] for i in indices if i in partner})


def strand_permutation(indices: list[int], strand_pairs: list[tuple[int, int]]) -> list[int]:
    """For tracks ``indices`` (closed under partners), where each track's partner sits among them."""
    partner = {}
    for a, b in strand_pairs:
        partner[a], partner[b] = b, a
    pos = {t: i for i, t in enumerate(indices)}
    return [pos[partner.get(t, t)] for t in indices]
