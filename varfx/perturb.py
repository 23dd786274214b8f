"""``varfx perturb``: in silico perturbation tests of the cis-regulatory elements around a TSS.

The tests are those of CREME (Toneyan & Koo, "Interpreting cis-regulatory interactions from
large-scale deep neural networks", Nature Genetics 2024), rebuilt on varfx's predictor
(docs/perturb.md has the definitions, normalisations and outputs):

* the window is the model's input window with the TSS at the centre index ``c = L // 2``; it is cut
  into tiles CREME's way: a TSS tile of ``tile_size`` bp centred on the TSS, then whole tiles on
  either side, stepping out from the TSS tile (a remainder shorter than a tile at each edge belongs
  to no tile);
* the **activity** of a sequence is the model's prediction summed over the bins that overlap
  ``[c − margin, c + margin)`` and over the selected tracks (``--tracks``);
* **context**: the TSS tile kept, everything else dinucleotide-shuffled (one background per shuffle);
* **necessity**: each tile dinucleotide-shuffled in the native sequence;
* **sufficiency**: each tile put back, with the TSS tile, into the shuffled backgrounds;
* **distance**: one tile (default the most sufficient) placed at every tile position of the
  shuffled backgrounds, with the TSS tile;
* **interaction**: the top-k necessary tiles shuffled together (every pair, and the top 3, 4, … k)
  against the sum of their single effects;
* **greedy**: CREME's higher-order interaction test, a greedy search: in each of k rounds every tile
  not yet taken is shuffled in the current sequence, the one whose shuffle lowers the activity most
  (``--greedy-find enhancers``; raises it most: ``silencers``) is taken, and its shuffle closest to
  the round's mean stays in the sequence for the next round; the trace is compared with the additive
  expectation from the first round's single-tile effects.

Shuffles are seeded: background ``s`` and the shuffle ``s`` of each tile are the same in every test
that uses them, whatever tests run and whatever the batch size, so that paired comparisons
(sufficiency against the TSS-only baseline, a set against its tiles) share their randomness.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from . import __version__
from .backends import Backend, backend_class
from .errors import InputError, OptionError
from .genome import Genome
from .results import open_complete, strings
from .run import ModelRun, check_out, sha256, work_unit
from .shuffle import dinuc_shuffle
from .writers import STR, atomic_path, begin_h5, format_values

OUTPUT_KIND = "perturb"
TESTS = ("context", "necessity", "sufficiency", "distance", "interaction", "greedy")
GREEDY_FIND = ("enhancers", "silencers")  # the greedy search takes the lowest / highest activity each round
DEFAULT_TILE_SIZE = 5000
DEFAULT_SHUFFLES = 10
DEFAULT_TOP_K = 3
DEFAULT_TSS_MARGIN = 1
#: CREME's context classes on (WT − context) / WT: above 0.95 enhancing, within (−0.05, 0.05] neutral,
#: at or below −0.3 silencing, anything else "other".
CONTEXT_THRESHOLDS = {"enhancing": 0.95, "neutral": 0.05, "silencing": -0.3}
#: purposes in the shuffle seeds: background s is rng([seed, 0]); tile t's shuffles are rng([seed, 1, t])
_BACKGROUND, _TILE = 0, 1

#: the TSV's columns, in order (docs/perturb.md describes each)
COLUMNS = ("chrom", "tss", "test", "tile", "source_tile", "start", "end", "distance_to_tss", "activity", "sd",
           "shuffles", "baseline", "delta", "effect", "expected", "interaction", "class", "round")


# -- layout ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TileGrid:
    """CREME's tiles of a window of ``length`` bp: the TSS tile and the others, in window coordinates."""

    length: int
    size: int
    tss: tuple[int, int]  # [start, end) of the TSS tile
    starts: np.ndarray  # starts of the other tiles, left to right

    @property
    def n(self) -> int:
        return int(self.starts.size)

    @property
    def ends(self) -> np.ndarray:
        return self.starts + self.size

    def span(self, t: int) -> tuple[int, int]:
        s = int(self.starts[t])
        return s, s + self.size


