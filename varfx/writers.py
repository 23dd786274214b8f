"""Output writers: HDF5 (basenji sad.h5 layout), wide and long TSV.

Every writer writes to ``<final>.partial`` and renames it to the final name in
:meth:`finish`, after everything is flushed; the HDF5 file also carries the
attribute ``complete`` (False until the end).  A file at its final name is
therefore always complete.  Rows are appended in chunks as the run goes.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .errors import OptionError

STR = h5py.string_dtype("utf-8")
PARTIAL = ".partial"


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL)


@contextlib.contextmanager
def atomic_path(path):
    """Yield ``NAME.partial`` to write; it becomes NAME when the block ends, and is removed on an error."""
    path = Path(path)
    tmp = partial_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def begin_h5(f: h5py.File, attrs: dict, track_ids=None, track_labels=None) -> None:
    """The head of a varfx HDF5 output: ``complete`` False until it is finished, the run's attributes and
    all of them as one JSON ``settings``, and (when given) the tracks as ``target_ids``/``target_labels``."""
    f.attrs["complete"] = False
    for k, v in attrs.items():
        f.attrs[k] = _attr_value(v)
    f.attrs["settings"] = json.dumps(attrs, default=str)
    if track_ids is not None:
        f.create_dataset("target_ids", data=np.array(track_ids, dtype=object), dtype=STR)
        f.create_dataset("target_labels", data=np.array(track_labels, dtype=object), dtype=STR)



def check_out(path: Path | None, flag: str) -> Path | None:
    """An output path whose folder exists and is writable (a one-line error otherwise); None stays None."""
    if path is None:
        return None
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OptionError(f"{flag} {path}: folder {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK):
        raise OptionError(f"{flag} {path}: folder {parent} is not writable")
    return path


def check_not_inputs(outputs: dict, inputs: dict) -> None:
    """A one-line error when an output (flag -> path) names a file the same command reads (label -> path or
    paths), or one read beside it (a model's spec JSON, a FASTA's or VCF's index): the final rename would
    replace that input."""
    def files(value):
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, (str, Path)) and str(v) and Path(v).is_file():
                p = Path(v).resolve()
                yield p
                yield from (q for q in (p.with_suffix(".json"), *(Path(str(p) + x) for x in (".fai", ".tbi", ".csi")))
                            if q.is_file())

    read = {p: label for label, value in inputs.items() for p in files(value)}
    for flag, value in outputs.items():
        if isinstance(value, (str, Path)) and str(value) and Path(value).resolve() in read:
            raise OptionError(f"{flag} {value} is also an input of this command (its {read[Path(value).resolve()]}): "
                              "writing it would replace that file; give another name")

@dataclass
class VariantRows:
    """Identifiers of a chunk of scored variants (all arrays of equal length)."""

    record: np.ndarray  # int64
    alt_index: np.ndarray  # int32
    chrom: list[str]
    pos: np.ndarray  # int64, 1-based
    id: list[str]
    ref: list[str]
    alt: list[str]

    def __len__(self):
        return len(self.chrom)

    def names(self) -> list[str]:
        return [i if i != "." else f"{c}:{p}:{r}:{a}"
                for i, c, p, r, a in zip(self.id, self.chrom, self.pos.tolist(), self.ref, self.alt)]

    def take(self, idx: np.ndarray) -> "VariantRows":
        """The rows at ``idx`` (repeats allowed), in that order."""
        pick = idx.tolist()
        return VariantRows(self.record[idx], self.alt_index[idx], [self.chrom[i] for i in pick], self.pos[idx],
                           [self.id[i] for i in pick], [self.ref[i] for i in pick], [self.alt[i] for i in pick])


def append_rows(ds, values) -> None:
    n = ds.shape[0]
    ds.resize(n + len(values), axis=0)
    ds[n:] = values


def _attr_value(v):
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v)
    if v is None:
        return ""
    if isinstance(v, str):
        return str(v)  # plain str: h5py cannot store str subclasses such as torch's TorchVersion
    return v


#: the gene columns of (variant, gene) rows (score --genes), text and numbers
GENE_TEXT = ("gene_id", "gene_name", "strand")
GENE_NUMBERS = {"tss": np.int64, "tss_distance": np.int64, "n_tss": np.int16}


class H5Writer:
    """Scores in the layout of basenji's sad.h5, plus a ``skipped`` group and run metadata."""

    def __init__(self, path: str | os.PathLike, track_ids: list[str], track_labels: list[str],
                 stats: tuple[str, ...], attrs: dict, float32: bool = False, chunk_rows: int | None = None,
                 profile_stats: tuple[str, ...] = (), inner: tuple[int, ...] = (),
                 extra: dict[str, tuple[tuple[int, ...], object]] | None = None, genes: tuple[str, ...] = ()):
        """``inner``: dimensions between variants and tracks (personal genomes: samples[, haplotypes]);
        ``extra``: more per-variant datasets, name -> (trailing shape, dtype or 'score'), filled from
        the same-named entries of each :meth:`write`'s scores; ``genes``: the statistics of a ``genes/``
        group of (variant, gene) rows (:meth:`write_genes`), none for no group."""
        self.path = Path(path)
        self.tmp = partial_path(self.path)
        self.stats = stats
        self.profile_stats = profile_stats
        self.n_tracks = len(track_ids)
        self.dtype = np.float32 if float32 else np.float16
        self.overflow = {s: 0 for s in stats}
        self.rows = 0
        self.inner = tuple(inner)
        per_row = int(np.prod(self.inner, dtype=np.int64)) * max(1, self.n_tracks)
        rows = chunk_rows or max(1, min(1024, (4 << 20) // max(1, 2 * per_row)))
        self.extra = dict(extra or {})
        self.f = h5py.File(self.tmp, "w")
        f = self.f
        begin_h5(f, attrs, track_ids, track_labels)
        for name in ("snp", "chr", "ref_allele", "alt_allele", "id"):
            f.create_dataset(name, (0,), maxshape=(None,), dtype=STR, chunks=(4096,))
        f.create_dataset("pos", (0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        f.create_dataset("record", (0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        f.create_dataset("alt_index", (0,), maxshape=(None,), dtype=np.int16, chunks=(4096,))
        shape = (*self.inner, self.n_tracks)
        for s in stats:
            f.create_dataset(s, (0, *shape), maxshape=(None, *shape), dtype=self.dtype, chunks=(rows, *shape))
        for s in profile_stats:  # one value per variant (and sample), float32
            f.create_dataset(s, (0, *self.inner), maxshape=(None, *self.inner), dtype=np.float32,
                             chunks=(min(rows * max(1, self.n_tracks), 4096), *self.inner))
        for name, (trail, dtype) in self.extra.items():
            if dtype == "score":
                self.overflow[name] = 0
            dt = self.dtype if dtype == "score" else dtype
            n = int(np.prod(trail, dtype=np.int64)) or 1
            f.create_dataset(name, (0, *trail), maxshape=(None, *trail), dtype=dt,
                             chunks=(max(1, min(4096, (4 << 20) // (4 * n))), *trail))
        g = f.create_group("skipped")
        self._create_ids(g, 1024)
        g.create_dataset("reason", (0,), maxshape=(None,), dtype=STR, chunks=(1024,))
        self.genes = tuple(genes)
        if genes:  # (variant, gene) rows: docs/genes.md
            g = f.create_group("genes")
            self._create_ids(g, 4096)
            for name in GENE_TEXT:
                g.create_dataset(name, (0,), maxshape=(None,), dtype=STR, chunks=(4096,))
            for name, dt in GENE_NUMBERS.items():
                g.create_dataset(name, (0,), maxshape=(None,), dtype=dt, chunks=(4096,))
            for s in self.genes:
                self.overflow["genes/" + s] = 0
                g.create_dataset(s, (0, self.n_tracks), maxshape=(None, self.n_tracks), dtype=self.dtype,
                                 chunks=(rows, self.n_tracks))

    @staticmethod
    def _create_ids(g, chunk: int) -> None:
        for name in ("chr", "id", "ref_allele", "alt_allele"):
            g.create_dataset(name, (0,), maxshape=(None,), dtype=STR, chunks=(chunk,))
        g.create_dataset("pos", (0,), maxshape=(None,), dtype=np.int64, chunks=(chunk,))
        g.create_dataset("record", (0,), maxshape=(None,), dtype=np.int64, chunks=(chunk,))
        g.create_dataset("alt_index", (0,), maxshape=(None,), dtype=np.int16, chunks=(chunk,))

    @staticmethod
    def _append_ids(g, rows: VariantRows) -> None:
        """The identifier columns of ``rows``, in the root (scored) or the ``skipped`` group."""
        append_rows(g["chr"], rows.chrom)
        append_rows(g["pos"], rows.pos.astype(np.int64))
        append_rows(g["id"], rows.id)
        append_rows(g["ref_allele"], rows.ref)
        append_rows(g["alt_allele"], rows.alt)
        append_rows(g["record"], rows.record)
        append_rows(g["alt_index"], rows.alt_index.astype(np.int16))

    def write(self, rows: VariantRows, scores: dict[str, np.ndarray]) -> None:
        f = self.f
        append_rows(f["snp"], rows.names())
        self._append_ids(f, rows)
        for s in self.stats:
            self._append_score(s, scores[s])
        for s in self.profile_stats:
            append_rows(f[s], scores[s].astype(np.float32))
        for name, (_, dtype) in self.extra.items():
            if dtype == "score":
                self._append_score(name, scores[name])
            else:
                append_rows(f[name], scores[name].astype(dtype))
        self.rows += len(rows)

    def _append_score(self, name: str, vals: np.ndarray) -> None:
        with np.errstate(over="ignore"):  # counted here, reported at the end
            stored = vals.astype(self.dtype)
        if self.dtype == np.float16:  # finite scores that became inf (up to 65,519.99 round to 65,504)
            self.overflow[name] += int((np.isinf(stored) & np.isfinite(vals)).sum())
        append_rows(self.f[name], stored)

    def write_skipped(self, rows: VariantRows, reasons: list[str]) -> None:
        g = self.f["skipped"]
        self._append_ids(g, rows)
        append_rows(g["reason"], reasons)

    def write_genes(self, rows: VariantRows, genes: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> None:
        """(variant, gene) rows: the variants' identifiers, the genes' columns, {stat: (G, T)} scores."""
        if not self.genes or not len(rows):
            return
        g = self.f["genes"]
        self._append_ids(g, rows)
        for name in GENE_TEXT:
            append_rows(g[name], genes[name])
        for name, dt in GENE_NUMBERS.items():
            append_rows(g[name], np.asarray(genes[name]).astype(dt))
        for s in self.genes:
            self._append_score("genes/" + s, scores[s])

    def finish(self, summary: dict) -> None:
        for k, v in summary.items():
            self.f.attrs[k] = _attr_value(v)
        self.f.attrs["complete"] = True
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.f.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def format_values(values: np.ndarray) -> np.ndarray:
    """float32 -> strings with 7 significant digits (round-trips float32 to ~1e-7 relative)."""
    return np.char.mod("%.7g", values)


class TextTable:
    """A text table written under ``NAME.partial`` and renamed when finished."""

    def __init__(self, path: str | os.PathLike, header: list[str]):
        self.path = Path(path)
        self.tmp = partial_path(self.path)
        self.fh = open(self.tmp, "w", newline="\n")
        self.fh.write("\t".join(header) + "\n")

    def write(self, rows: VariantRows, scores: dict[str, np.ndarray]) -> None:
        pass

    def write_skipped(self, rows: VariantRows, reasons: list[str]) -> None:
        pass

    def write_genes(self, rows: VariantRows, genes: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> None:
        pass

    def finish(self, summary: dict | None = None) -> None:
        self.fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.fh.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class TSVWriter(TextTable):
    """One row per variant: chrom, pos, id, ref, alt, then ``STAT:TRACK`` columns (wide) —
    or, with ``long=True``, one row per variant, track and statistic."""

    def __init__(self, path: str | os.PathLike, track_ids: list[str], stats: tuple[str, ...], long: bool = False,
                 profile_stats: tuple[str, ...] = ()):
        self.track_ids = track_ids
        self.stats = stats
        self.profile_stats = profile_stats
        self.long = long
        cols = (["track", "stat", "value"] if long
                else [f"{s}:{t}" for s in stats for t in track_ids] + list(profile_stats))
        super().__init__(path, ["chrom", "pos", "id", "ref", "alt", *self.key_columns, *cols])

    key_columns: tuple[str, ...] = ()  # more identifying columns after alt (GeneTSVWriter)

    @staticmethod
    def _keys(rows: VariantRows) -> list[str]:
        return [f"{c}\t{p}\t{i}\t{r}\t{a}" for c, p, i, r, a in
                zip(rows.chrom, rows.pos.tolist(), rows.id, rows.ref, rows.alt)]

    def write(self, rows: VariantRows, scores: dict[str, np.ndarray]) -> None:
        self._write_keyed(self._keys(rows), scores)

    def _write_keyed(self, keys: list[str], scores: dict[str, np.ndarray]) -> None:
        if not keys:
            return
        if self.long:
            lines = []
            for s in self.stats:
                txt = format_values(scores[s])
                for k, key in enumerate(keys):
                    lines.extend(f"{key}\t{t}\t{s}\t{v}" for t, v in zip(self.track_ids, txt[k]))
            for s in self.profile_stats:  # one value per variant: track '*'
                lines.extend(f"{key}\t*\t{s}\t{v}" for key, v in zip(keys, format_values(scores[s])))
            self.fh.write("\n".join(lines) + "\n")
        else:
            block = np.concatenate([scores[s] for s in self.stats] +
                                   [scores[s][:, None] for s in self.profile_stats], axis=1)
            txt = format_values(block)
            self.fh.write("\n".join(k + "\t" + "\t".join(row) for k, row in zip(keys, txt)) + "\n")


class SkippedTSVWriter(TextTable):
    """The variants not scored, one row each: chrom, pos, id, ref, alt, record, alt_index, reason."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, ["chrom", "pos", "id", "ref", "alt", "record", "alt_index", "reason"])

    def write_skipped(self, rows: VariantRows, reasons: list[str]) -> None:
        if len(rows):
            self.fh.write("".join(f"{c}\t{p}\t{i}\t{r}\t{a}\t{k}\t{x}\t{why}\n" for c, p, i, r, a, k, x, why in
                                  zip(rows.chrom, rows.pos.tolist(), rows.id, rows.ref, rows.alt,
                                      rows.record.tolist(), rows.alt_index.tolist(), reasons)))


class GeneTSVWriter(TSVWriter):
    """One row per (variant, gene): the variant's columns, ``gene_id gene_name strand tss tss_distance
    n_tss``, then ``STAT:TRACK`` columns."""

    key_columns = (*GENE_TEXT, *GENE_NUMBERS)

    def __init__(self, path: str | os.PathLike, track_ids: list[str], stats: tuple[str, ...]):
        super().__init__(path, track_ids, stats)

    def write(self, rows: VariantRows, scores: dict[str, np.ndarray]) -> None:
        pass

    def write_genes(self, rows: VariantRows, genes: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> None:
        cols = zip(*(np.asarray(genes[c]).tolist() for c in self.key_columns))
        keys = [k + "\t" + "\t".join(map(str, g)) for k, g in zip(self._keys(rows), cols)]
        self._write_keyed(keys, scores)
