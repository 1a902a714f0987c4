"""Self-contained HTML reports from the cohort store: one per sample, one for the cohort.

A sample report (:func:`write_sample_report`) holds that sample's data alone: identity, QC
against its thresholds with a coverage plot, its variant summary, its ClinVar findings
(pathogenic and likely pathogenic first; VUS collapsed) and provenance. The only cohort-level
values in it are allele frequencies; it names no other sample and shows no other sample's
genotype or count. The cohort report (:func:`write_cohort_report`) shows QC across samples with
robust z-score outliers per batch, sex-check and kinship flags, the allele-frequency spectrum
and pathogenic carriers per gene.

Every value is escaped (:mod:`cohortflow.report_html`); the only URLs are anchor links to
ClinVar variation pages, nothing is loaded from the network. Positions are 1-based (VCF).
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb

from cohortflow.atomic import atomic_output
from cohortflow.contigs import MITOCHONDRIAL
from cohortflow.errors import CohortflowError
from cohortflow.report_html import (
    NOT_COMPUTED,
    badges,
    bar_chart_svg,
    coverage_svg,
    esc,
    kv_table,
    num,
    page,
    table,
    verdict,
)
from cohortflow.stats import is_transition, ti_tv_ratio
from cohortflow.store import (
    ANNOTATION_COLUMNS,
    VARIANTS_SCHEMA,
    committed_batches,
    kinship_counts,
    open_store,
    read_qc_json,
)

log = logging.getLogger(__name__)

CLINVAR_URL = "https://www.ncbi.nlm.nih.gov/clinvar/variation/{id}/"
# Defaults of config.yaml (DESIGN.md section 5), used only when the QC JSON records none.
DEFAULT_THRESHOLDS = {
    "min_mean_coverage": 20.0,
    "min_mapped_fraction": 0.95,
    "max_duplicate_fraction": 0.3,
}
# (metric, label, threshold key, direction): passes when value >= (min) or <= (max) the limit.
QC_CHECKS = (
    ("mean_coverage", "mean coverage (x)", "min_mean_coverage", ">="),
    ("mapped_fraction", "mapped fraction", "min_mapped_fraction", ">="),
    ("duplicate_fraction", "duplicate fraction", "max_duplicate_fraction", "<="),
)
# Informational QC JSON keys (no threshold): key -> label.
QC_MORE = {
    "total_reads": "primary reads",
    "median_coverage": "median coverage (x)",
    "fraction_10x": "fraction of bases >= 10x",
    "fraction_20x": "fraction of bases >= 20x",
    "fraction_30x": "fraction of bases >= 30x",
    "insert_size_median": "median insert size (bp)",
    "mean_mapq": "mean mapping quality",
    "mismatch_rate": "mismatch rate",
}
# sample_qc columns computed over the cohort's genotypes (present once the cohort QC step ran).
GENOTYPE_QC = {
    "n_variants": "variant alleles carried",
    "het_hom_ratio": "het/hom ratio",
    "ti_tv": "Ti/Tv",
    "n_singletons": "singletons (cohort allele count 1)",
    "missingness": "missingness (fraction of cohort sites not called)",
}
# Metrics compared across the samples of a batch in the cohort report: column -> label.
COHORT_QC_METRICS = {
    "mean_coverage": "mean coverage",
    "fraction_20x": "fraction 20x",
    "mapped_fraction": "mapped fraction",
    "duplicate_fraction": "duplicate fraction",
    "insert_size_median": "insert size",
    **{k: v.split(" (")[0] for k, v in GENOTYPE_QC.items()},
}
MAX_PAIRS_LISTED = 200  # related pairs shown in the cohort report; the rest are counted
OUTLIER_Z = 3.5  # |robust z| above which a value is flagged (Iglewicz and Hoaglin)
MIN_SAMPLES_FOR_Z = 5  # fewer samples in a batch: no z-scores
AF_BINS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
RELATIONSHIP_NOTES = {
    "duplicate": "same individual or duplicated sample: check for a sample swap",
    "first_degree": "first-degree relatives (parent-child or full siblings)",
    "second_degree": "second-degree relatives",
}
PROVENANCE_LABELS = {
    "cohortflow_version": "cohortflow version",
    "schema_version": "store schema version",
    "reference_build": "reference build",
    "kb_release": "ClinVar release",
    "caller": "variant caller",
    "caller_version": "caller version",
    "config_sha256": "config checksum (SHA-256)",
}
AA3 = {
    "A": "Ala", "R": "Arg", "N": "Asn", "D": "Asp", "C": "Cys", "E": "Glu", "Q": "Gln",
    "G": "Gly", "H": "His", "I": "Ile", "L": "Leu", "K": "Lys", "M": "Met", "F": "Phe",
    "P": "Pro", "S": "Ser", "T": "Thr", "W": "Trp", "Y": "Tyr", "V": "Val", "*": "Ter",
    "X": "Xaa",
}  # fmt: skip
DISCLAIMER = (
    "Research use: findings come from an automated pipeline and must be confirmed by an "
    "accredited laboratory before any clinical action."
)


# --------------------------------------------------------------------------- pure helpers


_GERMLINE = {
    "pathogenic": "pathogenic",
    "likely_pathogenic": "pathogenic",
    "uncertain_significance": "vus",
    "likely_benign": "benign",
    "benign": "benign",
}


def _germline_classes(significance: str) -> list[str]:
    """The germline classes ("pathogenic", "vus", "benign", "conflicting") of the "|" parts
    of a CLNSIG value; other terms (risk_factor, drug_response, other, ...) give none. The "/"
    terms of a part (Pathogenic/Likely_pathogenic/likely_risk_allele) give their one class, or
    "conflicting" when they disagree."""
    out = []
    for part in significance.split("|"):
        text = part.strip().replace(" ", "_").lower()
        if text.startswith("conflicting"):
            out.append("conflicting")
            continue
        terms = {
            _GERMLINE[term]
            for t in text.split("/")
            if (term := re.sub(r",?_low_penetrance$", "", t.strip(",_"))) in _GERMLINE
        }
        if len(terms) == 1:
            out.append(terms.pop())
        elif terms:
            out.append("conflicting")  # Pathogenic/Benign and the like
    return out


def clinvar_class(significance: str | None) -> str | None:
    """Class of a ClinVar CLNSIG value: "pathogenic" (Pathogenic, Likely_pathogenic, both, also
    with low penetrance), "vus" (Uncertain_significance, conflicting) or None (benign, other).

    Every "|" part counts, not only the first: NCBI's files put the germline classification
    first and other terms after it (Pathogenic|risk_factor), but the 2016-2018 re-processed
    files and the pre-2017 ones list each submitter's classification, alphabetically
    (Benign|Pathogenic). As ClinVar aggregates them, pathogenic terms alone are pathogenic;
    pathogenic with benign or uncertain ones, or uncertain with benign ones, are conflicting
    ("vus": shown with the uncertain ones, with the whole text); benign alone is None.
    """
    if not significance:
        return None
    classes = set(_germline_classes(significance))
    if classes == {"pathogenic"}:
        return "pathogenic"
    if "conflicting" in classes or "vus" in classes or len(classes) > 1:
        return "vus"
    return None


def _pathogenic_rank(significance: str) -> int:
    """0 Pathogenic, 1 Pathogenic/Likely_pathogenic, 2 Likely_pathogenic (sort key): the rank
    of the most severe "|" part."""
    ranks = []
    for part in significance.split("|"):
        text = part.strip().lower()
        if text.startswith("pathogenic"):
            ranks.append(0 if "likely" not in text else 1)
        elif text.startswith("likely_pathogenic"):
            ranks.append(2)
    return min(ranks, default=2)


def zygosity(alt_count: int, ploidy: int | None) -> str:
    """heterozygous / homozygous / hemizygous for a carried allele (alt_count >= 1)."""
    if ploidy == 1:
        return "hemizygous"
    if ploidy is not None and alt_count >= ploidy:
        return "homozygous"
    return "heterozygous"


def allele_class(ref: str, alt: str) -> str:
    """SNV, insertion, deletion or MNV (same length > 1, or a length change without anchor)."""
    if len(ref) == 1 and len(alt) == 1:
        return "SNV"
    if len(alt) > len(ref) and alt.startswith(ref):
        return "insertion"
    if len(ref) > len(alt) and ref.startswith(alt):
        return "deletion"
    return "MNV"


def hgvs_genomic(contig: str, pos1: int, ref: str, alt: str) -> str:
    """HGVS-style genomic change of a normalized allele, e.g. ``chr1:g.100A>G``,
    ``chr1:g.101_102del``, ``chr1:g.100_101insAT``, ``chr1:g.100_102delinsTT``.

    In: VCF coordinates (pos1 1-based, REF/ALT left-aligned with the anchor base). Positions
    stay left-aligned (HGVS shifts 3'), so this is a readable label, not a validated HGVS."""
    k = 0  # shared leading bases (the VCF anchor)
    while k < min(len(ref), len(alt)) and ref[k] == alt[k]:
        k += 1
    j = 0  # shared trailing bases after the prefix
    while j < min(len(ref), len(alt)) - k and ref[-1 - j] == alt[-1 - j]:
        j += 1
    r, a = ref[k : len(ref) - j], alt[k : len(alt) - j]
    start1 = pos1 + k
    if len(r) == 1 and len(a) == 1:
        return f"{contig}:g.{start1}{r}>{a}"
    span = f"{start1}" if len(r) == 1 else f"{start1}_{start1 + len(r) - 1}"
    if not a:
        return f"{contig}:g.{span}del"
    if not r:
        return f"{contig}:g.{start1 - 1}_{start1}ins{a}"
    return f"{contig}:g.{span}delins{a}"


def hgvs_protein(aa_change: str | None, consequence: str | None = None) -> str | None:
    """HGVS-style protein change from a bcftools csq amino-acid field, or None.

    ``20A>20P`` -> ``p.(Ala20Pro)``, ``136K>136*`` -> ``p.(Lys136Ter)``, ``136R`` ->
    ``p.(Arg136=)``; a frameshift (``consequence`` contains "frameshift") -> ``p.(Asp230fs)``
    at its first changed residue, or ``p.(Asp230Ter)`` when that residue becomes a stop.
    Other multi-residue changes (in-frame indels) and unparseable text give None."""
    if not aa_change:
        return None
    m = re.fullmatch(r"(\d+)([A-Z*])", aa_change)
    if m:
        return f"p.({AA3.get(m[2], m[2])}{m[1]}=)"
    m = re.fullmatch(r"(\d+)([A-Z*]+)>(\d+)([A-Z*]*)", aa_change)
    if not m or m[1] != m[3]:
        return None
    start, ref, alt = int(m[1]), m[2], m[4]
    if len(ref) == 1 and len(alt) == 1:
        return f"p.({AA3.get(ref, ref)}{start}{AA3.get(alt, alt)})"
    if "frameshift" not in (consequence or ""):
        return None
    k = 0
    while k < min(len(ref), len(alt)) and ref[k] == alt[k]:
        k += 1
    if k >= len(ref):
        return None
    tail = "Ter" if k < len(alt) and alt[k] == "*" else "fs"
    return f"p.({AA3.get(ref[k], ref[k])}{start + k}{tail})"


def robust_z(values: Sequence[float | None]) -> list[float | None]:
    """Robust z-scores 0.6745 (x - median) / MAD of the non-null values (Iglewicz-Hoaglin).

    When the MAD is 0 the mean absolute deviation is used instead (scaled 1.2533); when that is
    0 too (all values equal) every z is 0. Nulls stay None; with fewer than
    MIN_SAMPLES_FOR_Z values every z is None (too few to say what is unusual)."""
    present = [float(v) for v in values if v is not None and v == v]
    if len(present) < MIN_SAMPLES_FOR_Z:
        return [None] * len(values)
    med = statistics.median(present)
    deviations = [abs(v - med) for v in present]
    mad = statistics.median(deviations)
    scale = mad / 0.6745
    if scale == 0:
        scale = 1.2533 * statistics.fmean(deviations)
    out: list[float | None] = []
    for v in values:
        if v is None or v != v:
            out.append(None)
        elif scale == 0:
            out.append(0.0)
        else:
            out.append((float(v) - med) / scale)
    return out


def af_histogram(afs: Sequence[float], bins: Sequence[float] = AF_BINS) -> list[int]:
    """Counts of allele frequencies per bin [b_i, b_i+1) (the last bin includes 1.0)."""
    counts = [0] * (len(bins) - 1)
    for af in afs:
        for i in range(len(bins) - 1):
            last = i == len(bins) - 2
            if bins[i] <= af < bins[i + 1] or (last and af == bins[i + 1]):
                counts[i] += 1
                break
    return counts


def af_histogram_sql(bins: Sequence[float] = AF_BINS) -> str:
    """DuckDB query of :func:`af_histogram`'s counts over the variants carried at least once
    (columns b0, b1, ... and n, the alleles counted): the frequencies of a cohort's tens of
    millions of alleles are binned where they are stored, not loaded into Python."""
    parts = []
    for i in range(len(bins) - 1):
        upper = "<=" if i == len(bins) - 2 else "<"
        parts.append(
            f"count(*) FILTER (WHERE af >= CAST({float(bins[i])!r} AS DOUBLE) "
            f"AND af {upper} CAST({float(bins[i + 1])!r} AS DOUBLE)) AS b{i}"
        )
    return f"SELECT {', '.join(parts)}, count(*) AS n FROM variants WHERE ac > 0 AND af IS NOT NULL"


def coverage_dist_path(qc_json: Path | str) -> Path:
    """The mosdepth global distribution written next to a QC JSON (results/qc/{sample}...)."""
    path = Path(qc_json)
    stem = path.name.removesuffix(".qc.json")
    return path.with_name(f"{stem}.mosdepth.global.dist.txt")


def read_global_dist(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Parse a mosdepth ``.mosdepth.global.dist.txt``: contig -> (depth x, fraction >= depth).

    Lines are ``contig<TAB>depth<TAB>fraction``; the contig ``total`` is the whole territory."""
    out: dict[str, list[tuple[int, float]]] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CohortflowError(f"{path}: cannot read the coverage distribution ({exc})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            contig, depth, frac = parts[0], int(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise CohortflowError(
                f"{path}: line {lineno} is not 'contig, depth, fraction'; regenerate the QC files"
            ) from None
        out.setdefault(contig, []).append((depth, frac))
    return out


def coverage_curves(dist: Mapping[str, Sequence[tuple[int, float]]]) -> dict[str, list]:
    """The curves worth plotting: the whole territory, and chrX / chrY when present."""
    curves: dict[str, list] = {}
    if "total" in dist:
        curves["all bases"] = list(dist["total"])
    for names, label in ((("chrX", "X"), "chrX"), (("chrY", "Y"), "chrY")):
        for name in names:
            if name in dist:
                curves[label] = list(dist[name])
                break
    return curves


def run_date_of(extra: Iterable[tuple[str, str]]) -> str | None:
    """The run date among a sample sheet row's extra columns (``run_date``), else None."""
    for key, value in extra:
        if key == "run_date" and value.strip():
            return value.strip()
    return None


def kb_sources(kb_dir: Path | None) -> list[tuple[str, str]]:
    """(label, text) rows describing the knowledge base's inputs from its manifest.json."""
    if kb_dir is None:
        return []
    manifest = Path(kb_dir) / "manifest.json"
    if not manifest.is_file():
        return [("knowledge base", f"{kb_dir} (no manifest.json)")]
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except ValueError:
        raise CohortflowError(f"{manifest}: not valid JSON; rebuild the knowledge base") from None
    rows = []
    for key, label in (("clinvar", "ClinVar"), ("population", "population AF"), ("gff3", "GFF3")):
        entry = data.get(key)
        if not isinstance(entry, Mapping):
            rows.append((f"{label} source", "not used"))
            continue
        name = Path(str(entry.get("path") or "?")).name
        text = name + (f", release {entry['release']}" if entry.get("release") else "")
        if entry.get("sha256"):
            text += f", SHA-256 {str(entry['sha256'])[:16]}…"
        rows.append((f"{label} source", text))
    return rows


# --------------------------------------------------------------------------- store access


def _report_connection(store: Path) -> duckdb.DuckDBPyConnection:
    """The store's views, with Parquet footers cached: a report runs several queries per
    sample over the same files, which do not change while it runs. On a 2,000-sample,
    50,000-site store, one sample's queries take 0.04-0.07 s instead of 0.10-0.12 s."""
    con = open_store(store)
    con.execute("SET parquet_metadata_cache = true")
    return con


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict]:
    return con.sql(sql, params=params).to_arrow_table().to_pylist()


def _columns(con: duckdb.DuckDBPyConnection, view: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}


def _has_view(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchall()
    return bool(found[0][0])


def _kinship_view(con: duckdb.DuckDBPyConnection, store: Path) -> bool:
    """Make sure a ``kinship`` view exists when the store has that table; True if it does."""
    if _has_view(con, "kinship"):
        return True
    files = sorted(
        p for p in (store / "kinship").rglob("*.parquet") if not p.name.startswith((".", "_"))
    )
    if not files:
        return False
    listing = ", ".join("'" + str(p).replace("'", "''") + "'" for p in files)
    con.execute(f"CREATE VIEW kinship AS SELECT * FROM read_parquet([{listing}])")
    return True


def _write_html(out_html: Path, title: str, body: str) -> None:
    with atomic_output(Path(out_html)) as tmp:
        tmp.write_text(page(title, body), encoding="utf-8")


def _provenance_table(
    store: Path,
    batches: Sequence[str] | None,
    provenance: Mapping[str, str] | None,
    kb_dir: Path | None,
) -> str:
    """Provenance of this run next to what the store recorded when ``batches`` were added
    (None: every batch). Values of several batches are joined by ", "."""
    recorded: dict[str, set[str]] = {}
    all_batches = committed_batches(store)
    chosen = all_batches if batches is None else {b: all_batches.get(b, {}) for b in batches}
    for record in chosen.values():
        for key, value in (record.get("metadata") or {}).items():
            recorded.setdefault(str(key), set()).add(str(value))
    given = dict(provenance or {})
    keys = list(PROVENANCE_LABELS) + sorted((set(given) | set(recorded)) - set(PROVENANCE_LABELS))
    rows = []
    for key in keys:
        if key not in given and key not in recorded:
            continue
        stored = ", ".join(sorted(recorded.get(key, ())))
        rows.append(
            [
                esc(PROVENANCE_LABELS.get(key, key.replace("_", " "))),
                esc(given.get(key)),
                esc(stored or None),
            ]
        )
    for label, text in kb_sources(kb_dir):
        rows.append([esc(label), esc(text), "&mdash;"])
    return "<h2>Provenance</h2>\n" + table(
        ["item", "this report", "recorded when the batch was stored"], rows, css="prov"
    )


# --------------------------------------------------------------------------- sample report


def _load_qc(
    con: duckdb.DuckDBPyConnection, sample: str, qc_json: Path | None
) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any], str]:
    """(alignment QC, genotype QC, thresholds, where the thresholds come from) of one sample.

    Alignment QC is the whole QC JSON (validated by read_qc_json) when given, else the
    sample's sample_qc row when it holds alignment metrics, else None (no reads). Genotype QC
    is the sample_qc columns of GENOTYPE_QC that the store has (empty: not computed)."""
    thresholds: dict[str, Any] = dict(DEFAULT_THRESHOLDS)
    origin = "defaults of cohortflow (the QC record gives none)"
    stored = _rows(con, "SELECT * FROM sample_qc WHERE sample = ?", [sample])
    row = dict(stored[0]) if stored else {}
    genotype_qc = {k: row[k] for k in GENOTYPE_QC if k in row}
    qc: dict[str, Any] | None = None
    if qc_json is not None:
        qc = read_qc_json(Path(qc_json), sample)
        raw = json.loads(Path(qc_json).read_text(encoding="utf-8"))
        qc.update({k: v for k, v in raw.items() if k not in qc})
        given = raw.get("thresholds")
        if isinstance(given, dict):
            for key in thresholds:
                if isinstance(given.get(key), int | float):
                    thresholds[key] = float(given[key])
            origin = f"as recorded in {Path(qc_json).name}"
    elif any(row.get(k) is not None for k in ("qc_pass", "mean_coverage", "total_reads")):
        qc = row
    return qc, genotype_qc, thresholds, origin