def tile_grid(length: int, size: int) -> TileGrid:
    """The TSS tile ``[c − size // 2, c − size // 2 + size)`` (``c = length // 2``) and every whole tile
    of ``size`` bp stepping out from it to each side; a user-facing error if no other tile fits."""
    if size < 2:
        raise OptionError(f"--tile-size {size}: tiles must be at least 2 bp (dinucleotide shuffles)")
    if size > length:
        raise OptionError(f"--tile-size {size:,} is larger than the model's {length:,}-bp window: "
                          f"use a smaller tile, e.g. --tile-size {max(2, length // 16):,}")
    c = length // 2
    t0 = c - size // 2
    left = list(range(t0 - size, -1, -size))[::-1]
    right = list(range(t0 + size, length - size + 1, size))
    starts = np.array(left + right, dtype=np.int64)
    if starts.size == 0:
        raise OptionError(f"--tile-size {size:,} leaves no tile beside the TSS tile in the {length:,}-bp window "
                          f"(at most {length // 3:,} bp; e.g. --tile-size {max(2, length // 16):,})")
    return TileGrid(length, size, (t0, t0 + size), starts)


def tss_bins(geom, margin: int) -> tuple[int, int]:
    """[first, last) output bins overlapping ``[c − margin, c + margin)`` of the window."""
    if margin < 1:
        raise OptionError(f"--tss-margin {margin}: must be at least 1 bp (1: the bins either side of the TSS)")
    c, bs, off, nb = geom.center, geom.bin_size, geom.bin_offset, geom.output_bins
    first = (c - margin - off) // bs
    last = -(-(c + margin - off) // bs)
    first, last = max(first, 0), min(last, nb)
    if last <= first:
        raise OptionError(f"this model's output bins ([{off}, {off + nb * bs}) of the window) do not cover the TSS "
                          f"at window position {c} ± {margin} bp")
    return int(first), int(last)


def parse_tss(text: str) -> tuple[str, int]:
    """'chr1:1,000,000' -> ('chr1', 1000000): a contig and a 1-based position."""
    m = re.fullmatch(r"\s*([^:\s]+):(\d[\d,]*)\s*", text or "")
    if not m:
        raise OptionError(f"--tss {text!r} is not of the form CHROM:POS (1-based, e.g. chr1:1000000)")
    return m.group(1), int(m.group(2).replace(",", ""))


def parse_tests(text) -> tuple[str, ...]:
    """'context,necessity' (or a list) -> the tests in canonical order; None or 'all': every test."""
    if text is None or (isinstance(text, str) and text.strip() in ("", "all")):
        return TESTS
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    bad = [t for t in items if t not in TESTS]
    if bad or not items:
        raise OptionError(f"--tests {text!r}: choose from {', '.join(TESTS)} (comma list) or all")
    return tuple(t for t in TESTS if t in items)


def context_class(effect: float) -> str:
    """CREME's context class of a context effect (WT − context) / WT."""
    th = CONTEXT_THRESHOLDS
    if not np.isfinite(effect):
        return "undefined"
    if effect > th["enhancing"]:
        return "enhancing"
    if -th["neutral"] < effect <= th["neutral"]:
        return "neutral"
    if effect <= th["silencing"]:
        return "silencing"
    return "other"


# -- results -----------------------------------------------------------------------------------------


@dataclass
class Activities:
    """One test's activities: ``activity`` (rows, shuffles, tracks); ``baseline`` is the scalar activity
    its effects are measured against (WT, or the TSS-only shuffled context)."""

    activity: np.ndarray
    baseline: float

    @property
    def total(self) -> np.ndarray:
        """(rows, shuffles): the activity summed over the selected tracks."""
        return self.activity.sum(-1)

    @property
    def mean(self) -> np.ndarray:
        return self.total.mean(-1)

    @property
    def sd(self) -> np.ndarray:
        """Standard deviation over shuffles (population, ddof = 0, as CREME's np.std)."""
        return self.total.std(-1)


@dataclass
class PerturbResult:
    """Everything the tests measured around one TSS (window coordinates; see docs/perturb.md)."""

    grid: TileGrid
    shuffles: int
    wild_type: np.ndarray  # (tracks,)
    context: Activities | None = None
    necessity: Activities | None = None
    sufficiency: Activities | None = None
    distance: Activities | None = None
    distance_tile: int | None = None
    interaction: Activities | None = None
    sets: list[tuple[int, ...]] = field(default_factory=list)  # tiles of each interaction row (ascending)
    top: list[int] = field(default_factory=list)  # the top-k necessary tiles, most necessary first
    greedy: "Greedy | None" = None

    @property
    def wt(self) -> float:
        return float(self.wild_type.sum())

    def _norm(self, x):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(x, dtype=np.float64) / self.wt if self.wt != 0 else np.full(np.shape(x), np.nan)

    def context_effect(self) -> float:
        """(WT − mean context activity) / WT."""
        return float(self._norm(self.wt - self.context.mean[0]))

    def necessity_effect(self) -> np.ndarray:
        """(WT − mean activity with the tile shuffled) / WT, per tile: the drop."""
        return self._norm(self.wt - self.necessity.mean)

    def sufficiency_effect(self) -> np.ndarray:
        """(mean activity with the tile and the TSS tile − mean TSS-only activity) / WT, per tile."""
        return self._norm(self.sufficiency.mean - self.context.mean[0])

    def distance_effect(self) -> np.ndarray:
        """(mean activity with the tile at each position − mean TSS-only activity) / WT, per position."""
        return self._norm(self.distance.mean - self.context.mean[0])

    def expected(self) -> np.ndarray:
        """Additive expectation of each set's activity: WT + Σ (single-tile necessity activity − WT)."""
        singles = self.necessity.mean
        return np.array([self.wt + sum(singles[t] - self.wt for t in s) for s in self.sets])

    def interaction_term(self) -> np.ndarray:
        """(mean activity with the set shuffled − additive expectation) / WT, per set."""
        return self._norm(self.interaction.mean - self.expected())

    def greedy_expected(self) -> np.ndarray:
        """Per round, the additive expectation: WT + Σ over the tiles taken so far of (their single-tile
        activity in the first round − WT)."""
        g = self.greedy
        singles = g.candidates[0]
        return self.wt + np.cumsum([singles[t] - self.wt for t in g.tiles])

    def table(self, chrom: str, tss: int, window_start: int) -> pd.DataFrame:
        """One row per test and tile (the TSV); genomic 0-based coordinates from ``window_start``."""
        g = self.grid
        rows = []
        wt = self.wt

        def row(test, tile, start=None, end=None, source=None, **values):
            dist = (start + (end - start) / 2 - (tss - 1)) if start is not None else None
            rows.append({"chrom": chrom, "tss": tss, "test": test, "tile": tile, "source_tile": source,
                         "start": start, "end": end, "distance_to_tss": dist, **values})

        row("wild_type", "window", window_start, window_start + g.length, activity=wt, sd=0.0, shuffles=1)
        ts, te = window_start + g.tss[0], window_start + g.tss[1]
        if self.context is not None:
            ctx = self.context
            eff = self.context_effect()
            row("context", "tss", ts, te, activity=ctx.mean[0], sd=ctx.sd[0], shuffles=self.shuffles, baseline=wt,
                delta=ctx.mean[0] - wt, effect=eff, **{"class": context_class(eff)})
        starts = window_start + g.starts
        for name, res, eff, base in (
                ("necessity", self.necessity, self.necessity_effect if self.necessity else None, wt),
                ("sufficiency", self.sufficiency, self.sufficiency_effect if self.sufficiency else None,
                 self.context.mean[0] if self.context else None),
                ("distance", self.distance, self.distance_effect if self.distance else None,
                 self.context.mean[0] if self.context else None)):
            if res is None:
                continue
            e = eff()
            for t in range(g.n):
                row(name, str(t), int(starts[t]), int(starts[t] + g.size),
                    source=str(self.distance_tile) if name == "distance" else None,
                    activity=res.mean[t], sd=res.sd[t], shuffles=self.shuffles, baseline=base,
                    delta=res.mean[t] - base, effect=e[t])
        if self.interaction is not None:
            res, exp, inter = self.interaction, self.expected(), self.interaction_term()
            drop = self._norm(wt - res.mean)
            for k, s in enumerate(self.sets):
                row("interaction_pair" if len(s) == 2 else "interaction_set", "+".join(map(str, s)),
                    activity=res.mean[k], sd=res.sd[k], shuffles=self.shuffles, baseline=wt,
                    delta=res.mean[k] - wt, effect=drop[k], expected=exp[k], interaction=inter[k])
        if self.greedy is not None:
            gr, exp = self.greedy, self.greedy_expected()
            mean, sd = gr.activity.sum(-1).mean(-1), gr.activity.sum(-1).std(-1)
            for r, t in enumerate(gr.tiles):
                row("greedy", str(t), int(starts[t]), int(starts[t] + g.size), activity=mean[r], sd=sd[r],
                    shuffles=self.shuffles, baseline=gr.before[r], delta=mean[r] - gr.before[r],
                    effect=self._norm(wt - mean[r]), expected=exp[r], interaction=self._norm(mean[r] - exp[r]),
                    round=r + 1)
        table = pd.DataFrame(rows, columns=list(COLUMNS))
        for col in ("start", "end", "shuffles", "round"):
            table[col] = table[col].astype("Int64")
        return table


@dataclass
class Greedy:
    """The greedy search's trace: per round r, the tile taken, the activity of the sequence entering the
    round (``before``), the taken tile's (shuffles, tracks) activities, and every tile's mean activity
    (``candidates``, NaN for tiles taken in earlier rounds)."""

    find: str
    tiles: list[int]
    before: np.ndarray  # (R,)
    activity: np.ndarray  # (R, shuffles, tracks)
    candidates: np.ndarray  # (R, tiles)


# -- running the tests -------------------------------------------------------------------------------


def _rng(seed: int, *purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, *purpose])


