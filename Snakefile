# deepwide: distil self-supervised speech models into students of different depth and
# width, evaluate them on SUPERB, report depth vs width. All logic lives in src/deepwide;
# rule files only wire paths, config slices and resources.
from snakemake.utils import min_version

min_version("9.0")


# `--configfile F` is the whole study: F alone, the schema defaults for what it does not
# set (never config.yaml's values), the same as `python -m deepwide ... --config F`.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/superb.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        STUDY.all_targets(),
    default_target: True