def _qc_section(
    qc: Mapping[str, Any] | None,
    thresholds: Mapping[str, Any],
    origin: str,
    coverage: str,
) -> str:
    parts = ["<h2>Quality control</h2>"]
    if qc is None:
        parts.append(
            "<p class='na'>No alignment QC record for this sample (its input had no reads).</p>"
        )
        return "\n".join(parts)
    parts.append(f"<p>Overall: {verdict(qc.get('qc_pass'))}</p>")
    reasons = qc.get("qc_fail_reasons") or []
    if reasons:
        items = "".join(f"<li>{esc(r)}</li>" for r in reasons)
        parts.append(f"<p>Reasons:</p><ul>{items}</ul>")
    rows = []
    for metric, label, key, op in QC_CHECKS:
        value, limit = qc.get(metric), float(thresholds[key])
        if value is None:
            status = "<span class='na'>not measured</span>"
        else:
            passed = value >= limit if op == ">=" else value <= limit
            status = (
                "<span class='pass'>pass</span>" if passed else "<span class='fail'>fail</span>"
            )
        rows.append([esc(label), num(value), f"{esc(op)} {num(limit)}", status])
    parts.append(table(["metric", "value", "threshold", "status"], rows, numeric=(1,)))
    parts.append(f"<p class='note'>Thresholds: {esc(origin)}.</p>")
    more = [[esc(label), num(qc.get(key))] for key, label in QC_MORE.items() if key in qc]
    per_contig = qc.get("per_contig_mean_coverage")
    if isinstance(per_contig, Mapping) and per_contig:
        text = ", ".join(f"{c} {v:.1f}x" for c, v in per_contig.items() if v is not None)
        more.append([esc("mean coverage per contig"), esc(text)])
    plot = "<h3>Coverage</h3>\n" + coverage
    parts.append(
        "<div class='plots'><div><h3>Other metrics</h3>"
        + table(["metric", "value"], more, numeric=(1,))
        + f"</div><div>{plot}</div></div>"
    )
    return "\n".join(parts)


