"""`varfx export --format finemap`: a scores file as one sorted, bgzip-compressed, tabix-indexed table.

One row per scored variant, keyed by ``chrom:pos:ref:alt``, with chosen
per-track scores and per-statistic summaries across all tracks (docs/finemapping.md).
The scores file is read in chunks of rows; what stays in memory is about 40
bytes per row (contig, position, end, sort order).  Rows that are not already
in the table's order are spooled, as lines, to a scratch file beside the output
and read back in sorted order.
"""

from __future__ import annotations

import json
import mmap
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .bgzf import MAX_COORD, BgzfWriter, TabixIndex
from .errors import InputError, OptionError
from .genome import contig_aliases
from .results import open_complete, require_variant_scores, stat_source, strings
from .scores import track_summaries
from .tracks import select_tracks
from .writers import PARTIAL, check_out, partial_path

FORMATS = ("finemap",)
MAX_DEFAULT_TRACKS = 50  # above this many tracks, no per-track columns unless --tracks asks for them
ID_COLUMNS = ["#chrom", "pos", "end", "key", "id", "ref", "alt"]
SUMMARIES = ("max_abs", "max_track", "l2")  # per statistic, across all tracks (scores.track_summaries)


@dataclass
class ExportSummary:
    """What an export wrote."""

    out: Path
    index: Path
    rows: int
    skipped: int
    contigs: list[str]
    order: str  # where the contig order came from
    columns: list[str]
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"rows (scored variants): {self.rows} on {len(self.contigs)} contig(s), contig order: {self.order}",
                 f"columns: {len(self.columns)}",
                 f"skipped variants (not rows; listed in the scores file's 'skipped' group): {self.skipped}"]
        lines += self.notes
        lines.append(f"wrote: {self.out} and {self.index}")
        return "\n".join(lines)


@dataclass
class _Plan:
    """The columns to write and where their values come from."""

    track_stats: list[str]  # statistics with one value per track
    profile_stats: list[str]  # statistics with one value per variant
    sources: dict[str, str]  # statistic -> HDF5 dataset path
    track_ids: list[str]
    chosen: list[int]  # tracks with their own columns

    def header(self) -> list[str]:
        cols = list(ID_COLUMNS)
        cols += [f"{s}:{self.track_ids[t]}" for s in self.track_stats for t in self.chosen]
        cols += list(self.profile_stats)
        cols += [f"{s}:{suffix}" for s in self.track_stats for suffix in SUMMARIES]
        return cols


