"""cohortflow: reads to answers for precision-medicine cohorts."""

__version__ = "0.1.0"
SCHEMA_VERSION = "1"


def prefer_system_allocator() -> None:
    """Make Arrow allocate with the C library's malloc in this process (unless the user set
    ``ARROW_DEFAULT_MEMORY_POOL``). Only works before pyarrow is first imported.

    ``cohortflow aggregate`` calls it: its steps (read, write genotypes, each cohort table,
    kinship) hand freed memory back to the system between them (``malloc_trim``), which
    reaches Arrow's buffers only when Arrow uses malloc. Measured on 50,000 variants: peak
    282 / 289 MiB at 1,000 / 2,000 samples, against 304 / 336 with the default mimalloc pool.
    """
    import os

    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
