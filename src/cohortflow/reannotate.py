"""Re-annotate a cohort store with a new knowledge-base release, without re-calling.

``reannotate_store`` joins every allele of the store's ``variants`` table with a new KB (built
by :func:`cohortflow.kb.build_kb`), hands the new annotation values to
:func:`cohortflow.store.replace_annotations` (genotype files are not touched) and writes the
reclassification delta: per sample, the alleles it carries whose ClinVar significance or review
status changed between the store's release and the new one.

    out_dir/previous_annotations.parquet   the store's annotations before the change (kept so
                                           that a re-run after an interruption compares with
                                           the same old values)
    out_dir/{sample}.reclassified.tsv      DELTA_COLUMNS, one row per carried changed allele
    out_dir/summary.tsv                    SUMMARY_COLUMNS, one row per sample
    out_dir/summary.json                   releases, counts, what replace_annotations reported

Consequence columns (gene, consequence, protein_change) do not depend on ClinVar and are kept;
pop_af is replaced only when the new KB has a population table. Positions are 1-based.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pysam

from cohortflow import store as cohort_store
from cohortflow.annotate import _kb_lookup
from cohortflow.atomic import atomic_output
from cohortflow.contigs import fasta_contig_lengths, map_contigs
from cohortflow.errors import CohortflowError
from cohortflow.kb import KnowledgeBase, large_population, load_kb, significance_rank

log = logging.getLogger(__name__)

PREVIOUS_FILE = "previous_annotations.parquet"
SUMMARY_TSV = "summary.tsv"
SUMMARY_JSON = "summary.json"

# The store columns a KB release provides (replace_annotations' input names).
KB_COLUMNS = (
    "clinvar_significance",
    "clinvar_review_stars",
    "clinvar_review_status",
    "clinvar_condition",
    "clinvar_variation_id",
    "clinvar_gene",
)
KEPT_COLUMNS = ("gene", "consequence", "protein_change")

DELTA_COLUMNS = (
    "sample",
    "variant_id",
    "contig",
    "pos",
    "ref",
    "alt",
    "gt",
    "zygosity",
    "gene",
    "change",
    "old_significance",
    "new_significance",
    "old_review_status",
    "new_review_status",
    "old_stars",
    "new_stars",
    "old_release",
    "new_release",
)
SUMMARY_COLUMNS = (
    "sample",
    "changed",
    "significance_changed",
    "review_status_changed",
    "added",
    "removed",
    "now_pathogenic",
    "no_longer_pathogenic",
)
_PATHOGENIC_RANK = 8  # significance_rank of Likely_pathogenic and above


def change_kind(
    old_sig: str | None, new_sig: str | None, old_rev: str | None, new_rev: str | None
) -> str | None:
    """What changed for one allele between two releases, or None when nothing did.

    'added' (not in the old release), 'removed' (not in the new one), 'significance',
    'review_status' or 'significance+review_status'.
    """
    if old_sig is None and old_rev is None and (new_sig is not None or new_rev is not None):
        return "added"
    if new_sig is None and new_rev is None and (old_sig is not None or old_rev is not None):
        return "removed"
    parts = []
    if old_sig != new_sig:
        parts.append("significance")
    if old_rev != new_rev:
        parts.append("review_status")
    return "+".join(parts) or None


def is_pathogenic(significance: str | None) -> bool:
    """True for Pathogenic / Likely_pathogenic (and their compounds) ClinVar significance."""
    return significance_rank(significance) >= _PATHOGENIC_RANK


def _store_release(store: Path) -> str:
    """The KB release the store's annotations come from ('unknown' when not recorded)."""
    record = cohort_store.read_annotation_record(store)
    if record and record.get("kb_release"):
        return str(record["kb_release"])
    for path in cohort_store.table_files(store, "variants"):
        meta = pq.read_schema(path).metadata or {}
        value = meta.get(b"kb_release")
        if value:
            return value.decode()
    return "unknown"


def _current(store: Path) -> pa.Table:
    """One row per stored allele: its key, kept columns (from ``annotations``) and KB columns."""
    kept = ", ".join(
        f"arg_min(a.{c}, a.sample) FILTER (WHERE a.{c} IS NOT NULL) AS {c}" for c in KEPT_COLUMNS
    )
    kb_cols = ", ".join(f"v.{c}" for c in KB_COLUMNS if c != "clinvar_gene")
    sql = f"""
        WITH a AS (SELECT variant_id, {kept} FROM annotations a GROUP BY variant_id),
             g AS (SELECT variant_id, arg_min(a.clinvar_gene, a.sample)
                      FILTER (WHERE a.clinvar_gene IS NOT NULL) AS clinvar_gene
                   FROM annotations a GROUP BY variant_id)
        SELECT v.variant_id, v.contig, v.pos, v.ref, v.alt,
               {", ".join(f"a.{c}" for c in KEPT_COLUMNS)}, {kb_cols}, g.clinvar_gene, v.pop_af
        FROM variants v LEFT JOIN a USING (variant_id) LEFT JOIN g USING (variant_id)
        ORDER BY v.contig, v.pos, v.variant_id
    """
    return cohort_store.query(store, sql)


