"""The input VCF annotated with a finished run's scores (``--out-vcf``, ``varfx annotate``).

:func:`annotate_vcf` reads the input VCF once, in step with the rows of a finished
scores file (``record`` and ``alt_index`` in input order, and the ``skipped`` group),
and writes every record the run read, with INFO fields declared in the header
(docs/formats.md, "VCF annotation").  All fields are ``Number=A``: one value per ALT.

* ``VARFX_<STAT>_MAXABS`` (Float), ``VARFX_<STAT>_MAXTRACK`` (String), ``VARFX_<STAT>_L2``
  (Float): :func:`varfx.scores.track_summaries` over all the tracks in the file.
* ``VARFX_<STAT>_<TRACK>`` (Float): one per track chosen with ``--vcf-tracks``.
* ``VARFX_<STAT>`` (Float): a profile statistic (QTL, JSD), one value per ALT already.
* ``VARFX_SKIP`` (String): why an ALT was not scored; ``.`` for scored ALTs.

Values are ``.`` for an ALT without one.  Text values are percent-encoded
(:func:`encode_value`); track identifiers become INFO keys by :func:`info_keys`.
``varfx score --out-vcf`` calls it on the run's HDF5 once that is complete
(:class:`RunAnnotation`); ``varfx annotate`` on any finished, e.g. merged, file.
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError, OptionError
from .results import open_complete, require_variant_scores, strings
from .scores import PROFILE_STATS, STATS, track_summaries
from .tracks import select_tracks
from .vcfout import AnnotatedVCFWriter, InfoField, check_header, vcf_mode

PREFIX = "VARFX_"
SKIP = PREFIX + "SKIP"
SUMMARY_KEYS = ("MAXABS", "MAXTRACK", "L2")  # field suffixes, in the order of the summaries
STAT_TEXT = {
    "SAD": "sum of ALT minus sum of REF predictions over the selected bins",
    "logSED": "log2(ALT sum + c) - log2(REF sum + c) over the selected bins",
    "D1": "L1 distance of ALT and REF predictions over the selected bins",
    "D2": "L2 distance of ALT and REF predictions over the selected bins",
    "TOTAL": "sum of ALT minus sum of REF predictions over every bin of each window, unpaired",
    "logTOTAL": "log2(ALT sum + c) - log2(REF sum + c) over every bin of each window, unpaired",
    "QTL": "L2 distance of the ALT and REF profiles over every bin and the profile tracks",
    "JSD": "Jensen-Shannon distance of the ALT and REF profile shapes",
}
_KEY_BAD = re.compile(r"[^A-Za-z0-9_]")
_VALUE_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.+/()[]{}<>|*#@!?~^&'")
_ROW_VALUES = 4 << 20  # score values read per chunk of rows


def encode_value(text: str) -> str:
    """``text`` as an INFO value: each character other than a letter, a digit or one of
    ``_-.+/()[]{}<>|*#@!?~^&'`` becomes ``%XX`` (its UTF-8 bytes, as VCF 4.3 percent-encoding), so
    spaces, ``,``, ``;``, ``=``, ``:`` and ``%`` never appear; ``urllib.parse.unquote`` decodes it.
    The empty string and ``.`` (which would read as a missing value) become ``_``."""
    text = str(text)
    if text in ("", "."):
        return "_"
    if all(c in _VALUE_OK for c in text):
        return text
    return "".join(c if c in _VALUE_OK else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def info_keys(stat: str, track_ids: list[str], taken: set[str] | None = None) -> list[str]:
    """INFO keys ``VARFX_<STAT>_<TRACK>`` for ``track_ids``: every character other than a letter,
    digit or ``_`` becomes ``_``; a key equal (ignoring case) to one already taken, a summary
    field's or an earlier track's, gets ``_2``, ``_3``, … appended."""
    used = {k.upper() for k in (taken or set())}
    used |= {f"{PREFIX}{stat}_{s}".upper() for s in SUMMARY_KEYS}
    keys = []
    for tid in track_ids:
        base = f"{PREFIX}{stat}_{_KEY_BAD.sub('_', str(tid))}"
        key, n = base, 1
        while key.upper() in used:
            n += 1
            key = f"{base}_{n}"
        used.add(key.upper())
        keys.append(key)
    return keys


def format_floats(values) -> list[str]:
    """float32 values as text that parses back to the same float32 (``%.9g``); NaN as ``.``."""
    return ["%.9g" % x if x == x else "." for x in np.asarray(values, dtype=np.float32).tolist()]


def _describe(text: str) -> str:
    """Text safe inside a header line's quoted Description."""
    return re.sub(r"[\x00-\x1f\x7f]", " ", str(text)).replace('"', "'").replace("\\", "/")


