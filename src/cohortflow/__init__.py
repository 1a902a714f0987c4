"""cohortflow: reads to answers for precision-medicine cohorts."""

__version__ = "0.1.0"
SCHEMA_VERSION = "1"
