"""SpliceAI's gene annotation: the table of transcripts and exons that ``spliceai`` ships
(``annotations/grch37.txt``, ``grch38.txt``) or one in the same format, the genes that contain a
variant, the exon boundary nearest to it, and a window masked to a transcript.

The table is tab-separated, one transcript per line: ``#NAME CHROM STRAND TX_START TX_END
EXON_START EXON_END``, 0-based starts, 1-based ends, comma-terminated exon lists.  Which table a
run reads (``--annotation``) is decided in :mod:`varfx.backends.spliceai`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..encoding import N_CODE
from ..errors import InputError
from ..genome import contig_aliases
from ..variants import Site

TABLE_COLUMNS = ("#NAME", "CHROM", "STRAND", "TX_START", "TX_END", "EXON_START", "EXON_END")
_TABLE_FORMAT = ("a SpliceAI gene table is tab-separated with the header "
                 "#NAME CHROM STRAND TX_START TX_END EXON_START EXON_END, like the package's grch37.txt")


class GeneTable:
    """SpliceAI's gene annotation: transcripts (1-based, inclusive) and their exon boundaries."""

    def __init__(self, path: Path):
        self.path = Path(path)
        df = self._read(self.path)
        self.names = df["#NAME"].astype(str).to_numpy()
        self.strands = df["STRAND"].to_numpy()
        self.tx_start = self._ints(df, "TX_START") + 1
        self.tx_end = self._ints(df, "TX_END")
        self._boundaries = [self._exon_boundaries(row, starts, ends) for row, (starts, ends)
                            in enumerate(zip(df["EXON_START"].tolist(), df["EXON_END"].tolist()))]
        bad = np.flatnonzero(~np.isin(self.strands, ["+", "-"]))
        if bad.size:
            raise InputError(f"{self.path} line {bad[0] + 2}: STRAND must be + or -, got {self.strands[bad[0]]!r}")
        self._by_contig = {name: np.flatnonzero(df["CHROM"].to_numpy() == name) for name in df["CHROM"].unique()}

    @staticmethod
    def _read(path: Path) -> pd.DataFrame:
        try:
            with warnings.catch_warnings():  # a row longer than the header: pandas would warn and drop fields
                warnings.simplefilter("error", pd.errors.ParserWarning)
                df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, index_col=False)
        except pd.errors.ParserWarning:
            raise InputError(f"{path} has a row with more fields than its header line: {_TABLE_FORMAT}") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise InputError(f"{path} cannot be read as a gene table ({str(exc).splitlines()[0]}): {_TABLE_FORMAT}")
        missing = [c for c in TABLE_COLUMNS if c not in df.columns]
        if missing:
            raise InputError(f"{path} has no column {', '.join(missing)}: {_TABLE_FORMAT}")
        return df

    def _ints(self, df: pd.DataFrame, column: str) -> np.ndarray:
        values = pd.to_numeric(df[column], errors="coerce")
        bad = np.flatnonzero((values.isna() | (values % 1 != 0)).to_numpy())
        if bad.size:
            raise InputError(f"{self.path} line {bad[0] + 2}: {column} must be an integer, "
                             f"got {df[column].iloc[bad[0]]!r}")
        return values.to_numpy(np.int64)

    def _exon_boundaries(self, row: int, starts: str, ends: str) -> np.ndarray:
        """1-based exon starts and ends of one transcript, sorted (what ``-M 1`` calls annotated sites)."""
        try:
            first = [int(v) + 1 for v in starts.split(",") if v.strip()]
            last = [int(v) for v in ends.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"{self.path} line {row + 2}: EXON_START and EXON_END must be comma-separated "
                             "integers (e.g. 1000,2000,)") from None
        if not first or len(first) != len(last):
            raise InputError(f"{self.path} line {row + 2}: EXON_START and EXON_END must list the same "
                             "number (≥ 1) of exons")
        return np.unique(np.array(first + last, dtype=np.int64))

    def genes_at(self, site: Site) -> list[int]:
        """Rows (in table order) of the transcripts that contain the site's POS."""
        rows = None
        for name in (site.chrom, site.contig, *contig_aliases(site.chrom)):
            rows = self._by_contig.get(name)
            if rows is not None:
                break
        if rows is None:
            return []
        inside = (self.tx_start[rows] <= site.pos) & (site.pos <= self.tx_end[rows])
        return rows[inside].tolist()

    def nearest_boundary(self, row: int, pos: int) -> int:
        """Signed distance from ``pos`` to the nearest exon boundary (the upstream one on a tie)."""
        d = self._boundaries[row] - pos
        return int(d[np.argmin(np.abs(d))])


def gene_window(codes: np.ndarray, pos: int, tx_start: int, tx_end: int) -> np.ndarray:
    """A window centred on ``pos`` with the positions outside [tx_start, tx_end] set to N."""
    c = codes.shape[0] // 2
    out = codes.copy()
    out[:max(tx_start - pos + c, 0)] = N_CODE
    out[max(tx_end - pos + c + 1, 0):] = N_CODE
    return out