@dataclass(frozen=True)
class Column:
    """One per-ALT INFO field and where its values come from."""

    field: InfoField
    stat: str
    kind: str  # "maxabs", "maxtrack", "l2", "track" or "profile"
    track: int | None = None


@dataclass
class Plan:
    """The INFO fields to write, in order (``VARFX_SKIP`` last)."""

    columns: list[Column]
    track_stats: list[str]
    profile_stats: list[str]
    tracks: list[int]  # tracks with fields of their own
    summaries: bool
    track_ids: list[str]

    @property
    def fields(self) -> list[InfoField]:
        return [c.field for c in self.columns] + [
            InfoField(SKIP, "A", "String", "varfx: why the ALT was not scored (a reason of docs/windows.md, "
                                           "percent-encoded); . when it was scored")]


def _choose_stats(stats, run_stats: list[str]) -> list[str]:
    if stats is None:
        return list(run_stats)
    items = [s.strip() for s in (stats.split(",") if isinstance(stats, str) else
                                 [x for chunk in stats for x in str(chunk).split(",")]) if s.strip()]
    lookup = {s.lower(): s for s in run_stats}
    known = {s.lower(): s for s in STATS + PROFILE_STATS}
    out = []
    for s in items:
        if s.lower() in lookup:
            if lookup[s.lower()] not in out:
                out.append(lookup[s.lower()])
        elif s.lower() in known:
            raise OptionError(f"--vcf-stats {known[s.lower()]}: the scores have no {known[s.lower()]} "
                              f"(they have {', '.join(run_stats)}); add it to --stat")
        else:
            raise OptionError(f"--vcf-stats {s!r} is not a statistic; the scores have {', '.join(run_stats)}")
    if not out:
        raise OptionError(f"--vcf-stats needs at least one of {', '.join(run_stats)}")
    return out


def _choose_tracks(tracks, track_ids: list[str], track_labels: list[str]) -> list[int]:
    if tracks is None or str(tracks).strip().lower() in ("", "none"):
        return []
    if str(tracks).strip().lower() == "all":
        return list(range(len(track_ids)))
    table = pd.DataFrame({"id": track_ids, "description": track_labels})
    try:
        chosen = select_tracks(table, str(tracks))
    except OptionError as exc:
        raise OptionError(str(exc).replace("--tracks", "--vcf-tracks", 1)
                          .replace("list them with `varfx tracks`", "it selects among the scored tracks, "
                                   "the scores file's target_ids and target_labels, indexed from 0")) from None
    if not chosen:
        raise OptionError(f"--vcf-tracks {tracks!r} matches none of the scores' {len(track_ids)} tracks")
    return chosen


