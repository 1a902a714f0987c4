# cohortflow: reads to answers for a precision-medicine cohort.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/align.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/call.smk"
include: "workflow/rules/annotate.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
