"""The ``cohortflow`` command line: a thin layer over the package and Snakemake.

User errors (CohortflowError) print one message and exit 2; no traceback. So does an OSError
that escapes a command (an output path that is a file, a read-only folder): it names the path.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cohortflow import __version__
from cohortflow.errors import CohortflowError
from cohortflow.lean import lean_imports

log = logging.getLogger("cohortflow")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="[cohortflow %(asctime)s] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _existing(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CohortflowError(f"{path}: file not found")
    return p


def _kb_folder(path: str) -> Path:
    """``path`` when it is a folder (a knowledge base); CohortflowError when missing or a file."""
    p = _existing(path)
    if not p.is_dir():
        raise CohortflowError(
            f"{path}: is a file, not a knowledge-base folder; give the folder that "
            "`cohortflow kb build -o` wrote"
        )
    return p


def _output_folder(path: str, what: str) -> Path:
    """``path`` when a folder can be made or updated there; CohortflowError naming what is in
    the way (``path`` or one of its parents is a file). ``what``: e.g. "cohort store"."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists() or q.is_symlink():
            if q == p and not q.is_dir():
                raise CohortflowError(
                    f"{path}: is a file, not a {what} folder; give a folder path (or move the "
                    "file away)"
                )
            if not q.is_dir():
                raise CohortflowError(
                    f"{q}: is a file, so the {what} {path} cannot be made under it; move the "
                    "file away or choose another path"
                )
            break
    return p


# Hints for OSErrors that escape a command (see main): they mostly mean a path is in the way.
_OS_ERROR_HINTS: tuple[tuple[type[OSError], str], ...] = (
    (PermissionError, "check its permissions or choose another path"),
    (NotADirectoryError, "a file stands where a folder is needed; move it or choose another path"),
    (
        FileExistsError,
        "a file is in the way of a folder to be made; move it or choose another path",
    ),
    (IsADirectoryError, "a folder stands where a file is needed; move it or choose another path"),
)


def os_error_message(exc: OSError) -> str:
    """One line for an OSError: ``{path}: {reason}[; hint]`` (the rename target when a rename
    failed, as that is the path the user gave)."""
    name = exc.filename2 if exc.filename2 is not None else exc.filename
    reason = exc.strerror or str(exc)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    text = f"{name}: {reason}" if name is not None else reason
    hint = next((h for kind, h in _OS_ERROR_HINTS if isinstance(exc, kind)), None)
    return f"{text}; {hint}" if hint else text


# -- validate / run / demo ---------------------------------------------------------------------


def _validate(
    configfile: Path, snakemake_args: Sequence[str] = (), profile: str | None = None
) -> dict[str, Any]:
    """Sheets and schemas, then preflight on every file the run names; return the config.

    ``snakemake_args``/``profile``: what Snakemake will get (a missing caller or aligner
    binary is fine with --sdm conda, or --sdm apptainer and calling.container).
    Raises CohortflowError (one line per problem) before anything is started.
    """
    from cohortflow.layout import RunPlan
    from cohortflow.preflight import check_run
    from cohortflow.sheets import load_config_file, load_run_config

    start = time.monotonic()
    run = load_run_config(load_config_file(configfile), base_dir=Path.cwd(), source=str(configfile))
    plan = RunPlan.from_run(run)
    check_run(run, snakemake_args=snakemake_args, profile=Path(profile) if profile else None)
    entries: dict[str, int] = {}
    for p in plan.plans:
        entries[p.entry] = entries.get(p.entry, 0) + 1
    summary = ", ".join(f"{n} from {k}" for k, n in sorted(entries.items()))
    print(f"{configfile}: OK: {len(plan.plans)} samples ({summary}), {len(run.units)} units")
    log.debug("preflight took %.1f s", time.monotonic() - start)
    return run.config


def cmd_validate(args: argparse.Namespace) -> int:
    extra = [a for a in args.snakemake_args if a != "--"]
    _validate(Path(args.configfile), extra, args.profile)
    return 0


def _snakemake_cmd(
    configfile: Path,
    cores: int,
    workdir: Path | None,
    profile: str | None,
    extra: Sequence[str],
) -> list[str]:
    from cohortflow.paths import snakefile

    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile())]
    if workdir is not None:
        cmd += ["-d", str(workdir)]
    cmd += ["--configfile", str(configfile), "--cores", str(cores)]
    if profile:
        cmd += ["--profile", profile]
    cmd += ["--rerun-incomplete", "--printshellcmds"]
    cmd += list(extra)
    return cmd


