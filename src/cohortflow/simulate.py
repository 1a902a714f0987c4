"""``cohortflow simulate``: a synthetic precision-medicine cohort with known truth.

One call writes, under ``outdir``, everything the pipeline needs to run and be checked: a
reference (synthetic, or a given FASTA), an Ensembl-style GFF3 whose CDS are valid ORFs, a
ClinVar-format knowledge base, a gnomAD-style population VCF, per-sample phased truth VCFs,
paired-end FASTQs simulated from each sample's two haplotypes, sample/unit sheets and a config.

Coordinates: internal positions are 0-based (``pos0``, ``start0``/``end0`` half-open); VCF and
GFF3 text is written 1-based (``pos1``). Every random draw comes from a generator seeded with
``(seed, stream)``, so the same arguments give byte-identical outputs and changing, say, the
depth leaves the genotypes untouched.
"""

from __future__ import annotations

import bisect
import datetime
import itertools
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pysam
import yaml
from pysam.libcbgzf import BGZFile

from cohortflow.atomic import atomic_output, atomic_outputs
from cohortflow.errors import CohortflowError
from cohortflow.simreads import Haplotype, n_pairs_for_depth, write_read_pairs
from cohortflow.tools import samtools
from cohortflow.vcfinfo import PATHOGENIC_CLASSES, variant_id

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# constants

_STREAM_GENOME, _STREAM_GENES, _STREAM_KB, _STREAM_POP, _STREAM_GT, _STREAM_SPIKE = range(1, 7)
_STREAM_READS = 100

_BASES = "TCAG"
_AMINO = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
CODON_TABLE: dict[str, str] = {
    a + b + c: _AMINO[16 * i + 4 * j + k]
    for i, a in enumerate(_BASES)
    for j, b in enumerate(_BASES)
    for k, c in enumerate(_BASES)
}
STOP_CODONS = ("TAA", "TAG", "TGA")
SENSE_CODONS = tuple(sorted(c for c, aa in CODON_TABLE.items() if aa != "*"))
_COMP = str.maketrans("ACGTNacgtn", "TGCANtgcan")

# ClinVar molecular-consequence values (MC) as ClinVar writes them
MC_TERMS = {
    "missense": "SO:0001583|missense_variant",
    "stop_gained": "SO:0001587|nonsense",
    "synonymous": "SO:0001819|synonymous_variant",
    "frameshift": "SO:0001589|frameshift_variant",
    "inframe_deletion": "SO:0001822|inframe_deletion",
    "inframe_insertion": "SO:0001821|inframe_insertion",
    "intron": "SO:0001627|intron_variant",
    "3_prime_utr": "SO:0001624|3_prime_UTR_variant",
}

CLINVAR_CLASSES = (
    "Pathogenic",
    "Likely_pathogenic",
    "Pathogenic/Likely_pathogenic",
    "Uncertain_significance",
    "Conflicting_classifications_of_pathogenicity",
    "Likely_benign",
    "Benign",
)
_REVIEW_STATUS: dict[str, tuple[str, ...]] = {
    "Pathogenic": (
        "reviewed_by_expert_panel",
        "criteria_provided,_multiple_submitters,_no_conflicts",
        "practice_guideline",
        "criteria_provided,_single_submitter",
    ),
    "Likely_pathogenic": (
        "criteria_provided,_single_submitter",
        "criteria_provided,_multiple_submitters,_no_conflicts",
        "no_assertion_criteria_provided",
    ),
    "Pathogenic/Likely_pathogenic": (
        "criteria_provided,_multiple_submitters,_no_conflicts",
        "reviewed_by_expert_panel",
    ),
    "Uncertain_significance": (
        "criteria_provided,_single_submitter",
        "no_assertion_criteria_provided",
        "criteria_provided,_multiple_submitters,_no_conflicts",
    ),
    "Conflicting_classifications_of_pathogenicity": (
        "criteria_provided,_conflicting_classifications",
    ),
    "Likely_benign": (
        "criteria_provided,_single_submitter",
        "criteria_provided,_multiple_submitters,_no_conflicts",
    ),
    "Benign": (
        "criteria_provided,_multiple_submitters,_no_conflicts",
        "reviewed_by_expert_panel",
        "criteria_provided,_single_submitter",
    ),
}

# (symbol, NCBI gene id, condition) borrowed for synthetic genomes; CFG<n> on a given reference
_SYNTHETIC_GENES = (
    ("BRCA1", 672, "Hereditary_breast_ovarian_cancer_syndrome"),
    ("MLH1", 4292, "Lynch_syndrome_1"),
    ("CFTR", 1080, "Cystic_fibrosis"),
    ("LDLR", 3949, "Hypercholesterolemia,_familial,_1"),
    ("MYH7", 4625, "Hypertrophic_cardiomyopathy_1"),
    ("TP53", 7157, "Li-Fraumeni_syndrome"),
    ("KCNQ1", 3784, "Long_QT_syndrome_1"),
    ("PAH", 5053, "Phenylketonuria"),
)

# In-frame motifs written into synthetic CDS so that indels in repeats hit coding sequence:
# poly-A 8, poly-T 7, poly-C 6, (CA)5, (GA)6; flanking codons break the runs.
_CDS_MOTIFS = (
    ("GCT", "AAA", "AAA", "AAG"),
    ("GAT", "TTT", "TTT", "CTG"),
    ("GAT", "CCC", "CCC", "GCA"),
    ("GAT", "CAC", "ACA", "CAC", "ACA", "GCT"),
    ("GCT", "GAG", "AGA", "GAG", "AGA", "TCT"),
)

MIN_GENOME_LENGTH = 50_000
POPULATION_AN = 100_000
_EDGE = 200  # no variant or read-region edge effects within this many bp of a region end


# ---------------------------------------------------------------------------------------------
# public result


@dataclass(frozen=True)
class SimulatedCohort:
    """Paths of everything ``simulate_cohort`` wrote (all under ``outdir``)."""

    outdir: Path
    reference: Path
    gff3: Path
    clinvar: Path
    population: Path
    config: Path
    samples_tsv: Path
    units_tsv: Path
    spiked_tsv: Path
    samples: list[str]
    truth_vcfs: dict[str, Path]
    fastqs: dict[str, tuple[Path, Path]]


# ---------------------------------------------------------------------------------------------
# small value types


@dataclass(frozen=True, order=True)
class Variant:
    """One allele: ``contig``, 0-based ``pos0`` of the first REF base, REF and ALT (upper case)."""

    contig: str
    pos0: int
    ref: str
    alt: str

    @property
    def pos1(self) -> int:
        """VCF (1-based) position."""
        return self.pos0 + 1


@dataclass(frozen=True)
class Region:
    """A stretch of reference sequence that reads and variants are simulated over (0-based)."""

    contig: str
    start0: int
    end0: int

    @property
    def length(self) -> int:
        return self.end0 - self.start0


@dataclass(frozen=True)
class Repeat:
    """A homopolymer or short tandem repeat ``[start0, end0)`` with repeat ``unit``."""

    contig: str
    start0: int
    end0: int
    unit: str


@dataclass(frozen=True)
class Transcript:
    """A single-transcript protein-coding gene; exons 0-based half-open in genomic order."""

    gene_id: str
    tx_id: str
    protein_id: str
    symbol: str
    ncbi_gene_id: int
    condition: str
    contig: str
    strand: str
    exons: tuple[tuple[int, int], ...]
    cds_start0: int
    cds_end0: int

    @property
    def start0(self) -> int:
        return self.exons[0][0]

    @property
    def end0(self) -> int:
        return self.exons[-1][1]

    @property
    def cds_segments(self) -> list[tuple[int, int]]:
        """CDS parts of the exons, genomic order, 0-based half-open."""
        out = []
        for s, e in self.exons:
            lo, hi = max(s, self.cds_start0), min(e, self.cds_end0)
            if lo < hi:
                out.append((lo, hi))
        return out


@dataclass(frozen=True)
class KbRecord:
    """One ClinVar record: ``written`` as it appears in the file, ``norm`` left-aligned."""

    written: Variant
    norm: Variant
    variation_id: int
    allele_id: int
    clnsig: str
    revstat: str
    clndn: str
    clnvc: str
    clnhgvs: str
    geneinfo: str | None
    mc: str | None
    rs: int | None
    consequence: str | None


@dataclass(frozen=True)
class PopSite:
    """A population VCF site (normalized) with allele count/number and AF = AC/AN."""

    variant: Variant
    ac: int
    an: int

    @property
    def af(self) -> float:
        return self.ac / self.an


@dataclass(frozen=True)
class TruthCall:
    """A sample's truth allele with phased genotype ``(hap0, hap1)`` alleles in {0, 1}."""

    variant: Variant
    gt: tuple[int, int]
    variation_id: int | None = None
    clnsig: str | None = None
    spiked: bool = False


@dataclass
class _Occupancy:
    """Non-overlapping intervals per contig (0-based half-open) for conflict checks."""

    spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def is_free(self, contig: str, start0: int, end0: int) -> bool:
        lst = self.spans.get(contig, [])
        i = bisect.bisect_left(lst, (start0, start0))
        if i > 0 and lst[i - 1][1] > start0:
            return False
        return not (i < len(lst) and lst[i][0] < end0)

    def add(self, contig: str, start0: int, end0: int) -> None:
        bisect.insort(self.spans.setdefault(contig, []), (start0, end0))


