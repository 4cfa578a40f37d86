"""Tags: the words of a product name, normalised as in the original study.

``"Puma Men's T-Shirts & Tops"`` -> ``["puma", "men", "tshirt", "-", "tops"]``. Rules (docs/protocol.md):
lower-case; ``women's`` -> ``women`` and ``men's`` -> ``men`` (``women's`` first, since it
contains ``men's``); ``&`` -> ``-``; ``t-shirts`` / ``tshirts`` -> ``tshirt``; drop ``'``; split on
whitespace. The vocabulary keeps words seen more than ``min_count`` (5) times.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

_REPLACEMENTS = (("women's", "women"), ("men's", "men"), ("&", "-"), ("t-shirts", "tshirt"),
                 ("tshirts", "tshirt"), ("'", ""))


def normalise_name(text: str) -> list[str]:
    """Normalise a product name into its list of words (order kept, duplicates kept)."""
    if not isinstance(text, str):
        return []
    s = text.lower()
    for old, new in _REPLACEMENTS:
        s = s.replace(old, new)
    return re.split(r"\s+", s.strip()) if s.strip() else []


def build_vocab(token_lists: Iterable[Sequence[str]], min_count: int = 5) -> list[str]:
    """Words seen more than ``min_count`` times, sorted by descending count then alphabetically."""
    counts = Counter(t for toks in token_lists for t in toks)
    return sorted((w for w, c in counts.items() if c > min_count), key=lambda w: (-counts[w], w))


def filter_tags(token_lists: Iterable[Sequence[str]], vocab: Iterable[str]) -> list[list[str]]:
    """Keep only in-vocabulary words (order kept)."""
    keep = set(vocab)
    return [[t for t in toks if t in keep] for toks in token_lists]


def tags_of(names: Sequence, vocab_rows, min_count: int = 5) -> tuple[list[str], list[list[str]]]:
    """``(vocab, tags)`` of product names: every name normalised (:func:`normalise_name`), the vocabulary
    built from the names of the rows where ``vocab_rows`` is true only (:func:`build_vocab`; never the rows a
    model is evaluated on), every row's tags filtered by it. The one tag rule of the study's sampler and of
    ``attrboost fit``."""
    words = [normalise_name(t) for t in names]
    keep = list(vocab_rows)
    if len(keep) != len(words):
        raise ValueError(f"vocab_rows has {len(keep)} entries for {len(words)} names")
    vocab = build_vocab([w for w, k in zip(words, keep) if k], min_count)
    return vocab, filter_tags(words, vocab)

