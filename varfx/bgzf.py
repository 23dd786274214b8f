"""BGZF compression and tabix (.tbi) indexes, written without htslib.

BGZF (SAM/BAM specification, section 4.1) is gzip made of independent members
of at most 64 KiB, each carrying its compressed size in a ``BC`` extra field,
and closed by a fixed 28-byte empty member.  Any gzip reader reads it; an index
can point into it with *virtual offsets*: ``(member's file offset << 16) |
offset in its uncompressed data``.

A tabix index (hts-specs ``tabix.pdf``) lists, per contig, the chunks of the
file (virtual offset ranges) that hold the records of each bin of the UCSC
binning scheme (min_shift 14, depth 5: bins of 16 kb, 128 kb, 1 Mb, 8 Mb,
64 Mb and 512 Mb), and a linear index: for each 16-kb window, the virtual
offset of the first record that overlaps it.  Records must be grouped by
contig and sorted by start.  The index itself is BGZF-compressed.  As htslib
does, each contig also gets the pseudo-bin 37450 (its extent and record count),
small bins are folded into their parents and nearby chunks merged, so that the
index equals the one ``tabix`` builds for the same file (tests/test_export.py).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

BLOCK_DATA = 0xFF00  # uncompressed bytes per member (htslib's choice: the compressed member stays < 64 KiB)
MAX_BLOCK = 1 << 16  # a member's total size, header and trailer included
# gzip header with FEXTRA: ID1 ID2 CM=8 FLG=4 MTIME=0 XFL=0 OS=255 XLEN=6, then SI1='B' SI2='C' SLEN=2
_HEADER = struct.Struct("<4BI2BH2B2H")
_HEADER_FIELDS = (31, 139, 8, 4, 0, 0, 255, 6, 66, 67, 2)  # then BSIZE
EOF_BLOCK = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")

MIN_SHIFT, DEPTH = 14, 5
MAX_COORD = 1 << (MIN_SHIFT + 3 * DEPTH)  # 2^29: the largest end a .tbi can index
MIN_MARKER_DIST = 1 << 16  # bins spanning less compressed data than this join their parent (htslib)
META_BIN = ((1 << 3 * (DEPTH + 1)) - 1) // 7 + 1  # 37450: a pseudo-bin with the contig's extent and record count


def missing_eof(path) -> bool:
    """True for a BGZF file (a .vcf.gz or .bcf written by htslib) that does not end with the BGZF
    end-of-file marker: a file cut short at a block boundary, which htslib reads to the cut with only a
    warning.  False for anything else (plain text, plain gzip, an intact BGZF file)."""
    with open(path, "rb") as fh:
        head = fh.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return False
        f = _HEADER.unpack(head)  # gzip magic and method, FEXTRA set, the 'BC' subfield of length 2
        if f[:3] != (31, 139, 8) or not f[3] & 4 or f[8:11] != (66, 67, 2):
            return False
        fh.seek(0, 2)
        if fh.tell() < len(EOF_BLOCK):
            return True
        fh.seek(-len(EOF_BLOCK), 2)
        return fh.read() != EOF_BLOCK


def compress_block(data: bytes, level: int = 6) -> bytes:
    """One BGZF member holding ``data`` (at most BLOCK_DATA bytes)."""
    if len(data) > BLOCK_DATA:
        raise ValueError(f"a BGZF member holds at most {BLOCK_DATA} bytes, not {len(data)}")
    body = _deflate(data, level)
    if len(body) + 26 > MAX_BLOCK:  # incompressible data: store it (adds 5 bytes per 64 KiB)
        body = _deflate(data, 0)
    header = _HEADER.pack(*_HEADER_FIELDS, len(body) + 25)  # BSIZE: the member's size minus 1
    return header + body + struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data))


def _deflate(data: bytes, level: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)  # raw deflate: the gzip framing is ours
    return c.compress(data) + c.flush()


class BgzfWriter:
    """Write a BGZF file; :meth:`virtual_offset` maps uncompressed positions to virtual offsets.

    Members are cut every BLOCK_DATA uncompressed bytes, so the uncompressed
    position ``u`` lies in member ``u // BLOCK_DATA`` at offset ``u % BLOCK_DATA``;
    the writer remembers each member's file offset.
    """

    def __init__(self, fh, level: int = 6):
        self.fh = fh
        self.level = level
        self.buf = bytearray()
        self.addrs = [0]  # file offset of each member written, and of the one being filled
        self.upos = 0  # uncompressed bytes written so far

    def write(self, data: bytes) -> None:
        self.upos += len(data)
        view = memoryview(data)
        if len(self.buf) + len(view) < BLOCK_DATA:
            self.buf += view
            return
        pos = BLOCK_DATA - len(self.buf)
        self.buf += view[:pos]
        self._flush(self.buf)
        self.buf = bytearray()
        while len(view) - pos >= BLOCK_DATA:
            self._flush(view[pos:pos + BLOCK_DATA])
            pos += BLOCK_DATA
        self.buf += view[pos:]

    def _flush(self, data: bytes) -> None:
        block = compress_block(data, self.level)
        self.fh.write(block)
        self.addrs.append(self.addrs[-1] + len(block))

    def tell(self) -> int:
        """The virtual offset of the next byte written."""
        return self.virtual_offset(self.upos)

    def virtual_offset(self, u: int) -> int:
        """Virtual offset of uncompressed position ``u`` (any position written so far, or the next)."""
        k, within = divmod(int(u), BLOCK_DATA)
        return (self.addrs[k] << 16) | within

    def virtual_offsets(self, u: np.ndarray) -> np.ndarray:
        """:meth:`virtual_offset` of many positions (uint64)."""
        k, within = np.divmod(np.asarray(u, dtype=np.int64), BLOCK_DATA)
        addrs = np.asarray(self.addrs, dtype=np.uint64)
        return (addrs[k] << np.uint64(16)) | within.astype(np.uint64)

    def close(self) -> int:
        """Write the last member and the EOF marker (the file object stays open).

        Returns the virtual offset of the end of the data as htslib's readers
        and indexers give it: the EOF member's address, offset 0 (the end of the
        last member, as :meth:`tell` gave it before closing, is the same place)."""
        if self.buf:
            self._flush(self.buf)
            self.buf = bytearray()
        self.fh.write(EOF_BLOCK)
        return self.addrs[-1] << 16


def reg2bin(beg: int, end: int) -> int:
    """The smallest bin holding the 0-based half-open interval [beg, end)."""
    end -= 1
    for level in range(DEPTH, 0, -1):
        shift = MIN_SHIFT + 3 * (DEPTH - level)
        if beg >> shift == end >> shift:
            return ((1 << 3 * level) - 1) // 7 + (beg >> shift)
    return 0


def reg2bins(beg: int, end: int) -> list[int]:
    """Every bin that may hold records overlapping [beg, end)."""
    end -= 1
    out = [0]
    for level in range(1, DEPTH + 1):
        shift = MIN_SHIFT + 3 * (DEPTH - level)
        first = ((1 << 3 * level) - 1) // 7
        out.extend(range(first + (beg >> shift), first + (end >> shift) + 1))
    return out


def _reg2bin_array(beg: np.ndarray, end: np.ndarray) -> np.ndarray:
    last = end - 1
    out = np.zeros(len(beg), dtype=np.int64)
    done = np.zeros(len(beg), dtype=bool)
    for level in range(DEPTH, 0, -1):
        shift = MIN_SHIFT + 3 * (DEPTH - level)
        hit = ~done & ((beg >> shift) == (last >> shift))
        out[hit] = ((1 << 3 * level) - 1) // 7 + (beg[hit] >> shift)
        done |= hit
    return out


@dataclass
class _Contig:
    bins: dict[int, list[list[int]]] = field(default_factory=dict)  # bin -> [[beg_vo, end_vo], ...]
    linear: dict[int, int] = field(default_factory=dict)  # 16-kb window -> first record's virtual offset
    last_beg: int = -1
    first_vo: int = -1  # offsets of the contig's first record and of the end of its last one,
    last_vo: int = -1  # and its record count: htslib's pseudo-bin (also in BAI files)
    n_records: int = 0


def compact_bins(bins: dict[int, list[list[int]]]) -> dict[int, list[list[int]]]:
    """The bins as htslib finishes them (fewer seeks, the same records found).

    From the finest level up, a bin whose chunks span less than 64 KiB of the
    compressed file moves its chunks into its parent bin, if the parent has
    chunks of its own; then, in every bin, chunks are sorted and a chunk that
    starts in the BGZF member where the previous one ends is merged with it.
    Readers check each line's coordinates, so a merged chunk may hold lines
    of other bins.
    """
    out = {b: [list(ch) for ch in chunks] for b, chunks in bins.items()}
    for level in range(DEPTH, 0, -1):
        first, stop = ((1 << 3 * level) - 1) // 7, ((1 << 3 * (level + 1)) - 1) // 7
        for b in [b for b in out if first <= b < stop]:
            chunks = out[b]
            chunks.sort()
            parent = (b - 1) >> 3
            if (chunks[-1][1] >> 16) - (chunks[0][0] >> 16) < MIN_MARKER_DIST and parent in out:
                out[parent].extend(chunks)
                del out[b]
    for b, chunks in out.items():
        chunks.sort()
        merged = [chunks[0]]
        for ch in chunks[1:]:
            if merged[-1][1] >> 16 >= ch[0] >> 16:
                merged[-1][1] = max(merged[-1][1], ch[1])
            else:
                merged.append(ch)
        out[b] = merged
    return out


class TabixIndex:
    """A .tbi index built from records given in file order (grouped by contig, sorted by start).

    Coordinates follow tabix's ``generic`` format: columns ``col_seq``,
    ``col_beg`` and ``col_end`` (1-based), 1-based closed intervals in the file;
    :meth:`add` takes them 0-based half-open.
    """

    def __init__(self, col_seq: int = 1, col_beg: int = 2, col_end: int = 3, meta: str = "#", skip: int = 0):
        self.cols = (col_seq, col_beg, col_end)
        self.meta, self.skip = meta, skip
        self.names: list[str] = []
        self.contigs: dict[str, _Contig] = {}

    def add(self, contig: str, beg: np.ndarray, end: np.ndarray, vo_beg: np.ndarray, vo_end: np.ndarray) -> None:
        """Records of one contig, in file order: 0-based [beg, end) and the virtual offsets of each line's
        first byte and of the byte after it."""
        beg = np.asarray(beg, dtype=np.int64)
        end = np.asarray(end, dtype=np.int64)
        if not len(beg):
            return
        if self.names and self.names[-1] != contig:
            if contig in self.contigs:
                raise ValueError(f"contig {contig!r} appears in two separate runs of rows (rows must be grouped)")
        if contig not in self.contigs:
            self.names.append(contig)
            self.contigs[contig] = _Contig()
        c = self.contigs[contig]
        if beg[0] < c.last_beg or (len(beg) > 1 and (np.diff(beg) < 0).any()):
            raise ValueError(f"rows of contig {contig!r} are not sorted by start")
        if (end <= beg).any() or end.max() > MAX_COORD or beg.min() < 0:
            raise ValueError(f"intervals on {contig!r} must satisfy 0 <= beg < end <= 2^29")
        c.last_beg = int(beg[-1])
        if c.first_vo < 0:
            c.first_vo = int(vo_beg[0])
        c.last_vo = int(vo_end[-1])
        c.n_records += len(beg)
        vo_beg = [int(x) for x in vo_beg]
        vo_end = [int(x) for x in vo_end]
        bins = _reg2bin_array(beg, end)
        # chunks: runs of consecutive records in the same bin; a run continues the bin's last chunk
        # when that chunk ends where the run starts (htslib's rule)
        cut = np.flatnonzero(np.diff(bins)) + 1
        for lo, hi in zip(np.r_[0, cut].tolist(), np.r_[cut, len(bins)].tolist()):
            chunks = c.bins.setdefault(int(bins[lo]), [])
            if chunks and chunks[-1][1] == vo_beg[lo]:
                chunks[-1][1] = vo_end[hi - 1]
            else:
                chunks.append([vo_beg[lo], vo_end[hi - 1]])
        # linear index: the first record overlapping each 16-kb window (records are in offset order)
        w0 = beg >> MIN_SHIFT
        w1 = (end - 1) >> MIN_SHIFT
        for i in np.flatnonzero(np.r_[True, w0[1:] != w0[:-1]] | (w1 > w0)).tolist():
            for w in range(int(w0[i]), int(w1[i]) + 1):
                c.linear.setdefault(w, vo_beg[i])

    def relocate(self, old: int, new: int) -> None:
        """Give chunk ends at virtual offset ``old`` as ``new`` (the end of the data, after
        :meth:`BgzfWriter.close`, so that the index equals the one htslib builds for the same file)."""
        for c in self.contigs.values():
            for chunks in c.bins.values():
                for chunk in chunks:
                    if chunk[1] == old:
                        chunk[1] = new
            if c.last_vo == old:
                c.last_vo = new

    def to_bytes(self) -> bytes:
        """The index, uncompressed."""
        names = b"".join(n.encode() + b"\0" for n in self.names)
        out = [b"TBI\x01", struct.pack("<8i", len(self.names), 0, *self.cols, ord(self.meta), self.skip, len(names)),
               names]
        for name in self.names:
            c = self.contigs[name]
            bins = compact_bins(c.bins)
            out.append(struct.pack("<i", len(bins) + 1))
            for b in sorted(bins):
                chunks = bins[b]
                out.append(struct.pack("<Ii", b, len(chunks)))
                out.append(np.asarray(chunks, dtype="<u8").tobytes())
            out.append(struct.pack("<Ii4Q", META_BIN, 2, c.first_vo, c.last_vo, c.n_records, 0))
            n_intv = max(c.linear) + 1
            first = c.linear[min(c.linear)]
            linear, prev = [], first  # windows before the first record, and empty ones, take the offset before
            for w in range(n_intv):
                prev = c.linear.get(w, prev)
                linear.append(prev)
            out.append(struct.pack("<i", n_intv) + np.asarray(linear, dtype="<u8").tobytes())
        out.append(struct.pack("<Q", 0))  # n_no_coor: every row has coordinates
        return b"".join(out)

    def write(self, fh, level: int = 6) -> None:
        """Write the BGZF-compressed index to the binary file object ``fh``."""
        w = BgzfWriter(fh, level)
        w.write(self.to_bytes())
        w.close()
