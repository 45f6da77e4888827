"""CoDi's clean-up of decoded text: adjacent duplicate words, then immediately repeated n-grams.

Random or weakly conditioned Optimus samples often stutter ("Feeling Feeling Feeling", "the cat, the cat,").
The official decode first drops every whitespace-separated word equal to its predecessor, then removes
immediately repeated n-grams until none is left. Here the n-gram pass works on word and punctuation
tokens (a run of punctuation is one token), so "cat. cat." and "cat, cat" are both seen as repeats, and it
keeps the original spacing of everything it does not remove.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"(\s*)(\w+|[^\w\s]+)")  # (leading whitespace, word or punctuation run)


def remove_adjacent_duplicate_words(text: str) -> str:
    """Drops every whitespace-separated word that equals the word before it; words rejoin with one space."""
    words = text.split()
    kept = [w for i, w in enumerate(words) if i == 0 or w != words[i - 1]]
    return " ".join(kept)


def _first_repeat(tokens: list[str], n: int) -> int | None:
    """Start of the first n-gram that is immediately followed by an identical n-gram, if any."""
    for i in range(len(tokens) - 2 * n + 1):
        if tokens[i : i + n] == tokens[i + n : i + 2 * n]:
            return i
    return None


def remove_repeated_ngrams(text: str) -> str:
    """Removes the second copy of every immediately repeated n-gram (n = 1, 2, ...) until none is left.

    Words and punctuation runs are compared exactly (case-sensitive). Shorter n-grams are cleaned
    first; the whole pass repeats while it still removes something.

    Args:
        text: one decoded sentence.
    Returns:
        the sentence without immediate repeats, original spacing kept (leading whitespace stripped).
    """
    pieces = _TOKEN.findall(text)  # [(space, token)]
    changed = True
    while changed:
        changed = False
        n = 1
        while 2 * n <= len(pieces):
            tokens = [tok for _, tok in pieces]
            start = _first_repeat(tokens, n)
            if start is None:
                n += 1
                continue
            del pieces[start + n : start + 2 * n]
            changed = True
    return "".join(space + tok for space, tok in pieces).strip()


def postprocess_text(text: str) -> str:
    """The official text clean-up: adjacent duplicate words, then repeated n-grams."""
    return remove_repeated_ngrams(remove_adjacent_duplicate_words(text))
