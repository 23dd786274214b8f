"""The command line: a thin shell over the library.  Errors are one line, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .errors import VarfxError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _close_progress_bars() -> None:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


#: the options through which commands write files (calibrate's --scores too; a SCORES argument is read);
#: every other path a command is given is read
OUTPUT_OPTIONS = ("out", "tsv", "tsv_long", "skipped_tsv", "out_vcf", "genes_tsv", "scores", "write_background")


def refuse_overwriting_inputs(ctx: click.Context) -> None:
    """Every command: an output option may not name a file the command reads (writers.check_not_inputs)."""
    from .writers import check_not_inputs

    outputs = [p.name for p in ctx.command.params if isinstance(p, click.Option) and p.name in OUTPUT_OPTIONS]
    check_not_inputs({f"--{n.replace('_', '-')}": ctx.params.get(n) for n in outputs},
                     {n.replace("_", " "): v for n, v in ctx.params.items() if n not in outputs})


class VarfxCommand(click.Command):
    def invoke(self, ctx):
        refuse_overwriting_inputs(ctx)
        return super().invoke(ctx)


class VarfxGroup(click.Group):
    """A click group that turns every user error into one line on stderr and an exit code."""

    command_class = VarfxCommand

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        def fail(message: str, code: int):
            _close_progress_bars()  # so that the error starts a line of its own
            click.echo(f"varfx: error: {message}", err=True)
            sys.exit(code)

        try:
            rv = super().main(args, prog_name or "varfx", complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:  # click's form of Ctrl-C
            fail("interrupted (run the same command with --resume to continue)", 130)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
            fail(exc.format_message().replace("\n", " ") + hint, exc.exit_code)
        except click.ClickException as exc:
            fail(exc.format_message().replace("\n", " "), exc.exit_code)
        except VarfxError as exc:
            fail(str(exc).replace("\n", " "), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except MemoryError:
            fail("out of memory: lower --batch-size", 1)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            fail(f"{exc.strerror or exc}{where}", 1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=VarfxGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="varfx")
def cli():
    """Score genetic variants with sequence-to-function deep-learning models."""


def _set_threads(ctx, param, value):
    if value:
        import torch

        torch.set_num_threads(value)  # intra-op threads of the model's forward pass
    return value


_EXTRAS = "varfx_backend_extras"


def _keep(ctx, param, value):
    if value is not None:
        ctx.meta.setdefault(_EXTRAS, {})[param.name] = value
    return value


def backend_extras(**more) -> dict:
    """The backend options given on the command line (spec, head, incremental, compile), plus ``more``
    that are not None: what load_backend takes besides the backend's name and weights."""
    got = dict(click.get_current_context().meta.get(_EXTRAS, {}))
    got.update({k: v for k, v in more.items() if v is not None})
    return got


def inference_options(f):
    """--rc, --shifts, --batch-size, --device, --precision: how every command that runs a model runs it."""
    for decorator in reversed([
            click.option("--rc", is_flag=True, help="Average forward and reverse-complement predictions."),
            click.option("--shifts", default="0", show_default=True,
                         help="Average over windows shifted by these bp, e.g. -1,0,1."),
            click.option("--batch-size", type=int, default=64, show_default=True, help="Sequences per forward pass."),
            click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
            click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32",
                         show_default=True, help="bf16/fp16: the model runs in autocast (statistics stay float32).")]):
        f = decorator(f)
    return f


