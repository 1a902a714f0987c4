"""Simulated Illumina-like paired-end reads from diploid haplotypes (used by ``simulate``).

Everything here is vectorised with numpy: fragments are drawn for all pairs at once, read bases
are gathered from one concatenated haplotype array and errors are applied as array operations.
Only the rare indel errors (about 1e-5 per base) are applied read by read.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cohortflow.atomic import atomic_outputs

log = logging.getLogger(__name__)

FRAGMENT_MEAN = 350.0
FRAGMENT_SD = 35.0
INDEL_ERROR_RATE = 1e-5
_CHUNK_PAIRS = 20_000

# ASCII lookup tables: complement, canonical upper-case base, base code (A0 C1 G2 T3 other 4).
_COMPLEMENT = np.full(256, ord("N"), dtype=np.uint8)
_CANONICAL = np.full(256, ord("N"), dtype=np.uint8)
_CODE = np.full(256, 4, dtype=np.uint8)
for _i, (_b, _c) in enumerate(zip("ACGT", "TGCA", strict=True)):
    for _case in (_b, _b.lower()):
        _COMPLEMENT[ord(_case)] = ord(_c)
        _CANONICAL[ord(_case)] = ord(_b)
        _CODE[ord(_case)] = _i
_ACGT = np.frombuffer(b"ACGTN", dtype=np.uint8)


@dataclass(frozen=True)
class Haplotype:
    """One simulated haplotype sequence of one region (``seq`` is upper-case ASCII bytes)."""

    name: str
    seq: bytes


def haplotype_array(seq: bytes | str) -> np.ndarray:
    """ASCII bases -> uint8 array of canonical upper-case bases (anything not ACGT becomes N)."""
    raw = seq.encode() if isinstance(seq, str) else seq
    return _CANONICAL[np.frombuffer(raw, dtype=np.uint8)]


def mean_quality_profile(read_length: int, start_q: float, end_q: float) -> np.ndarray:
    """Mean Phred quality per read cycle (0-based cycle index), falling from start_q to end_q.

    The fall is slow at first and steeper towards the 3' end, as on Illumina instruments.
    """
    x = np.linspace(0.0, 1.0, read_length)
    return start_q - (start_q - end_q) * x**1.6


def draw_qualities(
    n: int, read_length: int, start_q: float, end_q: float, rng: np.random.Generator
) -> np.ndarray:
    """Phred qualities, shape (n, read_length), int in [2, 41]: profile + noise + rare dips."""
    mean = mean_quality_profile(read_length, start_q, end_q)
    q = mean[None, :] + rng.normal(0.0, 2.5, size=(n, read_length))
    dips = rng.random((n, read_length)) < 0.004
    q[dips] = rng.uniform(2.0, 15.0, size=int(dips.sum()))
    return np.clip(np.rint(q), 2, 41).astype(np.uint8)


def apply_substitution_errors(
    bases: np.ndarray, quals: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Substitute each base with probability 10^(-Q/10) by one of the other three bases.

    ``bases``: uint8 ASCII (n, L); ``quals``: Phred (n, L). Returns a new array; N stays N.
    """
    p_err = np.power(10.0, -quals.astype(np.float64) / 10.0)
    hit = rng.random(bases.shape) < p_err
    codes = _CODE[bases]
    hit &= codes < 4
    shift = rng.integers(1, 4, size=int(hit.sum()), dtype=np.uint8)
    out = bases.copy()
    out[hit] = _ACGT[(codes[hit] + shift) % 4]
    return out


def draw_fragment_lengths(n: int, read_length: int, rng: np.random.Generator) -> np.ndarray:
    """Fragment lengths ~ Normal(350, 35) bp truncated to >= read_length + 1 (redrawn)."""
    lengths = np.rint(rng.normal(FRAGMENT_MEAN, FRAGMENT_SD, size=n)).astype(np.int64)
    low = lengths <= read_length
    for _ in range(100):
        if not low.any():
            break
        lengths[low] = np.rint(rng.normal(FRAGMENT_MEAN, FRAGMENT_SD, size=int(low.sum())))
        low = lengths <= read_length
    lengths[low] = read_length + 1
    return lengths


def n_pairs_for_depth(depth: float, genome_length: int, read_length: int) -> int:
    """Number of read pairs giving mean ``depth`` over ``genome_length`` bp (2 reads per pair)."""
    return int(round(depth * genome_length / (2 * read_length)))


