"""Blocks of records: the unit of sharding, resuming and merging (docs/hpc.md).

A run cuts the VCF's records into blocks of ``block_records`` consecutive records (block ``b`` holds
records ``b·B … b·B + B − 1``, counted after ``--region``).  Each block is scored on its own — its
windows never share a forward batch with another block's — and written as a set of *fragments*
(``NAME.parts/b<block>.npz``: its rows, scores and counts) beside the first output; a fragment is
written under a temporary name and renamed, so a fragment that exists is complete.  When every
block is done, the fragments are fed in block order to the final writers (HDF5, TSV), each output
written under ``NAME.partial`` and renamed; then ``NAME.parts/`` is removed.

* ``--shard K/N`` scores the blocks ``b`` with ``b mod N = K − 1``: a job array of N tasks covers
  the input exactly once, each task reading the whole VCF but building windows only for its blocks.
* ``--resume`` keeps the complete blocks of an interrupted run (after checking that its settings and
  inputs are the same) and scores the rest.
* ``varfx merge`` interleaves shard outputs block by block.

Because a block is scored the same way whichever run, shard or resume it belongs to, the merged or
resumed datasets equal those of one uninterrupted, unsharded run bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np

from .errors import InputError, OptionError
from .writers import append_rows, check_not_inputs, partial_path, _attr_value

BLOCK_RECORDS = 1024
PARTS = ".parts"
#: settings that may differ between the shards of one run (and between a run and its resume)
VOLATILE = ("seconds", "records_read", "variants", "variants_scored", "variants_skipped", "skipped_by_reason",
            "float16_overflow", "complete", "shard", "settings",
            "ref_mismatch_records")  # genotype records read by a run (personal genomes): per run, not per block


def block_records(bytes_per_variant: int, budget: int = 64 << 20) -> int:
    """Records per block: 1,024, or fewer (a power of two) when a block's scores would pass ``budget``."""
    b = BLOCK_RECORDS
    while b > 1 and b * bytes_per_variant > budget:
        b //= 2
    return b


def parse_shard(text) -> tuple[int, int] | None:
    """``"K/N"`` (1 ≤ K ≤ N) -> (K, N); None stays None."""
    if text is None or text == "":
        return None
    if isinstance(text, (tuple, list)):
        k, n = (int(v) for v in text)
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not m:
            raise OptionError(f"--shard {text!r} must be K/N, e.g. 3/8 for the third of eight shards")
        k, n = int(m.group(1)), int(m.group(2))
    if not (1 <= k <= n):
        raise OptionError(f"--shard {k}/{n}: K must be between 1 and N")
    return k, n


