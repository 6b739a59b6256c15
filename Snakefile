# deepwide: distil self-supervised speech models into students of different depth and
# width, evaluate them on SUPERB, report depth vs width. All logic lives in src/deepwide;
# rule files only wire paths, config slices and resources.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/superb.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        ALL_TARGETS,
    default_target: True
