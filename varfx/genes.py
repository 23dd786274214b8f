"""Genes and their transcription start sites, for gene-level scores (``varfx score --genes``).

A GTF (plain or gzip) is read once into a table with one row per distinct (gene, TSS):
``gene_id, gene_name, chrom, strand, tss`` (1-based).  A transcript's TSS is its ``start`` on the
plus strand and its ``end`` on the minus strand.  Transcripts are the ``transcript`` lines; a GTF
with none (some minimal annotations) gives one TSS per ``gene`` line instead.

:class:`GeneIndex` answers, for a batch of variants, which genes have a TSS inside the model's
output window and which output bins cover those TSSs (see docs/genes.md).
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError, OptionError

GTF_COLUMNS = ["chrom", "source", "feature", "start", "end", "score", "strand", "frame", "attributes"]
_ATTR = {key: re.compile(key + r'\s+"([^"]*)"') for key in ("gene_id", "gene_name", "transcript_id")}


def _attribute(values: pd.Series, key: str) -> pd.Series:
    return values.str.extract(_ATTR[key], expand=False)


def read_gtf(path) -> pd.DataFrame:
    """A GTF's TSSs -> DataFrame(gene_id, gene_name, chrom, strand, tss), one row per distinct (gene, TSS).

    Sorted by chrom (as written), tss, gene_id.  ``gene_name`` falls back to ``gene_id``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"gene annotation not found: {path}")
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rt") if gz else open(path, "rt")) as fh:
            table = pd.read_csv(fh, sep="\t", comment="#", header=None, names=GTF_COLUMNS, dtype=str,
                                usecols=[0, 2, 3, 4, 6, 8], quoting=3, na_filter=False)
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable GTF ({str(exc).splitlines()[0]}): give a GTF "
                         "(9 tab-separated columns, e.g. from GENCODE or Ensembl)")
    if table.empty:
        raise InputError(f"{path} has no GTF lines: give a GTF with transcript (or gene) lines")
    feature = "transcript" if (table["feature"] == "transcript").any() else "gene"
    rows = table[table["feature"] == feature]
    if rows.empty:
        raise InputError(f"{path} has no 'transcript' or 'gene' lines: give a GTF with transcript lines "
                         "(GENCODE/Ensembl style)")
    try:
        start = rows["start"].astype(np.int64)
        end = rows["end"].astype(np.int64)
    except ValueError:
        raise InputError(f"{path}: start/end columns (4 and 5) are not integers: is it a GTF?")
    strand = rows["strand"]
    bad = ~strand.isin(["+", "-"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{path}: a {feature} line has strand {strand.iloc[i]!r}; TSSs need '+' or '-' "
                         f"(line with {rows['attributes'].iloc[i][:60]!r})")
    gene_id = _attribute(rows["attributes"], "gene_id")
    if gene_id.isna().any():
        raise InputError(f"{path}: a {feature} line has no gene_id attribute: give a GTF "
                         "(attributes like gene_id \"…\"; gene_name \"…\";)")
    gene_name = _attribute(rows["attributes"], "gene_name").fillna(gene_id)
    out = pd.DataFrame({
        "gene_id": gene_id.to_numpy(), "gene_name": gene_name.to_numpy(), "chrom": rows["chrom"].to_numpy(),
        "strand": strand.to_numpy(), "tss": np.where(strand.to_numpy() == "+", start, end),
    })
    out = out.drop_duplicates(["gene_id", "chrom", "strand", "tss"])
    order = {c: i for i, c in enumerate(pd.unique(out["chrom"]))}
    out = out.assign(_c=out["chrom"].map(order)).sort_values(["_c", "tss", "gene_id"], kind="stable")
    return out.drop(columns="_c").reset_index(drop=True)


@dataclass
class GeneRows:
    """(variant, gene) pairs of a batch, with the bins each pair is scored on.

    ``variant[g]`` is the index of the pair's variant in the batch's ALT rows; ``ref_bins``/``alt_bins``
    /``mask`` are (G, K) as in windows.align_bins."""

    variant: np.ndarray  # (G,) int64
    gene: np.ndarray  # (G,) int64: row of GeneIndex.genes
    tss: np.ndarray  # (G,) int64: the gene's TSS (1-based) nearest the variant, within the window
    tss_distance: np.ndarray  # (G,) int64: strand-aware, see docs/genes.md
    n_tss: np.ndarray  # (G,) int16: the gene's TSSs within the output window
    ref_bins: np.ndarray
    alt_bins: np.ndarray
    mask: np.ndarray

    def __len__(self):
        return int(self.variant.shape[0])


class GeneIndex:
    """The TSSs of a GTF on the FASTA's contigs, sorted per contig, for quick window look-ups."""

    def __init__(self, path, resolve, tss_margin: int):
        if tss_margin < 0:
            raise OptionError("--tss-margin must be ≥ 0 (bp each side of a TSS)")
        table = read_gtf(path)
        self.path = Path(path)
        self.tss_margin = int(tss_margin)
        contig = table["chrom"].map(lambda c: resolve(c))
        self.unplaced = int(contig.isna().sum())  # TSSs on contigs the FASTA does not have
        table = table[contig.notna()].assign(contig=contig[contig.notna()])
        genes = table.drop_duplicates("gene_id")[["gene_id", "gene_name", "strand", "chrom"]]
        self.genes = genes.reset_index(drop=True)
        gene_row = pd.Series(np.arange(len(self.genes)), index=self.genes["gene_id"])
        self.by_contig: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, part in table.groupby("contig", sort=False):
            part = part.sort_values(["tss", "gene_id"], kind="stable")
            self.by_contig[name] = (part["tss"].to_numpy(np.int64),
                                    gene_row.loc[part["gene_id"]].to_numpy(np.int64))
        self.minus = (self.genes["strand"] == "-").to_numpy()
        self.ids = self.genes["gene_id"].tolist()
        self.names = self.genes["gene_name"].tolist()
        self.strands = self.genes["strand"].tolist()
        self.rank = np.argsort(np.argsort(np.array(self.ids, dtype=object), kind="stable"), kind="stable")

    def describe(self) -> dict:
        return {"genes": str(self.path), "tss_margin": self.tss_margin}

    def rows(self, contigs: list[str], pos: np.ndarray, geom, ref_len: np.ndarray, delta: np.ndarray) -> GeneRows:
        """The (variant, gene) pairs of a batch: variant v is at 1-based ``pos[v]`` on ``contigs[v]``
        with its first REF base at window index ``geom.center``; ``ref_len``, ``delta`` as WindowBatch."""
        nb, bs, off, c = geom.output_bins, geom.bin_size, geom.bin_offset, geom.center
        m = self.tss_margin
        var, gen, at = [], [], []
        for v, (contig, p) in enumerate(zip(contigs, pos.tolist())):
            found = self.by_contig.get(contig)
            if found is None:
                continue
            tss, gene = found
            start = p - c + off  # 1-based genome position of the first base of bin 0
            lo, hi = np.searchsorted(tss, [start, start + nb * bs])
            if hi > lo:
                var.append(np.full(hi - lo, v, dtype=np.int64))
                gen.append(gene[lo:hi])
                at.append(tss[lo:hi])
        if not var:
            z = np.zeros(0, dtype=np.int64)
            zk = np.zeros((0, 1), dtype=np.int64)
            return GeneRows(z, z, z, z, z.astype(np.int16), zk, zk, zk.astype(bool))
        var, gen, at = np.concatenate(var), np.concatenate(gen), np.concatenate(at)
        # one pair per (variant, gene): its TSSs, each with the bins overlapping [tss - m, tss + m]
        key = var * len(self.genes) + gen
        order = np.lexsort((at, key))
        var, gen, at, key = var[order], gen[order], at[order], key[order]
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        pair = np.cumsum(np.r_[True, key[1:] != key[:-1]]) - 1
        w = at - pos[var] + c  # the TSS base's window index
        b_lo = np.clip((w - m - off) // bs, 0, nb - 1)
        b_hi = np.clip((w + m - off) // bs, 0, nb - 1)  # inclusive
        n_pairs = first.size
        # union of the TSSs' bin ranges per pair, as a (G, nb) boolean, then packed to (G, K)
        cover = np.zeros((n_pairs, nb + 1), dtype=np.int32)
        np.add.at(cover, (pair, b_lo), 1)
        np.add.at(cover, (pair, b_hi + 1), -1)
        cover = np.cumsum(cover[:, :nb], axis=1) > 0
        width = int(cover.sum(1).max())
        ref_bins = np.argsort(~cover, axis=1, kind="stable")[:, :width]
        base_mask = np.take_along_axis(cover, ref_bins, axis=1)
        pv = var[first]
        from .windows import alt_counterparts
        alt_bins, mask = alt_counterparts(geom, ref_bins, base_mask, delta[pv], ref_len[pv])
        # the TSS nearest the variant (ties: the lower coordinate), its strand-aware distance
        dist = pos[var] - at
        near = np.lexsort((at, np.abs(dist), pair))
        nearest = near[np.flatnonzero(np.r_[True, pair[near][1:] != pair[near][:-1]])]
        minus = self.minus[gen[nearest]]
        tss_distance = np.where(minus, -dist[nearest], dist[nearest])
        n_tss = np.diff(np.r_[first, var.size]).astype(np.int16)
        # per variant, genes in the order of their nearest TSS's position, then gene id
        o = np.lexsort((self.rank[gen[first]], at[nearest], pv))
        return GeneRows(pv[o], gen[first][o], at[nearest][o], tss_distance[o], n_tss[o], ref_bins[o], alt_bins[o],
                        mask[o])