class _Batches:
    """Feeds blocks of frames (each (shuffles, Lx) uint8) to ``activity`` in chunks of about ``unit``
    frames and hands each block's (shuffles, tracks) result back in order."""

    def __init__(self, activity: Callable[[np.ndarray], np.ndarray], unit: int, bar):
        self.activity, self.unit, self.bar = activity, max(1, unit), bar

    def run(self, blocks) -> np.ndarray:
        out, pending, rows = [], [], 0

        def flush():
            x = np.concatenate(pending, 0)
            y = np.asarray(self.activity(x), dtype=np.float64)
            self.bar.update(x.shape[0])
            k = 0
            for b in pending:
                out.append(y[k:k + b.shape[0]])
                k += b.shape[0]
            pending.clear()

        for block in blocks:
            pending.append(block)
            rows += block.shape[0]
            if rows >= self.unit:
                flush()
                rows = 0
        if pending:
            flush()
        return np.stack(out, 0)


def count_sequences(n_tiles: int, shuffles: int, tests: tuple[str, ...], top_k: int) -> int:
    """How many sequences the tests predict (for the progress bar)."""
    n = 1
    if {"context", "sufficiency", "distance"} & set(tests):
        n += shuffles
    for t in ("necessity", "sufficiency", "distance"):
        n += n_tiles * shuffles if t in tests else 0
    if "interaction" in tests:
        n += len(interaction_sets(list(range(top_k)))) * shuffles
    if "greedy" in tests:  # round r tries the n − r tiles left; the first round is the necessity test's
        n += sum(n_tiles - r for r in range(1 if "necessity" in tests else 0, top_k)) * shuffles
    return n


