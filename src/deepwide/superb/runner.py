"""One SUPERB job: (upstream, task, learning rate) through s3prl's own recipe.

:func:`run_job` writes the files s3prl would download (offline), builds s3prl's config for
the task (its defaults + our overrides), runs ``DeepwideXX().main(["--config", yaml])``
in this process, and collects what s3prl left in its target directory into
``out_dir/result.json`` (written last, atomically), ``out_dir/predictions/`` and
``out_dir/s3prl.log``.

ASR and PR: s3prl reads the LibriSpeech root's ``*.trans.txt`` itself; when a line there
is unusable or its text is outside LibriSpeech's character set, s3prl reads a cleaned view
instead (:func:`deepwide.corpus.librispeech.write_s3prl_view`, under the cache, same text
policy as the corpus stage). PR's lexicon comes from ``lexicon_dir`` (written by
``deepwide superb lexicon``) when given, else from superb.pr.lexicon or espeak-ng;
result.json names its phone set and source.

s3prl's target directory is the resume state: ``out_dir/work-<hash>/`` where the hash
covers the effective s3prl config and the upstream's identity, so a requeued job resumes
and a changed config or retrained upstream starts fresh. It is not a declared output, so
Snakemake leaves it in place when a job fails.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import yaml

from deepwide.config import deep_merge
from deepwide.errors import DeepwideError
from deepwide.identity import format_lr
from deepwide.superb.tasks import TaskSpec, check_root, get_task, prepare_args
from deepwide.utils.io import atomic_write_text, canonical_json

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeepwideError(f"superb.device is {device!r} but CUDA is not available on this machine")
    return device


def s3prl_overrides(spec: TaskSpec, tcfg: dict, lr: float, seed: int) -> dict:
    """Our config for one task, in s3prl's config structure (merged over its defaults)."""
    steps = int(tcfg["total_steps"])
    eval_step = int(tcfg["eval_step"])
    if eval_step > steps:
        raise DeepwideError(f"superb.{spec.name}.eval_step ({eval_step}) must be <= total_steps ({steps}): s3prl tests the best dev checkpoint")
    train = {
        "total_steps": steps,
        "eval_step": eval_step,
        "log_step": int(tcfg.get("log_step") or max(1, eval_step)),
        "save_step": int(tcfg.get("save_step") or eval_step),
        "gradient_accumulate": int(tcfg["gradient_accumulate"]),
        "seed": int(seed),
        "keep_num_ckpts": 1,
    }
    if spec.name == "asv":
        # ASV has no dev set: s3prl never validates (eval_step "infinite"), keeps every
        # checkpoint saved each `eval_step` steps and tests them all; the best EER counts
        train.update(eval_step=10**20, save_step=eval_step, keep_num_ckpts=None)
    over = {
        "build_optimizer": {"conf": {"lr": float(lr)}},
        "train": train,
        "build_batch_sampler": {"train": {"batch_size": int(tcfg["batch_size"])}},
    }
    if tcfg.get("downstream"):
        over["build_downstream"] = copy.deepcopy(tcfg["downstream"])
    if spec.name == "sd":
        # our offline scorer's settings (problems.OfflineSDScoringMixin); s3prl's defaults otherwise
        from deepwide.superb.der import SD_SCORING_DEFAULTS

        over["scoring"] = {k: copy.deepcopy(tcfg.get(k, v)) for k, v in SD_SCORING_DEFAULTS.items()}
        even = [m for m in over["scoring"]["median_filters"] if int(m) < 1 or int(m) % 2 == 0]
        if even:
            raise DeepwideError(f"superb.sd.median_filters: widths must be odd and >= 1 (scipy's median filter), got {even}")
    return deep_merge(over, tcfg.get("s3prl") or {})