def _coverage_plot(coverage_dist: Path | None, thresholds: Mapping[str, Any]) -> str:
    if coverage_dist is None or not Path(coverage_dist).is_file():
        return "<p class='na'>Coverage distribution not available for this sample.</p>"
    curves = coverage_curves(read_global_dist(Path(coverage_dist)))
    if not curves:
        return "<p class='na'>The coverage distribution file has no data.</p>"
    return coverage_svg(curves, float(thresholds["min_mean_coverage"]))


_NO_CONSEQUENCE = "none (intergenic or not annotated)"


def variant_summary(carried: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over one sample's carried alleles (rows with ref, alt, alt_count, ploidy,
    consequence): classes, consequences, transitions/transversions, zygosities."""
    groups: Counter[tuple[str, bool, str, str, bool]] = Counter()
    for row in carried:
        cls = allele_class(row["ref"], row["alt"])
        groups[
            (
                cls,
                cls == "SNV" and is_transition(row["ref"], row["alt"]),
                row.get("consequence") or _NO_CONSEQUENCE,
                zygosity(row["alt_count"], row["ploidy"]),
                row.get("ac") == 1,
            )
        ] += 1
    return summary_of_groups(
        {"cls": c, "ti": t, "csq": q, "zyg": z, "singleton": one, "n": n}
        for (c, t, q, z, one), n in groups.items()
    )


# The same classes as variant_summary's, counted by DuckDB: a genome's ~4.5 million carried
# alleles never become Python rows (they took about 1.7 KB each, 8 GB per sample).
# A sample's carried alleles that its own annotation gives a ClinVar class, with the cohort's
# counts of each. The annotation is the sample's (the knowledge base it was annotated or
# re-annotated with), never the variants table's, which holds one sample's annotation per
# allele for the whole cohort: batches annotated with other ClinVar releases differ.
_OWN = [name for name, _, _ in ANNOTATION_COLUMNS if name in VARIANTS_SCHEMA.names]
_OWN_ANNOTATION = ", ".join(
    # as in the variants table: the ClinVar gene where consequence calling gave none
    "coalesce(a.gene, a.clinvar_gene) AS gene" if name == "gene" else f"a.{name}"
    for name in _OWN
)
_FINDINGS_SQL = f"""
SELECT g.alt_count, g.ploidy, g.gt, g.dp, g.gq, g.filter,
       v.* EXCLUDE ({", ".join(_OWN)}), {_OWN_ANNOTATION}