def interaction_sets(top: list[int]) -> list[tuple[int, ...]]:
    """Every pair of the top tiles, then the top 3, 4, …, k together; each set in ascending order."""
    pairs = [tuple(sorted(p)) for p in itertools.combinations(top, 2)]
    nested = [tuple(sorted(top[:r])) for r in range(3, len(top) + 1)]
    return pairs + nested


def check_settings(grid: TileGrid, shuffles: int, tests: tuple[str, ...], top_k: int, distance_tile,
                   greedy_find: str = "enhancers") -> None:
    if shuffles < 1:
        raise OptionError(f"--shuffles {shuffles}: at least 1")
    if "interaction" in tests:
        if "necessity" not in tests:
            raise OptionError("--tests interaction ranks tiles by necessity: add necessity to --tests")
        if top_k < 2:
            raise OptionError(f"--top-k {top_k}: the interaction test needs at least 2 tiles")
    if greedy_find not in GREEDY_FIND:
        raise OptionError(f"--greedy-find {greedy_find!r}: choose {' or '.join(GREEDY_FIND)}")
    if "greedy" in tests and top_k < 1:
        raise OptionError(f"--top-k {top_k}: the greedy search needs at least 1 round")
    if {"interaction", "greedy"} & set(tests) and top_k > grid.n:
        raise OptionError(f"--top-k {top_k} is larger than the number of tiles ({grid.n}) with "
                          f"--tile-size {grid.size:,}: use --top-k {grid.n} or less")
    if distance_tile is not None:
        if not 0 <= distance_tile < grid.n:
            raise OptionError(f"--distance-tile {distance_tile} is not a tile index (0..{grid.n - 1})")
    elif "distance" in tests and "sufficiency" not in tests:
        raise OptionError("--tests distance moves the most sufficient tile by default: add sufficiency to --tests "
                          "or name the tile with --distance-tile")


