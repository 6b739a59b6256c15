"""Text for the embedded corpora, LibriSpeech's character set, and the project's one G2P.

Sentences are drawn from a real English word list (Debian's ``wamerican``,
``/usr/share/dict/words``).

Phones: every lexicon the project writes (the manifests' ``phones`` column and
``lexicon.txt``, SUPERB PR's generated lexicon) uses one phone set, ``espeak-ng-ipa``:
espeak-ng ``--ipa`` (voice en-us), one phone per space-separated token, stress marks
(ˈ ˌ) removed, length marks kept (``b ɹ uː``). It is looked up once per distinct word,
so the same code serves a synthesized corpus and a real one with tens of thousands of
words. A user's s3prl lexicon files are the other, separately named set, ``s3prl-g2p``.

Transcript text policy (``corpus.librispeech.text_policy``), see :func:`apply_text_policy`.
"""

from __future__ import annotations

import functools
import random
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path
from typing import Iterable

from deepwide.errors import DeepwideError

WORDLIST = Path("/usr/share/dict/words")
_WORD_RE = re.compile(r"^[a-z]{2,12}$")
PHONEME_VOICE = "en-us"


@functools.lru_cache(maxsize=4)
def load_words(path: str | Path = WORDLIST) -> tuple[str, ...]:
    """Lower-case alphabetic words of 2-12 letters (no proper nouns, no possessives)."""
    path = Path(path)
    if not path.is_file():
        raise DeepwideError(
            f"word list {path} not found: install the Debian package wamerican "
            "(apt-get install wamerican)"
        )
    words = sorted({w for w in path.read_text(errors="replace").split() if _WORD_RE.match(w)})
    if len(words) < 100:
        raise DeepwideError(f"word list {path} has only {len(words)} usable words")
    return tuple(words)


def make_vocab(rng: random.Random, size: int, exclude: Iterable[str] = ()) -> list[str]:
    """A fixed vocabulary of ``size`` words drawn from the word list."""
    skip = set(exclude)
    words = [w for w in load_words() if w not in skip]
    if size > len(words):
        raise DeepwideError(f"vocab_size {size} exceeds the {len(words)} words in {WORDLIST}")
    return sorted(rng.sample(words, size))


def sentence(rng: random.Random, vocab: list[str], min_words: int, max_words: int) -> str:
    """A lower-case sentence of min..max words drawn from ``vocab``."""
    n = rng.randint(min_words, max_words)
    return " ".join(rng.choice(vocab) for _ in range(n))


def words_of(text: str) -> list[str]:
    """Normalized words of a transcript: lower case, letters, digits and apostrophes."""
    return [w for w in re.sub(r"[^a-z0-9' ]", " ", text.lower()).split() if w.strip("'")]


PHONE_SET = "espeak-ng-ipa"  # the name written wherever a generated lexicon is
USER_PHONE_SET = "s3prl-g2p"  # the user's copies of s3prl's LibriSpeech lexicons


def _strip_ipa(text: str) -> list[str]:
    phones = [p.replace("ˈ", "").replace("ˌ", "").strip() for p in text.split()]
    return [p for p in phones if p and p not in ("_", "|")]


def espeak_version() -> str:
    """``espeak-ng 1.51`` (recorded beside a generated lexicon)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DeepwideError("espeak-ng not found: install the Debian package espeak-ng")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"eSpeak NG text-to-speech: (\S+)", out)
    return f"espeak-ng {m.group(1) if m else out.strip()[:40]}"


def espeak_phones(words: Iterable[str], voice: str = PHONEME_VOICE, chunk: int = 500) -> dict[str, list[str]]:
    """The project's G2P: each word's espeak-ng IPA phones (phone set ``espeak-ng-ipa``).

    Words are looked up lower-cased, one espeak-ng process per ``chunk`` words (one word a
    line, one output line each); a chunk whose output does not line up falls back to one
    process per word. A word espeak-ng gives nothing for maps to ``[]``.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DeepwideError("espeak-ng not found: install the Debian package espeak-ng")

    def run(batch: list[str]) -> list[str]:
        text = "\n".join(w.lower() for w in batch) + "\n"
        proc = subprocess.run([exe, "-q", "--ipa", "--sep= ", "-v", voice], input=text, capture_output=True, text=True, check=True)
        return [line for line in proc.stdout.splitlines() if line.strip()]

    uniq = sorted({w for w in words if w})
    lex: dict[str, list[str]] = {}
    for i in range(0, len(uniq), chunk):
        batch = uniq[i : i + chunk]
        lines = run(batch)
        if len(lines) != len(batch):  # a word espeak split or swallowed: one call each
            lines = [" ".join(run([w])) for w in batch]
        for word, line in zip(batch, lines):
            lex[word] = _strip_ipa(line)
    return lex