FROM genotypes g
JOIN (SELECT * FROM annotations WHERE sample = ? AND clinvar_significance IS NOT NULL) a
    USING (contig, variant_id)
JOIN variants v USING (contig, variant_id)
-- a partial call (./1: one allele not called) stores no alt_count, but carries the allele
WHERE g.sample = ? AND (g.alt_count >= 1 OR (g.alt_count IS NULL AND contains(g.gt, '1')))
ORDER BY g.contig, g.pos, g.variant_id
"""

_SUMMARY_SQL = f"""
SELECT cls, cls = 'SNV' AND upper(ref) || upper(alt) IN ('AG', 'GA', 'CT', 'TC') AS ti,
       coalesce(nullif(consequence, ''), '{_NO_CONSEQUENCE}') AS csq,
       CASE WHEN ploidy = 1 THEN 'hemizygous'
            WHEN ploidy IS NOT NULL AND alt_count >= ploidy THEN 'homozygous'
            ELSE 'heterozygous' END AS zyg,
       coalesce(ac = 1, false) AS singleton, count(*) AS n
FROM (SELECT g.alt_count, g.ploidy, v.ref, v.alt, v.consequence, v.ac,
             CASE WHEN length(v.ref) = 1 AND length(v.alt) = 1 THEN 'SNV'
                  WHEN length(v.alt) > length(v.ref) AND starts_with(v.alt, v.ref)
                      THEN 'insertion'
                  WHEN length(v.ref) > length(v.alt) AND starts_with(v.ref, v.alt)
                      THEN 'deletion'
                  ELSE 'MNV' END AS cls
      FROM genotypes g JOIN variants v USING (contig, variant_id)
      WHERE g.sample = ? AND g.alt_count >= 1)
GROUP BY ALL
"""


def summary_of_groups(groups: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The summary of :func:`variant_summary` from counted groups (cls, ti, csq, zyg,
    singleton, n: how many carried alleles share those values)."""
    classes: Counter[str] = Counter({"SNV": 0, "insertion": 0, "deletion": 0, "MNV": 0})
    consequences: Counter[str] = Counter()
    zyg: Counter[str] = Counter({"heterozygous": 0, "homozygous": 0, "hemizygous": 0})
    n = ti = tv = singletons = 0
    for g in groups:
        k = int(g["n"])
        n += k
        classes[g["cls"]] += k
        if g["cls"] == "SNV":
            if g["ti"]:
                ti += k
            else:
                tv += k
        consequences[g["csq"]] += k
        zyg[g["zyg"]] += k
        singletons += k if g["singleton"] else 0
    het, hom = zyg["heterozygous"], zyg["homozygous"]
    return {
        "n": n,
        "singletons": singletons,
        "classes": dict(classes),
        "consequences": dict(sorted(consequences.items(), key=lambda kv: (-kv[1], kv[0]))),
        "ti": ti,
        "tv": tv,
        "ti_tv": ti_tv_ratio(ti, tv),
        "zygosity": dict(zyg),
        "het_hom": het / hom if hom else None,
    }