def run_tests(activity: Callable[[np.ndarray], np.ndarray], frame: np.ndarray, margin: int, grid: TileGrid, *,
              shuffles: int = DEFAULT_SHUFFLES, seed: int = 0, tests=TESTS, top_k: int = DEFAULT_TOP_K,
              distance_tile: int | None = None, greedy_find: str = "enhancers", unit: int = 64,
              progress=None) -> PerturbResult:
    """Run the tests on one window.

    ``frame``: the wild-type window as base codes with ``margin`` extra bases each side (the frame
    :class:`varfx.predict.Predictor` takes: ``L + 2·margin``); only the central ``L`` bases are
    perturbed.  ``activity(frames)``: (N, L + 2·margin) uint8 -> (N, tracks) TSS activities.
    """
    tests = parse_tests(tests)
    check_settings(grid, shuffles, tests, top_k, distance_tile, greedy_find)
    frame = np.asarray(frame, dtype=np.uint8)
    L, m, S = grid.length, margin, shuffles
    if frame.shape != (L + 2 * m,):
        raise ValueError(f"frame has shape {frame.shape}, expected ({L + 2 * m},)")
    bar = progress if progress is not None else tqdm(disable=True)
    runner = _Batches(activity, unit, bar)
    res = PerturbResult(grid, S, runner.run([frame[None]])[0, 0])
    native = np.broadcast_to(frame, (S, frame.size))
    ta, tb = grid.tss[0] + m, grid.tss[1] + m

    def at(t):  # a tile's span in frame coordinates
        a, b = grid.span(t)
        return a + m, b + m

    def tile_shuffles(t):
        a, b = at(t)
        return dinuc_shuffle(frame[a:b], S, _rng(seed, _TILE, t))

    background = None
    if {"context", "sufficiency", "distance"} & set(tests):
        background = native.copy()
        background[:, m:m + L] = dinuc_shuffle(frame[m:m + L], S, _rng(seed, _BACKGROUND))
        background[:, ta:tb] = frame[ta:tb]
        res.context = Activities(runner.run([background]), res.wt)
        ctx = res.context.mean[0]
    if "necessity" in tests:
        def necessity_blocks():
            for t in range(grid.n):
                x = native.copy()
                a, b = at(t)
                x[:, a:b] = tile_shuffles(t)
                yield x
        res.necessity = Activities(runner.run(necessity_blocks()), res.wt)
    def placed(source):
        """Per tile position p: the shuffled context with the native bases of tile ``source(p)`` at p."""
        for p in range(grid.n):
            x = background.copy()
            a, b = at(p)
            sa, sb = at(source(p))
            x[:, a:b] = frame[sa:sb]
            yield x

    if "sufficiency" in tests:  # each tile in its own place
        res.sufficiency = Activities(runner.run(placed(lambda p: p)), ctx)
    if "distance" in tests:  # one tile moved to every place
        if distance_tile is None:  # the largest gain over the TSS-only context (lowest index on ties)
            distance_tile = int(np.argmax(res.sufficiency.mean - ctx))
        res.distance_tile = distance_tile
        res.distance = Activities(runner.run(placed(lambda p: distance_tile)), ctx)
    if "interaction" in tests:
        drop = res.wt - res.necessity.mean
        res.top = [int(t) for t in np.argsort(-drop, kind="stable")[:top_k]]
        res.sets = interaction_sets(res.top)
        cache = {t: tile_shuffles(t) for t in res.top}

        def interaction_blocks():
            for s in res.sets:
                x = native.copy()
                for t in s:
                    a, b = at(t)
                    x[:, a:b] = cache[t]
                yield x
        res.interaction = Activities(runner.run(interaction_blocks()), res.wt)
    if "greedy" in tests:
        res.greedy = greedy_search(runner, frame, res.wt, S, grid.n, top_k, at, tile_shuffles, greedy_find,
                                   first=res.necessity)
    return res


