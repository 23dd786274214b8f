"""FASTA access: whole contigs held in memory as base codes, windows cut out in bulk.

A contig is read once (straight from the file through the .fai index, newlines
dropped with numpy) and kept as a uint8 base-code array; windows are cut from it
for a whole batch at once.  Positions before 0 or past the contig's end read as N.
Soft-masked (lower-case) bases read as upper case; N and IUPAC codes read as N.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .encoding import N_CODE, _ENCODE
from .errors import InputError

_TRANSLATE = bytes(_ENCODE.tolist())  # byte -> base code, for bytes.translate


def contig_aliases(name: str) -> list[str]:
    """Names under which a contig called ``name`` in one file may appear in another.

    ``chr1`` ↔ ``1``, ``chrX`` ↔ ``X``, and the mitochondrion's ``chrM``/``chrMT``/``M``/``MT``.
    """
    bare = name[3:] if name.lower().startswith("chr") else name
    if bare.upper() in ("M", "MT"):
        return ["chrM", "chrMT", "MT", "M"]
    return [bare, "chr" + bare]


def build_index(fasta: Path) -> None:
    """Write ``FASTA.fai`` when it is missing or older than the FASTA (pyfaidx's rule for rebuilding),
    under a name of this process's and then renamed: processes that start together on an unindexed
    FASTA (the shards of a job array) each build a whole index and none reads a half-written one."""
    import pyfaidx

    fai = Path(str(fasta) + ".fai")
    if fai.exists() and fai.stat().st_mtime >= fasta.stat().st_mtime:
        return
    tmp = fai.with_name(f"{fai.name}.tmp{os.getpid()}")
    try:
        pyfaidx.Faidx(str(fasta), indexname=str(tmp)).close()
        os.replace(tmp, fai)
    finally:
        if tmp.exists():
            tmp.unlink()


class Genome:
    """A FASTA file with an index, read contig by contig into memory.

    ``cache_bytes`` bounds the memory used by cached contigs (least recently used
    contigs are dropped first; the contig in use is always kept).
    """

    def __init__(self, path: str | os.PathLike, cache_bytes: int = 2 << 30):
        import pyfaidx

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"FASTA file not found: {self.path}")
        if self.path.suffix in (".gz", ".bgz", ".bgzf"):
            raise InputError(
                f"{self.path} is compressed; varfx reads plain FASTA: run `gunzip -k {self.path}` "
                "(or `bgzip -d`) and pass the uncompressed file"
            )
        fai = Path(str(self.path) + ".fai")
        if not fai.exists() and not os.access(self.path.parent, os.W_OK):
            raise InputError(
                f"{self.path} has no index and its folder is not writable: run `samtools faidx {self.path}` "
                "where you can write, or copy the FASTA to a writable folder"
            )
        try:
            build_index(self.path)
            self._fa = pyfaidx.Fasta(str(self.path), as_raw=True, sequence_always_upper=False,
                                     build_index=True)
        except pyfaidx.FastaIndexingError as exc:
            raise InputError(f"cannot index {self.path}: {str(exc).splitlines()[0]} (is it a FASTA file?)")
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read FASTA {self.path}: {exc}")
        self._index = self._fa.faidx.index
        self.names = list(self._index.keys())
        if not self.names:
            raise InputError(f"{self.path} has no sequences: is it a FASTA file?")
        self._alias = {}
        for name in self.names:
            for alias in contig_aliases(name):
                self._alias.setdefault(alias, name)
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._fh = open(self.path, "rb")

    def close(self) -> None:
        self._fh.close()
        self._fa.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def length(self, name: str) -> int:
        return int(self._index[name].rlen)

    def resolve(self, name: str) -> str | None:
        """The FASTA's name for a contig called ``name`` elsewhere, or None if it has none."""
        if name in self._index:
            return name
        for alias in contig_aliases(name):
            if alias in self._index:
                return alias
        # the other way round: a FASTA name that is not lower-case "chr…" (TAIR's Chr1, a plant's Mt)
        return self._alias.get(name)

    def codes(self, name: str) -> np.ndarray:
        """The whole contig as base codes (cached)."""
        arr = self._cache.get(name)
        if arr is not None:
            self._cache.move_to_end(name)
            return arr
        rec = self._index[name]
        rlen, lenc, lenb = int(rec.rlen), int(rec.lenc), int(rec.lenb)
        if rlen == 0:
            arr = np.zeros(0, dtype=np.uint8)
        else:
            nlines, last = divmod(rlen, lenc) if lenc else (0, rlen)
            nbytes = nlines * lenb + last
            self._fh.seek(int(rec.offset))
            data = self._fh.read(nbytes)
            # one C pass (bytes.translate): line ends dropped, bases to codes; ~4x faster than a numpy lookup.
            # The result is read-only: the cached contig is shared by every window cut from it.
            arr = np.frombuffer(data.translate(_TRANSLATE, b"\r\n"), dtype=np.uint8)
            if arr.size != rlen and lenb > lenc and nlines:  # other bytes at line ends: drop lenb - lenc each
                raw = np.frombuffer(data, dtype=np.uint8)
                missing = nbytes - raw.size
                if not last and 0 < missing <= lenb - lenc:  # the file ends without the last line's end
                    raw = np.concatenate([raw, np.full(missing, ord("\n"), dtype=np.uint8)])
                if raw.size == nbytes:
                    full = raw[: nlines * lenb].reshape(nlines, lenb)[:, :lenc].reshape(-1)
                    arr = _ENCODE[np.concatenate([full, raw[nlines * lenb:]]) if last else full]
                    arr.flags.writeable = False
            if arr.size != rlen:
                raise InputError(f"{self.path}: contig {name} does not hold the {rlen:,} bases its .fai says "
                                 f"({arr.size:,} read: a truncated or edited FASTA?); delete {self.path}.fai so "
                                 "that it is rebuilt, or copy the FASTA again")
        self._cache[name] = arr
        total = sum(a.nbytes for a in self._cache.values())
        while total > self.cache_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            total -= dropped.nbytes
        return arr

    def fetch(self, name: str, start: int, end: int) -> np.ndarray:
        """Codes for 0-based half-open [start, end), N past either end."""
        return self.windows(name, np.array([start], dtype=np.int64), end - start)[0]

    def windows(self, name: str, starts: np.ndarray, length: int) -> np.ndarray:
        """Windows of ``length`` bp starting at each 0-based ``starts`` -> (n, length) uint8.

        Rows inside the contig are copied from a strided view in one fancy-indexing
        call (no index matrix); the few that cross an end are filled row by row.
        """
        seq = self.codes(name)
        starts = np.asarray(starts, dtype=np.int64)
        n = starts.shape[0]
        out = np.empty((n, length), dtype=np.uint8)
        if n == 0:
            return out
        inside = (starts >= 0) & (starts + length <= seq.size)
        if inside.any():
            view = np.lib.stride_tricks.as_strided(seq, (max(seq.size - length + 1, 0), length),
                                                   (seq.strides[0], seq.strides[0]), writeable=False)
            if inside.all():
                return view[starts]
            out[inside] = view[starts[inside]]
        for row in np.flatnonzero(~inside).tolist():
            s = int(starts[row])
            lo, hi = max(s, 0), min(s + length, seq.size)
            out[row] = N_CODE
            if hi > lo:
                out[row, lo - s: hi - s] = seq[lo:hi]
        return out