def _summary_section(
    summary: Mapping[str, Any], n_sites: int, n_called: int, stored: Mapping[str, Any]
) -> str:
    """The variant summary; Ti/Tv, het/hom, singletons and missingness come from the store's
    sample_qc (``stored``) when it has them, else from this report's own counts."""
    z = summary["zygosity"]
    own = {
        "n_variants": summary["n"],
        "ti_tv": summary["ti_tv"],
        "het_hom_ratio": summary["het_hom"],
        "n_singletons": summary["singletons"],
        "missingness": (n_sites - n_called) / n_sites if n_sites else None,
    }
    value = {}
    for key, mine in own.items():
        if key not in stored:
            value[key] = mine
            continue
        value[key] = stored[key]
        if (mine is None) != (stored[key] is None) or (
            mine is not None and abs(float(mine) - float(stored[key])) > 1e-9 * max(1, abs(mine))
        ):
            log.warning("sample_qc %s is %s, this report counts %s", key, stored[key], mine)
    items = [
        (
            "variant alleles carried",
            f"{num(value['n_variants'])} <span class='note'>({z['heterozygous']} heterozygous, "
            f"{z['homozygous']} homozygous, {z['hemizygous']} hemizygous)</span>",
        ),
        ("by class", ", ".join(f"{esc(k)} {esc(v)}" for k, v in summary["classes"].items())),
        (
            "Ti/Tv (SNVs)",
            num(value["ti_tv"], 3)
            + f" <span class='note'>({summary['ti']} / {summary['tv']})</span>",
        ),
        (
            "het/hom ratio",
            num(value["het_hom_ratio"], 3)
            + f" <span class='note'>({z['heterozygous']} / {z['homozygous']})</span>",
        ),
        ("singletons (cohort allele count 1)", num(value["n_singletons"])),
        (
            "cohort sites called in this sample",
            f"{esc(n_called)} of {esc(n_sites)} <span class='note'>(missingness "
            f"{num(value['missingness'], 3)})</span>",
        ),
    ]
    if all(k in stored for k in own):
        source = "Ti/Tv, het/hom, singletons and missingness as stored in the cohort's sample_qc."
    else:
        source = (
            "Cohort genotype QC not computed in the store: Ti/Tv, het/hom, singletons and "
            "missingness are counted here from this sample's genotypes."
        )
    cq = table(
        ["consequence", "alleles"],
        [[esc(k.replace("&", " & ")), esc(v)] for k, v in summary["consequences"].items()],
        numeric=(1,),
    )
    return (
        "<h2>Variant summary</h2>\n<div class='plots'><div>"
        + kv_table(items)
        + f"<p class='note'>{esc(source)}</p></div><div>"
        + cq
        + "</div></div>"
    )


def _stars(n: Any, status: str | None) -> str:
    if n is None:
        return '<span class="na">not given</span>'
    k = max(0, min(4, int(n)))
    tip = f' title="{esc(status.replace("_", " "))}"' if status else ""
    return f'<span class="stars"{tip}>{"★" * k}{"☆" * (4 - k)}</span>&nbsp;{k}'


def _condition(text: str | None) -> str:
    if not text:
        return "&mdash;"
    return esc(text.replace("_", " ").replace("|", "; "))


def _change(row: Mapping[str, Any]) -> str:
    genomic = esc(hgvs_genomic(row["contig"], row["pos"], row["ref"], row["alt"]))
    raw = row.get("protein_change")
    protein = hgvs_protein(raw, row.get("consequence"))
    lines = []
    if protein:
        lines.append(f"<span title='{esc(raw)}'>{esc(protein)}</span>")
    elif raw:
        short = raw if len(raw) <= 24 else raw[:22] + "…"
        lines.append(f"<span title='{esc(raw)}'>{esc(short)}</span>")
    # the store key (cohortflow query ... WHERE variant_id = ...) on hover
    vid = esc(row.get("variant_id"))
    lines.append(f"<span class='note' title='store variant_id {vid}'>{genomic}</span>")
    return "<br>".join(lines)


def _clinvar_link(variation_id: Any) -> str:
    if variation_id is None:
        return "&mdash;"
    text = str(variation_id)
    if re.fullmatch(r"[0-9]+", text):
        url = CLINVAR_URL.format(id=text)
        return f'<a href="{esc(url)}">ClinVar {esc(text)}</a>'
    return esc(text)


# The pseudoautosomal regions of X and Y (1-based, inclusive), GRCh37 and GRCh38 together:
# outside them a male has one copy.
_PARS = {
    "X": ((10_001, 2_781_479), (154_931_044, 156_030_895)),
    "Y": ((10_001, 2_781_479), (56_887_903, 57_217_415), (59_034_050, 59_363_566)),
}


def copy_context(row: Mapping[str, Any], sex: str | None) -> str | None:
    """What the zygosity means where one copy is expected: homoplasmic or heteroplasmic on the
    mitochondrion; for a male on X or Y outside the PARs, a diploid call read as hemizygous
    (1/1) or flagged (0/1). None elsewhere."""
    contig = str(row["contig"])
    if contig in MITOCHONDRIAL:
        return "homoplasmic" if row["alt_count"] >= (row["ploidy"] or 1) else "heteroplasmic"
    chrom = contig[3:] if contig.startswith("chr") else contig
    if sex != "male" or chrom not in _PARS or row["ploidy"] != 2:
        return None
    if any(lo <= row["pos"] <= hi for lo, hi in _PARS[chrom]):
        return None
    if row["alt_count"] >= 2:
        return f"hemizygous: a male has one {chrom} here (called 1/1 by a diploid model)"
    return (
        f"unexpected for a male, who has one {chrom} here: mosaicism, a duplication or a "
        "mapping artefact; confirm before acting on it"
    )


def _genotype(row: Mapping[str, Any], sex: str | None = None) -> str:
    if row["alt_count"] is None:  # a partial call: the allele is there, its copies unknown
        text = "at least one copy <span class='warn'>(genotype incomplete)</span>"
    else:
        text = f"{esc(zygosity(row['alt_count'], row['ploidy']))}"
    if row["alt_count"] is not None and (context := copy_context(row, sex)) is not None:
        text += f" <span class='warn'>({esc(context)})</span>"
    text += f"<br><span class='note'>GT {esc(row['gt'])}"
    text += f", depth {num(row.get('dp'))}, GQ {num(row.get('gq'))}</span>"
    if row.get("filter") not in (None, ".", "PASS"):
        text += f"<br><span class='warn'>filter {esc(row['filter'])}</span>"
    return text


FINDING_HEADERS = (
    "gene",
    "change",
    "consequence",
    "ClinVar significance",
    "zygosity",
    "review",
    "condition",
    "population AF",
    "cohort AF",
    "ClinVar",
)


def _findings_rows(rows: Sequence[Mapping[str, Any]], sex: str | None = None) -> list[list[str]]:
    return [
        [
            esc(r.get("gene")),
            _change(r),
            esc((r.get("consequence") or "").replace("&", " & ") or None),
            esc((r.get("clinvar_significance") or "").replace("_", " ")),
            _genotype(r, sex),
            _stars(r.get("clinvar_review_stars"), r.get("clinvar_review_status")),
            _condition(r.get("clinvar_condition")),
            num(r.get("pop_af")),
            num(r.get("af")),
            _clinvar_link(r.get("clinvar_variation_id")),
        ]
        for r in rows
    ]