def backend_options(f):
    """--backend, --weights, --spec, --head, --no-incremental, --compile (and --threads): shared by every
    command that loads a model.  The options after --weights reach the command through backend_extras()."""
    f = click.option("--threads", type=click.IntRange(min=1), default=None, expose_value=False,
                     callback=_set_threads,
                     help="CPU threads for the model (default: torch's, usually the cores; on shared nodes set it "
                          "to the cores the job was given).")(f)
    f = click.option("--compile", "compile", flag_value=True, default=None, expose_value=False, callback=_keep,
                     help="enformer: compile the model with torch.compile (a one-off cost, then faster forward "
                          "passes on a GPU; docs/enformer.md).")(f)
    f = click.option("--no-incremental", "incremental", flag_value=False, default=None, expose_value=False,
                     callback=_keep, help="enformer: always run the full model for ALT (no incremental pass).")(f)
    f = click.option("--head", expose_value=False, callback=_keep, help="enformer: human (default) or mouse.")(f)
    f = click.option("--spec", type=click.Path(dir_okay=False), expose_value=False, callback=_keep,
                     help="JSON spec of a torchscript model (default: the weights file with .json).")(f)
    f = click.option("--weights", "weights", multiple=True, metavar="PATH",
                     help="Weight file(s) or folder; repeat for ensembles (e.g. CLIPNET folds).")(f)
    f = click.option("--backend", required=True, metavar="NAME", help="Model family (see `varfx backends`).")(f)
    return f


@cli.command(context_settings=CONTEXT)
@click.argument("vcf", type=click.Path(dir_okay=False))
@click.option("--fasta", required=True, type=click.Path(dir_okay=False), help="Reference genome FASTA (indexed or not).")
@backend_options
@click.option("--out", type=click.Path(dir_okay=False), help="HDF5 output (basenji sad.h5 layout).")
@click.option("--tsv", type=click.Path(dir_okay=False), help="Wide TSV: one row per variant, STAT:TRACK columns.")
@click.option("--tsv-long", type=click.Path(dir_okay=False), help="Long TSV: one row per variant, track and statistic.")
@click.option("--skipped-tsv", type=click.Path(dir_okay=False),
              help="TSV of the variants not scored, with reasons (default without --out: beside --tsv).")
@click.option("--region", multiple=True, metavar="CHR:START-END",
              help="Only the records overlapping these regions, each once (repeatable; needs a .tbi/.csi index; "
                   "a contig name with ':' may be written {NAME}:START-END).")
@click.option("--ref-mismatch", type=click.Choice(["skip", "error"]), default="skip", show_default=True,
              help="What to do when REF disagrees with the FASTA.")
@click.option("--short-contigs", type=click.Choice(["error", "skip", "pad"]), default=None,
              help="Variants on contigs shorter than the model's window  [default: error; spliceai: pad]")
@click.option("--bins", default=None,
              help="Bins to sum: variant (±128 bp; the default for most backends), variant:MARGIN, all, center:K.")
@click.option("--stat", "stats", multiple=True, metavar="LIST",
              help="Statistics: SAD, logSED, D1, D2, TOTAL, logTOTAL, QTL, JSD (comma list or repeated; "
                   "default SAD,logSED).")
@click.option("--pseudocount", type=float, default=1.0, show_default=True, help="c in logSED and logTOTAL.")
@inference_options
@click.option("--tracks", metavar="SELECTION", help="Index list (0,5-9), a file of track ids, or a regex on descriptions.")
@click.option("--float32", "float32", is_flag=True, help="Store scores as float32 in HDF5 (default float16).")
@click.option("--out-vcf", type=click.Path(dir_okay=False),
              help="The input VCF with INFO fields carrying the scores (.vcf, .vcf.gz or .bcf; docs/formats.md).")
@click.option("--vcf-stats", multiple=True, metavar="LIST",
              help="With --out-vcf: statistics to write (comma list or repeated; default: all of --stat).")
@click.option("--vcf-tracks", metavar="SELECTION",
              help="With --out-vcf: tracks with INFO fields of their own (as --tracks, on the scored tracks; "
                   "all or none; default none: summaries only).")
@click.option("--annotation", help="spliceai: grch37, grch38 or a gene table in SpliceAI's format.")
@click.option("--distance", type=int, help="spliceai: max distance (bp) between variant and splice site [50].")
@click.option("--mask", is_flag=True, default=None,
              help="spliceai: mask annotated-site gains and unannotated-site losses.")
@click.option("--genotypes", type=click.Path(dir_okay=False),
              help="Cohort VCF/BCF with GT: score each variant on each sample's own background (docs/personal.md).")
