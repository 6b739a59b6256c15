"""ASR on LibriSpeech (WER); :class:`LibriSpeechTask` also serves PR."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from deepwide.superb.tasks.base import Task, View, collect_valid_best, register

DEFAULT_SPLITS = {"train_sets": ["train-clean-100"], "valid_sets": ["dev-clean"], "test_sets": ["test-clean"]}


def splits(tcfg: dict) -> list[str]:
    """Every LibriSpeech split folder of the task (train, valid, test)."""
    return [s for key, default in DEFAULT_SPLITS.items() for s in tcfg.get(key, default)]


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


@dataclass(frozen=True, eq=False)
class LibriSpeechTask(Task):
    def check_layout(self, root, tcfg, embedded):
        self.need(root, "SPEAKERS.TXT", "LibriSpeech speaker list")
        for split in splits(tcfg):
            self.need(root, split, "LibriSpeech split folder")

    def prepare_args(self, root, tcfg):
        return {"dataset_root": root, **{k: list(tcfg.get(k, v)) for k, v in DEFAULT_SPLITS.items()}}

    def view(self, root, tcfg, cache_root, text_policy, lexicon_dir):
        # s3prl reads *.trans.txt itself; unusable lines or text outside LibriSpeech's
        # characters make it read a cleaned view instead (same text policy as the corpus stage)
        from deepwide.corpus.librispeech import write_s3prl_view

        s3prl_root, tr = write_s3prl_view(root, splits(tcfg), cache_root / "librispeech", text_policy)
        view = View(s3prl_root, state=tr)
        view.info["transcripts"] = {"text_policy": text_policy, "s3prl_root": str(s3prl_root), **tr.counts()}
        if s3prl_root != root:
            view.ident["view"] = s3prl_root.name
        if lexicon_dir:
            info = Path(lexicon_dir) / "lexicon.json"
            view.ident["lexicon"] = info.read_text() if info.is_file() else ""
        return view

    def collect(self, work):
        res = collect_valid_best(self, work)
        er = error_rate_se(work)
        if er is not None:
            res["test_se"] = er["se"]  # in the metric's percent, for the report's guard
        return res


TASK = register(LibriSpeechTask(
    name="asr", problem="SuperbASR", corpus="librispeech", metric="wer", higher_is_better=False,
    family="content", label="ASR", score_keys=("ASR",), metric_labels=("WER",), rank=1,
    utterance_seconds=12.3, cost_row="pr", items="errors", parse_jobs=True,
))