def plan(run_stats: list[str], track_ids: list[str], track_labels: list[str], stats=None, tracks=None,
         summaries: bool = True, model: str = "") -> Plan:
    """The fields for statistics ``stats`` (default: all of ``run_stats``) and the tracks chosen by
    ``tracks`` (:func:`varfx.tracks.select_tracks` on the file's tracks, or ``all``/``none``; default none)."""
    chosen_stats = _choose_stats(stats, list(run_stats))
    track_stats = [s for s in chosen_stats if s not in PROFILE_STATS]
    profile = [s for s in chosen_stats if s in PROFILE_STATS]
    chosen = _choose_tracks(tracks, track_ids, track_labels)
    if chosen and not track_stats:
        raise OptionError(f"--vcf-tracks: {', '.join(profile)} have one value per variant, not per track; "
                          "choose a per-track statistic with --vcf-stats too")
    about = f"; model {model}" if model else ""
    cols: list[Column] = []
    taken: set[str] = set()
    for s in track_stats:
        what = f"{s}: {STAT_TEXT.get(s, s)}"
        if summaries:
            cols += [
                Column(InfoField(f"{PREFIX}{s}_MAXABS", "A", "Float",
                                 _describe(f"varfx {s} of the track with the largest |{s}| (signed), per ALT; "
                                           f"{what}{about}")), s, "maxabs"),
                Column(InfoField(f"{PREFIX}{s}_MAXTRACK", "A", "String",
                                 _describe(f"varfx identifier of the track with the largest |{s}| (percent-encoded),"
                                           f" per ALT{about}")), s, "maxtrack"),
                Column(InfoField(f"{PREFIX}{s}_L2", "A", "Float",
                                 _describe(f"varfx L2 norm of {s} over the {len(track_ids)} tracks, per ALT; "
                                           f"{what}{about}")), s, "l2"),
            ]
        keys = info_keys(s, [track_ids[t] for t in chosen], taken)
        taken.update(keys)
        for t, key in zip(chosen, keys):
            cols.append(Column(InfoField(key, "A", "Float", _describe(
                f"varfx {s} of track {track_ids[t]} ({track_labels[t]}), per ALT; {what}{about}")), s, "track", t))
    for s in profile:
        cols.append(Column(InfoField(f"{PREFIX}{s}", "A", "Float",
                                     _describe(f"varfx {s} per ALT: {STAT_TEXT.get(s, s)}{about}")), s, "profile"))
    return Plan(cols, track_stats, profile, chosen, summaries, list(track_ids))


@dataclass
class AnnotationSummary:
    """What :func:`annotate_vcf` wrote."""

    path: Path
    records: int
    alts_scored: int
    alts_skipped: int
    fields: list[str]

    def report(self) -> str:
        return (f"records: {self.records:,}\nALTs with scores: {self.alts_scored:,}\n"
                f"ALTs skipped (VARFX_SKIP): {self.alts_skipped:,}\nINFO fields: {', '.join(self.fields)}\n"
                f"wrote: {self.path}")


def _model(settings: dict) -> str:
    weights = settings.get("weights") or []
    names = ", ".join(Path(str(w)).name for w in weights)
    return f"{settings.get('backend', '?')} {names}".strip()


def _scored_rows(f, p: Plan, chunk: int):
    """(record, alt_index, chrom, pos, values) of each scored row, values as text in plan order."""
    n = f["record"].shape[0]
    ids = p.track_ids
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        cols: list[list[str]] = []
        blocks = {s: f[s][lo:hi].astype(np.float32) for s in p.track_stats}
        summaries = {s: track_summaries(b, ids) for s, b in blocks.items()} if p.summaries else {}
        for c in p.columns:
            if c.kind == "maxtrack":
                cols.append([encode_value(x) if x != "." else "." for x in summaries[c.stat]["maxtrack"]])
            elif c.kind in ("maxabs", "l2"):
                cols.append(format_floats(summaries[c.stat][c.kind]))
            elif c.kind == "track":
                cols.append(format_floats(blocks[c.stat][:, c.track]))
            else:
                cols.append(format_floats(f[c.stat][lo:hi]))
        cols.append(["."] * (hi - lo))  # VARFX_SKIP
        yield from zip(f["record"][lo:hi].tolist(), f["alt_index"][lo:hi].tolist(), strings(f["chr"][lo:hi]),
                       f["pos"][lo:hi].tolist(), zip(*cols))


def _skipped_rows(g, width: int, chunk: int = 65536):
    """(record, alt_index, chrom, pos, values) of each skipped row: ``.`` then the encoded reason."""
    n = g["record"].shape[0]
    missing = (".",) * width
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        reasons = [missing + (encode_value(r),) for r in strings(g["reason"][lo:hi])]
        yield from zip(g["record"][lo:hi].tolist(), g["alt_index"][lo:hi].tolist(), strings(g["chr"][lo:hi]),
                       g["pos"][lo:hi].tolist(), reasons)