def export_table(scores, out, fmt: str = "finemap", stats=None, tracks: str | None = None,
                 chunk_rows: int | None = None, level: int = 6) -> ExportSummary:
    """Write ``out`` (a .gz name) and ``out.tbi`` from the finished scores file ``scores``."""
    if fmt not in FORMATS:
        raise OptionError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(out)
    if not out.name.endswith(".gz"):
        raise OptionError(f"--out {out}: the table is bgzip-compressed and tabix-indexed; "
                          f"give a name ending in .gz (e.g. {out.name}.gz)")
    check_out(out, "--out")  # its folder exists and is writable
    with open_complete(scores, whole="the table") as f:
        require_variant_scores(f, scores, "`varfx export`")
        settings = json.loads(f.attrs["settings"])
        plan, notes = _plan(f, Path(scores), settings, stats, tracks)
        skipped = int(f["skipped/chr"].shape[0])
        chunk = chunk_rows or max(1, min(65536, (1 << 25) // max(1, len(plan.track_ids))))
        seen, code, pos, end = _scan(f, chunk)
        if len(pos) and int(end.max()) > MAX_COORD:
            i = int(np.argmax(end))
            raise InputError(f"{scores}: {seen[code[i]]}:{pos[i]} ends beyond 2^29 = {MAX_COORD:,} bp, "
                             f"the limit of a .tbi index; export the contigs below that length")
        names, order_note = contig_order(seen, settings.get("fasta"))
        rank = np.array([names.index(c) for c in seen], dtype=np.int64)
        crank = rank[code] if len(code) else code.astype(np.int64)
        order = _sort_rows(f, crank, pos, chunk)
        tbi = out.with_name(out.name + ".tbi")
        tmp, tbi_tmp = partial_path(out), partial_path(tbi)
        spool = out.with_name(out.name + ".spool" + PARTIAL)
        try:
            index = TabixIndex(col_seq=1, col_beg=2, col_end=3, meta="#", skip=0)
            with open(tmp, "wb") as fh:
                w = BgzfWriter(fh, level)
                w.write(("\t".join(plan.header()) + "\n").encode())
                lines = _ChunkLines(f, plan, pos, end, chunk)
                for rows, data, lens in _in_order(lines, order, spool):
                    u_end = w.upos + np.cumsum(lens)
                    u_beg = u_end - lens
                    w.write(data)
                    vo_beg, vo_end = w.virtual_offsets(u_beg), w.virtual_offsets(u_end)
                    c = crank[rows]
                    cut = np.flatnonzero(np.diff(c)) + 1
                    for lo, hi in zip(np.r_[0, cut].tolist(), np.r_[cut, len(rows)].tolist()):
                        r = rows[lo:hi]
                        index.add(names[c[lo]], pos[r] - 1, end[r], vo_beg[lo:hi], vo_end[lo:hi])
                data_end = w.tell()
                index.relocate(data_end, w.close())
            with open(tbi_tmp, "wb") as fh:
                index.write(fh, level)
            tbi.unlink(missing_ok=True)  # never leave an old index beside a new table
            os.replace(tmp, out)
            os.replace(tbi_tmp, tbi)
        except BaseException:
            for p in (tmp, tbi_tmp):
                p.unlink(missing_ok=True)
            raise
        finally:
            spool.unlink(missing_ok=True)
    present = [c for c in names if c in set(seen)]
    return ExportSummary(out, tbi, len(pos), skipped, present, order_note, plan.header(), notes)


def _scan(f, chunk: int):
    """Contig names (first-appearance order), each row's contig code, POS and end, read in chunks."""
    n = f["pos"].shape[0]
    pos = f["pos"][:].astype(np.int64)
    code = np.empty(n, dtype=np.int32)
    end = np.empty(n, dtype=np.int64)
    seen: dict[str, int] = {}
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        code[lo:hi] = [seen.setdefault(c, len(seen)) for c in f["chr"].asstr()[lo:hi]]
        end[lo:hi] = pos[lo:hi] + np.fromiter(map(len, f["ref_allele"][lo:hi]), np.int64, hi - lo) - 1
    return list(seen), code, pos, end


def _sort_rows(f, crank: np.ndarray, pos: np.ndarray, chunk: int) -> np.ndarray:
    """Row indices sorted by contig rank, POS, REF, ALT and row; the alleles are read only for rows that
    share a contig and position with another row."""
    n = len(pos)
    order = np.lexsort((np.arange(n), pos, crank))
    key_change = np.flatnonzero((np.diff(crank[order]) != 0) | (np.diff(pos[order]) != 0)) + 1
    starts, stops = np.r_[0, key_change], np.r_[key_change, n]
    multi = stops - starts > 1
    runs = list(zip(starts[multi].tolist(), stops[multi].tolist()))  # rows sharing contig and POS
    if not runs:
        return order
    rows = np.sort(np.concatenate([order[a:b] for a, b in runs]))
    alleles = {}
    for lo in range(0, n, chunk):
        a, b = np.searchsorted(rows, [lo, lo + chunk])
        if a == b:
            continue
        ref, alt = f["ref_allele"][lo:lo + chunk], f["alt_allele"][lo:lo + chunk]
        for r in rows[a:b].tolist():
            alleles[r] = (ref[r - lo], alt[r - lo], r)
    for a, b in runs:
        order[a:b] = sorted(order[a:b].tolist(), key=alleles.__getitem__)
    return order


def _plan(f, path: Path, settings: dict, stats, tracks: str | None) -> tuple[_Plan, list[str]]:
    notes = []
    in_file = list(settings["stats"])
    sources = {s: stat_source(f, s) for s in in_file}
    if "samples" in f:  # personal-genome scores
        notes.append(f"personal-genome scores: values are summary/STAT/mean, the mean over "
                     f"{f['samples'].shape[0]} samples' backgrounds")
    wanted = in_file
    if stats:
        items = [s.strip() for x in ([stats] if isinstance(stats, str) else stats) for s in x.split(",") if s.strip()]
        lookup = {s.lower(): s for s in in_file}
        unknown = [s for s in items if s.lower() not in lookup]
        if unknown:
            raise OptionError(f"--stat {unknown[0]!r}: {path} has {', '.join(in_file)}")
        wanted = list(dict.fromkeys(lookup[s.lower()] for s in items))
    for s in wanted:
        if sources[s] not in f:
            raise InputError(f"{path} lists the statistic {s} but has no dataset {sources[s]!r}; score it again")
    track_ids = strings(f["target_ids"])
    table = pd.DataFrame({"id": track_ids, "description": strings(f["target_labels"])})
    track_stats = [s for s in wanted if f[sources[s]].ndim == 2]
    profile = [s for s in wanted if f[sources[s]].ndim == 1]
    for s in track_stats:
        if f[sources[s]].shape[1] != len(track_ids):
            raise InputError(f"{path}: {sources[s]} has {f[sources[s]].shape[1]} tracks, target_ids {len(track_ids)}")
    spec = None if tracks is None else str(tracks).strip()
    if spec is None:
        chosen = list(range(len(track_ids))) if len(track_ids) <= MAX_DEFAULT_TRACKS else []
        if not chosen:
            notes.append(f"{len(track_ids)} tracks (more than {MAX_DEFAULT_TRACKS}): no per-track columns, only "
                         f"the summaries across tracks; choose tracks with --tracks (or --tracks all)")
    elif spec.lower() == "all":
        chosen = list(range(len(track_ids)))
    elif spec.lower() == "none":
        chosen = []
    else:
        chosen = select_tracks(table, spec)
    return _Plan(track_stats, profile, sources, track_ids, chosen), notes


class _ChunkLines:
    """The table's lines for consecutive chunks of the scores file's rows (input order)."""

    def __init__(self, f, plan: _Plan, pos: np.ndarray, end: np.ndarray, chunk_rows: int):
        self.f, self.plan, self.pos, self.end, self.chunk = f, plan, pos, end, chunk_rows
        self.n = len(pos)
        p = plan
        fmt = ["%s\t%d\t%d\t%s:%d:%s:%s\t%s\t%s\t%s"]  # chrom pos end key(chrom:pos:ref:alt) id ref alt
        fmt += ["%.7g"] * (len(p.track_stats) * len(p.chosen) + len(p.profile_stats))
        fmt += ["%.7g\t%s\t%.7g"] * len(p.track_stats)  # max_abs max_track l2
        self.fmt = "\t".join(fmt)

    def __iter__(self):
        """Yield (lo, hi, [encoded line without newline, …]) for rows lo..hi-1."""
        f, p = self.f, self.plan
        for lo in range(0, self.n, self.chunk):
            hi = min(self.n, lo + self.chunk)
            chrom, ref, alt = (f[k].asstr()[lo:hi].tolist() for k in ("chr", "ref_allele", "alt_allele"))
            pos, end = self.pos[lo:hi].tolist(), self.end[lo:hi].tolist()
            cols = [chrom, pos, end, chrom, pos, ref, alt, f["id"].asstr()[lo:hi].tolist(), ref, alt]
            summaries = []
            for s in p.track_stats:
                block = f[p.sources[s]][lo:hi].astype(np.float32)
                cols += block[:, p.chosen].T.tolist()
                sm = track_summaries(block, p.track_ids)
                summaries += [sm["maxabs"].tolist(), sm["maxtrack"].tolist(), sm["l2"].tolist()]
            for s in p.profile_stats:
                cols.append(f[p.sources[s]][lo:hi].astype(np.float32).tolist())
            fmt = self.fmt
            yield lo, hi, [(fmt % row).encode() for row in zip(*cols, *summaries)]


def _in_order(lines: _ChunkLines, order: np.ndarray, spool: Path):
    """Yield (row indices, bytes of their lines, each line's length) in the sorted ``order``.

    Rows already in order go straight through; otherwise every line is first
    written, in input order, to ``spool`` and read back by offset.
    """
    if np.array_equal(order, np.arange(len(order))):
        for lo, hi, enc in lines:
            yield np.arange(lo, hi), b"\n".join(enc) + b"\n", np.fromiter(map(len, enc), np.int64, hi - lo) + 1
        return
    lens = np.zeros(len(order), dtype=np.int64)
    with open(spool, "wb") as fh:
        for lo, hi, enc in lines:
            fh.write(b"\n".join(enc) + b"\n")
            lens[lo:hi] = np.fromiter(map(len, enc), np.int64, hi - lo) + 1
    starts = np.cumsum(lens) - lens
    with open(spool, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for lo in range(0, len(order), lines.chunk):
            rows = order[lo:lo + lines.chunk]
            data = b"".join(mm[s:s + k] for s, k in zip(starts[rows].tolist(), lens[rows].tolist()))
            yield rows, data, lens[rows]


def natural_key(name: str) -> tuple:
    """``chr2`` before ``chr10``: digit runs compare as numbers."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(x) if i % 2 else x.lower() for i, x in enumerate(parts)), name


def fai_contigs(fasta) -> list[str] | None:
    """Contig names of ``FASTA.fai`` in its order, or None when it cannot be read."""
    if not fasta:
        return None
    try:
        text = Path(str(fasta) + ".fai").read_text()
    except (OSError, UnicodeDecodeError):
        return None
    names = [line.split("\t", 1)[0] for line in text.splitlines() if line.strip()]
    return names or None


def contig_order(contigs: list[str], fasta) -> tuple[list[str], str]:
    """``contigs`` in the order of the FASTA index (matching ``chr1``/``1`` names), the rest after them in
    natural order; or all in natural order when the index cannot be read.  Also says which order."""
    fai = fai_contigs(fasta)
    if fai is None:
        return sorted(contigs, key=natural_key), "natural (no readable FASTA index)"
    where = {c: i for i, c in enumerate(fai)}

    def rank(name):
        for alias in [name, *contig_aliases(name)]:
            if alias in where:
                return where[alias]
        return len(fai)

    return sorted(contigs, key=lambda c: (rank(c), natural_key(c))), f"FASTA index {fasta}.fai"