@click.option("--samples", help="With --genotypes: a comma list or a file of sample names (default: all).")
@click.option("--haplotypes", type=click.Choice(["mean", "both"]), default=None,
              help="With --genotypes and a one-hot backend: average the two haplotypes' predictions or keep both.")
@click.option("--contrast", is_flag=True,
              help="With --genotypes: also score each sample's own genotype at the variant vs hom-REF.")
@click.option("--shard", metavar="K/N", help="Score the K-th of N parts of the input (blocks of records; docs/hpc.md).")
@click.option("--block-records", type=int, default=None,
              help="Records per block (default 1,024): the unit of --shard and --resume; shards and resumes of one "
                   "run must use the same.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes building windows ahead of the model (0: one background thread).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run (same command) from its last complete block.")
@click.option("--genes", type=click.Path(dir_okay=False),
              help="GTF[.gz]: also score each gene with a TSS in the output window, on its TSS bins (docs/genes.md).")
@click.option("--genes-tsv", type=click.Path(dir_okay=False),
              help="TSV of (variant, gene) rows (default with --tsv: beside it as NAME.genes.tsv).")
@click.option("--tss-margin", type=int, default=None,
              help="With --genes: bp each side of a TSS whose bins count (default: one bin).")
@click.option("--calibration", type=click.Path(dir_okay=False),
              help="cal.h5 from `varfx calibrate`: add STAT_pct, each score's signed percentile (docs/calibration.md).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def score(vcf, fasta, backend, weights, out, tsv, tsv_long, skipped_tsv, region, ref_mismatch, short_contigs, bins,
          stats, pseudocount, rc, shifts, tracks, batch_size, device, precision, float32, out_vcf, vcf_stats,
          vcf_tracks, annotation, distance, mask, genotypes, samples, haplotypes, contrast, shard, block_records,
          workers, resume, genes, genes_tsv, tss_margin, calibration, quiet):
    """Score every ALT allele in VCF with a model: REF vs ALT windows, per-track effects."""
    from .run import score_vcf

    stat_list = [s for chunk in stats for s in chunk.split(",")] or None
    summary = score_vcf(vcf, fasta, backend, list(weights), out, tsv, tsv_long, skipped_tsv=skipped_tsv, region=list(region) or None,
                        ref_mismatch=ref_mismatch, short_contigs=short_contigs, bins=bins, stats=stat_list,
                        pseudocount=pseudocount, rc=rc, shifts=shifts, tracks=tracks, batch_size=batch_size,
                        device=device, precision=precision, float32=float32, quiet=quiet, out_vcf=out_vcf,
                        vcf_stats=list(vcf_stats) or None, vcf_tracks=vcf_tracks,
                        genotypes=genotypes, samples=samples, haplotypes=haplotypes, contrast=contrast,
                        shard=shard, resume=resume, block_records=block_records,
                        genes=genes, genes_tsv=genes_tsv, tss_margin=tss_margin, calibration=calibration,
                        workers=workers, **backend_extras(annotation=annotation, distance=distance, mask=mask))
    click.echo(summary.report(), err=True)


@cli.command(context_settings=CONTEXT)
@click.option("--bed", required=True, type=click.Path(dir_okay=False), help="Regions (BED: CHROM START END [NAME]).")
@click.option("--fasta", required=True, type=click.Path(dir_okay=False), help="Reference genome FASTA.")
@backend_options
@click.option("--genotypes", type=click.Path(dir_okay=False),
              help="Cohort VCF/BCF with GT: predict each sample's own sequence (default: the reference only).")
@click.option("--samples", help="With --genotypes: a comma list or a file of sample names (default: all).")
@click.option("--haplotypes", type=click.Choice(["mean", "both"]), default=None,
              help="One-hot backends: average the two haplotypes' predictions or keep both.")