def _run_snakemake(cmd: list[str], workdir: Path | None = None) -> int:
    """Run Snakemake in ``workdir`` (default: here) while holding the run-folder lock.

    Snakemake locks left by a run killed outright (SIGKILL, power loss) are removed first
    when no Snakemake runs in that folder any more, so the next run resumes by itself.
    """
    from cohortflow.preflight import run_folder_lock, stale_snakemake_locks

    folder = workdir or Path.cwd()
    with run_folder_lock(folder) as fd:
        stale = stale_snakemake_locks(folder)
        if stale:
            log.warning(
                "removing %d Snakemake lock(s) left in %s by a run that was killed",
                len(stale),
                folder,
            )
            unlock = [a for a in cmd if a not in ("--rerun-incomplete", "--printshellcmds")]
            subprocess.call([*unlock, "--unlock"], stdout=subprocess.DEVNULL)
        log.info("running: %s", " ".join(cmd))
        return subprocess.call(cmd, pass_fds=(fd,))


def cmd_run(args: argparse.Namespace) -> int:
    from cohortflow.atomic import apply_umask
    from cohortflow.batches import is_plain_run, plan_batches, write_batch_config
    from cohortflow.sheets import load_config_file, load_run_config

    configfile = Path(args.configfile)
    extra = [a for a in args.snakemake_args if a != "--"]
    config = _validate(configfile, extra, args.profile)
    apply_umask(config["umask"])
    run = load_run_config(load_config_file(configfile), base_dir=Path.cwd(), source=str(configfile))
    batch = run.config["cohort"]["batch"]
    runs = plan_batches(run.samples, batch, args.max_batch_samples)
    if is_plain_run(runs, batch, len(run.samples)):
        configs = [(batch, configfile)]
    else:
        log.info(
            "%d samples in %d batches: one Snakemake run each (%s)",
            len(run.samples),
            len(runs),
            ", ".join(f"{r.name}: {len(r.samples)}" for r in runs),
        )
        configs = [
            (
                r.name,
                write_batch_config(
                    run.config, _sheet(run, "samples"), _sheet(run, "units"), r, Path.cwd()
                ),
            )
            for r in runs
        ]
    start = time.monotonic()
    for k, (name, cfg) in enumerate(configs, start=1):
        if len(configs) > 1:
            log.info("batch %d of %d: %s", k, len(configs), name)
        rc = _run_snakemake(_snakemake_cmd(cfg, args.cores, None, args.profile, extra))
        if rc != 0:
            log.info("batch %s failed (exit status %d); later batches were not run", name, rc)
            return rc
    log.info("snakemake finished after %.1f s", time.monotonic() - start)
    return 0


def _sheet(run: Any, key: str) -> Path:
    p = Path(run.config[key])
    return p if p.is_absolute() else run.base_dir / p


def cmd_demo(args: argparse.Namespace) -> int:
    from cohortflow.simulate import simulate_cohort

    start = time.monotonic()
    outdir = Path(args.outdir).resolve()
    log.info("simulating a demo cohort of %d samples into %s", args.samples, outdir)
    cohort = simulate_cohort(outdir, n_samples=args.samples, seed=args.seed, depth=args.depth)
    t_sim = time.monotonic() - start
    log.info("simulation done in %.1f s; running the pipeline", t_sim)
    from cohortflow.atomic import apply_umask

    cwd = Path.cwd()
    try:
        os.chdir(outdir)
        config = _validate(cohort.config)
    finally:
        os.chdir(cwd)
    apply_umask(config["umask"])
    rc = _run_snakemake(_snakemake_cmd(cohort.config, args.cores, outdir, None, []), outdir)
    wall = time.monotonic() - start
    if rc == 0:
        print(
            f"demo finished: reports in {outdir / 'results' / 'reports'}, "
            f"cohort store in {outdir / 'results' / 'cohort'}"
        )
    print(f"demo wall time: {wall:.1f} s (simulation {t_sim:.1f} s)")
    return rc


# -- simulate ------------------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    from cohortflow.simulate import simulate_cohort

    cohort = simulate_cohort(
        Path(args.outdir),
        n_samples=args.samples,
        seed=args.seed,
        reference=_existing(args.reference) if args.reference else None,
        depth=args.depth,
        genome_length=args.genome_length,
        build=args.build,
    )
    print(f"simulated {len(cohort.samples)} samples into {cohort.outdir}")
    print(f"run it with: cd {cohort.outdir} && cohortflow run --configfile config.yaml")
    return 0


# -- kb / annotate / aggregate / query / evaluate ---------------------------------------------


def cmd_kb_build(args: argparse.Namespace) -> int:
    from cohortflow.kb import build_kb

    manifest = build_kb(
        clinvar_vcf=_existing(args.clinvar),
        out_dir=_output_folder(args.output, "knowledge-base"),
        reference=_existing(args.reference) if args.reference else None,
        population=_existing(args.population) if args.population else None,
        gff3=_existing(args.gff3) if args.gff3 else None,
        build=args.build,
    )
    release = manifest.get("clinvar_release") or manifest.get("release") or "unknown"
    print(f"knowledge base written to {args.output} (ClinVar release {release})")
    return 0


