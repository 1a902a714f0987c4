"""Pairwise kinship from genotypes: the KING-robust estimator (Manichaikul et al. 2010).

For samples i and j, over the sites where both have a diploid call:

    kinship = (N_het,het - 2 N_ibs0) / (N_het(i) + N_het(j))

N_het,het: sites where both are heterozygous; N_ibs0: sites where one is homozygous reference
and the other homozygous alternate; N_het(i): sites where i is heterozygous (and j called).
Expected values: 0.5 for duplicates (or monozygotic twins), 0.25 first degree (parent-child,
full siblings), 0.125 second degree, 0 unrelated. The estimator is robust to population
structure in the sense of KING: it uses no allele frequencies.

Genotypes come in as an int8 matrix samples x sites with codes 0, 1, 2 (copies of the
alternate allele) and -1 (no-call, or not diploid), or packed four to a byte
(:func:`pack_codes`); the counts are accumulated chunk by chunk of sites with matrix
products into four int32 samples x samples matrices, whatever the number of sites.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

# Boundaries between degrees: geometric midpoints of 1/2, 1/4, 1/8, 1/16 (KING manual).
DUPLICATE_MIN = 2**-1.5  # 0.354
FIRST_DEGREE_MIN = 2**-2.5  # 0.177
SECOND_DEGREE_MIN = 2**-3.5  # 0.0884
# Below this many heterozygous calls between the two samples the estimate is too noisy to
# name a relationship: relationship is null.
MIN_INFORMATIVE_HETS = 20
# Sites per matrix product: about 4 M genotypes whatever the number of samples, so that the
# temporaries stay the same size for 1,000 or 2,000 samples.
CHUNK_GENOTYPES = 1 << 22

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


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Pack an int8 samples x sites matrix (0, 1, 2, -1) into 2 bits per genotype:
    uint8 samples x ceil(sites / 4), missing as 3."""
    n, m = codes.shape
    padded = np.full((n, -(-m // 4) * 4), 3, dtype=np.uint8)
    padded[:, :m] = np.where(codes < 0, 3, codes).astype(np.uint8)
    quads = padded.reshape(n, -1, 4)
    return quads[:, :, 0] | (quads[:, :, 1] << 2) | (quads[:, :, 2] << 4) | (quads[:, :, 3] << 6)


def unpack_codes(packed: np.ndarray, m: int) -> np.ndarray:
    """The int8 samples x ``m`` matrix (0, 1, 2, -1) of :func:`pack_codes` output."""
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)
    codes = ((packed[:, :, None] >> shifts) & 3).reshape(packed.shape[0], -1)[:, :m]
    out = codes.astype(np.int8)
    out[out == 3] = -1
    return out


@dataclass
class KingCounts:
    """Pairwise counts over the sites seen so far (n x n int32 matrices).

    het_het[i, j]: both het; ibs0[i, j]: opposite homozygotes; het_given[i, j]: i het where
    j is called; n_sites[i, j]: both called.
    """

    n: int
    het_het: np.ndarray = field(init=False)
    ibs0: np.ndarray = field(init=False)
    het_given: np.ndarray = field(init=False)
    n_sites: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        shape = (self.n, self.n)
        self.het_het = np.zeros(shape, dtype=np.int32)
        self.ibs0 = np.zeros(shape, dtype=np.int32)
        self.het_given = np.zeros(shape, dtype=np.int32)
        self.n_sites = np.zeros(shape, dtype=np.int32)

    @property
    def chunk(self) -> int:
        """Sites per matrix product."""
        return int(np.clip(CHUNK_GENOTYPES // max(self.n, 1), 256, 8192))

    def add(self, codes: np.ndarray) -> None:
        """Add the sites of ``codes`` (int8, n samples x sites; 0/1/2 or -1)."""
        if codes.shape[0] != self.n:
            raise ValueError(f"expected {self.n} samples, got {codes.shape[0]}")
        for start in range(0, codes.shape[1], self.chunk):
            self._add_chunk(codes[:, start : start + self.chunk])

    def add_packed(self, packed: np.ndarray, m: int) -> None:
        """Add ``m`` sites given packed (:func:`pack_codes`), unpacking one chunk at a time."""
        if packed.shape[0] != self.n:
            raise ValueError(f"expected {self.n} samples, got {packed.shape[0]}")
        step = self.chunk // 4 * 4
        for start in range(0, m, step):
            stop = min(m, start + step)
            self._add_chunk(unpack_codes(packed[:, start // 4 : -(-stop // 4)], stop - start))

    def _add_chunk(self, chunk: np.ndarray) -> None:
        # float32 products of 0/1 matrices are exact below 2**24 sites per chunk
        het = (chunk == 1).astype(np.float32)
        hom_ref = (chunk == 0).astype(np.float32)
        hom_alt = (chunk == 2).astype(np.float32)
        called = (chunk >= 0).astype(np.float32)
        self.het_het += (het @ het.T).astype(np.int32)
        opposite = (hom_ref @ hom_alt.T).astype(np.int32)
        self.ibs0 += opposite
        self.ibs0 += opposite.T
        del opposite
        self.het_given += (het @ called.T).astype(np.int32)
        self.n_sites += (called @ called.T).astype(np.int32)

    def kinship(self) -> np.ndarray:
        """KING-robust kinship matrix (NaN where the pair shares no heterozygous call)."""
        denom = (self.het_given + self.het_given.T).astype(np.float64)
        num = self.het_het - 2.0 * self.ibs0
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, num / denom, np.nan)


def kinship_table(samples: Sequence[str], counts: KingCounts) -> pa.Table:
    """One row per pair (sample_a < sample_b) in KINSHIP_SCHEMA, sorted by sample_a, sample_b.

    ``samples`` name the rows of ``counts`` and must be sorted and unique.
    """
    parts = list(kinship_rows(samples, counts))
    return pa.concat_tables(parts) if parts else KINSHIP_SCHEMA.empty_table()


def kinship_rows(
    samples: Sequence[str], counts: KingCounts, block: int = 128
) -> Iterator[pa.Table]:
    """:func:`kinship_table` in pieces of ``block`` first samples (bounded memory)."""
    names = list(samples)
    if names != sorted(set(names)):
        raise ValueError("kinship_table: samples must be sorted and unique")
    name_arr = pa.array(names, pa.string())
    labels = np.array(["unrelated", "second_degree", "first_degree", "duplicate"])
    bounds = [SECOND_DEGREE_MIN, FIRST_DEGREE_MIN, DUPLICATE_MIN]
    n = len(names)
    for lo in range(0, max(n - 1, 0), block):
        hi = min(n - 1, lo + block)
        a = np.concatenate([np.full(n - i - 1, i) for i in range(lo, hi)])
        b = np.concatenate([np.arange(i + 1, n) for i in range(lo, hi)])
        het_a = counts.het_given[a, b].astype(np.int64)
        het_b = counts.het_given[b, a].astype(np.int64)
        denom = (het_a + het_b).astype(np.float64)
        num = counts.het_het[a, b] - 2.0 * counts.ibs0[a, b]
        with np.errstate(invalid="ignore", divide="ignore"):
            phi = np.where(denom > 0, num / denom, np.nan)
        ok = ((het_a + het_b) >= MIN_INFORMATIVE_HETS) & ~np.isnan(phi)
        level = np.searchsorted(bounds, np.nan_to_num(phi, nan=-1.0), "right")
        yield pa.table(
            {
                "sample_a": name_arr.take(pa.array(a)),
                "sample_b": name_arr.take(pa.array(b)),
                "kinship": pa.array(phi, pa.float64(), mask=np.isnan(phi)),
                "ibs0": pa.array(counts.ibs0[a, b].astype(np.int64)),
                "n_het_het": pa.array(counts.het_het[a, b].astype(np.int64)),
                "n_het_a": pa.array(het_a),
                "n_het_b": pa.array(het_b),
                "n_sites": pa.array(counts.n_sites[a, b].astype(np.int64)),
                "relationship": pa.array(labels[level], pa.string(), mask=~ok),
            },
            schema=KINSHIP_SCHEMA,
        )