def _upstream_identity(spec: dict) -> str:
    from deepwide.superb.upstream import CACHE_KEYS, uses_cache

    # a cache's size, folder and skip rule change no result; whether states are computed
    # per utterance (any cache) or in padded batches (none) does, for front ends that
    # normalise over time (group norm)
    spec = {**{k: v for k, v in spec.items() if k not in CACHE_KEYS}, **({"per_utterance": True} if uses_cache(spec) else {})}
    path = spec.get("path")
    if not path:
        return canonical_json(spec)
    p = Path(path)
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    h = hashlib.sha256(canonical_json(spec).encode())
    for f in files:
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _read_yaml(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def _layer_weights(valid_best: Path) -> list[float]:
    import torch

    state = torch.load(valid_best / "model" / "state_dict.pt", map_location="cpu", weights_only=True)
    w = state.get("featurizer.weights")
    if w is None:  # a one-layer upstream (FBANK) has nothing to weigh
        return [1.0]
    return [float(x) for x in torch.softmax(w.float(), dim=-1)]


def _collect_asv(spec: TaskSpec, work: Path) -> dict:
    """ASV: every saved checkpoint tested on the trials; the lowest EER is reported (s3prl's
    own choice; there is no dev set, so dev_score repeats it)."""
    results = []
    for res in (work / "evaluate").glob("*/step_*/result.yaml"):
        results.append((float(_read_yaml(res)["EER"]), int(res.parent.name.split("_")[-1]), res))
    if not results:
        raise DeepwideError(f"s3prl left no ASV test result under {work / 'evaluate'}")
    eer, step, res = min(results)
    metrics = {k: float(v) for k, v in _read_yaml(res).items()}
    return {
        "dev_score": eer * spec.scale,
        "best_step": step,
        "test_score": eer * spec.scale,
        "test_metrics": metrics,
        "dev_metrics": {"note": "ASV has no dev set; the best-EER checkpoint is reported"},
        "layer_weights": _layer_weights(work / "train" / f"step_{step}"),
        "test_set": f"{res.parent.parent.name}/{res.parent.name}",
    }


def _collect_sd(res: dict, test_dir: Path) -> dict:
    """SD: the test score is the DER of the offline scorer (``der.yaml``, percent, best
    threshold and median filter, as SUPERB reports); the dev score stays s3prl's frame-level
    PIT DER at threshold 0.5 (what it picks the best checkpoint by)."""
    der_file = test_dir / "der.yaml"
    if not der_file.is_file():
        raise DeepwideError(f"s3prl's SD scoring left no {der_file} (stage 3 did not run?)")
    scored = _read_yaml(der_file)
    frame = res["test_metrics"]
    res["test_score"] = float(scored["der"])
    res["test_metrics"] = {
        "der": float(scored["der"]),
        "missed": float(scored["missed"]),
        "false_alarm": float(scored["false_alarm"]),
        "confusion": float(scored["confusion"]),
        "speech_s": float(scored["speech_s"]),
        "threshold": float(scored["threshold"]),
        "median_filter": int(scored["median_filter"]),
        "collar": float(scored["collar"]),
        "skip_overlap": bool(scored["skip_overlap"]),
        "frame_der": 100.0 * frame["der"],
        "frame_accuracy": 100.0 * frame.get("accuracy", float("nan")),
    }
    res["dev_metrics"] = {"frame_der": 100.0 * res["dev_metrics"]["der"], **{k: v for k, v in res["dev_metrics"].items() if k != "der"}}
    return res


def test_units(work: Path) -> int | None:
    """Scored test units, for the report's sampling error: the rows of the test lists s3prl
    wrote into its target dir (utterances; trials for ASV; recordings for SD)."""
    import csv

    lists = sorted(work.glob("test*.csv"))
    if not lists:
        return None
    n = 0
    for path in lists:
        with open(path, newline="") as f:
            n += max(0, sum(1 for _ in csv.reader(f)) - 1)
    return n


def error_rate_se(work: Path) -> dict | None:
    """Test-set sampling error of a token error rate (PER, WER) from s3prl's per-utterance
    ``hyp`` and ``ref`` dumps: the rate is sum(edits) / sum(reference tokens) over utterances,
    and its standard error (percent) is the ratio estimator's over utterances (delta method),
    so errors within one utterance count as correlated. None without the dumps."""
    from deepwide.superb.items import error_items

    got = error_items(work / "evaluate" / "valid_best")
    if got is None:
        return None
    _, e, m = got
    n, total = len(e), float(m.sum())
    if n < 2 or total == 0:
        return None
    rate = e.sum() / total
    resid = e - rate * m
    se = math.sqrt(n / (n - 1) * float((resid ** 2).sum())) / total
    return {"rate": float(100.0 * rate), "se": float(100.0 * se), "utterances": n, "tokens": int(total)}


def collect(spec: TaskSpec, work: Path) -> dict:
    """Dev score, best step, test score, layer weights from an s3prl target dir."""
    res = _collect(spec, work)
    res["n_test"] = test_units(work)
    if spec.name in ("pr", "asr"):
        er = error_rate_se(work)
        if er is not None:
            res["test_se"] = er["se"]  # in the metric's percent, for the report's guard
    return res


def _collect(spec: TaskSpec, work: Path) -> dict:
    if spec.name == "asv":
        return _collect_asv(spec, work)
    valid_best = work / "train" / "valid_best"
    stats_file = valid_best / "training_stats.yaml"
    if not stats_file.is_file():
        raise DeepwideError(f"s3prl left no best-dev checkpoint in {valid_best} (did validation run?)")
    stats = _read_yaml(stats_file)
    dev = stats["valid_best_metrics"]
    tests = sorted((work / "evaluate" / "valid_best").glob("*/result.yaml"))
    if not tests:
        raise DeepwideError(f"s3prl left no test result under {work / 'evaluate' / 'valid_best'}")
    test = _read_yaml(tests[0])
    res = {
        "dev_score": float(dev[spec.metric]) * spec.scale,
        "best_step": int(stats["global_step"]),
        "test_score": float(test[spec.metric]) * spec.scale,
        "test_metrics": {k: float(v) for k, v in test.items()},
        "dev_metrics": {k: float(v) for k, v in dev.items()},
        "layer_weights": _layer_weights(valid_best),
        "test_set": tests[0].parent.name,
    }
    return _collect_sd(res, tests[0].parent) if spec.name == "sd" else res


def _prepare_offline(task: str, root: Path, tcfg: dict, cache_root: Path, embedded: bool, fold: int | None,
                     words: list[str] | None = None, lexicon_dir: str | Path | None = None,
                     text_policy: str = "normalise") -> dict:
    """Write what s3prl would download; for PR returns the lexicon's facts for result.json."""
    from deepwide.superb import offline

    if task in ("sid", "asv"):
        lists = [offline.write_iden_split(root, cache_root, tcfg.get("split_file"), embedded=embedded)]
        if task == "asv":
            # s3prl's VoxCeleb1SV reads both files from its cache_dir
            lists.append(offline.write_iden_split(root, cache_root / "data", tcfg.get("split_file"), embedded=embedded))
            trial = Path(tcfg.get("trial_file") or root / "voxceleb1_test_v2.txt")
            shutil.copyfile(trial, cache_root / "data" / "voxceleb1_test_v2.txt")
            lists.append(cache_root / "data" / "voxceleb1_test_v2.txt")
        # audio the corpus stage rejects never reaches s3prl's reader
        return {"audio_rejected": offline.leave_out_bad_voxceleb_audio(root, lists)}
    elif task == "er":
        return {"audio_rejected": offline.write_er_metadata(root, cache_root / "data", fold, tcfg.get("metadata_dir"))}
    elif task == "pr":
        from deepwide.corpus.text import PHONE_SET, USER_PHONE_SET

        if lexicon_dir:
            info = offline.install_lexicon_dir(lexicon_dir, cache_root / "download", words or [], root)
            if info.get("text_policy", text_policy) != text_policy:
                raise DeepwideError(
                    f"superb run --lexicon-dir {lexicon_dir}: written for text_policy {info.get('text_policy')!r}, "
                    f"this job reads transcripts with {text_policy!r}"
                )
            return {"phone_set": info.get("phone_set"), "lexicon_source": info.get("source"),
                    "lexicon_words": info.get("words"), "lexicon_dir": str(Path(lexicon_dir).resolve())}
        splits = [*tcfg.get("train_sets", []), *tcfg.get("valid_sets", []), *tcfg.get("test_sets", [])]
        files = tcfg.get("lexicon") or None
        offline.write_lexicon(cache_root / "download", root, splits, files, text_policy)
        return {"phone_set": USER_PHONE_SET if files else PHONE_SET,
                "lexicon_source": "user files" if files else "generated", "lexicon_dir": None}
    return {}


class _S3prlSettings:
    """Settings s3prl hard-codes, pointed at ours for the duration of one run.

    - its download dir and the VoxCeleb1 split cache go to ``cache_root`` (not ~/.cache);
    - ``get_info`` (ASR/PR length scan) uses ``n_jobs`` joblib workers instead of a fixed 6
      (spawning six processes costs more than the scan itself on small machines).
    """

    def __init__(self, cache_root: Path, n_jobs: int):
        self.cache_root = cache_root
        self.n_jobs = n_jobs
        self._undo = []

    def _set(self, obj, name, value):
        self._undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def __enter__(self):
        import functools

        import s3prl.problem.asr.superb_asr as asr_mod
        import s3prl.problem.asr.superb_pr as pr_mod
        import s3prl.problem.common.superb_sid as sid_mod
        import s3prl.util.download as dl

        self._set(dl, "_download_dir", self.cache_root / "download")
        original, root = sid_mod.VoxCeleb1SID, self.cache_root

        def voxceleb1sid(dataset_root, n_jobs=4, cache_root=None):
            return original(dataset_root, n_jobs, cache_root=root)

        self._set(sid_mod, "VoxCeleb1SID", voxceleb1sid)
        for mod in (asr_mod, pr_mod):
            self._set(mod, "get_info", functools.partial(mod.get_info, n_jobs=self.n_jobs))
        return self

    def __exit__(self, *exc):
        for obj, name, value in reversed(self._undo):
            setattr(obj, name, value)
        self._undo.clear()


def run_s3prl(task: str, config: dict, work: Path, cache_root: Path) -> None:
    """Run the task's Deepwide problem class on ``config`` (s3prl's structure)."""
    from deepwide.superb.problems import problem_class

    work.mkdir(parents=True, exist_ok=True)
    cfg_path = work / "deepwide_s3prl_config.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=True))
    with _S3prlSettings(cache_root, max(1, int(config.get("num_workers", 0)))):
        problem_class(task)().main(["--config", str(cfg_path)])


def run_job(
    *,
    task: str,
    upstream_name: str,
    upstream: dict,
    lr: float,
    root: str | Path,
    tcfg: dict,
    out_dir: str | Path,
    cache_root: str | Path,
    device: str = "auto",
    num_workers: int = 0,
    seed: int = 0,
    embedded: bool = False,
    lexicon_dir: str | Path | None = None,
    text_policy: str = "normalise",
) -> dict:
    """Train + validate + test one (upstream, task, lr) and write ``out_dir/result.json``.

    ``lexicon_dir`` (PR): a ``deepwide superb lexicon`` output folder whose two files are
    used; absent: superb.pr.lexicon or a lexicon generated from the transcripts.
    ``text_policy`` (ASR, PR): how transcript text outside LibriSpeech's character set is
    read (corpus.librispeech.text_policy).
    """
    return run_sweep(task=task, upstream_name=upstream_name, upstream=upstream, heads=[(lr, seed, out_dir)], root=root,
                     tcfg=tcfg, cache_root=cache_root, device=device, num_workers=num_workers, embedded=embedded,
                     lexicon_dir=lexicon_dir, text_policy=text_policy)[0]


TESTED = "deepwide_tested.json"

# tasks whose s3prl train set crops long utterances at random (max_secs default): the
# feature cache skips utterances of exactly that length there (superb.upstream._Frozen)
RANDOM_CROP_TASKS = {"sid": 8.0, "asv": 8.0}


def run_sweep(
    *,
    task: str,
    upstream_name: str,
    upstream: dict,
    heads: list[tuple[float, int, str | Path]],
    root: str | Path,
    tcfg: dict,
    cache_root: str | Path,
    device: str = "auto",
    num_workers: int = 0,
    embedded: bool = False,
    lexicon_dir: str | Path | None = None,
    text_policy: str = "normalise",
    shared: bool = True,
) -> list[dict]:
    """Several (lr, head seed) runs of one (upstream, task): ``heads`` is a list of
    ``(lr, seed, out_dir)``; each head writes ``out_dir/result.json`` as :func:`run_job`.

    With ``shared`` (default) the heads that still need training train together on one
    upstream pass per batch (:mod:`deepwide.superb.sweep`); each keeps its own s3prl target
    directory ``out_dir/work-<hash>/`` (the same one a one-head job uses), so a head whose
    training and test already finished there is restored (collected), not retrained, and a
    requeued job resumes every head from its own checkpoint. ``shared=False`` runs the
    heads one after another through s3prl's own loop (the reference).
    """
    from deepwide.superb import sweep as sw

    spec = get_task(task)
    if not spec.trainable:
        raise DeepwideError(f"superb task {task} is not run through s3prl's trainer")
    sw.check_heads([(float(lr), int(seed)) for lr, seed, _ in heads])
    sw.STATS.clear()
    root = Path(root).resolve()
    check_root(task, root, tcfg, embedded=embedded)
    cache_root = Path(cache_root).resolve()
    (cache_root / "data").mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_root / "numba"))
    if lexicon_dir and task != "pr":
        raise DeepwideError(f"superb run --lexicon-dir is for task pr only (task {task})")

    t0 = time.time()
    upstream = dict(upstream)
    if task in RANDOM_CROP_TASKS:
        # train utterances longer than max_secs are cut at a random offset every epoch:
        # those crops are computed but not stored (they will not come back)
        ds = (tcfg.get("s3prl") or {}).get("build_dataset", {}).get("train", {})
        upstream.setdefault("cache_skip_samples", round(float(ds.get("max_secs", RANDOM_CROP_TASKS[task])) * 16000))
    folds = list(tcfg.get("folds") or [None]) if task == "er" else [None]
    s3prl_root, transcripts, extra_ident, tr = root, None, {}, None
    if task in ("asr", "pr"):
        from deepwide.corpus.librispeech import write_s3prl_view

        splits = [*tcfg.get("train_sets", ["train-clean-100"]), *tcfg.get("valid_sets", ["dev-clean"]),
                  *tcfg.get("test_sets", ["test-clean"])]
        s3prl_root, tr = write_s3prl_view(root, splits, cache_root / "librispeech", text_policy)
        transcripts = {"text_policy": text_policy, "s3prl_root": str(s3prl_root), **tr.counts()}
        if s3prl_root != root:
            extra_ident["view"] = s3prl_root.name
        if lexicon_dir:
            extra_ident["lexicon"] = (Path(lexicon_dir) / "lexicon.json").read_text() if (Path(lexicon_dir) / "lexicon.json").is_file() else ""
    view_rejected = None
    if task == "ic":  # a view of the root without the audio the corpus stage rejects
        from deepwide.superb.offline import fsc_view

        s3prl_root, view_rejected = fsc_view(root, cache_root / "fluent_speech_commands")
    elif task == "ks":
        from deepwide.superb.offline import speech_commands_view

        s3prl_root, view_rejected = speech_commands_view(
            root, [tcfg.get("train_dir", "speech_commands_v0.01"), tcfg.get("test_dir", "speech_commands_test_set_v0.01")],
            cache_root / "speech_commands")
    elif task == "sd":
        from deepwide.superb.offline import kaldi_view

        s3prl_root, view_rejected = kaldi_view(root, ["train", "dev", "test"], cache_root / "sd")
    elif task == "sf":
        from deepwide.superb.offline import snips_view

        s3prl_root, view_rejected = snips_view(root, cache_root / "snips")
    if task in ("ic", "ks", "sd", "sf") and s3prl_root != root:
        extra_ident["view"] = s3prl_root.name
    # resume identity: the result settings only (log and save cadence may change on a requeue)
    from deepwide.identity import split_execution

    tcfg_id = split_execution(tcfg, f"superb.{task}")[0]
    jobs = []
    for lr, seed, out_dir in heads:
        over = s3prl_overrides(spec, tcfg, lr, seed)
        over_id = {**over, "train": {k: v for k, v in over["train"].items() if k not in ("log_step", "save_step")}}
        ident = hashlib.sha256(
            canonical_json({"over": over_id, "task": tcfg_id, "upstream": _upstream_identity(upstream), "root": str(root),
                            "folds": folds, **extra_ident}).encode()
        ).hexdigest()[:12]
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        jobs.append({"lr": float(lr), "seed": int(seed), "out_dir": out_dir, "over": over,
                     "work_root": out_dir / f"work-{ident}", "per_fold": []})

    s3prl_log = logging.getLogger("s3prl")
    handlers = []
    for job in jobs:
        handler = logging.FileHandler(job["out_dir"] / "s3prl.log", mode="a")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        s3prl_log.addHandler(handler)
        handlers.append(handler)
    s3prl_log.setLevel(logging.INFO)
    restored = []
    try:
        for fold in folds:
            lexicon = _prepare_offline(task, root, tcfg, cache_root, embedded, 0 if fold is None else int(fold),
                                       words=_words(tr) if task == "pr" else None, lexicon_dir=lexicon_dir,
                                       text_policy=text_policy)
            prep = prepare_args(task, s3prl_root, tcfg)
            if task in ("asr", "pr", "sid", "ic"):
                prep["n_jobs"] = max(1, int(num_workers))  # corpus parsing workers (s3prl: 6)
            if task == "er":
                prep["test_fold"] = int(fold)
            for job in jobs:
                job["work"] = job["work_root"] if fold is None else job["work_root"] / f"fold{fold}"
                job["config"] = deep_merge(
                    {
                        "target_dir": str(job["work"].resolve()),
                        "cache_dir": str(cache_root / "data"),
                        "device": device,
                        "num_workers": int(num_workers),
                        "prepare_data": prep,
                        "build_upstream": {"name": upstream_name, **upstream},
                    },
                    job["over"],
                )
            pending = [j for j in jobs if not (j["work"] / TESTED).is_file()]
            restored += [(j["lr"], j["seed"], fold) for j in jobs if j not in pending]
            heads_ctx = [sw.Head(j["lr"], j["seed"], j["work"] / "train") for j in pending]
            with sw.sweep(heads_ctx) if shared and len(pending) > 1 else contextlib.nullcontext():
                for job in pending:
                    log.info("superb %s / %s / lr %s seed %s%s: s3prl target dir %s", upstream_name, task, job["lr"], job["seed"],
                             "" if fold is None else f" / fold {fold}", job["work"])
                    run_s3prl(task, job["config"], job["work"], cache_root)
                    (job["work"] / TESTED).write_text(json.dumps({"lr": job["lr"], "seed": job["seed"]}) + "\n")
            for job in jobs:
                res = collect(spec, job["work"])
                res["fold"] = fold
                job["per_fold"].append(res)
                pred_dir = job["out_dir"] / "predictions" / ("" if fold is None else f"fold{fold}")
                src = job["work"] / "evaluate" / ("" if task == "asv" else "valid_best") / res["test_set"]
                if pred_dir.exists():
                    shutil.rmtree(pred_dir)
                shutil.copytree(src, pred_dir)
    finally:
        for handler in handlers:
            s3prl_log.removeHandler(handler)
            handler.close()
    if restored:
        log.info("superb %s / %s: restored finished head(s) %s from their target dirs (not retrained)", upstream_name, task, restored)

    import s3prl

    results = []
    runtime = round(time.time() - t0, 3)
    for job in jobs:
        per_fold = job["per_fold"]

        def mean(key):
            return float(sum(r[key] for r in per_fold) / len(per_fold))

        weights = [float(sum(ws) / len(per_fold)) for ws in zip(*(r["layer_weights"] for r in per_fold))]
        result = {
            "upstream": upstream_name,
            "task": task,
            "lr": job["lr"],
            "seed": job["seed"],
            "metric": spec.metric,
            "unit": "%" if spec.scale == 100.0 else "",
            "higher_is_better": spec.higher_is_better,
            "dev_score": mean("dev_score"),
            "best_step": per_fold[0]["best_step"],
            "test_score": mean("test_score"),
            "layer_weights": weights,
            "n_test": (sum(r["n_test"] for r in per_fold) if all(r.get("n_test") for r in per_fold) else None),
            # PR/ASR: the error rate's test-set standard error over utterances (one run only)
            "test_se": per_fold[0].get("test_se") if len(per_fold) == 1 else None,
            "runtime_s": runtime,
            "sweep": {"heads": [[j["lr"], j["seed"]] for j in jobs], "shared_pass": bool(shared and len(jobs) > 1),
                      "restored_folds": [f for lr, sd, f in restored if (lr, sd) == (job["lr"], job["seed"])]},
            "device": device,
            "device_name": _device_name(device),
            "s3prl_version": getattr(s3prl, "__version__", "0.4.18"),
            "total_steps": int(tcfg["total_steps"]),
            "work_dir": str(job["work_root"]),
            "folds": [
                {k: r.get(k) for k in ("fold", "dev_score", "best_step", "test_score", "n_test", "test_metrics", "dev_metrics", "layer_weights")}
                for r in per_fold
            ],
        }
        if len(per_fold) == 1:
            # one run: its metrics at top level too, s3prl's raw logs (fractions; SD: its scorer's
            # percent), which the report reads for SF's second term (slot_value_cer beside slot_type_f1)
            result["dev_metrics"] = per_fold[0]["dev_metrics"]
            result["test_metrics"] = per_fold[0]["test_metrics"]
        if task == "pr":
            result.update(lexicon)  # phone_set, lexicon_source, lexicon_dir (+ lexicon_words)
        if task in ("sid", "asv", "er"):
            result["audio_rejected"] = lexicon["audio_rejected"]  # files left out of s3prl's lists
        if task in ("ic", "ks", "sd", "sf"):
            result["audio_rejected"] = view_rejected
            result["s3prl_root"] = str(s3prl_root)
        if transcripts is not None:
            result["transcripts"] = transcripts
        if not all(math.isfinite(result[k]) for k in ("dev_score", "test_score")):
            raise DeepwideError(f"superb {upstream_name}/{task}/lr{format_lr(job['lr'])}: non-finite score {result['dev_score']}, {result['test_score']}")
        results.append(result)
    from deepwide.utils.usage import usage

    used = usage()  # the job's peak memory and wall time, shared by all its heads (plan resources)
    for job, result in zip(jobs, results):  # declared outputs last, once every head is done
        result["usage"] = used
        atomic_write_text(job["out_dir"] / "result.json", json.dumps(result, indent=1) + "\n")
    return results


