"""Embedded Audio SNIPS (SUPERB SF) and QUESST 2014 (SUPERB QbE), in the real layouts.

Pure ``plan_<corpus>(cfg, tts, seed)`` functions in the style of :mod:`deepwide.corpus.synth`
(which renders them: ``python -m deepwide corpus synth --corpus snips|quesst14 ...``); the
trees they describe are read unchanged by :func:`deepwide.corpus.real_extra.prepare_snips` /
:func:`~deepwide.corpus.real_extra.prepare_quesst14`, s3prl's ``SuperbSF`` and
:mod:`deepwide.superb.qbe`.

Audio SNIPS (``<out>/``): ``all.iob.snips.txt`` and ``{train,valid,test}/{spk}-snips-{split}-{n}.wav``.
As in the real corpus, sentence ``n`` of a split is spoken by every speaker of that split
(s3prl's SuperbSF speakers: 8 train, 4 valid, 4 test, named after the Polly voices of the
real data, each a deterministic synthetic speaker of that voice's gender). A line is
``{id} BOS w1 .. wn EOS<TAB>O t1 .. tn {intent}`` with one tag per word. Sentences are short
spoken commands from a few templates of four SNIPS intents; each carries one or two slots
of four types whose values are single words of the TTS vocabulary (``B-<slot>`` tags: a
one-word value has no ``I-`` tag, so s3prl's slot tokens read the same whichever tag
convention a real file uses), a few values per type, repeated across the splits. Few slot
types, short sentences and repeated values make slot filling learnable by a small CTC head
in a few hundred steps.

QUESST 2014 (``<out>/quesst14Database/``): ``Audio/quesst14_NNNNN.wav`` documents,
``dev_queries/quesst14_dev_NNNN.wav`` and ``eval_queries/quesst14_eval_NNNN.wav``, all at
8 kHz like the real data, ``scoring/language_key_{utterances,dev,eval}.lst`` (language
``nnenglish``) and ``scoring/groundtruth_quesst14_{dev,eval}/`` with ``quesst14.ecf.xml``
(every document and its duration), ``quesst14_{split}.tlist.xml`` (the split's terms) and
``quesst14_{split}.rttm`` (one ``LEXEME`` line per occurrence). A query is one word, spoken
alone by a query speaker (a speaker pool disjoint from the documents'); each term occurs in
``docs_per_term`` documents (sentences of vocabulary words), other documents hold no term.
Queries are cut to the word (leading and trailing silence trimmed), as the real ones are.
Occurrence times in the rttm are estimated from the word's character position in the
rendered document (the scorers here judge term/document pairs only).
"""

from __future__ import annotations

import random
from pathlib import Path
from xml.sax.saxutils import quoteattr

from deepwide.corpus.sources import SNIPS_SPEAKERS
from deepwide.corpus.text import make_vocab
from deepwide.corpus.tts import Utterance, sample_speaker
from deepwide.errors import DeepwideError

# ------------------------------------------------------------------ Audio SNIPS
# s3prl SuperbSF's speakers per split (:data:`deepwide.corpus.sources.SNIPS_SPEAKERS`), with
# the gender of the Polly voice each is named after
SNIPS_GENDERS = {
    "Ivy": "F", "Joanna": "F", "Joey": "M", "Justin": "M", "Kendra": "F", "Kimberly": "F", "Matthew": "M",
    "Salli": "F", "Aditi": "F", "Amy": "F", "Geraint": "M", "Nicole": "F", "Brian": "M", "Emma": "F",
    "Raveena": "F", "Russell": "M",
}
# (intent, template): {slot} is one slot value word; every other word is tagged O
SNIPS_TEMPLATES = (
    ("PlayMusic", "play {artist}"),
    ("PlayMusic", "play a song by {artist}"),
    ("GetWeather", "weather in {city}"),
    ("GetWeather", "will it rain in {city}"),
    ("AddToPlaylist", "add this song to {playlist}"),
    ("AddToPlaylist", "add {artist} to {playlist}"),
    ("BookRestaurant", "book a {cuisine} restaurant"),
    ("BookRestaurant", "book a {cuisine} table in {city}"),
)
SNIPS_SLOTS = ("artist", "city", "playlist", "cuisine")