def _keyed_kb(
    kb: KnowledgeBase, reference: Path | None, store_contigs: list[str]
) -> tuple[pa.Table, pa.Table | None]:
    """The KB's ClinVar and population tables keyed in the store's coordinates."""
    if reference is not None:
        ref_lengths = fasta_contig_lengths(reference)
        with pysam.FastaFile(str(reference)) as fasta:
            clin = _kb_lookup("clinvar", kb.clinvar, kb, reference, ref_lengths, fasta).table
            pop = _kb_lookup("population", kb.population, kb, reference, ref_lengths, fasta).table
        assert clin is not None
        return clin, pop
    if not kb.manifest.get("normalized_against_reference"):
        raise CohortflowError(
            f"{kb.path}: this knowledge base was built without a reference, so its indels are "
            "not left-aligned; give --reference (the FASTA the store was called against)"
        )
    tables: list[pa.Table | None] = []
    for table in (kb.clinvar, kb.population):
        if table is None:
            tables.append(None)
            continue
        kb_contigs = table.column("contig").unique().to_pylist()
        mapping = map_contigs(kb_contigs, store_contigs)
        if kb_contigs and store_contigs and not mapping:
            raise CohortflowError(
                f"{kb.path}: contigs ({', '.join(kb_contigs[:5])}) share no name with the "
                f"store's ({', '.join(store_contigs[:5])}); build the KB for the store's reference"
            )
        if any(k != v for k, v in mapping.items()):
            ids = [
                None if mapping.get(c) is None else f"{mapping[c]}-{p}-{r}-{a}"
                for c, p, r, a in zip(
                    table.column("contig").to_pylist(),
                    table.column("pos").to_pylist(),
                    table.column("ref").to_pylist(),
                    table.column("alt").to_pylist(),
                    strict=True,
                )
            ]
            table = table.set_column(
                table.schema.get_field_index("variant_id"), "variant_id", pa.array(ids)
            )
        tables.append(table)
    return tables[0], tables[1]


def _stored_population(path: Path, ids: pa.Array, store_contigs: list[str]) -> pa.Table:
    """The population rows of the alleles the store holds (``ids``), keyed on the store's
    contig names, read one row group at a time: a gnomAD table is never loaded whole."""
    pf = pq.ParquetFile(path)
    columns = ["variant_id", "contig", "pos", "ref", "alt", "af"]
    mapping: dict[str, str | None] = {}
    parts = [pf.schema_arrow.empty_table().select(columns)]
    for i in range(pf.metadata.num_row_groups):
        rows = pf.read_row_group(i, columns=columns)
        contig = rows.column("contig")
        for name in pc.unique(contig).to_pylist():
            if name not in mapping:
                mapping[name] = map_contigs([name], store_contigs).get(name)
        if any(k != v for k, v in mapping.items()):
            names = pc.dictionary_encode(contig).combine_chunks()
            renamed = pa.array([mapping[n] for n in names.dictionary.to_pylist()], pa.string())
            contig = renamed.take(names.indices)
            pos = pc.cast(rows.column("pos"), pa.string())
            ids_here = pc.binary_join_element_wise(
                contig, pos, rows.column("ref"), rows.column("alt"), "-"
            )
            rows = rows.set_column(0, "variant_id", ids_here)
        rows = rows.filter(pc.fill_null(pc.is_in(rows.column("variant_id"), value_set=ids), False))
        parts.append(rows)
    if mapping and not any(mapping.values()):
        raise CohortflowError(
            f"{path}: contigs ({', '.join(list(mapping)[:5])}) share no name with the store's "
            f"({', '.join(store_contigs[:5])}); build the KB for the store's reference"
        )
    return pa.concat_tables(parts)


def new_annotations(current: pa.Table, clinvar: pa.Table, population: pa.Table | None) -> pa.Table:
    """The replace_annotations input: every stored allele with its kept columns and the new
    KB values (null where the new release lacks the allele); pop_af is kept without a
    population table."""
    clin = clinvar.select(
        ["variant_id", "clnsig", "stars", "clnrevstat", "clndn", "variation_id", "gene"]
    ).rename_columns(["variant_id", *KB_COLUMNS])
    base = current.select(["variant_id", *KEPT_COLUMNS] + ([] if population else ["pop_af"]))
    out = base.join(clin, keys="variant_id", join_type="left outer")
    if population is not None:
        pop = population.select(["variant_id", "af"]).rename_columns(["variant_id", "pop_af"])
        out = out.join(pop, keys="variant_id", join_type="left outer")
    out = out.sort_by("variant_id")
    return out.select(["variant_id", *KEPT_COLUMNS, *KB_COLUMNS, "pop_af"])