# ---------------------------------------------------------------------------------------------
# sequence helpers


def revcomp(seq: str) -> str:
    """Reverse complement of an upper/lower-case DNA string (N stays N)."""
    return seq.translate(_COMP)[::-1]


def translate(cds: str) -> str:
    """Amino acids (one letter, ``*`` for stop) of a CDS string read in frame 0."""
    return "".join(CODON_TABLE.get(cds[i : i + 3], "X") for i in range(0, len(cds) - 2, 3))


def normalize(seq: str, pos0: int, ref: str, alt: str) -> tuple[int, str, str]:
    """Left-align and trim an allele against ``seq`` (one contig, upper case, 0-based).

    Returns ``(pos0, ref, alt)`` of the leftmost, most parsimonious representation (the
    ``bcftools norm`` result); indels keep one anchor base.
    """
    while True:
        changed = False
        if ref and alt and ref[-1] == alt[-1]:
            ref, alt = ref[:-1], alt[:-1]
            changed = True
        if (not ref or not alt) and pos0 > 0:
            pos0 -= 1
            ref, alt = seq[pos0] + ref, seq[pos0] + alt
            changed = True
        if not changed:
            break
    while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0]:
        ref, alt = ref[1:], alt[1:]
        pos0 += 1
    return pos0, ref, alt


def right_shift(seq: str, pos0: int, ref: str, alt: str) -> tuple[int, str, str]:
    """The rightmost (3'-shifted) anchored representation of a simple insertion or deletion.

    Input and output are anchored VCF-style alleles (0-based ``pos0``); SNVs, MNVs and complex
    alleles come back unchanged.
    """
    if len(ref) > 1 and len(alt) == 1 and ref[0] == alt:
        k = len(ref) - 1
        d0 = pos0 + 1
        while d0 + k < len(seq) and seq[d0 + k] == seq[d0]:
            d0 += 1
        return d0 - 1, seq[d0 - 1 : d0 + k], seq[d0 - 1]
    if len(alt) > 1 and len(ref) == 1 and alt[0] == ref:
        ins = alt[1:]
        p = pos0 + 1
        while p < len(seq) and seq[p] == ins[0]:
            ins = ins[1:] + ins[0]
            p += 1
        return p - 1, seq[p - 1], seq[p - 1] + ins
    return pos0, ref, alt


def footprint(seq: str, v: Variant) -> tuple[int, int]:
    """0-based half-open span covering every equivalent placement of ``v`` (v normalized)."""
    rpos0, rref, _ = right_shift(seq, v.pos0, v.ref, v.alt)
    return v.pos0, max(v.pos0 + len(v.ref), rpos0 + len(rref))


def clinvar_hgvs(seq: str, v: Variant) -> tuple[str, str]:
    """ClinVar-style ``(CLNHGVS, CLNVC)`` of a normalized allele (3'-shifted g. notation)."""
    if len(v.ref) == 1 and len(v.alt) == 1:
        return f"{v.contig}:g.{v.pos1}{v.ref}>{v.alt}", "single_nucleotide_variant"
    a0, ref, alt = right_shift(seq, v.pos0, v.ref, v.alt)
    if len(ref) > len(alt):
        first1, last1 = a0 + 2, a0 + len(ref)
        span = f"{first1}" if first1 == last1 else f"{first1}_{last1}"
        return f"{v.contig}:g.{span}del", "Deletion"
    ins = alt[1:]
    k = len(ins)
    if seq[a0 + 1 - k : a0 + 1] == ins:
        first1, last1 = a0 + 2 - k, a0 + 1
        span = f"{first1}" if first1 == last1 else f"{first1}_{last1}"
        return f"{v.contig}:g.{span}dup", "Duplication"
    return f"{v.contig}:g.{a0 + 1}_{a0 + 2}ins{ins}", "Insertion"