class Staging:
    """The fragments of one run, under ``NAME.parts/`` beside the run's first output; a lock on the
    folder keeps a second run (say, a retry started while the first still runs) out of it."""

    def __init__(self, first_output: Path, manifest: dict, resume: bool):
        self.dir = Path(first_output).with_name(Path(first_output).name + PARTS)
        self.manifest = manifest
        self._lock = None
        try:
            if self.dir.exists():
                self._take_lock()
                if not resume:
                    raise OptionError(f"{self.dir} holds an interrupted run: continue it with --resume (the same command "
                                      f"and settings), or delete that folder to start again")
                try:
                    old = json.loads((self.dir / "manifest.json").read_text())
                except (OSError, ValueError):
                    raise OptionError(f"{self.dir} has no readable manifest.json: delete the folder to start again")
                diff = _differences(old, manifest)
                if diff:
                    raise OptionError(f"--resume: the interrupted run in {self.dir} used different settings or inputs "
                                      f"({', '.join(diff[:6])}); rerun it with the same ones, or delete {self.dir} "
                                      "to start again")
                for p in self.dir.iterdir():  # leftovers of an unfinished block are rewritten
                    if p.name not in ("manifest.json", "lock") and p.suffix != ".npz":
                        p.unlink()
            else:  # the folder appears with its manifest (a run stopped in between leaves no folder without one)
                tmp = self.dir.with_name(self.dir.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                self._take_lock(tmp)  # held from the start: a run started meanwhile (a retry) is kept out
                _write_atomic(tmp / "manifest.json", json.dumps(manifest, sort_keys=True, default=str))
                os.rename(tmp, self.dir)
        except BaseException:
            self.release()
            raise
        self.done: dict[int, dict] = {}
        self.damaged = 0  # fragments that could not be read (a node crash before the data reached the disk)
        for p in self.dir.glob("b*.npz"):
            try:
                with np.load(p) as z:
                    self.done[int(p.stem[1:])] = json.loads(str(z["info"]))
            except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
                p.unlink()  # its block is scored again
                self.damaged += 1

    def _take_lock(self, folder: Path | None = None) -> None:
        import fcntl

        self._lock = open((folder or self.dir) / "lock", "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise OptionError(f"another varfx run is writing to {self.dir}: wait for it to end (or stop it) "
                              "before starting this one")

    def path(self, block: int, suffix: str) -> Path:
        return self.dir / f"b{block:09d}{suffix}"

    def commit(self, block: int, info: dict, data: dict[str, np.ndarray]) -> None:
        """Save a block's fragment (its rows, scores and counts): written under a temporary name and
        renamed, so that a fragment that exists is complete."""
        path = self.path(block, ".npz")
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, info=np.array(json.dumps(info, sort_keys=True)), **data)
            fh.flush()
            os.fsync(fh.fileno())  # on the disk before its name says it is complete
        os.replace(tmp, path)
        self.done[block] = info

    def blocks(self) -> list[int]:
        return sorted(self.done)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.release()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None


#: input paths and the hashes that identify those inputs: runs, shards and resumes compare the hashes, so
#: the paths as written may differ (relative in one job, absolute in another)
INPUT_HASHES = {"vcf": "vcf_sha256", "fasta": "fasta_fai_sha256", "weights": "weights_sha256",
                "genotypes": "genotypes_sha256", "calibration": "calibration_sha256"}


def _comparable(settings: dict) -> dict:
    """Settings without the input paths whose hashes they carry."""
    return {k: v for k, v in settings.items() if not (k in INPUT_HASHES and INPUT_HASHES[k] in settings)}


def _setting_differences(a: dict, b: dict) -> list[str]:
    a, b = _comparable(a), _comparable(b)
    return [x for x in sorted(set(a) | set(b)) if a.get(x) != b.get(x)]


def _differences(old: dict, new: dict) -> list[str]:
    """What differs between two run manifests: the settings by their own names (stats, weights_sha256,
    vcf_sha256, block_records, …; input paths through their hashes), the rest ('outputs', 'shard') by theirs."""
    diff = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and k == "settings":
            diff += _setting_differences(a, b)
        else:
            diff.append(k)
    return diff


def finished_run(finals: dict, manifest: dict) -> dict | None:
    """``--resume`` with no interrupted run: the counts of an earlier run of the same command that
    finished, or None.  It finished when every output (``finals``: output kind -> path) is at its final
    name (so complete), the HDF5 (``finals["out"]``) records the same settings, inputs and shard as
    ``manifest`` (``run_manifest``), and every other output is a shard table recording them too and
    ending with its end line.  A plain table records no settings, so a run that writes one is scored
    again."""
    out = finals.get("out")
    others = [p for k, p in finals.items() if k != "out" and p is not None]
    if out is None or not all(Path(p).is_file() for p in [out, *others]):
        return None
    want = json.loads(json.dumps(manifest["settings"], default=str))
    try:
        with h5py.File(out, "r") as f:
            a = f.attrs
            if not bool(a.get("complete", False)) or "settings" not in a:
                return None
            shard = a.get("shard", "")
            shard = shard.decode() if isinstance(shard, bytes) else str(shard)
            settings = {k: v for k, v in json.loads(a["settings"]).items() if k not in VOLATILE}
            counts = {k: int(a[k]) for k in ("records_read", "variants", "variants_scored")}
            counts["skipped_by_reason"] = json.loads(a.get("skipped_by_reason", "{}") or "{}")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if shard != manifest["shard"] or _setting_differences(settings, want):
        return None
    for p in others:
        try:
            with open(p, "rb") as fh:
                fh.readline()
                first = fh.readline().decode()
                fh.seek(max(0, os.path.getsize(p) - 4096))
                last = fh.read().decode(errors="replace").rstrip("\n").rsplit("\n", 1)[-1]
            info = json.loads(first.split("\t", 1)[1]) if first.startswith(SHARD_LINE + "\t") else None
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        if not (info and info.get("shard") == shard and last.startswith(END_LINE + "\t")
                and isinstance(info.get("settings"), dict) and not _setting_differences(info["settings"], want)):
            return None
    return counts


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _datasets(f: h5py.File):
    out = []
    f.visititems(lambda name, obj: out.append(name) if isinstance(obj, h5py.Dataset) else None)
    return out