def phonemize_words(words: Iterable[str], voice: str = PHONEME_VOICE, chunk: int = 500) -> dict[str, str]:
    """Map each word to its phones (``espeak-ng-ipa``), space separated."""
    return {w: " ".join(ph) for w, ph in espeak_phones(words, voice, chunk).items()}


def phones_for(text: str, lexicon: dict[str, str]) -> str:
    """Phoneme string of a transcript: the words' phonemes joined by spaces."""
    return " ".join(lexicon[w] for w in words_of(text) if lexicon.get(w))


# ------------------------------------------------------------------ LibriSpeech text policy
TEXT_POLICIES = ("normalise", "reject")
CHARSET_NAME = "upper-case A-Z, apostrophe, space"
_IN_CHARSET = re.compile(r"^[A-Z' ]*$")
_APOSTROPHES = {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"}
_TO_SPACE = set("-/\u2010\u2011\u2012\u2013\u2014\u2015\u2212")  # hyphens, dashes, slash
_WORDLIKE = set("&%#@*")  # punctuation by Unicode category, but read as words: not removed


def _shown(chars) -> str:
    uniq = sorted(set(chars))
    return " ".join(repr(c) for c in uniq[:10]) + (" ..." if len(uniq) > 10 else "")


def normalise_text(text: str) -> tuple[str | None, str | None]:
    """``(text, None)`` in LibriSpeech's character set, or ``(None, reason)``.

    The rule, in order: Unicode NFKD with combining marks dropped (``é`` -> ``E``); curly
    apostrophes -> ``'``; upper case; hyphens, dashes and ``/`` -> space; every other
    punctuation mark (Unicode category P: ``. , ! ? ; : " ( )`` ...) removed, except
    ``& % # @ *``, which are read as words; runs of
    whitespace -> one space; words made only of apostrophes dropped. Apostrophes are kept
    (``DON'T``). Whatever else is left outside A-Z, apostrophe and space is not guessed
    at: digits (LibriSpeech spells numbers out, and a reading such as year vs cardinal
    cannot be chosen safely), symbols (``& % $``) and non-Latin letters reject the line.
    """
    t = unicodedata.normalize("NFKD", text)
    t = "".join(_APOSTROPHES.get(c, c) for c in t if not unicodedata.combining(c)).upper()
    out = []
    for c in t:
        if c in _TO_SPACE or c.isspace():
            out.append(" ")
        elif c == "'" or c in _WORDLIKE or not unicodedata.category(c).startswith("P"):
            out.append(c)
    words = [w for w in "".join(out).split() if w.strip("'")]
    t = " ".join(words)
    bad = [c for c in t if not ("A" <= c <= "Z" or c in "' ")]
    if bad:
        what = "digits" if all(c.isdigit() for c in bad) else "characters"
        return None, f"{what} {_shown(bad)} outside {CHARSET_NAME} after normalisation (digits and symbols are not spelled out)"
    if not t:
        return None, "no words left after normalisation"
    return t, None


def apply_text_policy(text: str, policy: str) -> tuple[str | None, str | None, bool]:
    """``(text, reason, normalised)`` for one transcript under ``policy``.

    Text already in the set (``_IN_CHARSET``; runs of spaces are collapsed silently) is
    kept. Otherwise ``normalise`` returns :func:`normalise_text`'s result
    (``normalised`` True) and ``reject`` returns ``(None, reason naming the characters)``.
    """
    if policy not in TEXT_POLICIES:
        raise DeepwideError(f"corpus.librispeech.text_policy: {policy!r} is not one of {', '.join(TEXT_POLICIES)}")
    squeezed = " ".join(text.split(" ")).strip()
    squeezed = " ".join(w for w in squeezed.split(" ") if w)
    if _IN_CHARSET.match(squeezed) and squeezed and any(w.strip("'") for w in squeezed.split()):
        return squeezed, None, False
    if policy == "reject":
        bad = [c for c in squeezed if not ("A" <= c <= "Z" or c in "' ")]
        why = f"characters {_shown(bad)} outside {CHARSET_NAME}" if bad else "no words"
        return None, f"{why} (text_policy reject)", False
    norm, reason = normalise_text(text)
    return norm, reason, norm is not None
