"""PR (phoneme recognition) on LibriSpeech (PER), with its phone lexicon written offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.superb.tasks.asr import LibriSpeechTask
from deepwide.superb.tasks.base import register


@dataclass(frozen=True, eq=False)
class PRTask(LibriSpeechTask):
    def check_layout(self, root, tcfg, embedded):
        super().check_layout(root, tcfg, embedded)
        # no files: the lexicon is generated from the root's transcripts (espeak-ng IPA)
        files = tcfg.get("lexicon") or []
        if len(files) not in (0, 2):
            raise DeepwideError(
                f"superb.pr.lexicon: give both s3prl lexicon files (librispeech-lexicon-200k-g2p.txt, "
                f"librispeech-lexicon-allothers-g2p.txt) or none (generated with espeak-ng), got {len(files)}"
            )
        for f in files:
            if not Path(f).is_file():
                raise DeepwideError(f"superb.pr.lexicon: file {f} does not exist")

    def offline(self, root, tcfg, cache_root, embedded, fold, view, lexicon_dir, text_policy):
        """The lexicon s3prl's G2P would download; returns its facts for result.json."""
        from deepwide.corpus.text import PHONE_SET, USER_PHONE_SET
        from deepwide.superb import offline

        if lexicon_dir:
            words = offline.words_of_transcripts(view.state)
            info = offline.install_lexicon_dir(lexicon_dir, cache_root / "download", words, root)
            if info.get("text_policy", text_policy) != text_policy:
                raise DeepwideError(
                    f"superb run --lexicon-dir {lexicon_dir}: written for text_policy {info.get('text_policy')!r}, "
                    f"this job reads transcripts with {text_policy!r}"
                )
            return {"phone_set": info.get("phone_set"), "lexicon_source": info.get("source"),
                    "lexicon_words": info.get("words"), "lexicon_dir": str(Path(lexicon_dir).resolve())}
        files = tcfg.get("lexicon") or None
        listed = [s for key in ("train_sets", "valid_sets", "test_sets") for s in tcfg.get(key, [])]
        offline.write_lexicon(cache_root / "download", root, listed, files, text_policy)
        return {"phone_set": USER_PHONE_SET if files else PHONE_SET,
                "lexicon_source": "user files" if files else "generated", "lexicon_dir": None}


TASK = register(PRTask(
    name="pr", problem="SuperbPR", corpus="librispeech", metric="per", higher_is_better=False,
    family="content", label="PR", score_keys=("PR",), metric_labels=("PER",), rank=0,
    utterance_seconds=12.3, cost_row="pr", items="errors", parse_jobs=True,
))