def _check_file(f, path: Path, settings: dict) -> None:
    require_variant_scores(f, path, "VCF annotation")
    if str(f.attrs.get("shard", "") or ""):
        raise InputError(f"{path} is shard {f.attrs['shard']} of a run: merge the shards first "
                         f"(varfx merge … --out scores.h5) and annotate the merged file")
    if "samples" in f or settings.get("genotypes"):
        raise InputError(f"{path} is a --genotypes run (scores per sample): VCF annotation is not available for it")
    if settings.get("backend") == "spliceai" or "columns" in settings:
        raise InputError(f"{path} is a spliceai run: its annotated VCF is written by "
                         "`varfx score --backend spliceai --out-vcf OUT.vcf.gz`")


def _queries(vcf: Path, regions: list[str]) -> list[str] | None:
    """The htslib region strings the run's reader queried (contig names as in the VCF)."""
    if not regions:
        return None
    from .variants import VariantReader

    reader = VariantReader(vcf, lambda c: c, regions=regions)
    try:
        return reader.queries
    finally:
        reader.close()


def annotate_vcf(scores_h5, vcf, out_vcf, stats=None, tracks=None, summaries: bool = True, *,
                 check_vcf: bool = True, chunk_rows: int | None = None) -> AnnotationSummary:
    """Write ``out_vcf`` (.vcf, .vcf.gz or .bcf): the records of ``vcf`` that the run of the finished
    scores file ``scores_h5`` read, with INFO fields for ``stats`` (default: all of the file's) and
    the tracks chosen by ``tracks`` (default: none; summaries always unless ``summaries=False``).

    ``check_vcf``: refuse a ``vcf`` whose SHA-256 differs from the file's ``vcf_sha256``.
    """
    from .run import check_out, sha256
    from .writers import check_not_inputs

    scores_h5, vcf = Path(scores_h5), Path(vcf)
    out_vcf = check_out(Path(out_vcf), "--out-vcf")
    vcf_mode(out_vcf)
    if not vcf.is_file():
        raise InputError(f"VCF file not found: {vcf}")
    check_not_inputs({"--out-vcf": out_vcf}, {"vcf": vcf, "scores": scores_h5})
    with open_complete(scores_h5) as f:
        settings = json.loads(f.attrs["settings"])
        _check_file(f, scores_h5, settings)
        want = str(f.attrs.get("vcf_sha256", ""))
        if check_vcf and sha256(vcf) != want:
            raise InputError(f"{vcf} is not the VCF these scores were made from (its SHA-256 differs from "
                             f"{scores_h5.name}'s vcf_sha256; the run read {settings.get('vcf', '?')})")
        run_stats = [s for s in settings["stats"] if s in f]
        p = plan(run_stats, strings(f["target_ids"]), strings(f["target_labels"]), stats, tracks, summaries,
                 _model(settings))
        records = int(f.attrs["records_read"])
        chunk = chunk_rows or max(1, min(65536, _ROW_VALUES // max(1, len(p.track_ids) * len(p.track_stats))))
        writer = AnnotatedVCFWriter(vcf, out_vcf, p.fields, _queries(vcf, settings.get("region") or []))
        scored = skipped = 0
        try:
            rows = heapq.merge(_scored_rows(f, p, chunk), _skipped_rows(f["skipped"], len(p.columns), chunk),
                               key=lambda r: r[0])
            expect = 0
            for record, group in itertools.groupby(rows, key=lambda r: r[0]):
                if record != expect:
                    raise InputError(f"{scores_h5} has no row for record {expect} (0-based) of the VCF: "
                                     "it is not the output of one complete run")
                expect += 1
                alleles = {}
                for _, alt_index, chrom, pos, values in group:
                    alleles[alt_index] = values
                    if values[-1] == ".":
                        scored += 1
                    else:
                        skipped += 1
                writer.write(chrom, pos, alleles=alleles)
            if expect != records:
                raise InputError(f"{scores_h5} has rows for {expect} of the {records} records its run read: "
                                 "it is not the output of one complete run")
            writer.finish()
        except BaseException:
            writer.abort()
            raise
    return AnnotationSummary(out_vcf, records, scored, skipped, [x.id for x in p.fields])


class RunAnnotation:
    """``varfx score --out-vcf`` for the window-based backends: the checks before the run, the HDF5
    file the annotation is made from (a temporary one beside the VCF without ``--out``), and the VCF
    written once that file is complete."""

    def __init__(self, out_vcf, stats, tracks, out, tsv, tsv_long, skipped_tsv, shard):
        from .run import check_out

        if shard is not None:
            raise OptionError("--out-vcf is not written by one shard: merge the shards' HDF5 files "
                              "(varfx merge) and run `varfx annotate scores.h5 --vcf INPUT --out-vcf OUT.vcf.gz`")
        self.out_vcf = check_out(Path(out_vcf), "--out-vcf")
        vcf_mode(self.out_vcf)
        self.stats, self.tracks = stats, tracks
        self.temp: Path | None = None
        if out is None:
            if skipped_tsv is None:  # without HDF5, skipped variants are listed beside the first table or the VCF
                table = Path(tsv or tsv_long or self.out_vcf)
                stem = re.sub(r"(\.tsv|\.vcf(\.gz|\.bgz)?|\.bcf)$", "", table.name, flags=re.IGNORECASE)
                skipped_tsv = table.with_name(stem + ".skipped.tsv")
            out = self.temp = self.out_vcf.with_name(self.out_vcf.name + ".scores.h5")
        self.out, self.skipped_tsv = Path(out), skipped_tsv
        named = [Path(p).resolve() for p in (out, tsv, tsv_long, skipped_tsv) if p is not None]
        if self.out_vcf.resolve() in named:
            raise OptionError("--out-vcf must be a file of its own (not --out, --tsv, --tsv-long or --skipped-tsv)")

    def check(self, vcf, run_stats, track_ids, track_labels) -> None:
        """Refuse, before the run scores anything, --vcf-stats and --vcf-tracks that do not fit it and
        an input VCF that declares one of the fields otherwise."""
        check_header(vcf, plan(list(run_stats), list(track_ids), list(track_labels), self.stats, self.tracks).fields)

    def write(self, summary, vcf) -> AnnotationSummary:
        """Annotate from the finished HDF5; drop the temporary one (kept if the annotation fails)."""
        done = annotate_vcf(self.out, vcf, self.out_vcf, self.stats, self.tracks, check_vcf=False)
        if self.temp is not None:
            summary.outputs = [p for p in summary.outputs if Path(p) != self.temp]
            self.temp.unlink(missing_ok=True)
        summary.outputs.append(self.out_vcf)
        return done


def for_run(out_vcf, stats, tracks, backend, genotypes, shard, out, tsv, tsv_long, skipped_tsv):
    """The :class:`RunAnnotation` of a ``varfx score`` call, or None when it writes no annotated VCF
    (or a backend with its own run, spliceai, writes it); one-line errors for options that do not fit."""
    chosen = stats is not None or tracks is not None
    own_run = False
    if isinstance(backend, str):
        from .backends import backend_class

        own_run = backend_class(backend).score_vcf is not None
    if chosen and (out_vcf is None or genotypes is not None or own_run):
        why = ("--genotypes runs write no annotated VCF" if genotypes is not None else
               f"--backend {backend} writes its own INFO field" if own_run else "give --out-vcf OUT.vcf.gz too")
        raise OptionError(f"--vcf-stats and --vcf-tracks choose the INFO fields of --out-vcf: {why}")
    if out_vcf is None or genotypes is not None or own_run:
        return None
    return RunAnnotation(out_vcf, stats, tracks, out, tsv, tsv_long, skipped_tsv, shard)


__all__ = ["annotate_vcf", "encode_value", "info_keys", "plan", "AnnotationSummary", "RunAnnotation", "for_run"]
