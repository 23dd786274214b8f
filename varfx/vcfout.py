"""Annotated VCF output: the input VCF, header and records in order, with INFO fields added.

:class:`AnnotatedVCFWriter` reads the input VCF a second time (with its samples, so
genotype columns are copied unchanged) in step with the scoring run's
:class:`~varfx.variants.VariantReader`, and writes every record it reads: the
values a run gives for a record are set as INFO fields, a record without values is
copied as it is.  Any backend's run can use it; the ``spliceai`` backend does.

* The output is ``.vcf``, bgzipped ``.vcf.gz`` (or ``.vcf.bgz``) or ``.bcf``, chosen by
  the file name; it is written as ``NAME.partial`` and renamed when complete.
* Each field is declared in the header (``##INFO=<ID=…,Number=…,Type=…,Description=…>``).
  A field the input already declares keeps its declaration, and its old values are
  removed from every record, so that no record carries a stale value.
* With ``--region`` only the records in the regions are written, as they are scored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import OptionError
from .variants import open_vcf
from .writers import partial_path

#: file name ending -> cyvcf2 Writer mode
MODES = {".vcf": "w", ".vcf.gz": "wz", ".vcf.bgz": "wz", ".bcf": "wb"}


@dataclass(frozen=True)
class InfoField:
    """An INFO field as declared in a VCF header."""

    id: str
    number: str  # "1", "A", "R", "G" or "."
    type: str  # "Integer", "Float", "Flag", "Character" or "String"
    description: str

    def header(self) -> dict:
        return {"ID": self.id, "Number": self.number, "Type": self.type, "Description": self.description}


def vcf_mode(path: Path, flag: str = "--out-vcf") -> str:
    """The cyvcf2 Writer mode for an output file name; a one-line error for other endings."""
    name = path.name.lower()
    for ending, mode in MODES.items():
        if name.endswith(ending):
            return mode
    raise OptionError(f"{flag} {path}: the name must end in .vcf, .vcf.gz or .bcf (that sets the format)")


class AnnotatedVCFWriter:
    """Copy the records of ``source`` to ``path`` one by one, adding INFO values.

    ``queries`` are the region strings the run's reader queries (``VariantReader``
    after ``--region``), in its order; None reads the whole file.  Call :meth:`write`
    once per record, in the reader's order, then :meth:`finish` (or :meth:`abort`).
    """

    def __init__(self, source: str | os.PathLike, path: str | os.PathLike, fields: list[InfoField],
                 queries: list[str] | None = None):
        from cyvcf2 import Writer

        self.path = Path(path)
        self.tmp = partial_path(self.path)
        self.fields = list(fields)
        mode = vcf_mode(self.path)
        self._vcf = open_vcf(source, samples=True)
        self._replaced = [f.id for f in self.fields if self._declared(f.id)]
        for field in self.fields:
            self._vcf.add_info_to_header(field.header())
        self._records = self._iterate(queries)
        self._writer = Writer(str(self.tmp), self._vcf, mode=mode)
        self.records_written = 0

    def _declared(self, field_id: str) -> bool:
        try:
            self._vcf.get_header_type(field_id)
        except KeyError:
            return False
        return True

    def _iterate(self, queries):
        if not queries:
            yield from self._vcf
            return
        for q in queries:
            yield from self._vcf(q)

    def write(self, chrom: str, pos: int, info: dict[str, str] | None = None) -> None:
        """Write the next record with ``info`` (field id -> value) set.

        ``chrom`` and ``pos`` are the caller's view of that record; they must match
        (the writer and the reader read the same file in the same order).
        """
        try:
            rec = next(self._records)
        except StopIteration:
            raise AssertionError("the annotated VCF ran out of records before the run did") from None
        if rec.CHROM != chrom or rec.POS != pos:
            raise AssertionError(f"the annotated VCF is out of step: record {rec.CHROM}:{rec.POS}, "
                                 f"scores for {chrom}:{pos}")
        for field_id in self._replaced:
            if rec.INFO.get(field_id) is not None:
                del rec.INFO[field_id]
        for field_id, value in (info or {}).items():
            rec.INFO[field_id] = value
        self._writer.write_record(rec)
        self.records_written += 1

    def finish(self, summary: dict | None = None) -> None:
        """Close and rename to the final name (every record must have been written)."""
        if next(self._records, None) is not None:
            raise AssertionError("the run ended before the annotated VCF had written every record")
        self._writer.close()
        self._vcf.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._writer.close()
            self._vcf.close()
        finally:
            self.tmp.unlink(missing_ok=True)
