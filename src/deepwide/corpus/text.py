"""Text for the embedded corpora and espeak-ng phonemes for every manifest.

Sentences are drawn from a real English word list (Debian's ``wamerican``,
``/usr/share/dict/words``). Phonemes come from espeak-ng (``-x``, ASCII phoneme names,
one phoneme per token), looked up once per distinct word, so the same code serves a
synthesized corpus and a real one with tens of thousands of words.
"""

from __future__ import annotations

import functools
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterable

from deepwide.errors import DeepwideError

WORDLIST = Path("/usr/share/dict/words")
_WORD_RE = re.compile(r"^[a-z]{2,12}$")
# stress/syllable marks and allophone modifiers in espeak-ng -x output ("t#", "I2", "r-",
# ";"): dropped, so one phoneme keeps one name (a PR-sized inventory of about 45)
_STRESS = re.compile(r"[',%=;#\-]|2$")
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


def _espeak_words(words: list[str], voice: str) -> list[str]:
    out = subprocess.run(
        ["espeak-ng", "-q", "-x", "--sep=_", "-v", voice],
        input="\n".join(words) + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def phonemize_words(words: Iterable[str], voice: str = PHONEME_VOICE, chunk: int = 2000) -> dict[str, str]:
    """Map each word to its espeak-ng phonemes, space separated, stress marks removed.

    One espeak-ng process per ``chunk`` words (one word a line, one output line each);
    a chunk whose output does not line up falls back to one process per word.
    """
    if shutil.which("espeak-ng") is None:
        raise DeepwideError("espeak-ng not found: install the Debian package espeak-ng")
    uniq = sorted({w for w in words if w})
    lexicon: dict[str, str] = {}
    for i in range(0, len(uniq), chunk):
        part = uniq[i : i + chunk]
        lines = _espeak_words(part, voice)
        if len(lines) != len(part):
            lines = [" ".join(_espeak_words([w], voice)) for w in part]
        for w, line in zip(part, lines):
            phones = [_STRESS.sub("", p) for p in re.split(r"[_ ]+", line)]
            lexicon[w] = " ".join(p for p in phones if p)
    return lexicon


def phones_for(text: str, lexicon: dict[str, str]) -> str:
    """Phoneme string of a transcript: the words' phonemes joined by spaces."""
    return " ".join(lexicon[w] for w in words_of(text) if lexicon.get(w))