@click.option("--out", type=click.Path(dir_okay=False), help="HDF5 output: sum, total (and profile) per region and sample.")
@click.option("--tsv", type=click.Path(dir_okay=False), help="TSV: one row per region and sample.")
@click.option("--profile", is_flag=True, help="Also store every output bin (HDF5 dataset 'profile').")
@inference_options
@click.option("--tracks", metavar="SELECTION", help="Index list, a file of track ids, or a regex on descriptions.")
@click.option("--float32", "float32", is_flag=True, help="Store profiles as float32 (default float16).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def predict(bed, fasta, backend, weights, genotypes, samples, haplotypes, out, tsv, profile, rc, shifts, tracks,
            batch_size, device, precision, float32, quiet):
    """Predicted tracks over BED regions, per sample of a cohort (or for the reference)."""
    from .regions_run import predict_regions

    summary = predict_regions(bed, fasta, backend, list(weights), out, tsv, genotypes=genotypes, samples=samples,
                              haplotypes=haplotypes, profile=profile, rc=rc, shifts=shifts, tracks=tracks,
                              batch_size=batch_size, device=device, precision=precision, float32=float32,
                              quiet=quiet, **backend_extras())
    click.echo(summary.report(), err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The merged file (HDF5 or TSV, as the shards).")
def merge(shards, out):
    """Merge the outputs of `varfx score --shard 1/N … N/N` into one file (equal to an unsharded run's)."""
    from .blocks import merge_outputs

    merge_outputs([Path(p) for p in shards], Path(out))
    click.echo(f"merged {len(shards)} shards into {out}", err=True)


@cli.command(context_settings=CONTEXT)
def backends():
    """List the backends and what each needs."""
    from .backends import available

    for name, info in available().items():
        click.echo(f"{name}\t{info['origin']}\t{info['summary']}")
        if info["needs"]:
            click.echo(f"\tneeds: {info['needs']}")


@cli.command(context_settings=CONTEXT)
@backend_options
@click.option("--tracks", metavar="SELECTION", help="Show only these (same syntax as in `varfx score`).")
def tracks(backend, weights, tracks):
    """List a model's output tracks (index, id, description)."""
    from .backends import backend_class
    from .tracks import select_tracks

    cls = backend_class(backend)
    table = cls.track_table(list(weights), **backend_extras())
    chosen = select_tracks(table, tracks)
    click.echo("index\tid\tdescription")
    for i in chosen:
        click.echo(f"{i}\t{table['id'].iloc[i]}\t{table['description'].iloc[i]}")


@cli.command(context_settings=CONTEXT)
@click.argument("scores", type=click.Path(dir_okay=False))
@click.option("--stat", default=None, help="Statistic to rank by (default: the file's first).")
@click.option("-n", "--number", type=click.IntRange(min=1), default=10, show_default=True)
def top(scores, stat, number):
    """Show the variants with the largest |score| at any track."""
    from .results import top_variants

    table = top_variants(scores, stat, number)
    if table.attrs.get("note"):
        click.echo(table.attrs["note"], err=True)
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4g}") if len(table) else "(no variants)")


@cli.command("export", context_settings=CONTEXT)
@click.argument("scores", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["finemap"]), required=True,
              help="finemap: one row per variant keyed by chrom:pos:ref:alt, bgzip + tabix (docs/finemapping.md).")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The table, a .gz name (TABLE.tbi is written beside it).")
@click.option("--stat", "stats", multiple=True, metavar="LIST",
              help="Statistics to export (comma list or repeated; default: all in the file).")
@click.option("--tracks", metavar="SELECTION",
              help="Tracks with their own columns: index list, file of ids, regex on descriptions, all or none "
                   "(default: all when the file has at most 50 tracks, else none).")
def export(scores, fmt, out, stats, tracks):
    """Export a scores file as a sorted, bgzip-compressed, tabix-indexed table."""
    from .export import export_table

    summary = export_table(scores, out, fmt, stats=list(stats) or None, tracks=tracks)
    click.echo(summary.report(), err=True)


@cli.command(context_settings=CONTEXT)
@click.option("--region", required=True, metavar="CHR:START-END",
              help="Bases to mutate (1-based, inclusive); the window is centred on the region's centre base.")