def classify_findings(
    carried: Sequence[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(pathogenic/likely pathogenic, VUS) among carried alleles; P/LP sorted Pathogenic
    first, then gene, contig and position; VUS by contig and position."""
    plp = [r for r in carried if clinvar_class(r.get("clinvar_significance")) == "pathogenic"]
    plp.sort(
        key=lambda r: (
            _pathogenic_rank(r["clinvar_significance"]),
            r.get("gene") or "",
            r["contig"],
            r["pos"],
        )
    )
    vus = [r for r in carried if clinvar_class(r.get("clinvar_significance")) == "vus"]
    return plp, vus


def negative_unreliable(qc_pass: bool | None, called: int) -> str | None:
    """Why finding no pathogenic variant says nothing about the sample (its QC failed, or no
    site of it was called), or None."""
    if not called:
        return "no site of this sample was called"
    if qc_pass is False:
        return "the sample failed QC"
    return None


def _findings_section(
    plp: Sequence[Mapping[str, Any]],
    vus: Sequence[Mapping[str, Any]],
    unreliable: str | None = None,
    sex: str | None = None,
) -> str:
    parts = ["<h2>Findings: ClinVar pathogenic and likely pathogenic</h2>"]
    if plp:
        parts.append(
            table(FINDING_HEADERS, _findings_rows(plp, sex), numeric=(7, 8), css="findings")
        )
    elif unreliable:
        parts.append(
            f"<p class='warn'>Not assessable: {esc(unreliable)}. No ClinVar pathogenic or likely "
            "pathogenic variant was found, but this sample's data cannot rule one out; do not "
            "report it as negative.</p>"
        )
    else:
        parts.append(
            "<p>No ClinVar pathogenic or likely pathogenic variant found in this sample. "
            "<span class='note'>This covers called sites only: regions without coverage "
            "are not assessed.</span></p>"
        )
    parts.append(
        "<p class='note'>Change: HGVS-style labels (protein change from the most severe "
        "consequence, genomic change with left-aligned positions). Cohort AF is the allele "
        "frequency among all samples of the cohort called at the site. " + esc(DISCLAIMER) + "</p>"
    )
    parts.append(
        "<details>\n<summary>Variants of uncertain significance or conflicting "
        f"classifications ({len(vus)})</summary>\n"
        + (
            table(FINDING_HEADERS, _findings_rows(vus, sex), numeric=(7, 8), css="findings")
            if vus
            else "<p>None.</p>"
        )
        + "\n</details>"
    )
    return "\n".join(parts)


def _identity_section(
    sample: str, ident: Mapping[str, Any], inferred: str | None, run_date: str | None
) -> str:
    sex_note = ""
    if inferred and ident["sex"] != "unknown" and inferred not in ("unknown", ident["sex"]):
        sex_note = (
            " <span class='warn'>(declared and inferred sex differ: check for a sample swap)</span>"
        )
    return "<h2>Identity</h2>\n" + kv_table(
        [
            ("sample", esc(sample)),
            ("batch", esc(ident["batch"])),
            ("declared sex", esc(ident["sex"])),
            ("inferred sex", (esc(inferred) if inferred else NOT_COMPUTED) + sex_note),
            (
                "run date",
                esc(run_date)
                if run_date
                else "<span class='na'>not recorded (add a run_date column to samples.tsv)</span>",
            ),
        ]
    )


def write_sample_report(
    store: Path,
    sample: str,
    out_html: Path,
    qc_json: Path | None = None,
    provenance: Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    coverage_dist: Path | None = None,
    run_date: str | None = None,
    kb_dir: Path | None = None,
) -> dict[str, int]:
    """Write the self-contained HTML report of one sample.

    In: the cohort store, the sample ID, the output path; optionally the sample's QC JSON (else
    its sample_qc row), provenance key/values of this run (``run_provenance``), QC thresholds
    (else those recorded in the QC JSON, else the config defaults), the mosdepth global
    distribution for the coverage plot (default: next to ``qc_json``), the run date (text as
    given, e.g. from samples.tsv) and the knowledge-base folder (its manifest lists sources).
    Out: ``out_html``, written atomically, with this sample's data only; returns counts
    {"pathogenic": n, "vus": n, "carried": n}. Raises CohortflowError when the sample is not
    in the store or its QC files are unreadable or belong to another sample.
    """
    store = Path(store)
    con = _report_connection(store)
    try:
        return _sample_report(
            con, store, sample, Path(out_html), qc_json, provenance, thresholds,
            coverage_dist, run_date, kb_dir,
        )  # fmt: skip
    finally:
        con.close()


def write_sample_reports(
    store: Path,
    samples: Sequence[str],
    out_dir: Path,
    qc_jsons: Mapping[str, Path] | None = None,
    provenance: Mapping[str, str] | None = None,
    run_dates: Mapping[str, str] | None = None,
    kb_dir: Path | None = None,
) -> dict[str, dict[str, int]]:
    """Write ``out_dir/{sample}.html`` for each of ``samples`` over one store connection.

    The same reports as :func:`write_sample_report` (QC JSON per sample from ``qc_jsons``,
    coverage distribution next to it, run date from ``run_dates``); for one job writing a
    whole cohort's reports. Returns sample -> counts."""
    store, out_dir = Path(store), Path(out_dir)
    out: dict[str, dict[str, int]] = {}
    con = _report_connection(store)
    try:
        for sample in samples:
            qc_json = (qc_jsons or {}).get(sample)
            out[sample] = _sample_report(
                con, store, sample, out_dir / f"{sample}.html", qc_json, provenance, None,
                None, (run_dates or {}).get(sample), kb_dir,
            )  # fmt: skip
    finally:
        con.close()
    return out


def _sample_report(
    con: duckdb.DuckDBPyConnection,
    store: Path,
    sample: str,
    out_html: Path,
    qc_json: Path | None,
    provenance: Mapping[str, str] | None,
    thresholds: Mapping[str, float] | None,
    coverage_dist: Path | None,
    run_date: str | None,
    kb_dir: Path | None,
) -> dict[str, int]:
    found = _rows(con, "SELECT sample, sex, batch FROM samples WHERE sample = ?", [sample])
    if not found:
        raise CohortflowError(
            f"{store}: sample {sample} is not in the cohort store; aggregate it first"
        )
    ident = found[0]
    qc, genotype_qc, qc_thresholds, origin = _load_qc(con, sample, qc_json)
    # only the alleles with a ClinVar class can be findings: the rest are counted in SQL
    annotated = _rows(con, _FINDINGS_SQL, [sample, sample])
    summary = summary_of_groups(_rows(con, _SUMMARY_SQL, [sample]))
    counts = _rows(
        con,
        "SELECT count(*) AS n, count(alt_count) AS called FROM genotypes WHERE sample = ?",
        [sample],
    )[0]
    if thresholds is not None:
        qc_thresholds.update({k: float(v) for k, v in thresholds.items()})
        origin = "as given to the report"
    if coverage_dist is None and qc_json is not None:
        coverage_dist = coverage_dist_path(qc_json)

    plp, vus = classify_findings(annotated)
    inferred = qc.get("inferred_sex") if qc else None
    unreliable = negative_unreliable(qc.get("qc_pass") if qc else None, counts["called"])
    summary_badges = [
        (
            "QC " + verdict(qc.get("qc_pass") if qc else None),
            "" if not qc or qc.get("qc_pass") is None else ("good" if qc["qc_pass"] else "bad"),
        ),
        (
            f"{len(plp)} pathogenic / likely pathogenic"
            + (
                f" <span class='warn'>(not assessable: {esc(unreliable)})</span>"
                if unreliable and not plp
                else ""
            ),
            "bad" if plp else ("" if unreliable else "good"),
        ),
        (f"{len(vus)} of uncertain significance or conflicting", ""),
    ]
    body = "\n".join(
        [
            badges(summary_badges),
            _identity_section(sample, ident, inferred, run_date),
            _qc_section(qc, qc_thresholds, origin, _coverage_plot(coverage_dist, qc_thresholds)),
            _summary_section(summary, counts["n"], counts["called"], genotype_qc),
            _findings_section(plp, vus, unreliable, ident.get("sex") or inferred),
            _provenance_table(store, [ident["batch"]], provenance, kb_dir),
        ]
    )
    _write_html(out_html, f"Sample report: {sample}", body)
    log.info("wrote %s (%d pathogenic findings, %d VUS)", out_html, len(plp), len(vus))
    return {"pathogenic": len(plp), "vus": len(vus), "carried": summary["n"]}


# --------------------------------------------------------------------------- cohort report


def sex_check(declared: str | None, inferred: str | None) -> str:
    """ "mismatch" (declared and inferred differ), "undetermined" (no usable inference),
    "not declared", or "consistent"."""
    if not inferred or inferred == "unknown":
        return "undetermined"
    if not declared or declared == "unknown":
        return "not declared"
    return "consistent" if declared == inferred else "mismatch"


def qc_outliers(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]
) -> dict[tuple[str, str], float | None]:
    """Robust z-score of each (sample, metric) within the sample's batch.

    In: rows with "sample", "batch" and the metric columns. Out: (sample, metric) -> z, None
    when the value is missing or the batch has too few values (see :func:`robust_z`)."""
    by_batch: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_batch.setdefault(row["batch"], []).append(row)
    out: dict[tuple[str, str], float | None] = {}
    for members in by_batch.values():
        for metric in metrics:
            zs = robust_z([m.get(metric) for m in members])
            for member, z in zip(members, zs, strict=True):
                out[(member["sample"], metric)] = z
    return out