def _words(tr) -> list[str]:
    from deepwide.superb.offline import words_of_transcripts

    return words_of_transcripts(tr)


def _device_name(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def select(results: list[dict]) -> dict:
    """The lr with the best mean dev score over head seeds (SUPERB practice: tune only the
    lr on dev). Returns that lr's first-seed result with ``selected_lr``, the mean test
    score over its seeds (``test_score_mean``), each seed's scores (``seeds``) and every
    candidate (lr, seed)."""
    if not results:
        raise DeepwideError("superb select: no results to choose from")
    hib = results[0]["higher_is_better"]
    by_lr: dict[float, list[dict]] = {}
    for r in results:
        by_lr.setdefault(float(r["lr"]), []).append(r)

    def mean(rs, key):
        return sum(float(r[key]) for r in rs) / len(rs)

    best_lr = max(by_lr, key=lambda lr: (mean(by_lr[lr], "dev_score") if hib else -mean(by_lr[lr], "dev_score"), -lr))
    chosen = sorted(by_lr[best_lr], key=lambda r: int(r.get("seed", 0)))
    out = dict(chosen[0])
    out["selected_lr"] = best_lr
    out["dev_score_mean"] = mean(chosen, "dev_score")
    out["test_score_mean"] = mean(chosen, "test_score")
    out["seeds"] = [{"seed": int(r.get("seed", 0)), "dev_score": r["dev_score"], "test_score": r["test_score"],
                     "best_step": r["best_step"]} for r in chosen]
    out["candidates"] = [{"lr": r["lr"], "seed": int(r.get("seed", 0)), "dev_score": r["dev_score"],
                          "test_score": r["test_score"], "best_step": r["best_step"]} for r in results]
    return out
