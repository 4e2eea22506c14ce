"""A fast ``transform`` of a fitted character n-gram TF-IDF vectoriser.

scikit-learn's char analyzer builds every n-gram of a text as a Python string and looks each up
in a dict: at 1M order descriptions that is ~75 s of a ~300 s model fit (profiled at 1M orders),
and a fit vectorises every description of the frame. Here the texts are preprocessed exactly as
the vectoriser does (its own preprocessor and whitespace rule), then their n-grams are counted
with numpy on code points: an n-gram of up to three characters packs into one 63-bit integer
(a code point has 21 bits), and one sorted array per length maps keys to columns. The sublinear
tf, idf and L2 steps are the vectoriser's. The result equals ``vec.transform(texts)`` (a test
checks it on mixed scripts, runs of whitespace, astral characters and empty texts); anything
this does not cover (word analyzers, n-grams longer than three) goes to ``vec.transform``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

_BITS = 21  # every Unicode code point is below 2**21
_MAX_N = 3  # 3 * 21 = 63 bits: the longest n-gram that packs into one int64
_WHITE_SPACES = re.compile(r"\s\s+")  # scikit-learn's char analyzer collapses these to " "


def _packable(vec: Any) -> bool:
    lo, hi = vec.ngram_range
    return (
        vec.analyzer == "char"
        and 1 <= lo <= hi <= _MAX_N
        and getattr(vec, "sublinear_tf", False) in (True, False)
        and getattr(vec, "norm", None) in ("l2", None)
        and getattr(vec, "binary", False) is False
    )


def _keys(grams: Sequence[str]) -> np.ndarray:
    """One int64 per n-gram of a single length: its code points, 21 bits each."""
    n = len(grams[0])
    cp = np.frombuffer("".join(grams).encode("utf-32-le"), dtype=np.uint32)
    cp = cp.astype(np.int64).reshape(-1, n)
    key = np.zeros(len(grams), dtype=np.int64)
    for j in range(n):
        key = (key << _BITS) | cp[:, j]
    return key


def _vocabulary_tables(vec: Any) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per n-gram length: the sorted keys of the vocabulary and their column numbers."""
    by_len: dict[int, list[tuple[str, int]]] = {}
    for gram, col in vec.vocabulary_.items():
        by_len.setdefault(len(gram), []).append((gram, col))
    tables = {}
    for n, items in by_len.items():
        keys = _keys([g for g, _ in items])
        cols = np.array([c for _, c in items], dtype=np.int64)
        order = np.argsort(keys)
        tables[n] = (keys[order], cols[order])
    return tables


def _counts(docs: list[str], tables: dict, ngram_range: tuple[int, int], width: int) -> Any:
    """Raw n-gram counts of already preprocessed, whitespace-collapsed texts (CSR)."""
    from scipy.sparse import csr_matrix

    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    cp = np.frombuffer("".join(docs).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    doc = np.repeat(np.arange(len(docs), dtype=np.int64), lengths)
    rows, cols = [], []
    lo, hi = ngram_range
    for n in range(lo, hi + 1):
        if n not in tables or len(cp) < n:
            continue
        m = len(cp) - n + 1
        ok = doc[n - 1 :] == doc[:m]  # the n characters lie in one text
        key = cp[:m].copy()
        for j in range(1, n):
            key <<= _BITS
            key |= cp[j : j + m]
        key, where = key[ok], doc[:m][ok]
        vkeys, vcols = tables[n]
        pos = np.searchsorted(vkeys, key)
        pos[pos == len(vkeys)] = 0
        hit = vkeys[pos] == key
        rows.append(where[hit])
        cols.append(vcols[pos[hit]])
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    A = csr_matrix((np.ones(len(r)), (r, c)), shape=(len(docs), width))
    A.sum_duplicates()  # counts; also sorts the column indices, as scikit-learn's are
    return A


def tfidf_transform(vec: Any, texts: Sequence[Any], chunk: int = 100_000) -> Any:
    """``vec.transform(texts)`` (CSR, float64) for a fitted char n-gram ``TfidfVectorizer``.

    ``chunk`` texts at a time bound the memory of the n-gram keys (~8 bytes per character and
    n-gram length per array).
    """
    from scipy.sparse import csr_matrix, vstack
    from sklearn.preprocessing import normalize

    if not _packable(vec):
        return vec.transform(texts).tocsr()
    pre = vec.build_preprocessor()
    decode = vec.decode
    width = len(vec.vocabulary_)
    tables = _vocabulary_tables(vec)
    texts = list(texts)
    if not texts:  # (normalize refuses an empty matrix)
        return csr_matrix((0, width), dtype=np.float64)
    parts = []
    for s in range(0, len(texts), chunk):
        docs = [_WHITE_SPACES.sub(" ", pre(decode(t))) for t in texts[s : s + chunk]]
        parts.append(_counts(docs, tables, vec.ngram_range, width))
    A = vstack(parts, format="csr")
    A.data = A.data.astype(np.float64)
    if vec.sublinear_tf:
        np.log(A.data, out=A.data)
        A.data += 1.0
    if vec.use_idf:
        A.data *= vec.idf_[A.indices]
    if vec.norm == "l2":
        A = normalize(A, norm="l2", copy=False)
    return A