def _appendable(ds) -> bool:
    return ds.maxshape[0] is None


def concat_h5(fragments: list[Path], out: Path, attrs: dict, groups: dict | None = None,
              pieces=None) -> None:
    """Concatenate HDF5 fragments (same layout) row-wise into ``out`` (written as ``out.partial``).

    Datasets that grow by rows are appended fragment by fragment (or, with ``pieces``, an iterable of
    (fragment index, {dataset: (start, stop)}) row ranges, in order); the others are copied from the
    first fragment.  ``groups``: more datasets to write, name -> array; ``attrs`` are set last.
    """
    out = Path(out)
    tmp = partial_path(out)
    srcs = [h5py.File(p, "r") for p in fragments]
    try:
        with h5py.File(tmp, "w") as dst:
            first = srcs[0]
            names = _datasets(first)
            grow = [n for n in names if _appendable(first[n])]
            for n in names:
                ds = first[n]
                if _appendable(ds):
                    dst.create_dataset(n, (0, *ds.shape[1:]), maxshape=ds.maxshape, dtype=ds.dtype, chunks=ds.chunks)
                else:
                    first.copy(ds, dst, name=n)
            for k, v in first.attrs.items():
                dst.attrs[k] = v
            dst.attrs["complete"] = False
            if pieces is None:
                pieces = ((i, None) for i in range(len(srcs)))
            for i, ranges in pieces:
                src = srcs[i]
                for n in grow:
                    if ranges is None:
                        vals = src[n][()]
                    else:
                        group = n.split("/")[0]  # skipped/ and genes/ have rows of their own
                        a, b = ranges[group if group in ranges else ""]
                        vals = src[n][a:b]
                    if len(vals):
                        append_rows(dst[n], vals)
            for n, v in (groups or {}).items():  # name -> array, or (array, attributes)
                if n in dst:
                    del dst[n]
                data, extra = v if isinstance(v, tuple) else (v, {})
                ds = dst.create_dataset(n, data=data)
                for k, x in extra.items():
                    ds.attrs[k] = x
            for k, v in attrs.items():
                dst.attrs[k] = _attr_value(v)
            dst.attrs["complete"] = True
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        for s in srcs:
            s.close()


# ---------------------------------------------------------------------------------------------------------------------
# varfx merge

def _settings(attrs) -> dict:
    return {k: (v.decode() if isinstance(v, bytes) else v.tolist() if hasattr(v, "tolist") else v)
            for k, v in attrs.items() if k not in VOLATILE}


def _shard_of(attrs, path: Path) -> tuple[int, int, int]:
    shard = attrs.get("shard", "")
    shard = shard.decode() if isinstance(shard, bytes) else str(shard)
    parsed = parse_shard(shard) if shard else None
    if parsed is None:
        raise InputError(f"{path} is not a shard output (no 'shard' attribute): merge the outputs of "
                         "`varfx score --shard K/N`")
    return parsed[0], parsed[1], int(attrs["block_records"])


