"""``python -m deepwide score ...`` and ``python -m deepwide report ...``.

score superb FILE.json     print the SUPERB score of a JSON object of per-task metrics
report collect ...         result.json + info.json + cost JSON files -> tidy results.parquet
report tables ...          results.parquet -> Markdown, CSV and LaTeX tables (and the verdict)
report figures ...         results.parquet (+ layer weights, CKA) -> PNG and PDF figures
report kdloss ...          held-out KD loss per teacher layer of a student (no downstream training)
report cka ...             linear CKA of every student layer vs every teacher layer
report cost ...            params, MACs per second of audio, real-time factor of a checkpoint
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.utils.cli import add_command, command_group
from deepwide.utils.usage import write_usage_sidecar

log = logging.getLogger(__name__)


def _options(text: str | None) -> dict:
    from deepwide.utils.io import json_object_arg

    return json_object_arg(text, "--options") if text else {}


def _held_out_options(text: str | None, **defaults) -> dict:
    """A held-out command's ``--options`` as keyword arguments of its function: each of
    ``defaults`` unless given, of its default's type; ``utterances`` is ``max_utterances``."""
    opts = _options(text)
    kwargs = {k: type(v)(opts.get(k, v)) for k, v in defaults.items()}
    kwargs["max_utterances"] = kwargs.pop("utterances")
    return kwargs


def cmd_score_superb(args):
    from deepwide.report.score import (
        FBANK,
        SOTA,
        load_metrics_json,
        superb_score,
        task_terms,
    )

    metrics = load_metrics_json(args.file)
    score = superb_score(metrics)
    if args.verbose_terms:
        for task, t in task_terms(metrics, FBANK, SOTA).items():
            print(f"{task}\t{t:.2f}")
    print(f"{score:.2f}")


def cmd_collect(args):
    from deepwide.report.collect import collect
    from deepwide.utils.io import write_parquet

    df, lw, _ = collect(args.results, args.infos or [], args.costs or [], include_published=not args.no_published)
    write_parquet(lw, args.layer_weights)
    if args.items:
        from deepwide.report.collect import collect_items

        items = collect_items(args.results)
        write_parquet(items, args.items)
        log.info("%d per-utterance test results of %d heads -> %s", len(items),
                 items.groupby(["upstream", "key", "lr", "seed"]).ngroups if len(items) else 0, args.items)
    write_parquet(df, args.out)
    log.info("%d result rows (%d published), %d layer-weight rows -> %s", len(df), int(df["published"].sum()), len(lw), args.out)
    write_usage_sidecar(Path(args.out).parent / "collect")  # report/collect/usage.json (plan resources)


def _read_parquet(path, what):
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DeepwideError(f"{what} not found: {path}")
    return pd.read_parquet(path)


def cmd_tables(args):
    from deepwide.report.tables import write_tables

    opts = _options(args.options)
    df = _read_parquet(args.results, "results table")
    unknown = sorted(set(opts) - {"include_published", "reference"})
    if unknown:
        raise DeepwideError(f"report tables: unknown option(s) {', '.join(unknown)} (known: include_published, reference)")
    reference = opts.get("reference", "normalised")
    if reference not in ("normalised", "leaderboard"):
        raise DeepwideError(f"report tables: reference must be normalised or leaderboard, got {reference!r}")
    teacher_info = None
    if args.teacher_info:
        from deepwide.utils.io import read_json_object

        teacher_info = read_json_object(args.teacher_info[0], "teacher info")
    kd = _kd_losses(args.kd_loss)
    items = _read_parquet(args.items, "per-item table") if args.items else None
    written = write_tables(df, args.out_dir, include_published=opts.get("include_published", True), reference=reference,
                           teacher_info=teacher_info, kd_loss=kd, items=items)
    log.info("wrote %d table files to %s", len(written), args.out_dir)
    write_usage_sidecar(args.out_dir)  # plan resources


def _kd_losses(paths):
    import pandas as pd

    return pd.concat([_read_parquet(p, "KD-loss table") for p in paths], ignore_index=True) if paths else None


def cmd_kdloss(args):
    from deepwide.report.kdloss import compute_kd_loss

    df = compute_kd_loss(args.teacher, args.student, args.manifest, device=args.device,
                         **_held_out_options(args.options, utterances=16, max_seconds=10.0))
    _write_student_table(df, args)


def _write_student_table(df, args) -> None:
    """A per-student table (KD loss, CKA) with its upstream and model, to ``--out``; the job's
    usage and device go in the file's metadata (``plan resources``), not in another output."""
    from deepwide.report.collect import parse_upstream
    from deepwide.utils.device import resolve_device
    from deepwide.utils.io import write_parquet
    from deepwide.utils.usage import PARQUET_INFO_KEY, usage

    df.insert(0, "model", parse_upstream(args.upstream)["model"])
    df.insert(0, "upstream", args.upstream)
    info = {"usage": usage(), "device": resolve_device(args.device)}
    write_parquet(df, args.out, metadata={PARQUET_INFO_KEY: json.dumps(info)})