def cmd_annotate(args: argparse.Namespace) -> int:
    with lean_imports():
        from cohortflow.annotate import annotate_vcf

    audit = annotate_vcf(
        in_vcf=_existing(args.input),
        kb_dir=_kb_folder(args.kb),
        reference=_existing(args.reference),
        out_vcf=Path(args.output),
        gff3=_existing(args.gff3) if args.gff3 else None,
        findings_tsv=Path(args.findings) if args.findings else None,
        audit_json=Path(args.audit) if args.audit else None,
    )
    print(f"annotated VCF written to {args.output}")
    if isinstance(audit, dict):
        import json

        print(json.dumps(audit, indent=1, sort_keys=True))
    return 0


def cmd_reannotate(args: argparse.Namespace) -> int:
    from cohortflow.reannotate import reannotate_store

    summary = reannotate_store(
        store=_existing(args.store),
        kb_dir=_kb_folder(args.kb),
        out_dir=_output_folder(args.output, "reclassification delta"),
        reference=_existing(args.reference) if args.reference else None,
    )
    print(
        f"{args.store}: re-annotated {summary['old_release']} -> {summary['new_release']}; "
        f"{summary['variants_changed']} alleles changed; delta per sample in {args.output}"
    )
    for sample, counts in sorted(summary["samples"].items()):
        print(f"  {sample}: {counts['changed']} carried alleles changed")
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from cohortflow import prefer_system_allocator

    prefer_system_allocator()  # before pyarrow's first import
    # kinship's matrix products use the cores
    with lean_imports(one_blas_thread=False):
        from cohortflow.inputs import sample_inputs_from_files
        from cohortflow.store import aggregate

    store = _output_folder(args.store, "cohort store")
    inputs = sample_inputs_from_files(
        [_existing(p) for p in args.files],
        samples_tsv=_existing(args.samples) if args.samples else None,
    )
    metadata = {
        key: value
        for key, value in (
            ("reference_build", args.reference_build),
            ("kb_release", args.kb_release),
            ("caller", args.caller),
        )
        if value
    }
    summary = aggregate(
        store=store,
        batch=args.batch,
        inputs=inputs,
        replace=args.replace,
        metadata=metadata,
    )
    print(f"batch {args.batch}: {len(inputs)} samples added to {args.store}")
    if isinstance(summary, dict):
        for k, v in sorted(summary.items()):
            if isinstance(v, list) and len(v) > 10:
                v = f"{len(v)} ({', '.join(map(str, v[:3]))}, ...)"
            print(f"  {k}: {v}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from cohortflow.query import format_table, query

    table = query(Path(args.store), args.sql)
    print(format_table(table, args.max_rows))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cohortflow.evaluate import evaluate, format_summary, write_evaluation

    result = evaluate(
        truth_vcf=_existing(args.truth),
        query_vcf=_existing(args.query),
        reference=_existing(args.reference),
        bed=_existing(args.bed) if args.bed else None,
        truth_sample=args.truth_sample,
        query_sample=args.query_sample,
    )
    print(format_summary(result))
    if args.output:
        write_evaluation(result, Path(args.output))
    return 0


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cohortflow",
        description="Reads to answers for a sequenced cohort: alignment, QC, calling, ClinVar "
        "annotation, a Parquet cohort store and a report per sample.",
    )
    p.add_argument("--version", action="version", version=f"cohortflow {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("run", help="run the pipeline (Snakemake) on a config and its sheets")
    s.add_argument("--configfile", default="config/config.yaml")
    s.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    s.add_argument("--profile", help="a Snakemake profile folder (profiles/local, profiles/slurm)")
    s.add_argument(
        "--max-batch-samples",
        type=int,
        default=1000,
        help="run the sheet batch by batch, cutting batches larger than this into parts "
        "(one Snakemake run each; default 1000)",
    )
    s.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="-- then Snakemake arguments")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("demo", help="simulate a small cohort and run the whole pipeline on it")
    s.add_argument("--outdir", default="demo")
    s.add_argument("--samples", type=int, default=4)
    s.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--depth", type=float, default=30.0)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser(
        "simulate", help="simulate a cohort: reference, knowledge base, reads, truth"
    )
    s.add_argument("--outdir", required=True)
    s.add_argument("--samples", type=int, default=4)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--reference", help="simulate on this FASTA instead of a synthetic genome")
    s.add_argument("--depth", type=float, default=30.0)
    s.add_argument("--genome-length", type=int, default=1_000_000)
    s.add_argument("--build", default="synthetic", help="build name recorded in the config")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("validate", help="check the config, sheets and input files before a run")
    s.add_argument("--configfile", default="config/config.yaml")
    s.add_argument("--profile", help="the Snakemake profile the run will use")
    s.add_argument(
        "snakemake_args",
        nargs=argparse.REMAINDER,
        help="-- then the Snakemake arguments the run will use (e.g. --sdm conda)",
    )
    s.set_defaults(func=cmd_validate)

    kb = sub.add_parser("kb", help="knowledge-base commands")
    kbsub = kb.add_subparsers(dest="kb_command", required=True, metavar="KB_COMMAND")
    s = kbsub.add_parser("build", help="build a knowledge base from a ClinVar VCF")
    s.add_argument("clinvar", metavar="CLINVAR_VCF")
    s.add_argument("-o", "--output", required=True, metavar="KB_DIR")
    s.add_argument("--population", help="gnomAD-style sites VCF with INFO/AF")
    s.add_argument("--gff3", help="Ensembl-style GFF3 (recorded in the manifest)")
    s.add_argument("--reference", help="reference FASTA: normalize alleles and map contig names")
    s.add_argument("--build", help="reference build name to record (GRCh38, GRCh37, ...)")
    s.set_defaults(func=cmd_kb_build)

    s = sub.add_parser("annotate", help="annotate a sample VCF against a knowledge base")
    s.add_argument("input", metavar="IN_VCF")
    s.add_argument("--kb", required=True, metavar="KB_DIR")
    s.add_argument("--reference", required=True, metavar="FASTA")
    s.add_argument("-o", "--output", required=True, metavar="OUT_VCF")
    s.add_argument("--gff3", help="GFF3 for consequences (bcftools csq)")
    s.add_argument("--findings", help="also write the findings table (TSV) here")
    s.add_argument("--audit", help="also write the match audit (JSON) here")
    s.set_defaults(func=cmd_annotate)

    s = sub.add_parser(
        "reannotate",
        help="re-annotate a cohort store with a new knowledge-base release (no re-calling) "
        "and write the reclassification delta per sample",
    )
    s.add_argument("--store", required=True, metavar="STORE")
    s.add_argument("--kb", required=True, metavar="KB_DIR", help="KB of the new release")
    s.add_argument("-o", "--output", required=True, metavar="DELTA_DIR")
    s.add_argument(
        "--reference", metavar="FASTA", help="needed when the KB was built without --reference"
    )
    s.set_defaults(func=cmd_reannotate)

    s = sub.add_parser("aggregate", help="add per-sample VCFs/gVCFs to the cohort store")
    s.add_argument("--store", required=True)
    s.add_argument("--batch", required=True)
    s.add_argument("--samples", help="samples.tsv with sex and batch columns")
    s.add_argument("--replace", action="store_true", help="replace samples already stored")
    s.add_argument("--reference-build", help="recorded in every file (e.g. GRCh38)")
    s.add_argument("--kb-release", help="knowledge-base release the VCFs were annotated with")
    s.add_argument("--caller", help="variant caller that made the VCFs")
    s.add_argument("files", nargs="+", metavar="VCF_OR_GVCF")
    s.set_defaults(func=cmd_aggregate)

    s = sub.add_parser("query", help="run SQL (DuckDB) over the store's tables")
    s.add_argument("store", metavar="STORE")
    s.add_argument("sql", metavar="SQL")
    s.add_argument("--max-rows", type=int, default=50)
    s.set_defaults(func=cmd_query)

    s = sub.add_parser("evaluate", help="compare a query VCF with a truth VCF (hap.py-like)")
    s.add_argument("--truth", required=True, metavar="VCF", help="truth VCF/BCF")
    s.add_argument("--query", required=True, metavar="VCF", help="VCF/BCF to evaluate")
    s.add_argument(
        "--reference", required=True, metavar="FASTA", help="indexed FASTA both were made on"
    )
    s.add_argument(
        "--bed",
        help="compare only inside these regions (0-based BED on the reference's contigs)",
    )
    s.add_argument(
        "--truth-sample",
        metavar="SAMPLE",
        help="sample column of the truth VCF (default: its only sample; required when it "
        "holds several)",
    )
    s.add_argument(
        "--query-sample",
        metavar="SAMPLE",
        help="sample column of the query VCF (default: its only sample; required when it "
        "holds several)",
    )
    s.add_argument("-o", "--output", help="prefix for summary/fn/fp TSVs")
    s.set_defaults(func=cmd_evaluate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except CohortflowError as exc:
        print(f"cohortflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cohortflow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        log.debug("%s", exc, exc_info=True)
        print(f"cohortflow: error: {os_error_message(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
