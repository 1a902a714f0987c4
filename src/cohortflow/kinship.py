"""Pairwise kinship from genotypes: the KING-robust estimator (Manichaikul et al. 2010).

For samples i and j, over the sites where both have a diploid call:

    kinship = (N_het,het - 2 N_ibs0) / (N_het(i) + N_het(j))

N_het,het: sites where both are heterozygous; N_ibs0: sites where one is homozygous reference
and the other homozygous alternate; N_het(i): sites where i is heterozygous (and j called).
Expected values: 0.5 for duplicates (or monozygotic twins), 0.25 first degree (parent-child,
full siblings), 0.125 second degree, 0.0625 third degree, 0 unrelated. The estimator is robust
to population structure in the sense of KING: it uses no allele frequencies.

Genotypes are 2-bit codes (0, 1, 2 copies of the alternate allele; 3 = no-call or not diploid),
packed four to a byte (:func:`pack_codes`), samples x sites. They are read from a
:class:`CodeSource`: :class:`PackedCodes` in memory, or :class:`CodeSpill`, a file on disk laid
out in blocks of :data:`BLOCK_SITES` sites so that the codes of any tile of samples over one
block are one contiguous read.

Memory does not grow with the number of samples: :func:`king_pairs` takes the samples in tiles
of :data:`TILE_SAMPLES` and, for each pair of tiles, accumulates the pair counts block by block
of sites with float32 matrix products over slices of :data:`CHUNK_SITES` sites (tile x slice x
tile), so that the working set is two tiles x one block of codes plus their indicator matrices
over one slice, whatever the cohort size. Only the pairs worth reporting are kept: kinship at
or above :data:`REPORT_MIN_KINSHIP` = 2^-4.5 (0.0442, the boundary between third degree and
unrelated in the KING manual) and significantly above zero (below). Every other pair is
unrelated, or has too little data to say; :class:`KinshipSummary` counts them.

A degree is named only when the data can tell it from noise. The estimate of an unrelated pair
scatters around 0: per site its numerator gains +1 for a shared het and -2 for an opposite
homozygote, whose variance at an allele of frequency p (Hardy-Weinberg) is 12 p^2 q^2, at most
3/4 of the 4 p q hets the site adds to the denominator. So its standard error is at most

    se = sqrt(3 / (4 H)),  H = N_het(i) + N_het(j)

whatever the frequencies: 100 hets give 0.087, a whole degree. (The pair's own counts are no
estimate of it: the pairs that land high by chance are those with few opposite homozygotes.)
Among n pairs some estimate is bound to land several standard errors out, so a pair counts as
related (and is stored) only when kinship >= z se, with z the one-sided normal quantile of
:data:`FAMILY_ALPHA` / n (Bonferroni over all pairs compared: 2.9 for 28 pairs, 5.7 for the 8
million of 4,000 samples). At z = 5.7 a duplicate needs about 100 hets between the two
samples, a parent and child 400, second degree 1,600. A pair whose kinship reaches second
degree but not z se is undetermined: relationship null, not stored, counted.

A growing cohort need not count its earlier pairs again: :func:`king_update` computes the pairs
with a sample of the new batch, takes the earlier pairs' counts from the stored summary and
re-checks the stored pairs at the new z, and gives what :func:`king_pairs` gives over all.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Protocol

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

# Boundaries between degrees: geometric midpoints of 1/2, 1/4, 1/8, 1/16, 1/32 (KING manual).
DUPLICATE_MIN = 2**-1.5  # 0.354
FIRST_DEGREE_MIN = 2**-2.5  # 0.177
SECOND_DEGREE_MIN = 2**-3.5  # 0.0884
THIRD_DEGREE_MIN = 2**-4.5  # 0.0442
# Pairs below this kinship are not stored: unrelated (or undetermined and not close to related).
REPORT_MIN_KINSHIP = THIRD_DEGREE_MIN
# Below this many heterozygous calls between the two samples the estimate is too noisy to
# name a relationship: relationship is null. With 20 hets the standard error of an unrelated
# pair's estimate is still about 0.1 (one het-het site moves it by 0.05), the width of a degree.
MIN_INFORMATIVE_HETS = 20
# Chance, over all pairs of one computation, that any unrelated pair is called related (or
# stored) through sampling noise alone; see :func:`related_z`.
FAMILY_ALPHA = 0.05
# Samples per tile and sites per block (the layout of the spill file). A block is multiplied
# in slices of CHUNK_SITES sites: the four float32 indicator matrices of two tiles over one
# slice are 2 x 4 x 256 x 1024 x 4 bytes = 8 MiB, whatever the number of samples or sites.
TILE_SAMPLES = 256
BLOCK_SITES = 4096
CHUNK_SITES = 1024
MISSING = 3  # 2-bit code of a no-call

KINSHIP_SCHEMA = pa.schema(
    [
        ("sample_a", pa.string()),
        ("sample_b", pa.string()),
        ("kinship", pa.float64()),
        ("ibs0", pa.int64()),
        ("n_het_het", pa.int64()),
        ("n_het_a", pa.int64()),
        ("n_het_b", pa.int64()),
        ("n_sites", pa.int64()),
        ("relationship", pa.string()),
    ]
)
_LABELS = np.array(["unrelated", "second_degree", "first_degree", "duplicate"])
_BOUNDS = [SECOND_DEGREE_MIN, FIRST_DEGREE_MIN, DUPLICATE_MIN]

# byte value -> its four 2-bit codes, and float32 indicators of each code class
_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8)
_BYTE_CODES = (np.arange(256, dtype=np.uint8)[:, None] >> _SHIFTS) & 3
_HET = (_BYTE_CODES == 1).astype(np.float32)
_HOM_REF = (_BYTE_CODES == 0).astype(np.float32)
_HOM_ALT = (_BYTE_CODES == 2).astype(np.float32)
_CALLED = (_BYTE_CODES != MISSING).astype(np.float32)


def relationship(kinship: float | None) -> str | None:
    """duplicate | first_degree | second_degree | unrelated for a kinship value (None: None)."""
    if kinship is None or np.isnan(kinship):
        return None
    if kinship >= DUPLICATE_MIN:
        return "duplicate"
    if kinship >= FIRST_DEGREE_MIN:
        return "first_degree"
    if kinship >= SECOND_DEGREE_MIN:
        return "second_degree"
    return "unrelated"


def related_z(pairs: int) -> float:
    """How many standard errors above 0 a kinship must be to count as related among ``pairs``
    pairs: the one-sided normal quantile of FAMILY_ALPHA / pairs (Bonferroni)."""
    return -NormalDist().inv_cdf(FAMILY_ALPHA / max(1, pairs))  # the lower tail keeps precision


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Pack an int8 samples x sites matrix (0, 1, 2, -1) into 2 bits per genotype:
    uint8 samples x ceil(sites / 4), missing (and padding) as 3."""
    n, m = codes.shape
    padded = np.full((n, -(-m // 4) * 4), MISSING, dtype=np.uint8)
    padded[:, :m] = np.where(codes < 0, MISSING, codes).astype(np.uint8)
    quads = padded.reshape(n, -1, 4)
    return quads[:, :, 0] | (quads[:, :, 1] << 2) | (quads[:, :, 2] << 4) | (quads[:, :, 3] << 6)


def unpack_codes(packed: np.ndarray, m: int) -> np.ndarray:
    """The int8 samples x ``m`` matrix (0, 1, 2, -1) of :func:`pack_codes` output."""
    codes = _BYTE_CODES[packed].reshape(packed.shape[0], -1)[:, :m]
    out = codes.astype(np.int8)
    out[out == MISSING] = -1
    return out


class CodeSource(Protocol):
    """Packed codes of ``n_samples`` x ``n_sites``, readable one tile x one block at a time."""

    n_samples: int
    n_sites: int
    block_sites: int

    def read_tile(self, lo: int, hi: int, block: int) -> np.ndarray:
        """uint8 (hi - lo) x block_sites / 4: samples [lo, hi) over sites of block ``block``."""
        ...


@dataclass
class PackedCodes:
    """A :class:`CodeSource` in memory: ``packed`` is uint8 samples x ceil(n_sites / 4)."""

    packed: np.ndarray
    n_sites: int
    block_sites: int = BLOCK_SITES
    n_samples: int = field(init=False)

    def __post_init__(self) -> None:
        if self.block_sites % 4:
            raise ValueError("block_sites must be a multiple of 4")
        self.n_samples = int(self.packed.shape[0])

    @classmethod
    def from_codes(cls, codes: np.ndarray, block_sites: int = BLOCK_SITES) -> PackedCodes:
        """From an int8 samples x sites matrix (0, 1, 2; -1 = no-call)."""
        return cls(pack_codes(codes), int(codes.shape[1]), block_sites)

    def read_tile(self, lo: int, hi: int, block: int) -> np.ndarray:
        width = self.block_sites // 4
        part = self.packed[lo:hi, block * width : (block + 1) * width]
        if part.shape[1] == width:
            return part
        out = np.full((hi - lo, width), 0xFF, dtype=np.uint8)
        out[:, : part.shape[1]] = part
        return out


class CodeSpill:
    """Packed codes of ``n_samples`` x ``n_sites`` in a file on disk (a :class:`CodeSource`).

    Layout: blocks of ``block_sites`` sites one after the other; inside a block, one row of
    ``block_sites / 4`` bytes per sample. Reads and writes are plain ``pread``/``pwrite`` (no
    memory map: mapped pages would count in the resident size). Every code starts as missing.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self, path: Path, n_samples: int, n_sites: int, block_sites: int = BLOCK_SITES
    ) -> None:
        if block_sites % 4:
            raise ValueError("block_sites must be a multiple of 4")
        self.path = Path(path)
        self.n_samples = n_samples
        self.n_sites = n_sites
        self.block_sites = block_sites
        self.width = block_sites // 4
        self.n_blocks = -(-n_sites // block_sites)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        fill = b"\xff" * (self.width * max(1, min(n_samples, 1024)))
        total = self.n_blocks * n_samples * self.width
        for start in range(0, total, len(fill)):
            os.pwrite(self._fd, fill[: min(len(fill), total - start)], start)

    def __enter__(self) -> CodeSpill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (it stays on disk; the caller owns its folder)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _offset(self, block: int, row: int) -> int:
        return (block * self.n_samples + row) * self.width

    def read_tile(self, lo: int, hi: int, block: int) -> np.ndarray:
        size = (hi - lo) * self.width
        data = os.pread(self._fd, size, self._offset(block, lo))
        if len(data) != size:
            raise RuntimeError(f"{self.path}: short read of block {block}")
        return np.frombuffer(data, dtype=np.uint8).reshape(hi - lo, self.width)

    def update(self, row: int, sites: np.ndarray, codes: np.ndarray) -> None:
        """Set the codes (int8 0, 1, 2; -1 = no-call) of sample ``row`` at site indices
        ``sites`` (0-based columns, any order); other sites keep their codes."""
        if len(sites) == 0:
            return
        sites = np.asarray(sites, dtype=np.int64)
        values = np.where(codes < 0, MISSING, codes).astype(np.uint8)
        if (sites[1:] < sites[:-1]).any():  # genotype files come sorted; anything else works too
            order = np.argsort(sites, kind="stable")
            sites, values = sites[order], values[order]
        blocks = sites // self.block_sites
        cuts = [0, *(np.flatnonzero(blocks[1:] != blocks[:-1]) + 1).tolist(), len(sites)]
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            block = int(blocks[lo])
            offset = self._offset(block, row)
            old = np.frombuffer(os.pread(self._fd, self.width, offset), np.uint8)
            flat = _BYTE_CODES[old].reshape(-1)
            flat[sites[lo:hi] - block * self.block_sites] = values[lo:hi]
            quads = flat.reshape(-1, 4)
            packed = quads[:, 0] | (quads[:, 1] << 2) | (quads[:, 2] << 4) | (quads[:, 3] << 6)
            os.pwrite(self._fd, packed.tobytes(), offset)


def rules_metadata() -> dict[str, str]:
    """The kinship file's metadata that names the rules its rows were chosen by; a stored
    file with other values is recomputed, not updated (:func:`king_update`)."""
    return {
        "kinship_estimator": "KING-robust",
        "kinship_min_stored": repr(REPORT_MIN_KINSHIP),
        "kinship_min_informative_hets": str(MIN_INFORMATIVE_HETS),
        "kinship_family_alpha": repr(FAMILY_ALPHA),
    }


@dataclass
class KinshipSummary:
    """What :func:`king_pairs` saw over all pairs, stored or not."""

    n_samples: int = 0
    n_sites: int = 0
    pairs_compared: int = 0
    pairs_stored: int = 0
    # relationship null: fewer than MIN_INFORMATIVE_HETS heterozygous calls (or none), or a
    # kinship of second degree or more that is not related_z standard errors above zero
    pairs_undetermined: int = 0
    pairs_related: int = 0  # second degree or closer
    max_kinship: float | None = None  # over all pairs with a kinship value
    related_z: float = 0.0  # standard errors above zero a related pair's kinship must be
    pairs_computed: int = 0  # pairs counted from genotypes by this run (not in the metadata)

    def metadata(self) -> dict[str, str]:
        """Key-value metadata for the kinship file (all values as text)."""
        return {
            **rules_metadata(),
            "kinship_related_z": f"{self.related_z:.4f}",
            "kinship_samples": str(self.n_samples),
            "kinship_sites": str(self.n_sites),
            "kinship_pairs_compared": str(self.pairs_compared),
            "kinship_pairs_stored": str(self.pairs_stored),
            "kinship_pairs_undetermined": str(self.pairs_undetermined),
            "kinship_pairs_related": str(self.pairs_related),
            "kinship_max": "" if self.max_kinship is None else repr(self.max_kinship),
        }


@dataclass
class _TileCounts:
    """Pair counts between tile a (rows) and tile b (columns), int64."""

    het_het: np.ndarray
    ibs0: np.ndarray
    het_a: np.ndarray  # a het where b is called
    het_b: np.ndarray  # b het where a is called
    n_sites: np.ndarray


def _indicators(packed: np.ndarray) -> tuple[np.ndarray, ...]:
    """(het, hom_ref, hom_alt, called) float32 rows x sites of a packed tile."""
    rows = packed.shape[0]
    return tuple(
        np.take(lut, packed, axis=0).reshape(rows, -1)
        for lut in (_HET, _HOM_REF, _HOM_ALT, _CALLED)
    )


def _tile_counts(source: CodeSource, a: tuple[int, int], b: tuple[int, int]) -> _TileCounts:
    """Counts between samples [a0, a1) and [b0, b1) over every block of sites."""
    shape = (a[1] - a[0], b[1] - b[0])
    acc = _TileCounts(*(np.zeros(shape, dtype=np.int64) for _ in range(5)))
    same = a == b
    n_blocks = -(-source.n_sites // source.block_sites)
    step = max(1, min(CHUNK_SITES, source.block_sites) // 4)  # bytes of codes per slice
    for block in range(n_blocks):
        tile_a = source.read_tile(*a, block)
        tile_b = tile_a if same else source.read_tile(*b, block)
        # float32 sums of 0/1 products are exact: block_sites < 2**24
        block_acc = [np.zeros(shape, dtype=np.float32) for _ in range(6)]
        het_het, ibs0_ab, ibs0_ba, het_a_acc, het_b_acc, n_sites = block_acc
        for lo in range(0, tile_a.shape[1], step):
            het_a, ref_a, alt_a, called_a = _indicators(tile_a[:, lo : lo + step])
            if same:
                het_b, ref_b, alt_b, called_b = het_a, ref_a, alt_a, called_a
            else:
                het_b, ref_b, alt_b, called_b = _indicators(tile_b[:, lo : lo + step])
            het_het += het_a @ het_b.T
            ibs0_ab += ref_a @ alt_b.T
            het_a_acc += het_a @ called_b.T
            if not same:
                ibs0_ba += alt_a @ ref_b.T
                het_b_acc += called_a @ het_b.T
            n_sites += called_a @ called_b.T
        acc.het_het += het_het.astype(np.int64)
        acc.ibs0 += ibs0_ab.astype(np.int64)
        acc.ibs0 += (ibs0_ab.T if same else ibs0_ba).astype(np.int64)
        acc.het_a += het_a_acc.astype(np.int64)
        if not same:
            acc.het_b += het_b_acc.astype(np.int64)
        acc.n_sites += n_sites.astype(np.int64)
    if same:
        acc.het_b = acc.het_a.T.copy()
    return acc


def _levels(c: _TileCounts, z: float) -> tuple[np.ndarray, ...]:
    """(phi, related, named, level) of a tile: the kinship (NaN without a het), whether it is
    z standard errors above zero, whether a relationship is named, its index in _LABELS."""
    hets = c.het_a + c.het_b
    denom = hets.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.where(denom > 0, (c.het_het - 2.0 * c.ibs0) / denom, np.nan)
        se = np.sqrt(0.75 / denom)
        related = phi >= z * se  # False where phi is NaN
    level = np.searchsorted(_BOUNDS, np.nan_to_num(phi, nan=-1.0), "right")
    # a degree is named only when it is significant; "unrelated" needs only enough hets
    named = (hets >= MIN_INFORMATIVE_HETS) & ~np.isnan(phi) & ((level == 0) | related)
    return phi, related, named, level


def king_pairs(
    source: CodeSource,
    samples: Sequence[str],
    min_kinship: float = REPORT_MIN_KINSHIP,
    tile: int = TILE_SAMPLES,
    first_new: int = 0,
    z: float | None = None,
) -> tuple[pa.Table, KinshipSummary]:
    """KING-robust kinship of every pair of samples of ``source``; keep the close ones.

    In: the codes (rows named by ``samples``, unique, in any order); ``min_kinship``: pairs
    with a kinship below it, or not ``z`` standard errors above zero (or none: no heterozygous
    call), are counted in the summary but not returned (``-math.inf`` keeps every pair);
    ``tile``: samples per tile; ``first_new``: only the pairs with at least one row at or after
    it are computed (0: all pairs; :func:`king_update` uses it for the samples a batch adds);
    ``z``: :func:`related_z` of all pairs of the ``samples`` unless given.
    Out: (table in KINSHIP_SCHEMA, one row per kept pair with sample_a < sample_b by name,
    sorted by sample_a, sample_b; summary over the computed pairs). relationship is null when
    the two samples have fewer than MIN_INFORMATIVE_HETS heterozygous calls between them, or a
    kinship of second degree or more that is not z standard errors above zero.
    Memory: a few tiles x one block of sites, plus the kept rows.
    """
    names = list(samples)
    if len(set(names)) != len(names):
        raise ValueError("king_pairs: sample names must be unique")
    n = len(names)
    if n != source.n_samples:
        raise ValueError(f"king_pairs: {n} sample names for {source.n_samples} rows of codes")
    if not 0 <= first_new <= n:
        raise ValueError(f"king_pairs: first_new {first_new} outside 0..{n}")
    z = related_z(n * (n - 1) // 2) if z is None else z
    n_new = n - first_new
    pairs = first_new * n_new + n_new * (n_new - 1) // 2
    summary = KinshipSummary(
        n_samples=n,
        n_sites=source.n_sites,
        pairs_compared=pairs,
        related_z=z,
        pairs_computed=pairs,
    )
    old = [(lo, min(first_new, lo + tile)) for lo in range(0, first_new, tile)]
    new = [(lo, min(n, lo + tile)) for lo in range(first_new, n, tile)]
    # every new tile against every old tile, and the new tiles among themselves
    tile_pairs = [(a, b) for a in old for b in new]
    tile_pairs += [(a, b) for i, a in enumerate(new) for b in new[i:]]
    kept: list[dict[str, np.ndarray]] = []
    max_phi = -math.inf
    for a, b in tile_pairs:
        c = _tile_counts(source, a, b)
        rows = np.arange(a[0], a[1])[:, None]
        cols = np.arange(b[0], b[1])[None, :]
        upper = rows < cols  # each pair once, never a sample with itself
        phi, related, named, level = _levels(c, z)
        summary.pairs_undetermined += int((upper & ~named).sum())
        summary.pairs_related += int((upper & named & (level > 0)).sum())
        valid = upper & ~np.isnan(phi)
        if valid.any():
            max_phi = max(max_phi, float(phi[valid].max()))
        keep = upper & related & (phi >= min_kinship) if min_kinship > -math.inf else upper
        if not keep.any():
            continue
        i, j = np.nonzero(keep)
        kept.append(
            {
                "a": i + a[0],
                "b": j + b[0],
                "kinship": phi[i, j],
                "ibs0": c.ibs0[i, j],
                "n_het_het": c.het_het[i, j],
                "n_het_a": c.het_a[i, j],
                "n_het_b": c.het_b[i, j],
                "n_sites": c.n_sites[i, j],
                "named": named[i, j],
                "level": level[i, j],
            }
        )
    summary.max_kinship = None if max_phi == -math.inf else max_phi
    table = _pairs_table(names, kept)
    summary.pairs_stored = table.num_rows
    log.info(
        "kinship: %d samples, %d sites, %d pairs, %d stored (kinship >= %.4f and >= %.2f "
        "standard errors), %d related, %d undetermined",
        n,
        source.n_sites,
        summary.pairs_compared,
        summary.pairs_stored,
        min_kinship,
        z,
        summary.pairs_related,
        summary.pairs_undetermined,
    )
    return table, summary


class StaleKinship(ValueError):
    """The stored kinship does not describe the stored samples' genotypes any more."""


def pair_counts(
    source: CodeSource, rows_a: np.ndarray, rows_b: np.ndarray, chunk: int = 1024
) -> _TileCounts:
    """Counts of the listed pairs (rows_a[k], rows_b[k]) of ``source``: 1-D arrays, one entry
    per pair, as :func:`_tile_counts` gives for a tile. For the few stored pairs an update
    re-checks; the rows of ``chunk`` pairs are read block by block."""
    rows_a, rows_b = np.asarray(rows_a, np.int64), np.asarray(rows_b, np.int64)
    k = len(rows_a)
    acc = _TileCounts(*(np.zeros(k, dtype=np.int64) for _ in range(5)))
    n_blocks = -(-source.n_sites // source.block_sites)
    for lo in range(0, k, chunk):
        ra, rb = rows_a[lo : lo + chunk], rows_b[lo : lo + chunk]
        rows = np.unique(np.concatenate([ra, rb]))
        at_a, at_b = np.searchsorted(rows, ra), np.searchsorted(rows, rb)
        part = slice(lo, lo + len(ra))
        for block in range(n_blocks):
            packed = np.vstack([source.read_tile(int(r), int(r) + 1, block) for r in rows])
            ca, cb = _BYTE_CODES[packed[at_a]], _BYTE_CODES[packed[at_b]]  # pairs x bytes x 4
            het_a, het_b = ca == 1, cb == 1
            called_a, called_b = ca != MISSING, cb != MISSING
            ibs0 = ((ca == 0) & (cb == 2)) | ((ca == 2) & (cb == 0))
            acc.het_het[part] += (het_a & het_b).sum(axis=(1, 2))
            acc.ibs0[part] += ibs0.sum(axis=(1, 2))
            acc.het_a[part] += (het_a & called_b).sum(axis=(1, 2))
            acc.het_b[part] += (het_b & called_a).sum(axis=(1, 2))
            acc.n_sites[part] += (called_a & called_b).sum(axis=(1, 2))
    return acc


def king_update(
    source: CodeSource,
    samples: Sequence[str],
    first_new: int,
    prior_rows: pa.Table,
    prior: KinshipSummary,
    min_kinship: float = REPORT_MIN_KINSHIP,
    tile: int = TILE_SAMPLES,
) -> tuple[pa.Table, KinshipSummary]:
    """What :func:`king_pairs` gives over all of ``samples``, computing only the pairs with a
    sample of rows [first_new, n) (the batch just added) and re-checking the pairs stored before.

    In: ``source`` and ``samples`` as for king_pairs, the earlier samples first; ``prior_rows``
    and ``prior``: king_pairs' table and summary over rows [0, first_new) alone, with the same
    ``min_kinship`` (at most SECOND_DEGREE_MIN); its related_z is recomputed from its
    pairs_compared, not taken as given.
    Why the earlier pairs need no recount: KING-robust uses no allele frequencies, and a batch
    adds sites where the earlier samples are hom-ref or no-call, which add nothing to N_het,het,
    N_ibs0 or N_het; an earlier pair's kinship is unchanged. Only z grows with the number of
    pairs. A pair not stored before was unrelated (its status does not depend on z), had too
    few hets, or was not significant at the smaller z and so is not now: it is counted as
    before. A stored pair is recounted (its n_sites grows) and judged at the new z.
    Raises StaleKinship when a stored pair's het counts differ from the recount (the earlier
    genotypes changed): the caller computes every pair instead.
    """
    if min_kinship > SECOND_DEGREE_MIN:
        raise ValueError("king_update: min_kinship above second degree drops related pairs")
    names = list(samples)
    n = len(names)
    if prior.n_samples != first_new or prior.pairs_compared != first_new * (first_new - 1) // 2:
        raise StaleKinship(f"the stored kinship covers {prior.n_samples} samples, not {first_new}")
    z = related_z(n * (n - 1) // 2)
    table, summary = king_pairs(source, names, min_kinship, tile, first_new=first_new, z=z)
    summary.pairs_compared = n * (n - 1) // 2
    if prior.max_kinship is not None:
        summary.max_kinship = max(summary.max_kinship or -math.inf, prior.max_kinship)
    summary.pairs_undetermined += prior.pairs_undetermined
    summary.pairs_related += prior.pairs_related
    if prior_rows.num_rows:
        index = {name: i for i, name in enumerate(names[:first_new])}
        try:
            rows_a = np.array([index[s] for s in prior_rows.column("sample_a").to_pylist()])
            rows_b = np.array([index[s] for s in prior_rows.column("sample_b").to_pylist()])
        except KeyError as exc:
            raise StaleKinship(f"stored pair of {exc.args[0]}, not a stored sample") from None
        was = _TileCounts(
            *(
                prior_rows.column(col).to_numpy().astype(np.int64)
                for col in ("n_het_het", "ibs0", "n_het_a", "n_het_b", "n_sites")
            )
        )
        now = pair_counts(source, rows_a, rows_b)
        for col in ("het_het", "ibs0", "het_a", "het_b"):
            if not np.array_equal(getattr(was, col), getattr(now, col)):
                raise StaleKinship(f"a stored pair's {col} changed: its genotypes differ")
        # take out what the stored pairs added to the earlier counts, add them at the new z
        _, _, named, level = _levels(was, related_z(prior.pairs_compared))
        summary.pairs_undetermined -= int((~named).sum())
        summary.pairs_related -= int((named & (level > 0)).sum())
        phi, related, named, level = _levels(now, z)
        summary.pairs_undetermined += int((~named).sum())
        summary.pairs_related += int((named & (level > 0)).sum())
        keep = related & (phi >= min_kinship) if min_kinship > -math.inf else np.ones_like(related)
        summary.pairs_computed += len(rows_a)
        if keep.any():
            k = np.flatnonzero(keep)
            table = pa.concat_tables(
                [
                    table,
                    _pairs_table(
                        names,
                        [
                            {
                                "a": rows_a[k],
                                "b": rows_b[k],
                                "kinship": phi[k],
                                "ibs0": now.ibs0[k],
                                "n_het_het": now.het_het[k],
                                "n_het_a": now.het_a[k],
                                "n_het_b": now.het_b[k],
                                "n_sites": now.n_sites[k],
                                "named": named[k],
                                "level": level[k],
                            }
                        ],
                    ),
                ]
            )
            table = table.sort_by([("sample_a", "ascending"), ("sample_b", "ascending")])
    summary.pairs_stored = table.num_rows
    log.info(
        "kinship: %d new samples against %d: %d pairs computed of %d (%d stored pairs "
        "re-checked at z %.2f), %d stored, %d related, %d undetermined",
        n - first_new,
        first_new,
        summary.pairs_computed,
        summary.pairs_compared,
        prior_rows.num_rows,
        z,
        summary.pairs_stored,
        summary.pairs_related,
        summary.pairs_undetermined,
    )
    return table, summary


def _pairs_table(names: Sequence[str], kept: Sequence[dict[str, np.ndarray]]) -> pa.Table:
    """KINSHIP_SCHEMA rows of the kept pairs (row indices a, b into ``names``), each with
    sample_a < sample_b by name (a and b swap when not), sorted by sample_a, sample_b."""
    if not kept:
        return KINSHIP_SCHEMA.empty_table()
    cols = {k: np.concatenate([part[k] for part in kept]) for k in kept[0]}
    rank = np.empty(len(names), dtype=np.int64)
    rank[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
    swap = rank[cols["a"]] > rank[cols["b"]]
    for x, y in (("a", "b"), ("n_het_a", "n_het_b")):
        cols[x], cols[y] = np.where(swap, cols[y], cols[x]), np.where(swap, cols[x], cols[y])
    order = np.lexsort((rank[cols["b"]], rank[cols["a"]]))
    cols = {k: v[order] for k, v in cols.items()}
    name_arr = pa.array(names, pa.string())
    phi = cols["kinship"]
    return pa.table(
        {
            "sample_a": name_arr.take(pa.array(cols["a"])),
            "sample_b": name_arr.take(pa.array(cols["b"])),
            "kinship": pa.array(phi, pa.float64(), mask=np.isnan(phi)),
            "ibs0": pa.array(cols["ibs0"], pa.int64()),
            "n_het_het": pa.array(cols["n_het_het"], pa.int64()),
            "n_het_a": pa.array(cols["n_het_a"], pa.int64()),
            "n_het_b": pa.array(cols["n_het_b"], pa.int64()),
            "n_sites": pa.array(cols["n_sites"], pa.int64()),
            "relationship": pa.array(_LABELS[cols["level"]], pa.string(), mask=~cols["named"]),
        },
        schema=KINSHIP_SCHEMA,
    )


def kinship_table(
    samples: Sequence[str], codes: np.ndarray, min_kinship: float = -math.inf
) -> pa.Table:
    """Every pair (by default) of an in-memory int8 samples x sites matrix (0, 1, 2; -1 =
    no-call) in KINSHIP_SCHEMA, sorted by sample_a, sample_b. For small cohorts and tests."""
    table, _ = king_pairs(PackedCodes.from_codes(codes), samples, min_kinship)
    return table