def greedy_search(runner: "_Batches", frame: np.ndarray, wt: float, shuffles: int, n_tiles: int, rounds: int, at,
                  tile_shuffles, find: str = "enhancers", first: Activities | None = None) -> Greedy:
    """CREME's higher-order interaction test (a greedy search) from the native ``frame`` (activity ``wt``);
    ``first``: the necessity test's activities, which are the first round's (the same tile shuffles on the
    native window)."""
    x = frame.copy()
    left = list(range(n_tiles))
    before = wt
    tiles, befores, acts, cands = [], [], [], []
    for r in range(rounds):
        if r == 0 and first is not None:
            act = first.activity
        else:
            def blocks():
                for t in left:
                    y = np.repeat(x[None], shuffles, 0)
                    a, b = at(t)
                    y[:, a:b] = tile_shuffles(t)
                    yield y
            act = runner.run(blocks())  # (tiles left, shuffles, tracks)
        totals = act.sum(-1)
        means = totals.mean(-1)
        i = int(np.argmin(means) if find == "enhancers" else np.argmax(means))  # first on ties
        cand = np.full(n_tiles, np.nan)
        cand[left] = means
        t = left.pop(i)
        k = int(np.argmin(np.abs(totals[i] - means[i])))  # the shuffle closest to the mean stays
        a, b = at(t)
        x[a:b] = tile_shuffles(t)[k]
        tiles.append(t)
        befores.append(before)
        acts.append(act[i])
        cands.append(cand)
        before = float(totals[i, k])
    return Greedy(find, tiles, np.array(befores), np.stack(acts), np.stack(cands))