def _qc_cohort_section(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]
) -> tuple[str, int]:
    """The QC table across samples with flagged outliers; returns (HTML, samples flagged)."""
    z = qc_outliers(rows, metrics)
    table_rows = []
    n_flagged = 0
    for r in rows:
        flags = []
        cells: list[Any] = [esc(r["sample"]), esc(r["batch"])]
        for metric in metrics:
            score = z.get((r["sample"], metric))
            text = num(r.get(metric))
            if score is not None and abs(score) > OUTLIER_Z:
                flags.append(f"{COHORT_QC_METRICS[metric]} (z {score:+.1f})")
                cells.append((text, "outlier", f"robust z {score:+.2f}"))
            else:
                tip = f"robust z {score:+.2f}" if score is not None else ""
                cells.append((text, "", tip) if tip else text)
        check = sex_check(r.get("sex"), r.get("inferred_sex"))
        if check == "mismatch":
            flags.append("sex mismatch")
        n_flagged += bool(flags)
        reasons = "; ".join(r.get("qc_fail_reasons") or [])
        sex_text = f"{esc(r.get('sex'))} / {esc(r.get('inferred_sex'))}<br>"
        sex_text += (
            f"<span class='warn'>{esc(check)}</span>"
            if check == "mismatch"
            else f"<span class='note'>{esc(check)}</span>"
        )
        cells += [
            sex_text,
            verdict(r.get("qc_pass"))
            + (f"<br><span class='note'>{esc(reasons)}</span>" if reasons else ""),
            f"<span class='warn'>{esc('; '.join(flags))}</span>" if flags else "&mdash;",
        ]
        table_rows.append(cells)
    headers = ["sample", "batch", *(COHORT_QC_METRICS[m] for m in metrics)]
    headers += ["sex: declared / inferred", "QC", "flags"]
    numeric = tuple(range(2, 2 + len(metrics)))
    html_text = (
        "<h2>Samples and QC</h2>\n<div class='scroll'>"
        + table(headers, table_rows, numeric=numeric, css="qc")
        + "</div>"
        + f"<p class='note'>Outliers: a value whose robust z-score (0.6745 &times; (value "
        f"&minus; batch median) / MAD) within its batch is beyond &plusmn;{OUTLIER_Z:g} is "
        f"shaded; batches with fewer than {MIN_SAMPLES_FOR_Z} samples get no z-scores. "
        "Hover a value for its z-score. Sex check compares the sample sheet with the sex "
        "inferred from X/Y coverage.</p>"
    )
    return html_text, n_flagged


def _kinship_section(
    pairs: list[dict] | None, n_pairs: int, n_undetermined: int
) -> tuple[str, int]:
    """Related and duplicate pairs; returns (HTML, pairs flagged)."""
    if pairs is None:
        return "<h2>Kinship</h2>\n<p class='na'>Kinship not computed.</p>", 0
    head = (
        f"<h2>Kinship</h2>\n<p>{n_pairs} sample pairs compared (KING-robust kinship); "
        f"{len(pairs)} related"
        + (f"; {n_undetermined} with too few informative sites to say" if n_undetermined else "")
        + ".</p>"
    )
    if not pairs:
        return head, 0
    if len(pairs) > MAX_PAIRS_LISTED:
        head += (
            f"<p class='warn'>The {MAX_PAIRS_LISTED} closest pairs are listed; "
            f"{len(pairs) - MAX_PAIRS_LISTED} more are in the store's kinship table "
            "(cohortflow query). So many related pairs usually means a data problem "
            "(contamination, or samples without reference-confidence calls).</p>"
        )
    rows = [
        [
            esc(p["sample_a"]),
            esc(p["sample_b"]),
            num(p.get("kinship"), 3),
            num(p.get("ibs0")),
            num(p.get("n_sites")),
            f"<span class='warn'>{esc(p['relationship'])}</span>",
            esc(RELATIONSHIP_NOTES.get(p["relationship"], "")),
        ]
        for p in pairs[:MAX_PAIRS_LISTED]
    ]
    return head + table(
        ["sample", "sample", "kinship", "IBS0 sites", "sites", "relationship", "meaning"],
        rows,
        numeric=(2, 3, 4),
    ), len(pairs)


def _carriers_section(genes: Sequence[Mapping[str, Any]]) -> str:
    head = "<h2>Carriers of pathogenic and likely pathogenic variants, per gene</h2>\n"
    if not genes:
        return head + "<p>No carrier of a ClinVar pathogenic or likely pathogenic variant.</p>"
    rows = [
        [
            esc(g["gene"]),
            esc(g["variants"]),
            esc(g["carriers"]),
            esc(g["het_carriers"]),
            esc(g["biallelic"]),
        ]
        for g in genes
    ]
    return (
        head
        + table(
            [
                "gene",
                "P/LP alleles present",
                "carriers",
                "heterozygous carriers (one allele)",
                "homozygous, hemizygous or two P/LP alleles",
            ],
            rows,
            numeric=(1, 2, 3, 4),
        )
        + "<p class='note'>Samples with two P/LP alleles in one gene may be compound "
        "heterozygous or have both alleles on one haplotype: phase before interpreting.</p>"
    )