def cmd_figures(args):
    import pandas as pd

    from deepwide.report.figures import write_figures

    df = _read_parquet(args.results, "results table")
    lw = _read_parquet(args.layer_weights, "layer-weight table") if args.layer_weights else pd.DataFrame(
        columns=["model", "task", "lr", "seed", "layer", "weight"])
    cka = pd.concat([_read_parquet(p, "CKA table") for p in args.cka], ignore_index=True) if args.cka else pd.DataFrame(
        columns=["model", "student_layer", "teacher_layer", "cka"])
    items = _read_parquet(args.items, "per-item table") if args.items else None
    written = write_figures(df, lw, cka, args.out_dir, _options(args.options), kd_loss=_kd_losses(args.kd_loss),
                            items=items)
    log.info("wrote %d figure files to %s", len(written), args.out_dir)
    write_usage_sidecar(args.out_dir)  # plan resources


def cmd_cka(args):
    from deepwide.report.cka import compute_cka

    df = compute_cka(args.teacher, args.student, args.manifest, device=args.device,
                     **_held_out_options(args.options, utterances=16, max_seconds=10.0, max_frames=8000, seed=0))
    _write_student_table(df, args)


def cmd_cost(args):
    from deepwide.report.cost import measure_cost
    from deepwide.utils.io import atomic_write_text

    out = measure_cost(args.upstream, args.checkpoint, args.manifest, device=args.device,
                       **_held_out_options(args.options, utterances=8, max_seconds=10.0, repeats=1))
    from deepwide.utils.usage import usage

    out["usage"] = usage()  # peak memory and wall time of this job (plan resources)
    atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")


def register(sub):
    ssub = command_group(sub, "score", "SUPERB score of per-task metrics")
    s = add_command(ssub, "superb", cmd_score_superb, help="print the SUPERB score (leaderboard FBANK/SOTA constants) of FILE.json",
                        description="FILE.json: an object with the keys PR, ASR, KS, QbE, SID, ASV, SD, IC, SF_F1, "
                                    "SF_CER, ER (PER, WER, EER, DER, CER, accuracies and F1 in percent; QbE as MTWV).")
    s.add_argument("file", type=Path)
    s.add_argument("--terms", dest="verbose_terms", action="store_true", help="also print each task's term")

    rsub = command_group(sub, "report", "tables, figures and analyses of the study")

    c = add_command(rsub, "collect", cmd_collect, help="result.json/info.json/cost files -> tidy results.parquet")
    c.add_argument("--results", nargs="+", required=True, type=Path, help="SUPERB result.json files")
    c.add_argument("--infos", nargs="*", type=Path, help="student info.json files")
    c.add_argument("--costs", nargs="*", type=Path, help="cost JSON files of `report cost`")
    c.add_argument("--no-published", action="store_true", help="leave out the published rows")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--layer-weights", required=True, type=Path, help="output: long table of layer weights")
    c.add_argument("--items", type=Path, help="output: per-utterance test results of every head that kept them "
                                               "(the verdict's paired test-item noise)")

    t = add_command(rsub, "tables", cmd_tables, help="results.parquet -> tables (md, csv, tex)")
    t.add_argument("--results", required=True, type=Path)
    t.add_argument("--options", help="JSON object: include_published, reference (normalised|leaderboard)")
    t.add_argument("--teacher-info", type=Path, nargs="*",
                   help="the pretrained teacher's info.json (its cka_first_last > 0.8 puts a warning in the report)")
    t.add_argument("--kd-loss", nargs="*", type=Path, help="held-out KD-loss tables of `report kdloss`")
    t.add_argument("--items", type=Path, help="per-item table of `report collect --items` (without it the test-item "
                                               "noise is taken unpaired from each result's test-set size)")
    t.add_argument("--out-dir", required=True, type=Path)

    f = add_command(rsub, "figures", cmd_figures, help="results.parquet -> figures (png, pdf)")
    f.add_argument("--results", required=True, type=Path)
    f.add_argument("--layer-weights", type=Path)
    f.add_argument("--cka", nargs="*", type=Path, help="CKA tables of `report cka`")
    f.add_argument("--options", help="JSON object: dpi, panel_width, panel_height, font_size, cmap, reference, show_published")
    f.add_argument("--kd-loss", nargs="*", type=Path, help="held-out KD-loss tables of `report kdloss`")
    f.add_argument("--items", type=Path, help="per-item table of `report collect --items`")
    f.add_argument("--out-dir", required=True, type=Path)

    def heldout(name: str, help: str, options: str, func, upstream: str):
        """A command that runs a model over the held-out manifest and writes one file."""
        h = add_command(rsub, name, func, help=help)
        h.add_argument("--upstream", required=True, help=upstream)
        h.add_argument("--manifest", required=True, type=Path, help="held-out manifest (parquet with id, path)")
        h.add_argument("--options", help=f"JSON object: {options}")
        h.add_argument("--device", default="auto")
        h.add_argument("--out", required=True, type=Path)
        return h

    student = "the student's upstream name (METHOD-SHAPE-seedN)"
    q = heldout("kdloss", "held-out KD loss (L1, cosine) per teacher layer of a student", "utterances, max_seconds",
                cmd_kdloss, student)
    q.add_argument("--teacher", required=True, type=Path)
    q.add_argument("--student", required=True, type=Path, help="student.pt (kd_heads.pt beside it)")
    k = heldout("cka", "linear CKA of student vs teacher layers on held-out audio",
                "utterances, max_seconds, max_frames, seed", cmd_cka, student)
    k.add_argument("--teacher", required=True, type=Path)
    k.add_argument("--student", required=True, type=Path)
    m = heldout("cost", "params, MACs per second of audio and real-time factor of a checkpoint",
                "utterances, max_seconds, repeats", cmd_cost, "the upstream's name")
    m.add_argument("--checkpoint", required=True, type=Path)
