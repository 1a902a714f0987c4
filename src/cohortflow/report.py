"""Self-contained HTML reports from the cohort store: one per sample, one for the cohort.

A sample report holds that sample's data alone (identity, QC, its variant summary, its ClinVar
findings) plus cohort-level allele frequencies; it names no other sample. Every value is passed
through ``html.escape``; the only URLs are anchor links to ClinVar variation pages, nothing is
loaded from the network (inline CSS and SVG).
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any

import duckdb

from cohortflow import SCHEMA_VERSION, __version__
from cohortflow.atomic import atomic_output
from cohortflow.errors import CohortflowError
from cohortflow.stats import is_transition, ti_tv_ratio, variant_class
from cohortflow.store import committed_batches, open_store, read_qc_json

log = logging.getLogger(__name__)

CLINVAR_URL = "https://www.ncbi.nlm.nih.gov/clinvar/variation/{id}/"
# Defaults of config.yaml (DESIGN.md section 5), shown only when the QC JSON records none.
DEFAULT_THRESHOLDS = {
    "min_mean_coverage": 20.0,
    "min_mapped_fraction": 0.95,
    "max_duplicate_fraction": 0.3,
}
# (metric, threshold key, direction): the metric passes when value >= (min) or <= (max) it.
QC_CHECKS = (
    ("mean_coverage", "min_mean_coverage", ">="),
    ("mapped_fraction", "min_mapped_fraction", ">="),
    ("duplicate_fraction", "max_duplicate_fraction", "<="),
)
QC_OTHER = ("total_reads", "fraction_20x", "insert_size_median", "inferred_sex")
AF_BINS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1a1a1a;
  margin: 2em auto; max-width: 62em; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.pass { color: #11691d; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
.na { color: #777; } .warn { color: #8a5300; font-weight: bold; }
.stars { color: #b8860b; letter-spacing: .05em; }
.note { color: #555; font-size: .88em; }
details { margin: .6em 0; } summary { cursor: pointer; font-weight: bold; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; }
  a { color: inherit; text-decoration: none; }
  h2 { page-break-after: avoid; } tr { page-break-inside: avoid; }
  details > * { display: block; }
}
"""

PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>$title</title>
<style>$style</style>
</head>
<body>
<h1>$title</h1>
$body
</body>
</html>
"""
)


def esc(value: Any) -> str:
    """HTML-escaped text of a value; an em dash for null."""
    if value is None:
        return "&mdash;"
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "&mdash;"
    if isinstance(value, float):
        return esc(format(value, f".{digits}g"))
    return esc(value)


def clinvar_class(significance: str | None) -> str | None:
    """Class of a ClinVar CLNSIG value: "pathogenic" (Pathogenic, Likely_pathogenic, both, also
    with low penetrance), "vus" (Uncertain_significance, conflicting) or None (benign, other).
    Only the primary term (before "|") counts."""
    if not significance:
        return None
    primary = significance.split("|")[0].strip().replace(" ", "_").lower()
    terms = [re.sub(r",?_low_penetrance$", "", t.strip(",_")) for t in primary.split("/")]
    if terms and all(t in ("pathogenic", "likely_pathogenic") for t in terms):
        return "pathogenic"
    if primary.startswith("uncertain_significance") or primary.startswith("conflicting"):
        return "vus"
    return None


def _pathogenic_rank(significance: str) -> int:
    primary = significance.split("|")[0].lower()
    if primary.startswith("pathogenic") and "likely" not in primary:
        return 0
    return 1 if primary.startswith("pathogenic") else 2


def zygosity(alt_count: int, ploidy: int | None) -> str:
    """heterozygous / homozygous / hemizygous for a carried allele (alt_count >= 1)."""
    if ploidy == 1:
        return "hemizygous"
    if ploidy is not None and alt_count >= ploidy:
        return "homozygous"
    return "heterozygous"


def _stars(n: Any) -> str:
    if n is None:
        return '<span class="na">not given</span>'
    k = max(0, min(4, int(n)))
    return f'<span class="stars" title="{k} of 4">{"★" * k}{"☆" * (4 - k)}</span> ({k})'


def _condition(text: str | None) -> str:
    if not text:
        return "&mdash;"
    return esc(text.replace("_", " ").replace("|", "; "))


def _change(row: Mapping[str, Any]) -> str:
    coords = f"{esc(row['contig'])}:{esc(row['pos'])} {esc(row['ref'])}&gt;{esc(row['alt'])}"
    if row.get("protein_change"):
        return f"{esc(row['protein_change'])}<br><span class='note'>{coords}</span>"
    return coords


def _clinvar_link(variation_id: Any) -> str:
    if variation_id is None:
        return "&mdash;"
    text = str(variation_id)
    if re.fullmatch(r"[0-9]+", text):
        url = CLINVAR_URL.format(id=text)
        return f'<a href="{esc(url)}">ClinVar {esc(text)}</a>'
    return esc(text)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An HTML table; cells are already-escaped HTML fragments."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _kv_table(items: Iterable[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>\n" for k, v in items)
    return f"<table>\n{rows}</table>"


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict]:
    return con.sql(sql, params=params).to_arrow_table().to_pylist()


def _write_html(out_html: Path, title: str, body: str) -> None:
    page = PAGE.substitute(title=esc(title), style=STYLE, body=body)
    with atomic_output(Path(out_html)) as tmp:
        tmp.write_text(page, encoding="utf-8")


def _provenance_items(
    store: Path, batch: str | None, provenance: Mapping[str, str] | None
) -> list[tuple[str, str]]:
    items = [
        ("cohortflow version", esc(__version__)),
        ("store schema version", esc(SCHEMA_VERSION)),
    ]
    batches = committed_batches(store)
    chosen = [batches.get(batch) or {}] if batch is not None else list(batches.values())
    merged: dict[str, set[str]] = {}
    for record in chosen:
        for key, value in (record.get("metadata") or {}).items():
            merged.setdefault(str(key), set()).add(str(value))
    for key, values in sorted(merged.items()):
        items.append((key, esc(", ".join(sorted(values)))))
    for key, value in sorted((provenance or {}).items()):
        items.append((str(key), esc(value)))
    return items


# --------------------------------------------------------------------------- sample report


def _sample_qc(
    con: duckdb.DuckDBPyConnection, sample: str, qc_json: Path | None
) -> tuple[dict[str, Any] | None, dict[str, float], str]:
    """QC row, thresholds and where the thresholds come from."""
    thresholds = dict(DEFAULT_THRESHOLDS)
    origin = "defaults of cohortflow (the QC record gives none)"
    if qc_json is not None:
        qc: dict[str, Any] | None = read_qc_json(Path(qc_json), sample)
        raw = json.loads(Path(qc_json).read_text(encoding="utf-8"))
        given = raw.get("thresholds")
        if isinstance(given, dict):
            for key in thresholds:
                if isinstance(given.get(key), int | float):
                    thresholds[key] = float(given[key])
            origin = f"as recorded in {Path(qc_json).name}"
    else:
        rows = _rows(con, "SELECT * FROM sample_qc WHERE sample = ?", [sample])
        qc = rows[0] if rows else None
    return qc, thresholds, origin


def _qc_section(qc: Mapping[str, Any] | None, thresholds: Mapping[str, float], origin: str) -> str:
    if qc is None:
        return "<h2>Quality control</h2>\n<p class='na'>No QC record for this sample.</p>"
    verdict = qc.get("qc_pass")
    if verdict is None:
        status = "<span class='na'>not assessed</span>"
    else:
        status = "<span class='pass'>PASS</span>" if verdict else "<span class='fail'>FAIL</span>"
    reasons = qc.get("qc_fail_reasons") or []
    parts = [f"<h2>Quality control</h2>\n<p>Overall: {status}</p>"]
    if reasons:
        parts.append("<ul>" + "".join(f"<li>{esc(r)}</li>" for r in reasons) + "</ul>")
    rows = []
    for metric, key, op in QC_CHECKS:
        value, limit = qc.get(metric), thresholds[key]
        if value is None:
            ok = "<span class='na'>not measured</span>"
        else:
            passed = value >= limit if op == ">=" else value <= limit
            ok = "<span class='pass'>pass</span>" if passed else "<span class='fail'>fail</span>"
        rows.append([esc(metric), _num(value), f"{esc(op)} {_num(limit)}", ok])
    for metric in QC_OTHER:
        rows.append([esc(metric), _num(qc.get(metric)), "&mdash;", "&mdash;"])
    parts.append(_table(["metric", "value", "threshold", "status"], rows))
    parts.append(f"<p class='note'>Thresholds: {esc(origin)}.</p>")
    return "\n".join(parts)


def _variant_summary(carried: Sequence[Mapping[str, Any]], n_sites: int, n_called: int) -> str:
    classes = {"SNV": 0, "indel": 0, "MNV": 0}
    ti = tv = het = hom = hemi = 0
    for row in carried:
        cls = variant_class(row["ref"], row["alt"])
        classes[cls] += 1
        if cls == "SNV":
            if is_transition(row["ref"], row["alt"]):
                ti += 1
            else:
                tv += 1
        z = zygosity(row["alt_count"], row["ploidy"])
        het += z == "heterozygous"
        hom += z == "homozygous"
        hemi += z == "hemizygous"
    titv = ti_tv_ratio(ti, tv)
    het_hom = het / hom if hom else None
    items = [
        ("alleles carried", esc(len(carried))),
        ("SNVs", esc(classes["SNV"])),
        ("indels", esc(classes["indel"])),
        ("MNVs", esc(classes["MNV"])),
        ("Ti/Tv (SNVs)", _num(titv, 3) + f" <span class='note'>({ti} / {tv})</span>"),
        (
            "heterozygous / homozygous",
            _num(het_hom, 3) + f" <span class='note'>({het} / {hom})</span>",
        ),
        ("hemizygous", esc(hemi)),
        ("cohort sites called in this sample", f"{esc(n_called)} of {esc(n_sites)}"),
    ]
    return "<h2>Variant summary</h2>\n" + _kv_table(items)


def _findings_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        [
            esc(r.get("gene")),
            _change(r),
            esc(r.get("clinvar_significance", "").replace("_", " ")),
            esc(zygosity(r["alt_count"], r["ploidy"])),
            _stars(r.get("clinvar_review_stars")),
            _condition(r.get("clinvar_condition")),
            _num(r.get("pop_af")),
            _num(r.get("af")),
            _clinvar_link(r.get("clinvar_variation_id")),
        ]
        for r in rows
    ]


FINDING_HEADERS = (
    "gene",
    "change",
    "ClinVar significance",
    "zygosity",
    "review",
    "condition",
    "population AF",
    "cohort AF",
    "ClinVar",
)


def write_sample_report(
    store: Path,
    sample: str,
    out_html: Path,
    qc_json: Path | None = None,
    provenance: Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> None:
    """Write the self-contained HTML report of one sample.

    In: the cohort store, the sample ID, the output path; optionally the sample's QC JSON (else
    its sample_qc row), provenance key/values (shown as given, e.g. run date, pipeline version)
    and QC thresholds (else those recorded in the QC JSON, else the config defaults).
    Out: ``out_html``, written atomically; it contains this sample's data only.
    """
    store = Path(store)
    con = open_store(store)
    try:
        found = _rows(con, "SELECT sample, sex, batch FROM samples WHERE sample = ?", [sample])
        if not found:
            raise CohortflowError(
                f"{store}: sample {sample} is not in the cohort store; aggregate it first"
            )
        ident = found[0]
        qc, qc_thresholds, origin = _sample_qc(con, sample, qc_json)
        if thresholds is not None:
            qc_thresholds.update({k: float(v) for k, v in thresholds.items()})
            origin = "as given to the report"
        carried = _rows(
            con,
            """SELECT g.alt_count, g.ploidy, g.gt, g.dp, g.gq, v.*
               FROM genotypes g JOIN variants v USING (contig, variant_id)
               WHERE g.sample = ? AND g.alt_count >= 1
               ORDER BY v.contig, v.pos, v.variant_id""",
            [sample],
        )
        counts = _rows(
            con,
            "SELECT count(*) AS n, count(alt_count) AS called FROM genotypes WHERE sample = ?",
            [sample],
        )[0]
    finally:
        con.close()

    inferred = qc.get("inferred_sex") if qc else None
    sex_note = ""
    if inferred and ident["sex"] != "unknown" and inferred not in ("unknown", ident["sex"]):
        sex_note = (
            " <span class='warn'>(declared and inferred sex differ: check for a sample swap)</span>"
        )
    identity = _kv_table(
        [
            ("sample", esc(sample)),
            ("batch", esc(ident["batch"])),
            ("declared sex", esc(ident["sex"])),
            ("inferred sex", esc(inferred) + sex_note),
        ]
    )
    pathogenic = [
        r for r in carried if clinvar_class(r.get("clinvar_significance")) == "pathogenic"
    ]
    pathogenic.sort(
        key=lambda r: (
            _pathogenic_rank(r["clinvar_significance"]),
            r.get("gene") or "",
            r["contig"],
            r["pos"],
        )
    )
    vus = [r for r in carried if clinvar_class(r.get("clinvar_significance")) == "vus"]
    if pathogenic:
        findings = _table(FINDING_HEADERS, _findings_rows(pathogenic))
    else:
        findings = "<p>No ClinVar pathogenic or likely pathogenic variant found in this sample.</p>"
    vus_html = (
        f"<details>\n<summary>Variants of uncertain significance ({len(vus)})</summary>\n"
        + (_table(FINDING_HEADERS, _findings_rows(vus)) if vus else "<p>None.</p>")
        + "\n</details>"
    )
    body = "\n".join(
        [
            "<h2>Identity</h2>",
            identity,
            _qc_section(qc, qc_thresholds, origin),
            _variant_summary(carried, counts["n"], counts["called"]),
            "<h2>Findings: ClinVar pathogenic and likely pathogenic</h2>",
            findings,
            "<p class='note'>Cohort AF is the allele frequency among all samples of the cohort "
            "called at the site. Research use: confirm findings before clinical action.</p>",
            vus_html,
            "<h2>Provenance</h2>",
            _kv_table(_provenance_items(store, ident["batch"], provenance)),
        ]
    )
    _write_html(Path(out_html), f"cohortflow report: {sample}", body)
    log.info("wrote %s (%d pathogenic findings, %d VUS)", out_html, len(pathogenic), len(vus))


# --------------------------------------------------------------------------- cohort report


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


def af_spectrum_svg(afs: Sequence[float], bins: Sequence[float] = AF_BINS) -> str:
    """An inline SVG bar chart of the allele-frequency spectrum (variants with ac > 0)."""
    counts = af_histogram(afs, bins)
    width, height, pad, bar_w = 520, 220, 40, 60
    top = max(counts) if counts and max(counts) > 0 else 1
    bars = []
    for i, n in enumerate(counts):
        h = (height - 2 * pad) * n / top
        x = pad + i * (bar_w + 10)
        y = height - pad - h
        label = f"{bins[i]:g}&#8211;{bins[i + 1]:g}"
        bars.append(
            f'<rect x="{x}" y="{y:.1f}" width="{bar_w}" height="{h:.1f}" fill="#4a78a8"/>'
            f'<text x="{x + bar_w / 2}" y="{y - 4:.1f}" font-size="11" text-anchor="middle">{n}</text>'
            f'<text x="{x + bar_w / 2}" y="{height - pad + 14}" font-size="10" '
            f'text-anchor="middle">{label}</text>'
        )
    return (
        f'<svg width="{width}" height="{height}" '
        f'role="img" aria-label="allele frequency spectrum">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - 10}" y2="{height - pad}" stroke="#333"/>'
        + "".join(bars)
        + f'<text x="{width / 2}" y="{height - 6}" font-size="11" text-anchor="middle">'
        "cohort allele frequency</text></svg>"
    )


def write_cohort_report(
    store: Path, out_html: Path, provenance: Mapping[str, str] | None = None
) -> None:
    """Write the cohort HTML report: QC across samples, AF spectrum, pathogenic carriers per gene.

    In: the cohort store and the output path; provenance key/values shown as given.
    Out: ``out_html``, written atomically.
    """
    store = Path(store)
    con = open_store(store)
    try:
        qc_rows = _rows(
            con,
            """SELECT s.sample, s.batch, s.sex, q.inferred_sex, q.mean_coverage,
                      q.mapped_fraction, q.duplicate_fraction, q.fraction_20x, q.qc_pass,
                      q.qc_fail_reasons
               FROM samples s LEFT JOIN sample_qc q USING (sample) ORDER BY s.sample""",
        )
        afs = [
            r["af"] for r in _rows(con, "SELECT af FROM variants WHERE ac > 0 AND af IS NOT NULL")
        ]
        n_variants = _rows(con, "SELECT count(*) AS n FROM variants")[0]["n"]
        annotated = _rows(
            con,
            "SELECT variant_id, gene, clinvar_significance FROM variants "
            "WHERE clinvar_significance IS NOT NULL",
        )
        plp = sorted(
            r["variant_id"]
            for r in annotated
            if clinvar_class(r["clinvar_significance"]) == "pathogenic"
        )
        genes: list[dict] = []
        if plp:
            genes = _rows(
                con,
                """SELECT coalesce(v.gene, '(no gene)') AS gene,
                          count(DISTINCT v.variant_id) AS variants,
                          count(DISTINCT g.sample) AS carriers
                   FROM genotypes g JOIN variants v USING (contig, variant_id)
                   WHERE g.alt_count >= 1 AND list_contains(?, v.variant_id)
                   GROUP BY ALL ORDER BY carriers DESC, gene""",
                [plp],
            )
    finally:
        con.close()

    def verdict(v: bool | None) -> str:
        if v is None:
            return "<span class='na'>no QC</span>"
        return "<span class='pass'>PASS</span>" if v else "<span class='fail'>FAIL</span>"

    qc_table = _table(
        [
            "sample",
            "batch",
            "declared sex",
            "inferred sex",
            "mean coverage",
            "mapped fraction",
            "duplicate fraction",
            "fraction 20x",
            "QC",
            "reasons",
        ],
        [
            [
                esc(r["sample"]),
                esc(r["batch"]),
                esc(r["sex"]),
                esc(r["inferred_sex"]),
                _num(r["mean_coverage"]),
                _num(r["mapped_fraction"]),
                _num(r["duplicate_fraction"]),
                _num(r["fraction_20x"]),
                verdict(r["qc_pass"]),
                esc("; ".join(r["qc_fail_reasons"] or [])),
            ]
            for r in qc_rows
        ],
    )
    n_pass = sum(1 for r in qc_rows if r["qc_pass"])
    gene_table = (
        _table(
            ["gene", "pathogenic / likely pathogenic variants", "carriers"],
            [[esc(g["gene"]), esc(g["variants"]), esc(g["carriers"])] for g in genes],
        )
        if genes
        else "<p>No carrier of a ClinVar pathogenic or likely pathogenic variant.</p>"
    )
    body = "\n".join(
        [
            "<h2>Samples and QC</h2>",
            f"<p>{len(qc_rows)} samples, {n_pass} pass QC; {n_variants} alleles in the store.</p>",
            qc_table,
            "<h2>Allele frequency spectrum</h2>",
            f"<p class='note'>{len(afs)} alleles with at least one carrier.</p>",
            af_spectrum_svg(afs),
            "<h2>Carriers of pathogenic variants per gene</h2>",
            gene_table,
            "<h2>Provenance</h2>",
            _kv_table(_provenance_items(store, None, provenance)),
        ]
    )
    _write_html(Path(out_html), "cohortflow cohort report", body)
    log.info("wrote %s (%d samples)", out_html, len(qc_rows))