def _af_section(counts: Sequence[int], n_alleles: int, n_singletons: int) -> str:
    labels = [f"{AF_BINS[i]:g}–{AF_BINS[i + 1]:g}" for i in range(len(AF_BINS) - 1)]
    return (
        "<h2>Allele frequency spectrum</h2>\n"
        f"<p class='note'>{n_alleles} alleles with at least one carrier; {n_singletons} "
        "singletons (allele count 1). Bins are [low, high), the last includes 1.</p>\n"
        + bar_chart_svg(labels, counts, "cohort allele frequency", "allele frequency spectrum")
    )


def _gene_carriers(con: duckdb.DuckDBPyConnection) -> list[dict]:
    annotated = _rows(
        con,
        "SELECT variant_id, clinvar_significance FROM variants "
        "WHERE clinvar_significance IS NOT NULL",
    )
    plp = sorted(
        r["variant_id"]
        for r in annotated
        if clinvar_class(r["clinvar_significance"]) == "pathogenic"
    )
    if not plp:
        return []
    return _rows(
        con,
        # the P/LP alleles are a table joined by hash: list_contains tested every genotype
        # row against the whole list (rows x P/LP alleles)
        """WITH plp AS (SELECT DISTINCT unnest(CAST(? AS VARCHAR[])) AS variant_id),
           plp_variants AS (SELECT v.* FROM variants v SEMI JOIN plp USING (variant_id)),
           per_sample AS (
             SELECT coalesce(v.gene, '(no gene)') AS gene, g.sample,
                    count(DISTINCT v.variant_id) AS alleles,
                    sum(g.alt_count) AS copies, min(g.ploidy) AS ploidy
             FROM genotypes g JOIN plp_variants v USING (contig, variant_id)
             WHERE g.alt_count >= 1
             GROUP BY ALL),
           present AS (
             SELECT coalesce(v.gene, '(no gene)') AS gene,
                    count(DISTINCT v.variant_id) AS variants
             FROM plp_variants v WHERE v.ac > 0 GROUP BY ALL)
           SELECT p.gene, any_value(pr.variants) AS variants, count(*) AS carriers,
                  count(*) FILTER (WHERE copies = 1 AND ploidy IS DISTINCT FROM 1) AS het_carriers,
                  count(*) FILTER (WHERE copies >= 2 OR ploidy = 1) AS biallelic
           FROM per_sample p JOIN present pr USING (gene)
           GROUP BY p.gene ORDER BY carriers DESC, p.gene""",
        [plp],
    )


def write_cohort_report(
    store: Path,
    out_html: Path,
    provenance: Mapping[str, str] | None = None,
    kb_dir: Path | None = None,
) -> dict[str, int]:
    """Write the cohort HTML report: QC across samples with per-batch robust z-score outliers,
    sex-check and kinship flags, the allele-frequency spectrum, P/LP carriers per gene.

    In: the cohort store, the output path; provenance of this run (``run_provenance``) and the
    knowledge-base folder, shown as given. Uses the sample_qc genotype metrics and the
    ``kinship`` table when the store has them, else says "not computed".
    Out: ``out_html``, written atomically; returns counts {"samples", "qc_flagged",
    "related_pairs"}.
    """
    store = Path(store)
    con = _report_connection(store)
    try:
        qc_cols = _columns(con, "sample_qc")
        metrics = [m for m in COHORT_QC_METRICS if m in qc_cols]
        selected = ", ".join(f"q.{m}" for m in metrics)
        qc_rows = _rows(
            con,
            f"""SELECT s.sample, s.batch, s.sex, q.inferred_sex, q.qc_pass, q.qc_fail_reasons,
                       {selected}
                FROM samples s LEFT JOIN sample_qc q USING (sample) ORDER BY s.batch, s.sample""",
        )
        spectrum = _rows(con, af_histogram_sql())[0]
        af_counts = [int(spectrum[f"b{i}"]) for i in range(len(AF_BINS) - 1)]
        n_singletons = _rows(con, "SELECT count(*) AS n FROM variants WHERE ac = 1")[0]["n"]
        n_variants = _rows(con, "SELECT count(*) AS n FROM variants")[0]["n"]
        genes = _gene_carriers(con)
        pairs: list[dict] | None = None
        n_pairs = 0
        n_undetermined = 0
        if _kinship_view(con, store):
            # the table holds the close pairs only; its metadata counts every pair compared
            counted = kinship_counts(store)
            if counted is None:
                n_pairs = _rows(con, "SELECT count(*) AS n FROM kinship")[0]["n"]
                n_undetermined = _rows(
                    con, "SELECT count(*) AS n FROM kinship WHERE relationship IS NULL"
                )[0]["n"]
            else:
                n_pairs, n_undetermined = counted
            if n_pairs:
                pairs = _rows(
                    con,
                    "SELECT * FROM kinship WHERE relationship IN "
                    f"({', '.join(repr(r) for r in RELATIONSHIP_NOTES)}) "
                    "ORDER BY kinship DESC, sample_a, sample_b",
                )
    finally:
        con.close()

    missing = [COHORT_QC_METRICS[m] for m in GENOTYPE_QC if m not in metrics]
    qc_html, n_flagged = _qc_cohort_section(qc_rows, metrics)
    if missing:
        qc_html += f"<p class='na'>Not computed: {esc(', '.join(missing))}.</p>"
    kin_html, n_related = _kinship_section(pairs, n_pairs, n_undetermined)
    n_pass = sum(1 for r in qc_rows if r["qc_pass"])
    batches = sorted({r["batch"] for r in qc_rows})
    n_mismatch = sum(
        1 for r in qc_rows if sex_check(r.get("sex"), r.get("inferred_sex")) == "mismatch"
    )
    body = "\n".join(
        [
            badges(
                [
                    (f"{len(qc_rows)} samples in {len(batches)} batch(es)", ""),
                    (f"{n_pass} pass QC", "good" if n_pass == len(qc_rows) else "bad"),
                    (f"{n_flagged} flagged", "bad" if n_flagged else "good"),
                    (f"{n_mismatch} sex mismatches", "bad" if n_mismatch else "good"),
                    (
                        f"{n_related} related pairs"
                        if pairs is not None
                        else "kinship not computed",
                        "bad" if n_related else "",
                    ),
                    (f"{n_variants} alleles in the store", ""),
                ]
            ),
            qc_html,
            kin_html,
            _af_section(af_counts, int(spectrum["n"]), n_singletons),
            _carriers_section(genes),
            _provenance_table(store, None, provenance, kb_dir),
            f"<p class='note'>{esc(DISCLAIMER)}</p>",
        ]
    )
    _write_html(Path(out_html), "Cohort report", body)
    log.info("wrote %s (%d samples, %d flagged)", out_html, len(qc_rows), n_flagged)
    return {"samples": len(qc_rows), "qc_flagged": n_flagged, "related_pairs": n_related}