def _previous(out_dir: Path, current: pa.Table, new_release: str) -> tuple[pa.Table, str]:
    """The old annotations: a snapshot left by an interrupted run for this release, else the
    store's current ones (written to ``out_dir`` before the store changes)."""
    path = out_dir / PREVIOUS_FILE
    if path.is_file():
        snap = pq.read_table(path)
        meta = snap.schema.metadata or {}
        if meta.get(b"new_release", b"").decode() == new_release:
            log.info("%s: comparing with the snapshot of an earlier run for %s", path, new_release)
            return snap, meta.get(b"old_release", b"unknown").decode()
    return current, ""


def _carriers(store: Path, changed: pa.Table) -> pa.Table:
    """sample, variant_id, gt, alt_count, ploidy of every genotype carrying a changed allele."""
    con = cohort_store.open_store(store)
    try:
        con.register("changed_ids", changed.select(["variant_id"]))
        return con.sql(
            "SELECT g.sample, g.variant_id, g.gt, g.alt_count, g.ploidy FROM genotypes g "
            "JOIN changed_ids c USING (variant_id) WHERE g.alt_count > 0 "
            "ORDER BY g.sample, g.contig, g.pos, g.variant_id"
        ).to_arrow_table()
    finally:
        con.close()


def _tsv_value(value: Any) -> str:
    if value is None:
        return ""
    return str(value).replace("\t", " ").replace("\n", " ")


def genotype_zygosity(alt_count: int | None, ploidy: int | None) -> str | None:
    """'het', 'hom_alt' (all copies; haploid carriers too) or None (not carried / no-call)."""
    if not alt_count:
        return None
    return "hom_alt" if ploidy is None or alt_count >= ploidy else "het"


def reclassification_delta(old: pa.Table, new: pa.Table) -> dict[str, dict[str, Any]]:
    """variant_id -> {change, old/new significance, review status, stars} for changed alleles.

    In: tables with variant_id and the clinvar_* columns (old: before, new: after)."""
    cols = ["clinvar_significance", "clinvar_review_status", "clinvar_review_stars"]
    old_rows = {r["variant_id"]: r for r in old.select(["variant_id", *cols]).to_pylist()}
    out: dict[str, dict[str, Any]] = {}
    for r in new.select(["variant_id", *cols]).to_pylist():
        o = old_rows.get(r["variant_id"], {})
        kind = change_kind(
            o.get("clinvar_significance"),
            r["clinvar_significance"],
            o.get("clinvar_review_status"),
            r["clinvar_review_status"],
        )
        if kind is None:
            continue
        out[r["variant_id"]] = {
            "change": kind,
            "old_significance": o.get("clinvar_significance"),
            "new_significance": r["clinvar_significance"],
            "old_review_status": o.get("clinvar_review_status"),
            "new_review_status": r["clinvar_review_status"],
            "old_stars": o.get("clinvar_review_stars"),
            "new_stars": r["clinvar_review_stars"],
        }
    return out