def _indel_errors(ext: np.ndarray, read_length: int, rng: np.random.Generator) -> np.ndarray:
    """Cut extended reads (n, L+1) to (n, L), giving ~1e-5/base reads a 1-bp insertion/deletion."""
    n = ext.shape[0]
    reads = ext[:, :read_length].copy()
    p_read = 1.0 - (1.0 - INDEL_ERROR_RATE) ** read_length
    chosen = np.flatnonzero(rng.random(n) < p_read)
    for k in chosen:
        i = int(rng.integers(1, read_length - 1))
        row = ext[k]
        if rng.random() < 0.5:
            row = np.delete(row, i)
        else:
            row = np.insert(row, i, _ACGT[int(rng.integers(0, 4))])
        reads[k] = row[:read_length]
    return reads


def _fastq_block(names: Sequence[bytes], seqs: np.ndarray, quals: np.ndarray) -> bytes:
    """FASTQ text for reads: seqs uint8 ASCII (n, L), quals Phred (n, L)."""
    n, length = seqs.shape
    body = np.empty((n, 2 * length + 4), dtype=np.uint8)
    body[:, 0:length] = seqs
    body[:, length : length + 3] = np.frombuffer(b"\n+\n", dtype=np.uint8)
    body[:, length + 3 : 2 * length + 3] = quals + 33
    body[:, 2 * length + 3] = ord("\n")
    flat = body.tobytes()
    width = 2 * length + 4
    return b"".join(b"@" + names[k] + b"\n" + flat[k * width : (k + 1) * width] for k in range(n))


def _pair_chunks(
    haplotypes: Sequence[Haplotype], n_pairs: int, read_length: int, rng: np.random.Generator
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (first_index, R1 bases, R2 bases) chunks of pairs, uint8 ASCII (n, L+1) each.

    Pairs are spread over haplotypes in proportion to their length, then shuffled so that the
    FASTQ order carries no positional information.
    """
    arrays = [haplotype_array(h.seq) for h in haplotypes]
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    genome = np.concatenate(arrays)
    counts = rng.multinomial(n_pairs, lengths / lengths.sum())
    group = np.repeat(np.arange(len(arrays)), counts)
    group = group[rng.permutation(n_pairs)]
    frag = draw_fragment_lengths(n_pairs, read_length, rng)
    hap_len = lengths[group]
    # one extra base either side so that a deletion error can still fill the read
    frag = np.minimum(frag, hap_len - 2)
    start0 = 1 + np.floor(rng.random(n_pairs) * (hap_len - frag - 1)).astype(np.int64)
    reverse = rng.random(n_pairs) < 0.5
    cycles = np.arange(read_length + 1, dtype=np.int64)
    for lo in range(0, n_pairs, _CHUNK_PAIRS):
        hi = min(n_pairs, lo + _CHUNK_PAIRS)
        base = offsets[group[lo:hi]] + start0[lo:hi]
        fwd = genome[base[:, None] + cycles[None, :]]
        end = base + frag[lo:hi]  # exclusive end of the fragment in `genome`
        rev = _COMPLEMENT[genome[(end - 1)[:, None] - cycles[None, :]]]
        flip = reverse[lo:hi, None]
        yield lo, np.where(flip, rev, fwd), np.where(flip, fwd, rev)


def write_read_pairs(
    haplotypes: Sequence[Haplotype],
    sample: str,
    n_pairs: int,
    read_length: int,
    fq1: Path,
    fq2: Path,
    rng: np.random.Generator,
) -> int:
    """Simulate ``n_pairs`` pairs from ``haplotypes`` and write them as gzip (level 1) FASTQs.

    Read names are ``{sample}:{index}`` (index 1-based), the same in R1 and R2. R1 qualities
    fall from ~Q37 to ~Q27, R2 from ~Q36 to ~Q24. Returns the number of pairs written.
    """
    with (
        atomic_outputs(fq1, fq2) as (tmp1, tmp2),
        open(tmp1, "wb") as raw1,
        open(tmp2, "wb") as raw2,
    ):
        with (
            gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=raw1, mtime=0) as out1,
            gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=raw2, mtime=0) as out2,
        ):
            for lo, ext1, ext2 in _pair_chunks(haplotypes, n_pairs, read_length, rng):
                n = ext1.shape[0]
                names = [f"{sample}:{lo + k + 1}".encode() for k in range(n)]
                for ext, out, (q_start, q_end) in (
                    (ext1, out1, (37.0, 27.0)),
                    (ext2, out2, (36.0, 24.0)),
                ):
                    reads = _indel_errors(ext, read_length, rng)
                    quals = draw_qualities(n, read_length, q_start, q_end, rng)
                    reads = apply_substitution_errors(reads, quals, rng)
                    out.write(_fastq_block(names, reads, quals))
    log.info(
        "%s: wrote %d read pairs of %d bp to %s and %s", sample, n_pairs, read_length, fq1, fq2
    )
    return n_pairs