@click.option("--fasta", required=True, type=click.Path(dir_okay=False), help="Reference genome FASTA.")
@backend_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="HDF5 output (docs/ism.md).")
@click.option("--tsv", type=click.Path(dir_okay=False), help="Long TSV: chrom pos ref alt track stat value.")
@click.option("--stat", "stats", multiple=True, metavar="LIST", help="Statistics, as in `varfx score`.")
@click.option("--bins", default=None, help="Bins to sum, as in `varfx score`, around the window centre.")
@click.option("--pseudocount", type=float, default=1.0, show_default=True, help="c in logSED and logTOTAL.")
@inference_options
@click.option("--tracks", metavar="SELECTION", help="Index list, a file of track ids, or a regex on descriptions.")
@click.option("--short-contigs", type=click.Choice(["error", "pad"]), default="error", show_default=True,
              help="A contig shorter than the window: refuse, or score on an N-padded window.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def ism(region, fasta, backend, weights, out, tsv, stats, bins, pseudocount, rc, shifts, tracks,
        short_contigs, batch_size, device, precision, quiet):
    """Saturation mutagenesis: every base of a region changed to each other base, scored as `varfx score`."""
    from .ism import saturation_mutagenesis

    stat_list = [s for chunk in stats for s in chunk.split(",")] or None
    summary = saturation_mutagenesis(region, fasta, backend, list(weights), out, tsv, stats=stat_list, bins=bins,
                                     tracks=tracks, rc=rc, shifts=shifts, pseudocount=pseudocount,
                                     batch_size=batch_size, device=device, precision=precision, quiet=quiet,
                                     short_contigs=short_contigs,
                                     **backend_extras())
    click.echo(summary.report(), err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("scores", required=False, type=click.Path(dir_okay=False))
@click.option("--variant", "variant_id", metavar="ID", help="With SCORES.h5: the VCF ID or CHROM:POS:REF:ALT to draw.")
@click.option("--ism", "ism_file", type=click.Path(dir_okay=False), help="Draw a `varfx ism` output instead.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The figure (.png, .pdf or .svg).")
@click.option("--tracks", metavar="SELECTION",
              help="With --variant: tracks to draw, as in `varfx score` (default: the run's, at most 6 of them).")
@click.option("--genes", type=click.Path(dir_okay=False), help="With --variant: a GTF; TSSs in the window are marked.")
@click.option("--track", metavar="ID", help="With --ism: one track (id or index; default: the mean over tracks).")
@click.option("--stat", default=None, help="With --ism: the statistic (default: the file's first).")
@click.option("--device", default="auto", show_default=True, help="With --variant: where the model runs.")
@click.option("--dpi", type=click.IntRange(20, 600), default=100, show_default=True)
def plot(scores, variant_id, ism_file, out, tracks, genes, track, stat, device, dpi):
    """Draw one variant's REF/ALT tracks (SCORES.h5 --variant ID) or an ISM heat map (--ism ism.h5)."""
    from .errors import OptionError
    from . import plot as P

    P._matplotlib()  # a one-line error without matplotlib, whatever else is wrong
    if ism_file is not None:
        if scores is not None or variant_id is not None or tracks is not None or genes is not None:
            raise OptionError("--ism draws an ISM file alone: drop SCORES, --variant, --tracks and --genes")
        res = P.plot_ism(ism_file, out, track=track, stat=stat, dpi=dpi)
    else:
        if scores is None or variant_id is None:
            raise OptionError("give SCORES.h5 --variant ID (a variant's tracks) or --ism ism.h5 (a heat map)")
        if track is not None or stat is not None:
            raise OptionError("--track and --stat go with --ism; with --variant choose tracks with --tracks")
        res = P.plot_variant(scores, variant_id, out, tracks=tracks, genes=genes, device=device, dpi=dpi)
    size = f" ({res.width_px} × {res.height_px} px)" if res.path.suffix.lower() in (".png", "") else ""
    click.echo(f"wrote {res.path}{size}", err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("scores", type=click.Path(dir_okay=False))
@click.option("--vcf", "vcf", required=True, type=click.Path(dir_okay=False), help="The VCF/BCF that was scored.")
@click.option("--out-vcf", required=True, type=click.Path(dir_okay=False),
              help="The annotated VCF (.vcf, .vcf.gz or .bcf; docs/formats.md).")
@click.option("--vcf-stats", multiple=True, metavar="LIST",
              help="Statistics to write (comma list or repeated; default: all in the file).")
@click.option("--vcf-tracks", metavar="SELECTION",
              help="Tracks with INFO fields of their own: index list, file of ids, regex on descriptions, all or "
                   "none (default none: summaries only).")
def annotate(scores, vcf, out_vcf, vcf_stats, vcf_tracks):
    """Write the scored VCF with INFO fields from a finished (e.g. merged) scores file."""
    from .annotate import annotate_vcf

    done = annotate_vcf(scores, vcf, out_vcf, stats=list(vcf_stats) or None, tracks=vcf_tracks)
    click.echo(done.report(), err=True)


@cli.command(context_settings=CONTEXT)
@click.option("--tss", required=True, metavar="CHR:POS", help="The TSS (1-based); the window is centred on it.")
@click.option("--fasta", required=True, type=click.Path(dir_okay=False), help="Reference genome FASTA.")
@backend_options
@click.option("--out", type=click.Path(dir_okay=False), help="HDF5 output: activities per test, tile and shuffle.")
@click.option("--tsv", type=click.Path(dir_okay=False), help="TSV: one row per test and tile (docs/perturb.md).")
@click.option("--tracks", metavar="SELECTION",
              help="Tracks whose TSS bins make the activity: index list, file of ids, or regex (default: all).")
@click.option("--tests", default="all", show_default=True,
              help="Comma list of context, necessity, sufficiency, distance, interaction, greedy.")
@click.option("--tile-size", type=int, default=5000, show_default=True, help="Tile length in bp.")
@click.option("--shuffles", type=int, default=10, show_default=True, help="Dinucleotide shuffles per perturbation.")
@click.option("--top-k", type=int, default=3, show_default=True,
              help="Most necessary tiles whose pairs and sets the interaction test shuffles together; rounds of "
                   "the greedy search.")
@click.option("--greedy-find", type=click.Choice(["enhancers", "silencers"]), default="enhancers", show_default=True,
              help="Greedy search: take the tile whose shuffle lowers (enhancers) or raises (silencers) the "
                   "activity most, --top-k rounds.")
@click.option("--distance-tile", type=int, default=None,
              help="Tile (index) the distance test moves (default: the most sufficient).")
@click.option("--tss-margin", type=int, default=1, show_default=True,
              help="Activity = bins overlapping the TSS ± this many bp (1: the bins either side of it).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the shuffles.")
@inference_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def perturb(tss, fasta, backend, weights, out, tsv, tracks, tests, tile_size, shuffles, top_k, greedy_find,
            distance_tile, tss_margin, seed, rc, shifts, batch_size, device, precision, quiet):
    """CREME's perturbation tests (context, necessity, sufficiency, distance, interactions, greedy search) around a TSS."""
    from .perturb import perturb_tss

    summary = perturb_tss(tss, fasta, backend, list(weights), out, tsv, tracks=tracks, tile_size=tile_size,
                          shuffles=shuffles, top_k=top_k, seed=seed, tests=tests, distance_tile=distance_tile,
                          greedy_find=greedy_find,
                          tss_margin=tss_margin, rc=rc, shifts=shifts, batch_size=batch_size, device=device,
                          precision=precision, quiet=quiet,
                          **backend_extras())
    click.echo(summary.report(), err=True)


def _backend_optional(f):
    """backend_options with --backend optional: `varfx calibrate --from` pools scores without a model."""
    f = backend_options(f)
    for p in getattr(f, "__click_params__", ()):
        if p.name == "backend":
            p.required = False
    return f


@cli.command(context_settings=CONTEXT)
@click.argument("from_files", nargs=-1, type=click.Path(dir_okay=False), metavar="[SCORES.h5]...")
@click.option("--from", "pool", is_flag=True,
              help="Pool the finished background score files given as arguments (e.g. shards) into --out.")
@click.option("--fasta", type=click.Path(dir_okay=False), help="Reference genome FASTA (to draw and score).")
@_backend_optional
@click.option("--random", "n_random", type=int, metavar="N", help="Draw N random SNVs from --fasta as the background.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of --random.")
@click.option("--match", type=click.Path(dir_okay=False),
              help="With --random: match Ti/Tv and flank GC to the SNVs of this VCF (docs/calibration.md).")
@click.option("--contigs", metavar="LIST", help="With --random: draw from these contigs only (comma list).")
@click.option("--write-background", type=click.Path(dir_okay=False),
              help="With --random: the drawn VCF (default: beside the output as NAME.background.vcf); alone: "
                   "draw only.")
@click.option("--background", type=click.Path(dir_okay=False), help="Use this VCF as the background, as is.")
@click.option("--out", type=click.Path(dir_okay=False), help="The calibration (cal.h5).")
@click.option("--scores", type=click.Path(dir_okay=False),
              help="Keep the background's scores here (needed with --shard).")
@click.option("--keep-scores", is_flag=True, help="Keep the background's scores beside --out as NAME.scores.h5.")
@click.option("--quantiles", type=int, default=1000, show_default=True,
              help="Quantiles Q stored per track: percentiles exact to 100/Q (exact when the background is smaller).")
@click.option("--bins", default=None, help="Bins to sum, as in `varfx score`.")
@click.option("--stat", "stats", multiple=True, metavar="LIST", help="Statistics, as in `varfx score`.")
@click.option("--pseudocount", type=float, default=1.0, show_default=True, help="c in logSED and logTOTAL.")
@inference_options
@click.option("--tracks", metavar="SELECTION", help="Index list, a file of track ids, or a regex on descriptions.")
@click.option("--shard", metavar="K/N", help="Score the K-th of N parts of the background (writes --scores only).")
@click.option("--block-records", type=int, default=None, help="Records per block, as in `varfx score`.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes building windows ahead of the model.")
@click.option("--resume", is_flag=True, help="Continue an interrupted background run (its scores must be kept).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def calibrate(from_files, pool, fasta, backend, weights, n_random, seed, match, contigs, write_background,
              background, out, scores, keep_scores, quantiles, bins, stats, pseudocount, rc, shifts, tracks,
              batch_size, device, precision, shard, block_records, workers, resume, quiet):
    """Score a background of random SNVs and store per-track score quantiles, for `varfx score --calibration`."""
    from .calibrate import calibrate as run_calibration
    from .errors import OptionError

    if from_files and not pool:
        raise OptionError(f"unexpected argument {from_files[0]}: pool finished score files with --from FILE…")
    if pool and not from_files:
        raise OptionError("--from needs the background score files (e.g. bg1.h5 bg2.h5 …)")
    stat_list = [s for chunk in stats for s in chunk.split(",")] or None
    summary = run_calibration(out, fasta=fasta, backend=backend, weights=list(weights), random=n_random, seed=seed,
                              match=match, background=background, write_background=write_background,
                              contigs=[c for c in contigs.split(",") if c] if contigs else None, scores=scores,
                              keep_scores=keep_scores, from_scores=list(from_files) if pool else None,
                              quantiles=quantiles, shard=shard, resume=resume, block_records=block_records,
                              workers=workers, bins=bins, stats=stat_list, pseudocount=pseudocount, rc=rc,
                              shifts=shifts, tracks=tracks, batch_size=batch_size, device=device,
                              precision=precision, quiet=quiet,
                              **backend_extras())
    click.echo(summary.report(), err=True)


def main():
    cli()


if __name__ == "__main__":
    main()