def reannotate_store(
    store: Path, kb_dir: Path, out_dir: Path, reference: Path | None = None
) -> dict[str, Any]:
    """Re-annotate ``store`` with the KB in ``kb_dir``; write the delta files into ``out_dir``.

    In: a cohort store (cohortflow aggregate), a KB folder (cohortflow kb build; built with
    ``--reference`` unless ``reference`` is given here, in which case the KB is normalized
    against it), the output folder. Out: the summary dict (also ``summary.json``).
    Raises CohortflowError for a missing store or KB, or a KB on other contigs.
    """
    store, kb_dir, out_dir = Path(store), Path(kb_dir), Path(out_dir)
    # a large population table is read in pieces when it is keyed already (no reference to
    # re-key it onto)
    large = large_population(kb_dir) if reference is None else None
    kb = load_kb(kb_dir, population=large is None)
    new_release = str(kb.manifest.get("clinvar_release") or "unknown")
    current = _current(store)
    samples = cohort_store.query(store, "SELECT sample FROM samples ORDER BY sample")
    sample_names = samples.column("sample").to_pylist()
    store_contigs = sorted(set(current.column("contig").to_pylist()))
    clinvar, population = _keyed_kb(kb, reference, store_contigs)
    if large is not None:  # _keyed_kb checked the KB's indels are left-aligned
        ids = current.column("variant_id").combine_chunks()
        population = _stored_population(large, ids, store_contigs)
        log.info("%s: read the population rows of the store's %d alleles", large, len(current))
    old, old_release = _previous(out_dir, current, new_release)
    old_release = old_release or _store_release(store)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / PREVIOUS_FILE).is_file():
        meta = {b"old_release": old_release.encode(), b"new_release": new_release.encode()}
        with atomic_output(out_dir / PREVIOUS_FILE) as tmp:
            pq.write_table(old.replace_schema_metadata(meta), tmp, compression="zstd")
    annotations = new_annotations(current, clinvar, population)
    replaced = cohort_store.replace_annotations(store, annotations, new_release)
    delta = reclassification_delta(old, annotations)
    new_gene = dict(
        zip(
            annotations.column("variant_id").to_pylist(),
            annotations.column("clinvar_gene").to_pylist(),
            strict=True,
        )
    )
    keys = {}
    for r in current.select(
        ["variant_id", "contig", "pos", "ref", "alt", "gene", "clinvar_gene"]
    ).to_pylist():
        r["gene"] = r["gene"] or new_gene.get(r["variant_id"]) or r["clinvar_gene"]
        keys[r["variant_id"]] = r
    changed = pa.table({"variant_id": pa.array(sorted(delta), pa.string())})
    carriers = _carriers(store, changed) if delta else None
    per_sample: dict[str, list[list[str]]] = {s: [] for s in sample_names}
    if carriers is not None:
        for row in carriers.to_pylist():
            d = delta[row["variant_id"]]
            k = keys[row["variant_id"]]
            per_sample.setdefault(row["sample"], []).append(
                [
                    _tsv_value(v)
                    for v in (
                        row["sample"],
                        row["variant_id"],
                        k["contig"],
                        k["pos"],
                        k["ref"],
                        k["alt"],
                        row["gt"],
                        genotype_zygosity(row["alt_count"], row["ploidy"]),
                        k["gene"],
                        d["change"],
                        d["old_significance"],
                        d["new_significance"],
                        d["old_review_status"],
                        d["new_review_status"],
                        d["old_stars"],
                        d["new_stars"],
                        old_release,
                        new_release,
                    )
                ]
            )
    summary_rows = []
    for sample, rows in sorted(per_sample.items()):
        with atomic_output(out_dir / f"{sample}.reclassified.tsv") as tmp:
            tmp.write_text(
                "\n".join(["\t".join(DELTA_COLUMNS)] + ["\t".join(r) for r in rows]) + "\n"
            )
        summary_rows.append(_sample_summary(sample, rows))
    with atomic_output(out_dir / SUMMARY_TSV) as tmp:
        lines = ["\t".join(SUMMARY_COLUMNS)]
        lines += ["\t".join(str(r[c]) for c in SUMMARY_COLUMNS) for r in summary_rows]
        tmp.write_text("\n".join(lines) + "\n")
    summary: dict[str, Any] = {
        "store": str(store),
        "kb": str(kb_dir),
        "old_release": old_release,
        "new_release": new_release,
        "variants_changed": len(delta),
        "changes": {
            kind: sum(1 for d in delta.values() if d["change"] == kind)
            for kind in sorted({d["change"] for d in delta.values()})
        },
        "samples": {r["sample"]: {c: r[c] for c in SUMMARY_COLUMNS[1:]} for r in summary_rows},
        "store_update": replaced,
    }
    with atomic_output(out_dir / SUMMARY_JSON) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (out_dir / PREVIOUS_FILE).unlink(missing_ok=True)  # the store is updated: the run is done
    log.info(
        "%s: %s -> %s, %d alleles changed, delta in %s",
        store,
        old_release,
        new_release,
        len(delta),
        out_dir,
    )
    return summary


def _sample_summary(sample: str, rows: list[list[str]]) -> dict[str, Any]:
    idx = {c: i for i, c in enumerate(DELTA_COLUMNS)}

    def count(pred: Any) -> int:
        return sum(1 for r in rows if pred(r))

    def sig(r: list[str], col: str) -> str | None:
        return r[idx[col]] or None

    return {
        "sample": sample,
        "changed": len(rows),
        "significance_changed": count(lambda r: "significance" in r[idx["change"]]),
        "review_status_changed": count(lambda r: "review_status" in r[idx["change"]]),
        "added": count(lambda r: r[idx["change"]] == "added"),
        "removed": count(lambda r: r[idx["change"]] == "removed"),
        "now_pathogenic": count(
            lambda r: (
                is_pathogenic(sig(r, "new_significance"))
                and not is_pathogenic(sig(r, "old_significance"))
            )
        ),
        "no_longer_pathogenic": count(
            lambda r: (
                is_pathogenic(sig(r, "old_significance"))
                and not is_pathogenic(sig(r, "new_significance"))
            )
        ),
    }
