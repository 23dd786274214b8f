"""A synthetic cohort: random SNVs and indels on a genome, genotypes for many samples (tests, benchmarks)."""

from __future__ import annotations

import random
from pathlib import Path

HEADER = ["##fileformat=VCFv4.2",
          '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">']


def random_records(seqs: dict[str, str], n: int, rng: random.Random, indel_rate: float = 0.15,
                   contigs: list[str] | None = None, margin: int = 10) -> list[tuple[str, int, str, list[str]]]:
    """n sites (chrom, 1-based pos, REF, [ALT, …]) at distinct positions, sorted; some multi-allelic."""
    out = []
    names = contigs or list(seqs)
    used = set()
    while len(out) < n:
        chrom = rng.choice(names)
        seq = seqs[chrom]
        pos0 = rng.randrange(margin, len(seq) - margin - 10)
        if any((chrom, p) in used for p in range(pos0 - 6, pos0 + 7)):
            continue
        ref_base = seq[pos0].upper()
        if ref_base not in "ACGT":
            continue
        u = rng.random()
        if u < indel_rate / 2:  # deletion of 1-5 bp
            k = rng.randint(1, 5)
            ref, alts = seq[pos0:pos0 + k + 1].upper(), [ref_base]
            if any(b not in "ACGT" for b in ref):
                continue
        elif u < indel_rate:  # insertion of 1-5 bp
            ref, alts = ref_base, [ref_base + "".join(rng.choice("ACGT") for _ in range(rng.randint(1, 5)))]
        else:
            others = [b for b in "ACGT" if b != ref_base]
            ref, alts = ref_base, rng.sample(others, 2 if rng.random() < 0.1 else 1)
        used.add((chrom, pos0))
        out.append((chrom, pos0 + 1, ref, alts))
    order = {c: i for i, c in enumerate(seqs)}
    return sorted(out, key=lambda r: (order[r[0]], r[1]))


def random_genotypes(records, samples: list[str], rng: random.Random, freq: float = 0.3, phased: bool = True,
                     missing: float = 0.0) -> list[list[str]]:
    sep = "|" if phased else "/"
    rows = []
    for _, _, _, alts in records:
        row = []
        for _ in samples:
            if rng.random() < missing:
                row.append("." + sep + "." if rng.random() < 0.5 else ".")
                continue
            a = [0 if rng.random() > freq else rng.randint(1, len(alts)) for _ in range(2)]
            row.append(f"{a[0]}{sep}{a[1]}")
        rows.append(row)
    return rows


def write_cohort(path: Path, records, samples: list[str], genotypes: list[list[str]],
                 contigs: dict[str, int] | None = None) -> Path:
    lines = list(HEADER)
    for name, length in (contigs or {}).items():
        lines.append(f"##contig=<ID={name},length={length}>")
    lines.append("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]))
    for (chrom, pos, ref, alts), gts in zip(records, genotypes):
        lines.append("\t".join([chrom, str(pos), f"{chrom}_{pos}", ref, ",".join(alts), ".", "PASS", ".", "GT", *gts]))
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)