def model_activity(mr: ModelRun, bins: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """frames -> (N, selected tracks) predictions summed over ``bins``, through the run's predictor."""
    lo, hi = bins

    def activity(frames: np.ndarray) -> np.ndarray:
        y = mr.predictor.predict_windows(frames)
        if mr.slice_out:
            y = y.index_select(2, mr.out_cols)
        return y[:, lo:hi].sum(1).double().cpu().numpy()

    return activity


# -- the command -------------------------------------------------------------------------------------


@dataclass
class PerturbSummary:
    chrom: str
    tss: int
    result: PerturbResult
    table: pd.DataFrame
    outputs: list = field(default_factory=list)
    sequences: int = 0
    seconds: float = 0.0

    def report(self) -> str:
        r, t = self.result, self.table
        lines = [f"TSS {self.chrom}:{self.tss:,}: {r.grid.n} tiles of {r.grid.size:,} bp besides the TSS tile, "
                 f"{r.shuffles} shuffles, {self.sequences:,} sequences predicted in {self.seconds:.1f} s",
                 f"wild-type activity: {r.wt:.6g}"]
        ctx = t[t.test == "context"]
        if len(ctx):
            lines.append(f"context: activity {ctx.activity.iloc[0]:.6g}, effect {ctx.effect.iloc[0]:.4g} "
                         f"({ctx['class'].iloc[0]})")
        for test, word, sign in (("necessity", "most necessary", -1), ("sufficiency", "most sufficient", 1)):
            part = t[(t.test == test) & t.delta.notna()]
            if len(part):  # the largest drop / gain in activity
                best = part.loc[(sign * part.delta).idxmax()]
                lines.append(f"{word} tile: {best.tile} ({best.start:,}-{best.end:,}), effect {best.effect:.4g}")
        inter = t[t.test.str.startswith("interaction") & t.interaction.notna()]  # NaN when WT is 0
        if len(inter):
            big = inter.loc[inter.interaction.abs().idxmax()]
            lines.append(f"largest interaction: tiles {big.tile}, {big.interaction:.4g} of WT")
        greedy = t[t.test == "greedy"]
        if len(greedy):
            last = greedy.iloc[-1]
            lines.append(f"greedy search ({r.greedy.find}): tiles {', '.join(greedy.tile)}; activity "
                         f"{last.activity:.6g}, interaction {last.interaction:.4g} of WT")
        if r.wt == 0:
            lines.append("the wild-type activity is 0: normalised effects are undefined (NaN)")
        lines.append("wrote: " + ", ".join(str(p) for p in self.outputs))
        return "\n".join(lines)


def perturb_tss(tss: str, fasta, backend: str | Backend, weights=None, out=None, tsv=None, *,
                tracks: str | None = None, tile_size: int = DEFAULT_TILE_SIZE, shuffles: int = DEFAULT_SHUFFLES,
                top_k: int = DEFAULT_TOP_K, seed: int = 0, tests=None, distance_tile: int | None = None,
                greedy_find: str = "enhancers",
                tss_margin: int = DEFAULT_TSS_MARGIN, rc: bool = False, shifts=None, batch_size: int = 64,
                device: str = "auto", precision: str = "fp32", quiet: bool = True,
                **backend_options) -> PerturbSummary:
    """CREME's perturbation tests around the TSS ``tss`` ('chr:pos', 1-based); see docs/perturb.md."""
    t0 = time.perf_counter()
    if out is None and tsv is None:
        raise OptionError("nothing to write: give --out perturb.h5 (and/or --tsv perturb.tsv)")
    out, tsv = check_out(out, "--out"), check_out(tsv, "--tsv")
    if out is not None and tsv is not None and out.resolve() == tsv.resolve():
        raise OptionError("--out and --tsv must be different files")
    if isinstance(backend, str) and backend_class(backend).score_vcf is not None:
        raise OptionError(f"--backend {backend} has its own kind of output; perturb needs a model with track "
                          "outputs (torchscript, keras, enformer, clipnet)")
    tests = parse_tests(tests)
    chrom, pos = parse_tss(tss)
    genome = Genome(fasta)
    mr = None
    try:
        contig = genome.resolve(chrom)
        if contig is None:
            shown = ", ".join(genome.names[:5]) + (", …" if len(genome.names) > 5 else "")
            raise InputError(f"--tss {tss}: contig {chrom} is not in {genome.path} (it has {shown})")
        size = genome.length(contig)
        if not 1 <= pos <= size:
            raise InputError(f"--tss {tss}: position {pos:,} is outside {contig} (1..{size:,})")
        mr = ModelRun(backend, weights, backend_options, None, tracks, rc, shifts, precision, batch_size, device, 1.0)
        geom = mr.geom
        grid = tile_grid(geom.input_length, tile_size)
        check_settings(grid, shuffles, tests, top_k, distance_tile, greedy_find)
        bins = tss_bins(geom, tss_margin)
        m = mr.predictor.margin
        wstart = (pos - 1) - geom.center  # 0-based genomic start of the window
        frame = genome.fetch(contig, wstart - m, wstart + geom.input_length + m)
        total = count_sequences(grid.n, shuffles, tests, top_k)
        unit = max(1, work_unit(batch_size, geom.input_length) // mr.predictor.members_per_window)
        bar = tqdm(total=total, unit=" seqs", disable=quiet, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        result = run_tests(model_activity(mr, bins), frame, m, grid, shuffles=shuffles, seed=seed, tests=tests,
                           top_k=top_k, distance_tile=distance_tile, greedy_find=greedy_find, unit=unit,
                           progress=bar)
        bar.close()
        table = result.table(chrom, pos, wstart)
        summary = PerturbSummary(chrom, pos, result, table, sequences=total)
        model_attrs = {k: v for k, v in mr.attrs().items() if k not in ("stats", "profile_tracks", "pseudocount")}
        attrs = {"varfx_version": __version__, "output_kind": OUTPUT_KIND, **model_attrs, "fasta": str(genome.path),
                 "fasta_fai_sha256": sha256(Path(str(genome.path) + ".fai")), "tss": f"{chrom}:{pos}",
                 "tss_chrom": chrom, "tss_contig": contig, "tss_pos": pos, "window_start": wstart,
                 "window_end": wstart + geom.input_length, "tile_size": grid.size,
                 "tss_tile": [wstart + grid.tss[0], wstart + grid.tss[1]],
                 "tss_tile_window": list(grid.tss), "tss_margin": tss_margin, "tss_bins": list(bins),
                 "shuffles": shuffles, "seed": seed, "tests": list(tests), "top_k": top_k,
                 "greedy_find": greedy_find,
                 "distance_tile": -1 if result.distance_tile is None else result.distance_tile,
                 "context_thresholds": CONTEXT_THRESHOLDS, "shuffle": "dinucleotide (Altschul-Erickson), N kept"}
        summary.seconds = time.perf_counter() - t0
        attrs["seconds"] = round(summary.seconds, 3)
        if out is not None:
            write_perturb_h5(out, result, table, mr, attrs, wstart)
            summary.outputs.append(out)
        if tsv is not None:
            write_perturb_tsv(tsv, table)
            summary.outputs.append(tsv)
    finally:
        genome.close()
        if mr is not None:
            mr.close()
    return summary


# -- outputs -----------------------------------------------------------------------------------------


def write_perturb_tsv(path: Path, table: pd.DataFrame) -> None:
    """The table as TSV (empty cells where a column does not apply), written under ``.partial``."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="\n") as fh:
        fh.write("\t".join(COLUMNS) + "\n")
        cells = []
        for col in COLUMNS:
            v = table[col]
            if v.dtype.kind == "f":
                txt = np.where(v.isna(), "", format_values(v.to_numpy(dtype=np.float32, na_value=np.nan)))
            else:
                txt = np.array(["" if pd.isna(x) else str(x) for x in v], dtype=object)
            cells.append(txt)
        for row in zip(*cells):
            fh.write("\t".join(row) + "\n")


def write_perturb_h5(path: Path, result: PerturbResult, table: pd.DataFrame, mr: ModelRun, attrs: dict,
                     window_start: int) -> None:
    """HDF5 (docs/perturb.md): per-test activities (rows, shuffles, tracks), per-row summaries, the tiles,
    the table of the TSV under ``table/``; written under ``.partial`` and renamed when complete."""
    g = result.grid
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        begin_h5(f, attrs, mr.track_ids, mr.track_labels)
        tg = f.create_group("tiles")
        tg.create_dataset("start", data=window_start + g.starts)
        tg.create_dataset("end", data=window_start + g.ends)
        tg.create_dataset("window_start", data=g.starts)
        tg.create_dataset("window_end", data=g.ends)
        tg.create_dataset("distance_to_tss", data=(g.starts + g.size / 2 - g.length // 2).astype(np.float64))
        wt = f.create_group("wild_type")
        wt.create_dataset("activity", data=result.wild_type)
        wt.attrs["total"] = result.wt
        parts = {"context": (result.context, None), "necessity": (result.necessity, "necessity_effect"),
                 "sufficiency": (result.sufficiency, "sufficiency_effect"),
                 "distance": (result.distance, "distance_effect"), "interaction": (result.interaction, None)}
        for name, (res, eff) in parts.items():
            if res is None:
                continue
            grp = f.create_group(name)
            grp.create_dataset("activity", data=res.activity)
            grp.create_dataset("mean", data=res.mean)
            grp.create_dataset("sd", data=res.sd)
            grp.attrs["baseline"] = res.baseline
            if eff is not None:
                grp.create_dataset("effect", data=getattr(result, eff)())
        if result.context is not None:
            eff = result.context_effect()
            f["context"].attrs["effect"] = eff
            f["context"].attrs["class"] = context_class(eff)
        if result.distance is not None:
            f["distance"].attrs["source_tile"] = result.distance_tile
        if result.interaction is not None:
            k = max(len(s) for s in result.sets)
            sets = np.full((len(result.sets), k), -1, dtype=np.int64)
            for i, s in enumerate(result.sets):
                sets[i, :len(s)] = s
            grp = f["interaction"]
            grp.create_dataset("sets", data=sets)
            grp.create_dataset("top", data=np.array(result.top, dtype=np.int64))
            grp.create_dataset("expected", data=result.expected())
            grp.create_dataset("interaction", data=result.interaction_term())
            grp.create_dataset("effect", data=result._norm(result.wt - result.interaction.mean))
        if result.greedy is not None:
            gr = result.greedy
            grp = f.create_group("greedy")
            grp.attrs["find"] = gr.find
            grp.create_dataset("tiles", data=np.array(gr.tiles, dtype=np.int64))
            grp.create_dataset("before", data=gr.before)
            grp.create_dataset("activity", data=gr.activity)
            grp.create_dataset("candidates", data=gr.candidates)
            grp.create_dataset("expected", data=result.greedy_expected())
        tab = f.create_group("table")
        for col in COLUMNS:
            v = table[col]
            if v.dtype.kind in "fi" or str(v.dtype) == "Int64":  # numbers: float64, NaN where empty
                tab.create_dataset(col, data=v.to_numpy(dtype=np.float64, na_value=np.nan))
            else:
                tab.create_dataset(col, data=np.array(["" if pd.isna(x) else str(x) for x in v], dtype=object),
                                   dtype=STR)
        f.attrs["complete"] = True


def read_perturb(path) -> tuple[pd.DataFrame, dict]:
    """A ``varfx perturb`` HDF5 read back: (the table, as in the TSV; the settings)."""
    with open_complete(path) as f:
        if f.attrs.get("output_kind", "") != OUTPUT_KIND:
            raise InputError(f"{path} is not a varfx perturb output")
        settings = json.loads(f.attrs["settings"])
        cols = {}
        for col in COLUMNS:
            ds = f["table"][col]
            cols[col] = strings(ds) if ds.dtype.kind == "O" else ds[:]
    table = pd.DataFrame(cols)
    table["tss"] = table["tss"].astype(np.int64)
    for col in ("start", "end", "shuffles", "round"):
        table[col] = pd.array([None if np.isnan(x) else int(x) for x in table[col]], dtype="Int64")
    for col in ("tile", "source_tile", "class"):
        table[col] = [None if x == "" else x for x in table[col]]
    return table, settings