def _split_speakers(cfg: dict) -> dict[str, list[str]]:
    speakers = cfg.get("speakers") or SNIPS_SPEAKERS
    for split in ("train", "valid", "test"):
        names = speakers.get(split) or []
        if not names:
            raise DeepwideError(f"corpus.snips.speakers.{split}: no speaker to synthesize")
        bad = [n for n in names if not n or "-" in n or "/" in n or n != n.strip() or " " in n]
        if bad:
            raise DeepwideError(f"corpus.snips.speakers.{split}: names must be non-empty without '-', '/' or spaces "
                                f"(the file name is {{speaker}}-snips-{{split}}-{{n}}.wav), got {bad}")
    return {s: list(speakers[s]) for s in ("train", "valid", "test")}


def snips_slot_values(rng: random.Random, vocab: list[str], per_slot: int) -> dict[str, list[str]]:
    """``per_slot`` distinct words of 4-9 letters for each slot type, no word in two types
    and none a template word."""
    carrier = {w for _, t in SNIPS_TEMPLATES for w in t.split() if not w.startswith("{")}
    pool = [w for w in vocab if 4 <= len(w) <= 9 and w not in carrier]
    need = per_slot * len(SNIPS_SLOTS)
    if len(pool) < need:
        raise DeepwideError(f"corpus.snips.synth.values_per_slot {per_slot}: the TTS vocabulary has only {len(pool)} "
                            f"usable words (4-9 letters) for {need} slot values; raise corpus.tts.vocab_size")
    words = rng.sample(pool, need)
    return {slot: sorted(words[i * per_slot:(i + 1) * per_slot]) for i, slot in enumerate(SNIPS_SLOTS)}


def snips_sentence(rng: random.Random, values: dict[str, list[str]], k: int) -> tuple[str, str, str]:
    """(text, tags, intent) of sentence ``k``: the templates in turn, slot values drawn."""
    intent, template = SNIPS_TEMPLATES[k % len(SNIPS_TEMPLATES)]
    words, tags = [], []
    for w in template.split():
        if w.startswith("{"):
            slot = w.strip("{}")
            words.append(rng.choice(values[slot]))
            tags.append(f"B-{slot}")
        else:
            words.append(w)
            tags.append("O")
    return " ".join(words), " ".join(tags), intent


def plan_snips(cfg: dict, tts: dict, seed: int):
    s = cfg["synth"]
    rng = random.Random(f"{seed}:snips")
    speakers = _split_speakers(cfg)
    vocab = make_vocab(rng, tts["vocab_size"])
    values = snips_slot_values(rng, vocab, s["values_per_slot"])
    voices = {}
    for split in ("train", "valid", "test"):
        for name in speakers[split]:
            if name not in voices:
                voices[name] = sample_speaker(rng, tts["flite_share"], SNIPS_GENDERS.get(name))
    utts, lines = [], []
    for split in ("train", "valid", "test"):
        n_sent = s[f"{split}_sentences"]
        offset = rng.randrange(len(SNIPS_TEMPLATES))  # which template each split starts with
        for n in range(n_sent):
            text, tags, intent = snips_sentence(rng, values, offset + n)
            for name in speakers[split]:
                uid = f"{name}-snips-{split}-{n}"
                utts.append(Utterance(f"{split}/{uid}.wav", text, voices[name]))
                lines.append(f"{uid} BOS {text} EOS\tO {tags} {intent}")
    files = {"all.iob.snips.txt": "\n".join(sorted(lines)) + "\n"}
    return utts, files


# ------------------------------------------------------------------ QUESST 2014
QUESST_DIR = "quesst14Database"
QUESST_LANGUAGE = "nnenglish"


def _quesst_terms(rng: random.Random, vocab: list[str], n: int, min_len: int) -> list[str]:
    pool = [w for w in vocab if len(w) >= min_len]
    if len(pool) < n:
        raise DeepwideError(f"corpus.quesst14.synth: {n} query terms need {n} vocabulary words of {min_len}+ letters, "
                            f"the TTS vocabulary has {len(pool)}; raise corpus.tts.vocab_size or lower the query counts")
    return rng.sample(pool, n)