def _true_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of the runs of True in a 1-D boolean array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(padded)
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def find_repeats(seq: str, region: Region) -> list[Repeat]:
    """Homopolymers (>= 6 bp) and tandem repeats (unit 2-6 bp, >= 3 copies, >= 8 bp) in region.

    Repeats are maximal runs of one period; a unit whose own minimal period is shorter
    (``CACA``) is reported only under that shorter unit. Sorted by start.
    """
    arr = np.frombuffer(seq[region.start0 : region.end0].encode(), dtype=np.uint8)
    out: list[Repeat] = []
    same = arr[1:] == arr[:-1]
    starts, ends = _true_runs(same)
    for s, e in zip(starts, ends, strict=True):
        if e - s + 1 >= 6 and arr[s] != ord("N"):
            out.append(
                Repeat(
                    region.contig, region.start0 + int(s), region.start0 + int(e) + 1, chr(arr[s])
                )
            )
    for k in range(2, 7):
        periodic = arr[k:] == arr[:-k]
        starts, ends = _true_runs(periodic)
        for s, e in zip(starts, ends, strict=True):
            total = int(e - s) + k
            if total < max(8, 3 * k):
                continue
            unit = seq[region.start0 + s : region.start0 + s + k]
            if "N" in unit or any(k % p == 0 and unit == unit[:p] * (k // p) for p in range(1, k)):
                continue
            out.append(
                Repeat(region.contig, region.start0 + int(s), region.start0 + int(s) + total, unit)
            )
    out.sort(key=lambda r: (r.start0, r.end0))
    return out


# ---------------------------------------------------------------------------------------------
# reference


def synthetic_genome(genome_length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two contigs ``chr1`` (60 %) and ``chr2`` (40 %) as uint8 ASCII arrays.

    GC varies between windows of 2-20 kb (GC 0.32-0.62); about one homopolymer (6-15 bp) and
    one short tandem repeat (unit 2-6 bp, 3-10 copies) per 1.5 kb each.
    """
    n1 = int(round(genome_length * 0.6))
    out: dict[str, np.ndarray] = {}
    for name, n in (("chr1", n1), ("chr2", genome_length - n1)):
        widths = rng.integers(2_000, 20_000, size=n // 2_000 + 2)
        gc_per_window = rng.uniform(0.32, 0.62, size=len(widths))
        gc = np.repeat(gc_per_window, widths)[:n]
        is_gc = rng.random(n) < gc
        coin = rng.random(n) < 0.5
        seq = np.where(
            is_gc, np.where(coin, ord("G"), ord("C")), np.where(coin, ord("A"), ord("T"))
        )
        seq = seq.astype(np.uint8)
        for _ in range(n // 1_500):
            length = int(rng.integers(6, 16))
            p = int(rng.integers(0, n - length))
            seq[p : p + length] = ord("ACGT"[int(rng.integers(0, 4))])
        for _ in range(n // 1_500):
            k = int(rng.integers(2, 7))
            unit = rng.choice(np.frombuffer(b"ACGT", dtype=np.uint8), size=k)
            while len(set(unit.tolist())) == 1:
                unit = rng.choice(np.frombuffer(b"ACGT", dtype=np.uint8), size=k)
            copies = int(rng.integers(3, 11))
            p = int(rng.integers(0, n - k * copies))
            seq[p : p + k * copies] = np.tile(unit, copies)
        out[name] = seq
    return out


def read_reference(path: Path) -> list[tuple[str, str]]:
    """Contigs ``(name, sequence as written)`` of a plain or (b)gzipped FASTA."""
    path = Path(path)
    if not path.is_file():
        raise CohortflowError(f"{path}: reference FASTA not found; give an existing FASTA file")
    contigs: list[tuple[str, str]] = []
    try:
        with pysam.FastxFile(str(path)) as fh:
            for rec in fh:
                contigs.append((rec.name or "", rec.sequence or ""))
    except (OSError, ValueError) as exc:
        raise CohortflowError(
            f"{path}: cannot read as FASTA ({exc}); give a plain or bgzipped FASTA"
        ) from None
    if not contigs or all(not s for _, s in contigs):
        raise CohortflowError(f"{path}: no sequences found; give a FASTA with at least one contig")
    names = [n for n, _ in contigs]
    if len(set(names)) != len(names):
        raise CohortflowError(f"{path}: duplicate contig names; make contig names unique")
    return contigs


def acgt_regions(
    seqs: dict[str, str], order: Sequence[str], genome_length: int, min_length: int = 5_000
) -> list[Region]:
    """The first ``genome_length`` bp of N-free sequence, as regions >= ``min_length`` bp.

    Regions are taken in contig order; the last one is cut so that the total is at most
    ``genome_length``.
    """
    regions: list[Region] = []
    total = 0
    for name in order:
        arr = np.frombuffer(seqs[name].encode(), dtype=np.uint8)
        acgt = np.isin(arr, np.frombuffer(b"ACGT", dtype=np.uint8))
        starts, ends = _true_runs(acgt)
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            if e - s < min_length:
                continue
            take = min(e - s, genome_length - total)
            if take < min_length:
                return regions
            regions.append(Region(name, s, s + take))
            total += take
    return regions


# ---------------------------------------------------------------------------------------------
# genes


def _random_cds(n_codons: int, rng: np.random.Generator) -> str:
    """ATG + random sense codons with two or three repeat motifs + a stop codon."""
    body = [SENSE_CODONS[int(i)] for i in rng.integers(0, len(SENSE_CODONS), size=n_codons - 2)]
    n_motifs = 3
    slots = np.linspace(0.2, 0.8, n_motifs) * (n_codons - 2)
    first = int(rng.integers(0, len(_CDS_MOTIFS)))
    for m, slot in enumerate(slots):
        motif = _CDS_MOTIFS[(first + m) % len(_CDS_MOTIFS)]
        at = int(slot)
        body[at : at + len(motif)] = motif
    return "ATG" + "".join(body[: n_codons - 2]) + STOP_CODONS[int(rng.integers(0, 3))]


def _write_synthetic_gene(
    genome: dict[str, np.ndarray],
    contig: str,
    start0: int,
    strand: str,
    index: int,
    rng: np.random.Generator,
) -> Transcript:
    """Write one multi-exon gene at ``start0`` into ``genome`` (in place) and return its model.

    The CDS (ATG, sense codons, stop) is split over 3-6 exons; introns keep the background
    sequence with GT...AG at their ends; UTRs are 60-150 bp (5') and 100-300 bp (3').
    """
    n_codons = int(rng.integers(180, 330))
    cds = _random_cds(n_codons, rng)
    n_exons = int(rng.integers(3, 7))
    motif_spans = [(m.start(), m.end()) for m in _motif_matches(cds)]
    # exon boundaries inside the CDS: >= 90 bp from its ends, >= 60 bp apart, not near motifs
    allowed = [
        c
        for c in range(90, len(cds) - 90)
        if all(not (s - 40 <= c <= e + 40) for s, e in motif_spans)
    ]
    cuts: list[int] = []
    for c in rng.permutation(allowed).tolist():
        if len(cuts) == n_exons - 1:
            break
        if all(abs(c - x) >= 60 for x in cuts):
            cuts.append(c)
    cuts.sort()
    utr5 = "".join("ACGT"[int(i)] for i in rng.integers(0, 4, size=int(rng.integers(60, 150))))
    utr3 = "".join("ACGT"[int(i)] for i in rng.integers(0, 4, size=int(rng.integers(100, 300))))
    pieces = [cds[a:b] for a, b in itertools.pairwise([0, *cuts, len(cds)])]
    pieces[0] = utr5 + pieces[0]
    pieces[-1] = pieces[-1] + utr3
    introns = [int(x) for x in rng.integers(250, 900, size=n_exons - 1)]
    span = sum(len(p) for p in pieces) + sum(introns)
    # transcript-oriented pre-mRNA built on the background so introns keep their repeats
    region = genome[contig][start0 : start0 + span].tobytes().decode()
    pre = list(region if strand == "+" else revcomp(region))
    tx_exons: list[tuple[int, int]] = []
    o = 0
    for i, piece in enumerate(pieces):
        pre[o : o + len(piece)] = piece
        tx_exons.append((o, o + len(piece)))
        o += len(piece)
        if i < len(introns):
            pre[o : o + 2] = "GT"
            pre[o + introns[i] - 2 : o + introns[i]] = "AG"
            o += introns[i]
    text = "".join(pre)
    genomic = text if strand == "+" else revcomp(text)
    genome[contig][start0 : start0 + span] = np.frombuffer(genomic.encode(), dtype=np.uint8)
    cds_tx0, cds_tx1 = len(utr5), len(utr5) + len(cds)  # CDS in spliced transcript coords
    exon_len_before = np.cumsum([0] + [e - s for s, e in tx_exons])

    def tx_to_pre(t: int) -> int:
        i = int(np.searchsorted(exon_len_before, t, side="right")) - 1
        return tx_exons[i][0] + t - int(exon_len_before[i])

    pre_cds0, pre_cds1 = tx_to_pre(cds_tx0), tx_to_pre(cds_tx1 - 1) + 1
    if strand == "+":
        exons = tuple((start0 + s, start0 + e) for s, e in tx_exons)
        cds0, cds1 = start0 + pre_cds0, start0 + pre_cds1
    else:
        end0 = start0 + span
        exons = tuple(sorted((end0 - e, end0 - s) for s, e in tx_exons))
        cds0, cds1 = end0 - pre_cds1, end0 - pre_cds0
    symbol, ncbi, condition = _SYNTHETIC_GENES[index % len(_SYNTHETIC_GENES)]
    return Transcript(
        gene_id=f"SIMG{index + 1:06d}",
        tx_id=f"SIMT{index + 1:06d}",
        protein_id=f"SIMP{index + 1:06d}",
        symbol=symbol,
        ncbi_gene_id=ncbi,
        condition=condition,
        contig=contig,
        strand=strand,
        exons=exons,
        cds_start0=cds0,
        cds_end0=cds1,
    )


def _motif_matches(cds: str) -> Iterator[re.Match[str]]:
    """Where the repeat motifs of :data:`_CDS_MOTIFS` occur in a CDS string."""
    return re.finditer("|".join("".join(m) for m in _CDS_MOTIFS), cds)


def synthetic_genes(
    genome: dict[str, np.ndarray], regions: Sequence[Region], rng: np.random.Generator
) -> list[Transcript]:
    """Place 4-6 genes evenly over the regions (alternating strands), writing their ORFs."""
    total = sum(r.length for r in regions)
    n_genes = int(min(6, max(4, total // 25_000)))
    alloc = [int(round(n_genes * r.length / total)) for r in regions]
    while sum(alloc) > n_genes:
        alloc[int(np.argmax(alloc))] -= 1
    while sum(alloc) < n_genes:
        alloc[int(np.argmin(alloc))] += 1
    genes: list[Transcript] = []
    for region, n in zip(regions, alloc, strict=True):
        slot = region.length // max(n, 1)
        for j in range(n):
            start0 = region.start0 + j * slot + min(2_000, slot // 6)
            idx = len(genes)
            tx = _write_synthetic_gene(genome, region.contig, start0, "+-"[idx % 2], idx, rng)
            if tx.end0 > region.start0 + (j + 1) * slot - 500:
                raise CohortflowError(
                    f"genome_length {total} is too short for {n_genes} genes; use >= {MIN_GENOME_LENGTH}"
                )
            genes.append(tx)
    return genes


def find_orfs(seq: str, region: Region, min_codons: int = 100) -> list[tuple[int, int, str]]:
    """Open reading frames (ATG ... stop) of >= ``min_codons`` codons inside ``region``.

    Returns ``(start0, end0, strand)``, genomic 0-based half-open including the stop codon.
    """
    text = seq[region.start0 : region.end0]
    out: list[tuple[int, int, str]] = []
    for strand, s in (("+", text), ("-", revcomp(text))):
        for frame in range(3):
            m = (len(s) - frame) // 3
            codons = np.frombuffer(s[frame : frame + 3 * m].encode(), dtype=np.uint8).reshape(m, 3)
            as_int = (
                codons[:, 0].astype(np.int32) << 16
                | codons[:, 1].astype(np.int32) << 8
                | codons[:, 2]
            )

            def code(c: str) -> int:
                return ord(c[0]) << 16 | ord(c[1]) << 8 | ord(c[2])

            stop_idx = np.flatnonzero(np.isin(as_int, [code(c) for c in STOP_CODONS]))
            atg_idx = np.flatnonzero(as_int == code("ATG"))
            prev = -1
            for st in stop_idx.tolist():
                j = int(np.searchsorted(atg_idx, prev + 1))
                if j < len(atg_idx) and atg_idx[j] < st and st - atg_idx[j] + 1 >= min_codons:
                    a0 = frame + 3 * int(atg_idx[j])
                    b0 = frame + 3 * st + 3
                    if strand == "+":
                        out.append((region.start0 + a0, region.start0 + b0, "+"))
                    else:
                        out.append((region.end0 - b0, region.end0 - a0, "-"))
                prev = st
    return out


def genes_on_reference(
    seqs: dict[str, str], regions: Sequence[Region], max_genes: int = 6
) -> list[Transcript]:
    """Single-exon genes on the longest real ORFs (>= 100 codons) of a given reference.

    A real reference cannot be rewritten, so only ORFs verified on it are used; genes are kept
    >= 3 kb apart and away from region ends. Symbols are made up (CFG1, CFG2, ...).
    """
    orfs: list[tuple[int, str, int, int, str]] = []
    for region in regions:
        for s, e, strand in find_orfs(seqs[region.contig], region):
            if s - 400 >= region.start0 + _EDGE and e + 400 <= region.end0 - _EDGE:
                orfs.append((-(e - s), region.contig, s, e, strand))
    orfs.sort()
    chosen: list[tuple[str, int, int, str]] = []
    occ = _Occupancy()
    for _, contig, s, e, strand in orfs:
        if len(chosen) >= max_genes:
            break
        if occ.is_free(contig, s - 3_000, e + 3_000):
            occ.add(contig, s - 3_000, e + 3_000)
            chosen.append((contig, s, e, strand))
    chosen.sort()
    genes = []
    for i, (contig, s, e, strand) in enumerate(chosen):
        _, _, condition = _SYNTHETIC_GENES[i % len(_SYNTHETIC_GENES)]
        utr5, utr3 = 150, 250
        exon = (s - utr5, e + utr3) if strand == "+" else (s - utr3, e + utr5)
        genes.append(
            Transcript(
                gene_id=f"SIMG{i + 1:06d}",
                tx_id=f"SIMT{i + 1:06d}",
                protein_id=f"SIMP{i + 1:06d}",
                symbol=f"CFG{i + 1}",
                ncbi_gene_id=990_001 + i,
                condition=condition,
                contig=contig,
                strand=strand,
                exons=(exon,),
                cds_start0=s,
                cds_end0=e,
            )
        )
    if len(genes) < 4:
        log.warning(
            "only %d ORFs of >= 100 codons found on the reference; wrote %d genes",
            len(genes),
            len(genes),
        )
    return genes


def cds_positions(tx: Transcript) -> np.ndarray:
    """Genomic 0-based position of each CDS base, in transcript (5'->3') order."""
    pos = np.concatenate([np.arange(s, e) for s, e in tx.cds_segments])
    return pos if tx.strand == "+" else pos[::-1]


def cds_sequence(seq: str, tx: Transcript) -> str:
    """The CDS of ``tx`` read 5'->3' on its strand (upper case)."""
    text = "".join(seq[s:e] for s, e in tx.cds_segments)
    return text if tx.strand == "+" else revcomp(text)


def validate_orf(seq: str, tx: Transcript) -> None:
    """Raise ValueError unless the CDS is ATG ... stop with no premature stop, length % 3 == 0."""
    cds = cds_sequence(seq, tx)
    aa = translate(cds)
    if len(cds) % 3 or not cds.startswith("ATG") or not aa.endswith("*") or "*" in aa[:-1]:
        raise ValueError(f"{tx.tx_id} CDS is not a valid ORF")


def _gene_features(g: Transcript) -> list[tuple[int, int, str, str, str]]:
    """(start0, end0, type, phase, attributes) of the exon, CDS and UTR lines of one gene."""
    tx = f"Parent=transcript:{g.tx_id}"
    feats = []
    tx_order = g.exons if g.strand == "+" else tuple(reversed(g.exons))
    for rank, (s, e) in enumerate(tx_order, start=1):
        feats.append((s, e, "exon", ".", f"{tx};Name={g.tx_id}.e{rank};rank={rank}"))
    cds_attrs = f"ID=CDS:{g.protein_id};{tx};protein_id={g.protein_id}"
    segs = g.cds_segments if g.strand == "+" else list(reversed(g.cds_segments))
    done = 0  # CDS bases before this segment, in transcript order
    for s, e in segs:
        feats.append((s, e, "CDS", str((3 - done % 3) % 3), cds_attrs))
        done += e - s
    left, right = ("five", "three") if g.strand == "+" else ("three", "five")
    for s, e in g.exons:
        if s < g.cds_start0:
            feats.append((s, min(e, g.cds_start0), f"{left}_prime_UTR", ".", tx))
        if e > g.cds_end0:
            feats.append((max(s, g.cds_end0), e, f"{right}_prime_UTR", ".", tx))
    return sorted(feats)


def gff3_lines(genes: Sequence[Transcript], contig_lengths: dict[str, int]) -> list[str]:
    """Ensembl-style GFF3 lines (gene / mRNA / exon / CDS / UTR) that bcftools csq accepts.

    GFF3 coordinates are 1-based inclusive; CDS phases follow the transcript order.
    """
    order = list(contig_lengths)
    used = sorted({g.contig for g in genes}, key=order.index)
    lines = ["##gff-version 3"]
    lines += [f"##sequence-region   {c} 1 {contig_lengths[c]}" for c in used]
    for g in sorted(genes, key=lambda t: (order.index(t.contig), t.start0)):
        gene_attrs = (
            f"ID=gene:{g.gene_id};Name={g.symbol};biotype=protein_coding;gene_id={g.gene_id}"
        )
        tx_attrs = (
            f"ID=transcript:{g.tx_id};Parent=gene:{g.gene_id};Name={g.symbol}-201;"
            f"biotype=protein_coding;transcript_id={g.tx_id};tag=Ensembl_canonical"
        )
        rows = [
            (g.start0, g.end0, "gene", ".", gene_attrs),
            (g.start0, g.end0, "mRNA", ".", tx_attrs),
        ]
        for s, e, kind, phase, attrs in rows + _gene_features(g):
            lines.append(
                f"{g.contig}\tcohortflow\t{kind}\t{s + 1}\t{e}\t.\t{g.strand}\t{phase}\t{attrs}"
            )
        lines.append("###")
    return lines


def write_gff3(path: Path, genes: Sequence[Transcript], contig_lengths: dict[str, int]) -> None:
    """Write :func:`gff3_lines` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(gff3_lines(genes, contig_lengths)) + "\n")


# ---------------------------------------------------------------------------------------------
# knowledge base (ClinVar-format VCF)

# (kind, clnsig) of the records drawn in each gene; a second ALT at the first stop-gain site
# makes a multiallelic site.
_GENE_PLAN = (
    ("stop_gained", "Pathogenic"),
    ("stop_gained", "Likely_pathogenic"),
    ("frameshift_del", "Pathogenic"),
    ("frameshift_ins", "Pathogenic/Likely_pathogenic"),
    ("frameshift_dup", "Likely_pathogenic"),
    ("repeat_indel", "Pathogenic"),
    ("repeat_indel", "Likely_pathogenic"),
    ("missense", "Likely_pathogenic"),
    ("missense", "Uncertain_significance"),
    ("missense", "Conflicting_classifications_of_pathogenicity"),
    ("inframe_del", "Uncertain_significance"),
    ("synonymous", "Likely_benign"),
    ("synonymous", "Benign"),
    ("noncoding", "Benign"),
)
_INTERGENIC_PLAN = (
    ("snv", "Uncertain_significance"),
    ("snv", "Benign"),
    ("homopolymer_del", "Benign"),
    ("snv", "Likely_benign"),
    ("str_dup", "Likely_benign"),
    ("snv", "Benign"),
)
_FRAMESHIFT_LENGTHS = (1, 1, 1, 2, 2, 4, 5, 7, 8, 10)


@dataclass(frozen=True)
class _Draft:
    written: Variant
    norm: Variant
    clnsig: str
    consequence: str | None
    gene: Transcript | None


class _GenePicker:
    """Draws variants of a requested consequence inside one gene of the reference."""

    def __init__(
        self,
        seq: str,
        tx: Transcript,
        repeats: Sequence[Repeat],
        occ: _Occupancy,
        rng: np.random.Generator,
    ) -> None:
        self.seq, self.tx, self.occ, self.rng = seq, tx, occ, rng
        self.pos = cds_positions(tx)
        self.cds = cds_sequence(seq, tx)
        self.n_codons = len(self.cds) // 3
        # interior: CDS bases >= 12 bp from any CDS segment end (indels cannot slide out)
        self.interior = np.zeros(tx.end0 - tx.start0, dtype=bool)
        for s, e in tx.cds_segments:
            self.interior[s + 12 - tx.start0 : e - 12 - tx.start0] = True
        self.repeats = [
            r
            for r in repeats
            if r.contig == tx.contig and self.inside(r.start0 - 3, r.end0 + 3) and len(r.unit) % 3
        ]

    def inside(self, start0: int, end0: int) -> bool:
        lo, hi = start0 - self.tx.start0, end0 - self.tx.start0
        return 0 <= lo < hi <= len(self.interior) and bool(self.interior[lo:hi].all())

    def accept(self, v: Variant, coding: bool = True) -> bool:
        s, e = footprint(self.seq, v)
        if coding and not self.inside(s, e):
            return False
        if not self.occ.is_free(v.contig, s - 3, e + 3):
            return False
        self.occ.add(v.contig, s - 3, e + 3)
        return True

    def variant(self, pos0: int, ref: str, alt: str) -> Variant:
        p, r, a = normalize(self.seq, pos0, ref, alt)
        return Variant(self.tx.contig, p, r, a)

    def snv(self, kind: str, at: int | None = None, exclude: str = "") -> Variant | None:
        """An SNV giving ``kind`` (stop_gained, missense, synonymous) at a random codon, or at
        CDS index ``at`` (0-based, transcript order) with an ALT other than ``exclude``."""
        for _ in range(3_000):
            if at is None:
                k, j = int(self.rng.integers(1, self.n_codons - 1)), int(self.rng.integers(0, 3))
            else:
                k, j = divmod(at, 3)
            old = self.cds[3 * k : 3 * k + 3]
            alt_t = "ACGT"[int(self.rng.integers(0, 4))]
            if alt_t == old[j]:
                continue
            new = old[:j] + alt_t + old[j + 1 :]
            aa_old, aa_new = CODON_TABLE[old], CODON_TABLE[new]
            got = (
                "stop_gained" if aa_new == "*" else "synonymous" if aa_new == aa_old else "missense"
            )
            if got != kind:
                continue
            g = int(self.pos[3 * k + j])
            alt = alt_t if self.tx.strand == "+" else alt_t.translate(_COMP)
            if alt == exclude:
                continue
            v = Variant(self.tx.contig, g, self.seq[g], alt)
            if at is not None:
                return v  # second allele of a multiallelic site: same footprint on purpose
            if self.inside(g - 1, g + 2) and self.accept(v):
                return v
        return None

    def indel(self, kind: str) -> Variant | None:
        """A coding indel: frameshift_del / frameshift_ins / frameshift_dup / inframe_del."""
        for _ in range(3_000):
            if kind == "inframe_del":
                k = int(self.rng.integers(1, self.n_codons - 1))
                lo = int(self.pos[3 * k : 3 * k + 3].min())
                ref = self.seq[lo - 1 : lo + 3]
                v = self.variant(lo - 1, ref, ref[0])
            else:
                n = _FRAMESHIFT_LENGTHS[int(self.rng.integers(0, len(_FRAMESHIFT_LENGTHS)))]
                g = int(self.pos[int(self.rng.integers(0, len(self.pos)))])
                if not self.inside(g - n - 2, g + n + 2):
                    continue
                if kind == "frameshift_del":
                    v = self.variant(g - 1, self.seq[g - 1 : g + n], self.seq[g - 1])
                elif kind == "frameshift_dup":
                    v = self.variant(g, self.seq[g], self.seq[g] + self.seq[g - n + 1 : g + 1])
                else:
                    ins = "".join("ACGT"[int(i)] for i in self.rng.integers(0, 4, size=n))
                    v = self.variant(g, self.seq[g], self.seq[g] + ins)
            frameshift = (len(v.alt) - len(v.ref)) % 3 != 0
            if frameshift != (kind != "inframe_del"):
                continue  # normalization changed the frame effect; draw again
            if self.accept(v):
                return v
        return None

    def repeat_indel(self, index: int) -> Variant | None:
        """Delete or duplicate one unit of a coding homopolymer / short tandem repeat."""
        order = self.rng.permutation(len(self.repeats)).tolist()
        for i in order:
            r = self.repeats[i]
            k = len(r.unit)
            a0 = r.start0 - 1
            if index % 2 == 0:
                v = self.variant(a0, self.seq[a0 : a0 + k + 1], self.seq[a0])
            else:
                v = self.variant(a0, self.seq[a0], self.seq[a0] + r.unit)
            if self.accept(v):
                return v
        return None

    def noncoding(self) -> tuple[Variant, str] | None:
        """An intronic SNV (>= 30 bp from splice sites) or, in single-exon genes, a 3' UTR SNV."""
        tx = self.tx
        introns = [
            (a[1] + 30, b[0] - 30) for a, b in itertools.pairwise(tx.exons) if b[0] - a[1] > 100
        ]
        if introns:
            spans, kind = introns, "intron"
        else:
            utr = (
                (tx.cds_end0 + 20, tx.end0 - 20)
                if tx.strand == "+"
                else (tx.start0 + 20, tx.cds_start0 - 20)
            )
            spans, kind = [utr], "3_prime_utr"
        for _ in range(1_000):
            s, e = spans[int(self.rng.integers(0, len(spans)))]
            if e <= s:
                continue
            g = int(self.rng.integers(s, e))
            ref = self.seq[g]
            alt = "ACGT"[int(self.rng.integers(0, 4))]
            if alt == ref or ref not in "ACGT":
                continue
            v = Variant(tx.contig, g, ref, alt)
            if self.accept(v, coding=False):
                return v, kind
        return None


def _consequence_of_indel(v: Variant) -> str:
    diff = len(v.alt) - len(v.ref)
    if diff % 3:
        return "frameshift"
    return "inframe_deletion" if diff < 0 else "inframe_insertion"


def _gene_drafts(
    seq: str,
    tx: Transcript,
    repeats: Sequence[Repeat],
    occ: _Occupancy,
    rng: np.random.Generator,
    shift_counter: itertools.count,  # type: ignore[type-arg]
) -> list[_Draft]:
    picker = _GenePicker(seq, tx, repeats, occ, rng)
    drafts: list[_Draft] = []
    multi_done = False
    for n_repeat, (kind, clnsig) in enumerate(_GENE_PLAN):
        written: Variant | None = None
        v: Variant | None
        cons: str | None
        if kind in ("stop_gained", "missense", "synonymous"):
            v = picker.snv(kind)
            cons = kind
        elif kind == "repeat_indel":
            v = picker.repeat_indel(n_repeat)
            cons = _consequence_of_indel(v) if v else None
            if v is not None and next(shift_counter) % 2 == 0:
                p, r, a = right_shift(seq, v.pos0, v.ref, v.alt)
                written = Variant(v.contig, p, r, a)
        elif kind == "noncoding":
            got = picker.noncoding()
            v, cons = got if got else (None, None)
        else:
            v = picker.indel(kind)
            cons = _consequence_of_indel(v) if v else None
        if v is None:
            log.info("%s: no room for a %s variant; skipped", tx.symbol, kind)
            continue
        drafts.append(_Draft(written or v, v, clnsig, cons, tx))
        if kind == "stop_gained" and not multi_done:
            t = int(np.flatnonzero(picker.pos == v.pos0)[0])
            for other_kind in ("missense", "synonymous"):
                w = picker.snv(other_kind, at=t, exclude=v.alt)
                if w is not None:
                    drafts.append(_Draft(w, w, "Uncertain_significance", other_kind, tx))
                    multi_done = True
                    break
    return drafts


def _random_position(regions: Sequence[Region], rng: np.random.Generator) -> tuple[str, int]:
    """A uniform 0-based position at least _EDGE bp inside one of ``regions``."""
    lengths = np.array([r.length - 2 * _EDGE for r in regions], dtype=np.float64)
    i = int(rng.choice(len(regions), p=lengths / lengths.sum()))
    r = regions[i]
    return r.contig, int(rng.integers(r.start0 + _EDGE, r.end0 - _EDGE))


def _intergenic_drafts(
    seqs: dict[str, str],
    regions: Sequence[Region],
    repeats: Sequence[Repeat],
    genes: Sequence[Transcript],
    occ: _Occupancy,
    n: int,
    rng: np.random.Generator,
) -> list[_Draft]:
    """``n`` records outside genes (>= 1 kb away): SNVs and repeat indels, some right-shifted."""
    gene_occ = _Occupancy()
    for g in genes:
        gene_occ.add(g.contig, g.start0 - 1_000, g.end0 + 1_000)
    drafts: list[_Draft] = []
    for i in range(n):
        kind, clnsig = _INTERGENIC_PLAN[i % len(_INTERGENIC_PLAN)]
        for _ in range(5_000):
            written = None
            if kind == "snv":
                contig, p = _random_position(regions, rng)
                ref = seqs[contig][p]
                alt = "ACGT"[int(rng.integers(0, 4))]
                if alt == ref or ref not in "ACGT":
                    continue
                v = Variant(contig, p, ref, alt)
            else:
                unit_len_ok = (
                    (lambda u: len(u) == 1) if kind == "homopolymer_del" else (lambda u: len(u) > 1)
                )
                pool = [r for r in repeats if unit_len_ok(r.unit)]
                if not pool:
                    break
                r = pool[int(rng.integers(0, len(pool)))]
                seq = seqs[r.contig]
                a0 = r.start0 - 1
                if not any(
                    x.contig == r.contig and x.start0 + _EDGE <= a0 and r.end0 + _EDGE <= x.end0
                    for x in regions
                ):
                    continue
                if kind == "homopolymer_del":
                    p0, rr, aa = normalize(seq, a0, seq[a0 : a0 + 2], seq[a0])
                else:
                    p0, rr, aa = normalize(seq, a0, seq[a0], seq[a0] + r.unit)
                v = Variant(r.contig, p0, rr, aa)
                if kind == "homopolymer_del":
                    rp, rref, ralt = right_shift(seq, p0, rr, aa)
                    written = Variant(r.contig, rp, rref, ralt)
            s, e = footprint(seqs[v.contig], v)
            if not gene_occ.is_free(v.contig, s, e) or not occ.is_free(v.contig, s - 3, e + 3):
                continue
            occ.add(v.contig, s - 3, e + 3)
            drafts.append(_Draft(written or v, v, clnsig, None, None))
            break
    return drafts


def _clndn(clnsig: str, condition: str | None, i: int) -> str:
    if clnsig in ("Benign", "Likely_benign"):
        return ("not_specified|not_provided", "not_provided", "not_specified")[i % 3]
    if condition is None:
        return "not_provided"
    return condition if i % 2 else f"{condition}|not_provided"


def build_knowledge_base(
    seqs: dict[str, str],
    contig_order: Sequence[str],
    regions: Sequence[Region],
    repeats: Sequence[Repeat],
    genes: Sequence[Transcript],
    rng: np.random.Generator,
) -> list[KbRecord]:
    """ClinVar records (60-100) in and around ``genes``, sorted as written (contig, pos, alt).

    Per gene: stop-gain and frameshift P/LP, repeat indels (half written right-shifted, i.e.
    not left-aligned), missense LP/VUS/conflicting, in-frame deletion VUS, synonymous and
    non-coding B/LB, and one multiallelic site; plus intergenic VUS/B/LB records.
    """
    occ = _Occupancy()
    shift_counter = itertools.count()
    drafts: list[_Draft] = []
    for tx in genes:
        drafts += _gene_drafts(seqs[tx.contig], tx, repeats, occ, rng, shift_counter)
    n_intergenic = max(6, 60 - len(drafts))
    drafts += _intergenic_drafts(seqs, regions, repeats, genes, occ, n_intergenic, rng)
    order = {c: i for i, c in enumerate(contig_order)}
    drafts.sort(
        key=lambda d: (order[d.written.contig], d.written.pos0, d.written.ref, d.written.alt)
    )
    n = len(drafts)
    # unique IDs without materialising the ranges (Generator.choice samples a set for small n)
    variation_ids = np.sort(10_000 + rng.choice(4_000_000, size=n, replace=False))
    allele_ids = 20_000 + rng.choice(4_200_000, size=n, replace=False)
    rs_ids = 100_000 + rng.choice(2_100_000_000, size=n, replace=False)
    has_rs = rng.random(n) < 0.7
    counters: dict[str, itertools.count] = {c: itertools.count() for c in CLINVAR_CLASSES}  # type: ignore[type-arg]
    out: list[KbRecord] = []
    for i, d in enumerate(drafts):
        j = next(counters[d.clnsig])
        statuses = _REVIEW_STATUS[d.clnsig]
        hgvs, clnvc = clinvar_hgvs(seqs[d.norm.contig], d.norm)
        out.append(
            KbRecord(
                written=d.written,
                norm=d.norm,
                variation_id=int(variation_ids[i]),
                allele_id=int(allele_ids[i]),
                clnsig=d.clnsig,
                revstat=statuses[j % len(statuses)],
                clndn=_clndn(d.clnsig, d.gene.condition if d.gene else None, j),
                clnvc=clnvc,
                clnhgvs=hgvs,
                geneinfo=f"{d.gene.symbol}:{d.gene.ncbi_gene_id}" if d.gene else None,
                mc=MC_TERMS[d.consequence] if d.consequence else None,
                rs=int(rs_ids[i]) if has_rs[i] else None,
                consequence=d.consequence,
            )
        )
    return out


_CLINVAR_INFO = (
    ("ALLELEID", "1", "Integer", "the ClinVar Allele ID"),
    (
        "CLNDN",
        ".",
        "String",
        "ClinVar's preferred disease name for the concept specified by disease identifiers in CLNDISDB",
    ),
    ("CLNHGVS", ".", "String", "Top-level (primary assembly, alt, or patch) HGVS expression."),
    (
        "CLNREVSTAT",
        ".",
        "String",
        "ClinVar review status of germline classification for the Variation ID",
    ),
    (
        "CLNSIG",
        ".",
        "String",
        "Aggregate germline classification for this single variant; multiple values are separated by a vertical bar",
    ),
    ("CLNVC", "1", "String", "Variant type"),
    (
        "GENEINFO",
        "1",
        "String",
        "Gene(s) for the variant reported as gene symbol:gene id. The gene symbol and id are delimited by a colon (:) and each pair is delimited by a vertical bar (|)",
    ),
    (
        "MC",
        ".",
        "String",
        "comma separated list of molecular consequence in the form of Sequence Ontology ID|molecular_consequence",
    ),
    (
        "ORIGIN",
        ".",
        "String",
        "Allele origin. One or more of the following values may be added: 0 - unknown; 1 - germline; 2 - somatic; 4 - inherited; 8 - paternal; 16 - maternal; 32 - de-novo; 64 - biparental; 128 - uniparental; 256 - not-tested; 512 - tested-inconclusive; 1073741824 - other",
    ),
    ("RS", ".", "String", "dbSNP ID (i.e. rs number)"),
)


def file_date(seed: int) -> str:
    """A fixed ``YYYY-MM-DD`` derived from the seed (no wall-clock dates in the data)."""
    return (datetime.date(2025, 1, 1) + datetime.timedelta(days=seed % 365)).isoformat()


def _contig_lines(contig_lengths: dict[str, int]) -> list[str]:
    return [f"##contig=<ID={c},length={n}>" for c, n in contig_lengths.items()]


def clinvar_lines(
    records: Sequence[KbRecord], contig_lengths: dict[str, int], build: str, seed: int
) -> list[str]:
    """The text lines of a ClinVar-format VCF (VCFv4.1, sites only) for ``records``."""
    lines = [
        "##fileformat=VCFv4.1",
        f"##fileDate={file_date(seed)}",
        "##source=ClinVar",
        f"##reference={build}",
        '##ID=<Description="ClinVar Variation ID">',
    ]
    lines += [
        f'##INFO=<ID={i},Number={n},Type={t},Description="{d}">' for i, n, t, d in _CLINVAR_INFO
    ]
    lines += _contig_lines(contig_lengths)
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    for r in records:
        info = [
            f"ALLELEID={r.allele_id}",
            f"CLNDN={r.clndn}",
            f"CLNHGVS={r.clnhgvs}",
            f"CLNREVSTAT={r.revstat}",
            f"CLNSIG={r.clnsig}",
            f"CLNVC={r.clnvc}",
        ]
        if r.geneinfo:
            info.append(f"GENEINFO={r.geneinfo}")
        if r.mc:
            info.append(f"MC={r.mc}")
        info.append("ORIGIN=1")
        if r.rs is not None:
            info.append(f"RS={r.rs}")
        w = r.written
        lines.append(
            f"{w.contig}\t{w.pos1}\t{r.variation_id}\t{w.ref}\t{w.alt}\t.\t.\t{';'.join(info)}"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# population VCF


def _log_uniform(lo: float, hi: float, rng: np.random.Generator) -> float:
    return float(10 ** rng.uniform(np.log10(lo), np.log10(hi)))


def build_population(
    seqs: dict[str, str],
    contig_order: Sequence[str],
    regions: Sequence[Region],
    repeats: Sequence[Repeat],
    kb: Sequence[KbRecord],
    rng: np.random.Generator,
) -> list[PopSite]:
    """gnomAD-style sites: ~1 per kb (85 % SNV, 15 % indel, half of those in repeats), AF in
    0.005-0.95 (half log-uniform, half uniform over 0.05-0.95); plus benign KB alleles at common
    AF (0.05-0.6) and every third P/LP KB allele at a very low AF (1e-5 to 3e-4).
    Sorted, normalized, AN = 100,000.
    """
    occ = _Occupancy()
    for r in kb:
        s, e = footprint(seqs[r.norm.contig], r.norm)
        occ.add(r.norm.contig, s - 10, e + 10)
    total = sum(r.length for r in regions)
    n_target = int(round(total / 1_000))
    sites: list[PopSite] = []

    def add(v: Variant, af: float, pad: int) -> bool:
        s, e = footprint(seqs[v.contig], v)
        if pad and not occ.is_free(v.contig, s - pad, e + pad):
            return False
        if pad:
            occ.add(v.contig, s - pad, e + pad)
        sites.append(PopSite(v, max(1, int(round(af * POPULATION_AN))), POPULATION_AN))
        return True

    usable_repeats = [
        r
        for r in repeats
        if any(
            x.contig == r.contig and x.start0 + _EDGE <= r.start0 and r.end0 + _EDGE <= x.end0
            for x in regions
        )
    ]
    n_bg = 0
    for _ in range(30 * n_target):
        if n_bg >= n_target:
            break
        u = rng.random()
        # half rare-skewed (log-uniform), half common (uniform): a sample then carries about
        # half of the sites, ~0.5 variant alleles per kb, closer to a human genome
        if rng.random() < 0.5:
            af = _log_uniform(0.005, 0.95, rng)
        else:
            af = float(rng.uniform(0.05, 0.95))
        if u < 0.85:
            contig, p = _random_position(regions, rng)
            ref = seqs[contig][p]
            if ref not in "ACGT":
                continue
            transition = {"A": "G", "G": "A", "C": "T", "T": "C"}[ref]
            others = [b for b in "ACGT" if b not in (ref, transition)]
            alt = transition if rng.random() < 2 / 3 else others[int(rng.integers(0, 2))]
            v = Variant(contig, p, ref, alt)
        elif u < 0.925 and usable_repeats:
            rep = usable_repeats[int(rng.integers(0, len(usable_repeats)))]
            seq = seqs[rep.contig]
            k = len(rep.unit) * (2 if len(rep.unit) == 1 and rng.random() < 0.3 else 1)
            a0 = rep.start0 - 1
            if rng.random() < 0.5:
                p0, rr, aa = normalize(seq, a0, seq[a0 : a0 + k + 1], seq[a0])
            else:
                p0, rr, aa = normalize(seq, a0, seq[a0], seq[a0] + seq[rep.start0 : rep.start0 + k])
            v = Variant(rep.contig, p0, rr, aa)
        else:
            contig, p = _random_position(regions, rng)
            seq = seqs[contig]
            n = (1, 1, 1, 2, 2, 3, 4, 5, 6, 8, 10)[int(rng.integers(0, 11))]
            if "N" in seq[p - 1 : p + n + 1]:
                continue
            if rng.random() < 0.5:
                p0, rr, aa = normalize(seq, p - 1, seq[p - 1 : p + n], seq[p - 1])
            else:
                ins = "".join("ACGT"[int(i)] for i in rng.integers(0, 4, size=n))
                p0, rr, aa = normalize(seq, p, seq[p], seq[p] + ins)
            v = Variant(contig, p0, rr, aa)
        if add(v, af, pad=5):
            n_bg += 1
    n_plp = 0
    for r in kb:
        if r.clnsig in ("Benign", "Likely_benign"):
            add(r.norm, float(rng.uniform(0.05, 0.6)), pad=0)
        elif r.clnsig in PATHOGENIC_CLASSES:
            if n_plp % 3 == 0:
                add(r.norm, _log_uniform(1e-5, 3e-4, rng), pad=0)
            n_plp += 1
    order = {c: i for i, c in enumerate(contig_order)}
    sites.sort(
        key=lambda s: (order[s.variant.contig], s.variant.pos0, s.variant.ref, s.variant.alt)
    )
    return sites


def population_lines(
    sites: Sequence[PopSite], contig_lengths: dict[str, int], build: str, seed: int
) -> list[str]:
    """Text lines of the sites-only population VCF (INFO AC, AN, AF)."""
    lines = [
        "##fileformat=VCFv4.2",
        f"##fileDate={file_date(seed).replace('-', '')}",
        "##source=cohortflow.simulate population allele frequencies",
        f"##reference={build}",
        '##INFO=<ID=AC,Number=A,Type=Integer,Description="Alternate allele count">',
        '##INFO=<ID=AN,Number=1,Type=Integer,Description="Total number of alleles">',
        '##INFO=<ID=AF,Number=A,Type=Float,Description="Alternate allele frequency">',
        *_contig_lines(contig_lengths),
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    for s in sites:
        v = s.variant
        lines.append(
            f"{v.contig}\t{v.pos1}\t.\t{v.ref}\t{v.alt}\t.\tPASS\tAC={s.ac};AN={s.an};AF={s.af:.6g}"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# genotypes, truth and haplotypes


def draw_genotypes(
    afs: Sequence[float] | np.ndarray, n_samples: int, rng: np.random.Generator
) -> np.ndarray:
    """Hardy-Weinberg genotypes: two independent haplotype draws per sample and site.

    ``afs``: alternate allele frequencies, shape (n_sites,). Returns uint8 alleles in {0, 1},
    shape (n_samples, n_sites, 2); axis 2 is (haplotype 0, haplotype 1).
    """
    p = np.asarray(afs, dtype=np.float64)
    return (rng.random((n_samples, p.size, 2)) < p[None, :, None]).astype(np.uint8)


def sample_names(n_samples: int) -> list[str]:
    """``SIM001``, ``SIM002``, ..."""
    return [f"SIM{i + 1:03d}" for i in range(n_samples)]


def assemble_truth(
    seqs: dict[str, str],
    contig_order: Sequence[str],
    kb: Sequence[KbRecord],
    population: Sequence[PopSite],
    samples: Sequence[str],
    spike_rng: np.random.Generator,
    genotype_rng: np.random.Generator,
) -> dict[str, list[TruthCall]]:
    """Each sample's truth calls: spiked KB alleles first, then population HWE draws.

    Every P/LP KB allele goes to one sample (round-robin, next sample on conflict; about 15 %
    hom), every second VUS/conflicting allele likewise. Population draws that overlap a call
    already in the sample (any haplotype, footprints + 1 bp) are skipped.
    """
    n = len(samples)
    occ = {s: _Occupancy() for s in samples}
    calls: dict[str, list[TruthCall]] = {s: [] for s in samples}
    kb_by_variant = {r.norm: r for r in kb}

    def place(
        sample: str, v: Variant, gt: tuple[int, int], rec: KbRecord | None, spiked: bool
    ) -> bool:
        s, e = footprint(seqs[v.contig], v)
        if not occ[sample].is_free(v.contig, s - 1, e + 1):
            return False
        occ[sample].add(v.contig, s - 1, e + 1)
        calls[sample].append(
            TruthCall(v, gt, rec.variation_id if rec else None, rec.clnsig if rec else None, spiked)
        )
        return True

    plp = [r for r in kb if r.clnsig in PATHOGENIC_CLASSES]
    vus = [
        r
        for r in kb
        if r.clnsig not in PATHOGENIC_CLASSES and r.clnsig not in ("Benign", "Likely_benign")
    ]
    to_spike = plp + vus[::2]
    for i, rec in enumerate(to_spike):
        hom = spike_rng.random() < 0.15
        first = int(spike_rng.integers(0, 2))
        gt = (1, 1) if hom else (first, 1 - first)
        for attempt in range(n):
            if place(samples[(i + attempt) % n], rec.norm, gt, rec, spiked=True):
                break
        else:
            log.info(
                "KB allele %s (%s) fits no sample; not spiked",
                variant_id(rec.norm.contig, rec.norm.pos1, rec.norm.ref, rec.norm.alt),
                rec.clnsig,
            )
    genotypes = draw_genotypes([s.af for s in population], n, genotype_rng)
    skipped = 0
    for si, sample in enumerate(samples):
        spiked = {c.variant for c in calls[sample]}
        carried = np.flatnonzero(genotypes[si].any(axis=1))
        for j in carried.tolist():
            v = population[j].variant
            if v in spiked:
                continue
            gt = (int(genotypes[si, j, 0]), int(genotypes[si, j, 1]))
            if not place(sample, v, gt, kb_by_variant.get(v), spiked=False):
                skipped += 1
    if skipped:
        log.info(
            "skipped %d population genotype draws that overlapped another allele of the sample",
            skipped,
        )
    order = {c: i for i, c in enumerate(contig_order)}
    for sample in samples:
        calls[sample].sort(
            key=lambda c: (order[c.variant.contig], c.variant.pos0, c.variant.ref, c.variant.alt)
        )
    return calls


def truth_lines(
    sample: str, calls: Sequence[TruthCall], contig_lengths: dict[str, int], build: str, seed: int
) -> list[str]:
    """Text lines of one sample's truth VCF (phased GT; INFO/CLNVID on KB alleles)."""
    lines = [
        "##fileformat=VCFv4.2",
        f"##fileDate={file_date(seed).replace('-', '')}",
        "##source=cohortflow.simulate truth genotypes",
        f"##reference={build}",
        '##INFO=<ID=CLNVID,Number=1,Type=Integer,Description="ClinVar variation ID of this allele in kb/clinvar.vcf.gz">',
        '##INFO=<ID=CLNSIG,Number=1,Type=String,Description="ClinVar classification of this allele">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Phased genotype">',
        *_contig_lines(contig_lengths),
        f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{sample}",
    ]
    for c in calls:
        v = c.variant
        info = f"CLNVID={c.variation_id};CLNSIG={c.clnsig}" if c.variation_id is not None else "."
        lines.append(
            f"{v.contig}\t{v.pos1}\t.\t{v.ref}\t{v.alt}\t.\tPASS\t{info}\tGT\t{c.gt[0]}|{c.gt[1]}"
        )
    return lines


def build_haplotypes(
    seqs: dict[str, str], regions: Sequence[Region], calls: Sequence[TruthCall]
) -> list[Haplotype]:
    """The two haplotype sequences of every region with the sample's alleles applied."""
    out: list[Haplotype] = []
    for region in regions:
        seq = seqs[region.contig]
        inside = [
            c
            for c in calls
            if c.variant.contig == region.contig
            and region.start0 <= c.variant.pos0
            and c.variant.pos0 + len(c.variant.ref) <= region.end0
        ]
        for h in (0, 1):
            pieces: list[str] = []
            cursor = region.start0
            for c in inside:
                if c.gt[h]:
                    pieces.append(seq[cursor : c.variant.pos0])
                    pieces.append(c.variant.alt)
                    cursor = c.variant.pos0 + len(c.variant.ref)
            pieces.append(seq[cursor : region.end0])
            out.append(
                Haplotype(
                    f"{region.contig}:{region.start0}-{region.end0}/hap{h}",
                    "".join(pieces).encode(),
                )
            )
    return out


# ---------------------------------------------------------------------------------------------
# writers


def write_bgzf_vcf(path: Path, lines: Sequence[str]) -> None:
    """Write VCF text as BGZF with a tabix index (``path`` + ``.tbi``), atomically."""
    with atomic_outputs(path, Path(f"{path}.tbi")) as (tmp, tmp_tbi):
        with BGZFile(str(tmp), "wb", index=None) as fh:
            fh.write(("\n".join(lines) + "\n").encode())
        pysam.tabix_index(str(tmp), preset="vcf", index=str(tmp_tbi), force=True)


def write_fasta(path: Path, contigs: Sequence[tuple[str, str]], width: int = 60) -> None:
    """Plain FASTA (``width`` bases per line) and its ``.fai`` (samtools faidx), atomically."""
    with atomic_outputs(path, Path(f"{path}.fai")) as (tmp, tmp_fai):
        with open(tmp, "w") as fh:
            for name, seq in contigs:
                fh.write(f">{name}\n")
                for i in range(0, len(seq), width):
                    fh.write(seq[i : i + width])
                    fh.write("\n")
        samtools(["faidx", tmp, "--fai-idx", tmp_fai], f"indexing {path}")


def _write_text(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def write_spiked(path: Path, truth: dict[str, list[TruthCall]]) -> int:
    """``truth/spiked.tsv``: one row per sample and spiked KB allele (normalized, pos 1-based).

    Returns the number of rows. KB alleles a sample carries from the population draws (benign
    ones, rarely a low-AF P/LP) are in its truth VCF with INFO/CLNVID but not listed here.
    """
    rows = ["sample\tvariant_id\tcontig\tpos\tref\talt\tzygosity\tclnsig\tvariation_id"]
    for sample, calls in truth.items():
        for c in calls:
            v = c.variant
            if not c.spiked:
                continue
            zyg = "hom" if c.gt == (1, 1) else "het"
            vid = variant_id(v.contig, v.pos1, v.ref, v.alt)
            rows.append(
                f"{sample}\t{vid}\t{v.contig}\t{v.pos1}\t{v.ref}\t{v.alt}\t{zyg}\t{c.clnsig}\t{c.variation_id}"
            )
    _write_text(path, "\n".join(rows) + "\n")
    return len(rows) - 1


def config_dict(build: str) -> dict[str, object]:
    """The pipeline config (DESIGN.md section 5) for a simulated cohort; paths relative."""
    return {
        "samples": "samples.tsv",
        "units": "units.tsv",
        "reference": {"fasta": "reference/genome.fa", "build": build},
        "targets": "",
        "align": {"aligner": "embedded", "markdup": True},
        "calling": {"caller": "bcftools", "gvcf": True},
        "knowledge_base": {
            "clinvar": "kb/clinvar.vcf.gz",
            "population": "kb/population.vcf.gz",
            "gff3": "reference/genes.gff3",
        },
        "cohort": {"store": "results/cohort", "batch": "batch1"},
        "qc": {"min_mean_coverage": 20, "min_mapped_fraction": 0.95, "max_duplicate_fraction": 0.3},
    }


# ---------------------------------------------------------------------------------------------
# the entry point


def _rng(seed: int, stream: int, sub: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, sub])


def _check_arguments(
    n_samples: int, seed: int, depth: float, read_length: int, genome_length: int, build: str
) -> None:
    problems = []
    if n_samples < 1:
        problems.append(f"n_samples must be >= 1 (got {n_samples})")
    if seed < 0:
        problems.append(f"seed must be >= 0 (got {seed})")
    if not depth > 0:
        problems.append(f"depth must be > 0 (got {depth})")
    if not 50 <= read_length <= 300:
        problems.append(f"read_length must be 50-300 bp (got {read_length})")
    if genome_length < MIN_GENOME_LENGTH:
        problems.append(f"genome_length must be >= {MIN_GENOME_LENGTH} bp (got {genome_length})")
    if not build or any(ch.isspace() for ch in build):
        problems.append(f"build must be a non-empty word (got {build!r})")
    if problems:
        raise CohortflowError("simulate: " + "; ".join(problems))


def _prepare_reference(
    reference: Path | None, genome_length: int, seed: int
) -> tuple[list[tuple[str, str]], dict[str, str], list[Region], list[Transcript]]:
    """(contigs to write, upper-case sequences, simulated regions, genes)."""
    if reference is None:
        genome = synthetic_genome(genome_length, _rng(seed, _STREAM_GENOME))
        regions = [Region(c, 0, len(a)) for c, a in genome.items()]
        genes = synthetic_genes(genome, regions, _rng(seed, _STREAM_GENES))
        contigs = [(c, a.tobytes().decode()) for c, a in genome.items()]
        seqs = dict(contigs)
        for tx in genes:
            validate_orf(seqs[tx.contig], tx)
        return contigs, seqs, regions, genes
    contigs = read_reference(reference)
    seqs = {name: s.upper() for name, s in contigs}
    regions = acgt_regions(seqs, [c for c, _ in contigs], genome_length)
    if not regions:
        raise CohortflowError(
            f"{reference}: no stretch of >= 5,000 bp without N; give a reference with real sequence"
        )
    total_acgt = sum(r.length for r in regions)
    if total_acgt < MIN_GENOME_LENGTH:
        raise CohortflowError(
            f"{reference}: only {total_acgt} bp of usable sequence (>= {MIN_GENOME_LENGTH} needed)"
        )
    n_all = sum(len(s) for s in seqs.values())
    log.info(
        "reference %s: %d contigs, %d bp; simulating over %d bp in %d N-free regions (%s)%s",
        reference,
        len(contigs),
        n_all,
        total_acgt,
        len(regions),
        ", ".join(f"{r.contig}:{r.start0 + 1}-{r.end0}" for r in regions[:5]),
        f"; only the first {genome_length} bp of N-free sequence are used (genome_length)"
        if total_acgt >= genome_length
        else "",
    )
    genes = genes_on_reference(seqs, regions)
    for tx in genes:
        validate_orf(seqs[tx.contig], tx)
    return contigs, seqs, regions, genes


def simulate_cohort(
    outdir: Path,
    n_samples: int = 4,
    seed: int = 1,
    reference: Path | None = None,
    depth: float = 30.0,
    read_length: int = 150,
    genome_length: int = 1_000_000,
    build: str = "synthetic",
) -> SimulatedCohort:
    """Simulate a cohort with known truth under ``outdir`` and return where everything is.

    ``depth`` is the mean read depth (x) over the simulated sequence, ``read_length`` in bp,
    ``genome_length`` the synthetic genome size in bp, or, with ``reference`` (plain or
    bgzipped FASTA), how much of its N-free sequence (first bp first) to simulate over.
    ``build`` is recorded in the config and the VCF headers. Same arguments -> same files.
    Raises CohortflowError on bad arguments or an unreadable reference.
    """
    _check_arguments(n_samples, seed, depth, read_length, genome_length, build)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    contigs, seqs, regions, genes = _prepare_reference(
        Path(reference) if reference is not None else None, genome_length, seed
    )
    order = [c for c, _ in contigs]
    lengths = {c: len(s) for c, s in contigs}
    repeats = [r for region in regions for r in find_repeats(seqs[region.contig], region)]
    kb = build_knowledge_base(seqs, order, regions, repeats, genes, _rng(seed, _STREAM_KB))
    population = build_population(seqs, order, regions, repeats, kb, _rng(seed, _STREAM_POP))
    samples = sample_names(n_samples)
    truth = assemble_truth(
        seqs, order, kb, population, samples, _rng(seed, _STREAM_SPIKE), _rng(seed, _STREAM_GT)
    )
    log.info(
        "%d genes, %d ClinVar records, %d population sites, %d repeats; truth alleles per sample: %s",
        len(genes),
        len(kb),
        len(population),
        len(repeats),
        ", ".join(f"{s}={len(c)}" for s, c in truth.items()),
    )

    cohort = SimulatedCohort(
        outdir=outdir,
        reference=outdir / "reference" / "genome.fa",
        gff3=outdir / "reference" / "genes.gff3",
        clinvar=outdir / "kb" / "clinvar.vcf.gz",
        population=outdir / "kb" / "population.vcf.gz",
        config=outdir / "config.yaml",
        samples_tsv=outdir / "samples.tsv",
        units_tsv=outdir / "units.tsv",
        spiked_tsv=outdir / "truth" / "spiked.tsv",
        samples=samples,
        truth_vcfs={s: outdir / "truth" / f"{s}.vcf.gz" for s in samples},
        fastqs={
            s: (outdir / "reads" / f"{s}_R1.fastq.gz", outdir / "reads" / f"{s}_R2.fastq.gz")
            for s in samples
        },
    )
    write_fasta(cohort.reference, contigs)
    write_gff3(cohort.gff3, genes, lengths)
    write_bgzf_vcf(cohort.clinvar, clinvar_lines(kb, lengths, build, seed))
    write_bgzf_vcf(cohort.population, population_lines(population, lengths, build, seed))
    for s in samples:
        write_bgzf_vcf(cohort.truth_vcfs[s], truth_lines(s, truth[s], lengths, build, seed))
    n_spiked = write_spiked(cohort.spiked_tsv, truth)
    sim_length = sum(r.length for r in regions)
    n_pairs = n_pairs_for_depth(depth, sim_length, read_length)
    for i, s in enumerate(samples):
        haplotypes = build_haplotypes(seqs, regions, truth[s])
        fq1, fq2 = cohort.fastqs[s]
        write_read_pairs(
            haplotypes, s, n_pairs, read_length, fq1, fq2, _rng(seed, _STREAM_READS, i)
        )
    sexes = ("female", "male")
    _write_text(
        cohort.samples_tsv,
        "sample\tsex\tbatch\n"
        + "".join(f"{s}\t{sexes[i % 2]}\tbatch1\n" for i, s in enumerate(samples)),
    )
    _write_text(
        cohort.units_tsv,
        "sample\tunit\tfq1\tfq2\n"
        + "".join(
            f"{s}\tlane1\t{cohort.fastqs[s][0].relative_to(outdir)}\t{cohort.fastqs[s][1].relative_to(outdir)}\n"
            for s in samples
        ),
    )
    _write_text(cohort.config, yaml.safe_dump(config_dict(build), sort_keys=False))
    log.info(
        "simulated %d samples (%d spiked KB alleles, %d read pairs each, %.1fx over %d bp) in %s",
        n_samples,
        n_spiked,
        n_pairs,
        depth,
        sim_length,
        outdir,
    )
    return cohort