def _check_set(found: dict[int, list[Path]], n: int) -> None:
    doubled = {k: v for k, v in found.items() if len(v) > 1}
    if doubled:
        k, paths = next(iter(sorted(doubled.items())))
        raise InputError(f"shard {k}/{n} is given twice ({', '.join(str(p) for p in paths)}): give each shard once")
    missing = [k for k in range(1, n + 1) if k not in found]
    if missing:
        raise InputError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(f'{k}/{n}' for k in missing)} "
                         f"{'are' if len(missing) > 1 else 'is'} missing: give all {n} shards")


def merge_h5(inputs: list[Path], out: Path) -> dict:
    """Merge the HDF5 outputs of ``--shard 1/N … N/N`` into one file equal to an unsharded run's."""
    meta, layouts = [], []
    for p in inputs:
        p = Path(p)
        if not p.is_file():
            raise InputError(f"shard file not found: {p}")
        try:
            with h5py.File(p, "r") as f:
                if not bool(f.attrs.get("complete", False)):
                    raise InputError(f"{p} is not complete (its run was interrupted): finish it with --resume")
                k, n, b = _shard_of(f.attrs, p)
                meta.append((p, (k, n, b, _settings(f.attrs), int(f.attrs["records_read"]))))
                # datasets, their types and row shapes: e.g. scores stored as float16 or (--float32) float32,
                # which the settings do not record
                layouts.append({x: (f[x].dtype.str, f[x].shape[1:]) for x in _datasets(f)
                                if _appendable(f[x])})
        except OSError as exc:
            raise InputError(f"cannot read {p} as HDF5 ({exc})")
    ref_p, (k0, n0, b0, s0, r0) = meta[0]
    found: dict[int, list[Path]] = {}
    for (p, (k, n, b, s, r)), layout in zip(meta, layouts):
        if n != n0:
            raise InputError(f"{p} is shard {k}/{n} but {ref_p} is {k0}/{n0}: give shards of one run")
        diff = _setting_differences(s, s0)
        diff += [f"dataset {x}: " + " vs ".join(f"{np.dtype(v[0]).name} {v[1]}" if v else "none"
                                                for v in (layout.get(x), layouts[0].get(x)))
                 for x in sorted(set(layout) | set(layouts[0])) if layout.get(x) != layouts[0].get(x)][:1]
        if diff or b != b0 or r != r0:
            raise InputError(f"{p} and {ref_p} come from different settings or inputs "
                             f"({', '.join(diff[:5]) or 'records read'}): merge shards of one run")
        found.setdefault(k, []).append(p)
    _check_set(found, n0)
    order = [found[k][0] for k in range(1, n0 + 1)]
    # rows of each block, per shard: records must be exactly the shard's blocks' records
    ranges = []
    for i, p in enumerate(order):
        with h5py.File(p, "r") as f:
            recs = {"": f["record"][()], "skipped": f["skipped/record"][()]}
            if "genes" in f:  # (variant, gene) rows (score --genes)
                recs["genes"] = f["genes/record"][()]
        present = np.union1d(recs[""], recs["skipped"])
        want = np.arange(r0)
        want = want[(want // b0) % n0 == i]
        if present.size != want.size or not np.array_equal(present, want):
            extra = np.setdiff1d(present, want)
            what = (f"holds records of other shards (e.g. record {int(extra[0])})" if extra.size else
                    f"lacks records of its blocks (e.g. record {int(np.setdiff1d(want, present)[0])})")
            raise InputError(f"{p} {what}: it does not come from the same input, or was changed")
        ranges.append({key: _block_ranges(r // b0, p) for key, r in recs.items()})
    n_blocks = -(-r0 // b0)
    pieces = []
    for blk in range(n_blocks):
        i = blk % n0
        pieces.append((i, {key: rng.get(blk, (0, 0)) for key, rng in ranges[i].items()}))
    attrs, counts = {}, {}
    for p in order:
        with h5py.File(p, "r") as f:
            for key in ("variants", "variants_scored", "variants_skipped"):
                attrs[key] = attrs.get(key, 0) + int(f.attrs.get(key, 0))
            for key in ("skipped_by_reason", "float16_overflow"):
                d = json.loads(f.attrs.get(key, "{}") or "{}")
                acc = attrs.setdefault(key, {})
                for x, v in d.items():
                    acc[x] = acc.get(x, 0) + v
            attrs["seconds"] = attrs.get("seconds", 0.0) + float(f.attrs.get("seconds", 0.0))
            if "ref_mismatch_records" in f.attrs:  # counted per block, like sample_counts: the sum
                attrs["ref_mismatch_records"] = (attrs.get("ref_mismatch_records", 0)
                                                 + int(f.attrs["ref_mismatch_records"]))
            if "sample_counts" in f:  # summed; their attributes (descriptions) kept
                for name, ds in f["sample_counts"].items():
                    key = f"sample_counts/{name}"
                    total = counts[key][0] if key in counts else 0
                    counts[key] = (total + ds[()], {k: v for k, v in ds.attrs.items()})
    for key in ("skipped_by_reason", "float16_overflow"):
        attrs[key] = dict(sorted(attrs.get(key, {}).items()))
    attrs["records_read"] = r0
    attrs["shard"] = ""
    attrs["merged_from"] = [str(p) for p in order]
    concat_h5(order, out, attrs, groups=counts, pieces=pieces)
    return attrs


def _block_ranges(blocks: np.ndarray, path: Path | None = None) -> dict[int, tuple[int, int]]:
    """Sorted block ids per row -> {block: (first row, last row + 1)}."""
    if not blocks.size:
        return {}
    if np.any(np.diff(blocks) < 0):
        raise InputError(f"{path or 'a shard'}: its rows are not in input order: it was not written by varfx, "
                         "or was changed")
    ids, first = np.unique(blocks, return_index=True)
    last = np.append(first[1:], blocks.size)
    return {int(i): (int(a), int(b)) for i, a, b in zip(ids, first, last)}


#: in shard TSVs, the line after the header (the shard and run settings) and the line before each block
SHARD_LINE = "#varfx-shard"
BLOCK_LINE = "#varfx-block"
END_LINE = "#varfx-end"  # the last line, with the number of blocks: a table without it was cut short


def shard_line(shard: tuple[int, int], records_read: int, attrs: dict) -> str:
    """The line after a shard table's header: the shard, its run's block count and settings."""
    info = {"shard": f"{shard[0]}/{shard[1]}", "n_blocks": -(-records_read // attrs["block_records"]),
            "settings": {k: v for k, v in attrs.items() if k not in VOLATILE}}
    return SHARD_LINE + "\t" + json.dumps(info, sort_keys=True, default=str) + "\n"


def merge_text(inputs: list[Path], out: Path) -> None:
    """Merge the TSV outputs of ``--shard 1/N … N/N`` (their ``#varfx-…`` lines) into one table."""
    found, n0, ref = {}, None, None
    for p in inputs:
        p = Path(p)
        if not p.is_file():
            raise InputError(f"shard file not found: {p}")
        try:
            with open(p, encoding="utf-8") as fh:
                header = fh.readline()
                first = fh.readline().rstrip("\n")
        except UnicodeDecodeError:
            raise InputError(f"{p} is not a shard table (not plain text: a compressed or binary file?): merge "
                             "the TSV outputs of `varfx score --shard K/N` as they were written") from None
        if not first.startswith(SHARD_LINE + "\t"):
            raise InputError(f"{p} is not a shard table (no {SHARD_LINE} line): merge the outputs of "
                             "`varfx score --shard K/N`")
        try:
            info = json.loads(first.split("\t", 1)[1])
            k, n = parse_shard(info["shard"])
        except (ValueError, KeyError, TypeError, OptionError):
            raise InputError(f"{p}: its {SHARD_LINE} line is damaged; score that shard again") from None
        settings = {x: v for x, v in info.items() if x != "shard"}  # includes n_blocks
        if isinstance(settings.get("settings"), dict):
            settings["settings"] = _comparable(settings["settings"])
        if n0 is None:
            n0, ref = n, (p, settings, header)
        elif n != n0:
            raise InputError(f"{p} is shard {k}/{n} but {ref[0]} is of {n0}: give shards of one run")
        elif settings != ref[1] or header != ref[2]:
            raise InputError(f"{p} and {ref[0]} come from different settings or inputs: merge shards of one run")
        found.setdefault(k, []).append(p)
    _check_set(found, n0)
    if ref[2].startswith("sample\t"):  # per-sample genotype counts (NAME.samples.tsv): the sums
        _merge_counts([found[k][0] for k in range(1, n0 + 1)], out, ref[2])
        return
    # index each shard's blocks: byte offsets of their rows
    offsets = {}
    for k in range(1, n0 + 1):
        p = found[k][0]
        idx = {}
        with open(p, "rb") as fh:
            fh.readline()
            fh.readline()
            cur, start, ended = None, fh.tell(), False
            while True:
                at = fh.tell()
                line = fh.readline()
                if ended and line:
                    raise InputError(f"{p} has lines after its {END_LINE} line: it was changed")
                if not line or line.startswith(BLOCK_LINE.encode()) or line.startswith(END_LINE.encode()):
                    if cur is not None:
                        idx[cur] = (start, at)
                    if not line:
                        break
                    if line.startswith(END_LINE.encode()):
                        ended, cur = True, None
                        continue
                    cur = int(line.split(b"\t")[1])
                    if cur % n0 != k - 1:
                        raise InputError(f"{p} holds block {cur}, which belongs to another shard: "
                                         "it does not come from this run")
                    start = fh.tell()
        if not ended:
            raise InputError(f"{p} is cut short (it lacks its last line, {END_LINE}): score that shard again")
        want = [b for b in range(int(ref[1]["n_blocks"])) if b % n0 == k - 1]
        if sorted(idx) != want:
            gone = sorted(set(want) - set(idx))
            raise InputError(f"{p} lacks block{'s' if len(gone) > 1 else ''} "
                             f"{', '.join(map(str, gone[:5]))}: it is incomplete or was changed")
        offsets[k] = (p, idx)
    blocks = sorted((b, k) for k, (_, idx) in offsets.items() for b in idx)
    tmp = partial_path(Path(out))
    try:
        with open(tmp, "wb") as dst:
            dst.write(ref[2].encode())
            handles = {k: open(p, "rb") for k, (p, _) in offsets.items()}
            try:
                for b, k in blocks:
                    a, z = offsets[k][1][b]
                    fh = handles[k]
                    fh.seek(a)
                    dst.write(fh.read(z - a))
            finally:
                for h in handles.values():
                    h.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _merge_counts(paths: list[Path], out: Path, header: str) -> None:
    """Per-sample count tables of the shards of one run -> one table of their sums."""
    total: dict[str, list[int]] = {}
    order: list[str] = []
    for p in paths:
        with open(p) as fh:
            for line in fh:
                if line == header or line.startswith("#"):
                    continue
                name, *vals = line.rstrip("\n").split("\t")
                if name not in total:
                    total[name] = [0] * len(vals)
                    order.append(name)
                total[name] = [a + int(b) for a, b in zip(total[name], vals)]
    tmp = partial_path(Path(out))
    tmp.write_text(header + "".join(f"{n}\t" + "\t".join(map(str, total[n])) + "\n" for n in order))
    os.replace(tmp, out)


def merge_outputs(inputs: list[Path], out: Path) -> None:
    """``varfx merge``: HDF5 shards (``.h5``/``.hdf5``) or TSV shards, by their content."""
    from .run import check_out

    if not inputs:
        raise OptionError("varfx merge needs the shard files")
    out = check_out(out, "--out")
    check_not_inputs({"--out": out}, {"shards": list(inputs)})
    is_h5 = [h5py.is_hdf5(p) if Path(p).is_file() else Path(p).suffix in (".h5", ".hdf5") for p in inputs]
    if all(is_h5):
        merge_h5(inputs, out)
    elif not any(is_h5):
        merge_text(inputs, out)
    else:
        raise InputError("the shards mix HDF5 and text files: merge each kind separately")