def plan_quesst14(cfg: dict, tts: dict, seed: int):
    s = cfg["synth"]
    rng = random.Random(f"{seed}:quesst14")
    vocab = make_vocab(rng, tts["vocab_size"])
    n_dev, n_eval = s["dev_queries"], s["eval_queries"]
    terms = _quesst_terms(rng, vocab, n_dev + n_eval, s["min_term_letters"])
    term_set = set(terms)
    filler = [w for w in vocab if w not in term_set]
    doc_spk = [sample_speaker(rng, tts["flite_share"]) for _ in range(s["doc_speakers"])]
    query_spk = [sample_speaker(rng, tts["flite_share"]) for _ in range(s["query_speakers"])]
    term_ids = [f"quesst14_dev_{i + 1:04d}" for i in range(n_dev)] + [f"quesst14_eval_{i + 1:04d}" for i in range(n_eval)]

    # documents: docs_per_term sentences per term (the term at a random position), plus fillers
    docs = []  # (words, term index or None, position)
    for t in range(len(terms)):
        for _ in range(s["docs_per_term"]):
            words = [rng.choice(filler) for _ in range(rng.randint(s["min_words"], s["max_words"]))]
            pos = rng.randrange(len(words) + 1)
            words.insert(pos, terms[t])
            docs.append((words, t, pos))
    for _ in range(s["filler_docs"]):
        docs.append(([rng.choice(filler) for _ in range(rng.randint(s["min_words"], s["max_words"]))], None, None))
    rng.shuffle(docs)
    rate = int(s["sample_rate"])
    utts, doc_ids, occ = [], [], []  # occ: (term id, doc id, word position, words)
    for i, (words, t, pos) in enumerate(docs):
        did = f"quesst14_{i + 1:05d}"
        doc_ids.append(did)
        utts.append(Utterance(f"{QUESST_DIR}/Audio/{did}.wav", " ".join(words), doc_spk[i % len(doc_spk)], sample_rate=rate))
        if t is not None:
            occ.append((term_ids[t], did, pos, words))
    for k, (tid, word) in enumerate(zip(term_ids, terms)):
        folder = "dev_queries" if "_dev_" in tid else "eval_queries"
        utts.append(Utterance(f"{QUESST_DIR}/{folder}/{tid}.wav", word, query_spk[k % len(query_spk)],
                              sample_rate=rate, trim=True))

    keys = {
        "language_key_utterances.lst": [f"{QUESST_DIR}/Audio/{d}.wav" for d in doc_ids],
        "language_key_dev.lst": [f"{QUESST_DIR}/dev_queries/{t}.wav" for t in term_ids[:n_dev]],
        "language_key_eval.lst": [f"{QUESST_DIR}/eval_queries/{t}.wav" for t in term_ids[n_dev:]],
    }
    files = {f"{QUESST_DIR}/scoring/{name}": "".join(f"{p} {QUESST_LANGUAGE}\n" for p in paths) for name, paths in keys.items()}

    def finish(root: Path, durations: dict[str, float]) -> dict[str, str]:
        dur = {d: durations[f"{QUESST_DIR}/Audio/{d}.wav"] for d in doc_ids}
        out = {}
        for split, tids in (("dev", term_ids[:n_dev]), ("eval", term_ids[n_dev:])):
            gt = f"{QUESST_DIR}/scoring/groundtruth_quesst14_{split}"
            out[f"{gt}/quesst14.ecf.xml"] = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<ecf source_signal_duration="{sum(dur.values()):.3f}" language="multiple" version="deepwide embedded">\n'
                + "".join(f'  <excerpt audio_filename={quoteattr(f"Audio/{d}.wav")} channel="1" tbeg="0.000" '
                          f'dur="{dur[d]:.3f}" source_type="splitcts"/>\n' for d in doc_ids)
                + "</ecf>\n")
            out[f"{gt}/quesst14_{split}.tlist.xml"] = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                '<termlist ecf_filename="quesst14.ecf.xml" version="1" language="multiple" encoding="UTF-8">\n'
                + "".join(f'  <term termid="{t}"><termtext>{t}</termtext></term>\n' for t in tids)
                + "</termlist>\n")
            lines = []
            for tid, did, pos, words in occ:
                if tid not in tids:
                    continue
                tbeg, tdur = _word_span(words, pos, dur[did])
                lines.append(f"LEXEME {did} 1 {tbeg:.2f} {tdur:.2f} {tid} lex <NA> <NA>")
            out[f"{gt}/quesst14_{split}.rttm"] = "\n".join(sorted(lines)) + "\n"
        return out

    return utts, files, [], {}, finish


def _word_span(words: list[str], pos: int, seconds: float, edge_s: float = 0.1) -> tuple[float, float]:
    """Estimated (start, duration) of ``words[pos]`` in a rendering of ``seconds``: the
    speech between ``edge_s`` of silence at each end, shared by character count."""
    speech = max(seconds - 2 * edge_s, 0.01)
    chars = [len(w) + 1 for w in words]
    total = sum(chars)
    start = edge_s + speech * sum(chars[:pos]) / total
    return round(start, 2), round(max(speech * chars[pos] / total, 0.01), 2)


EXTRA_PLANS = {"snips": plan_snips, "quesst14": plan_quesst14}
