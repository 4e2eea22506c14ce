"""The fast char n-gram transform equals scikit-learn's, whatever the texts and settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from models.char_ngrams import tfidf_transform
from models.sentiment import char_ngram_vectorizer

EDGE = [
    "",
    " ",
    "\n\n",
    "a  b\t\tc",  # runs of whitespace collapse to one space before the n-grams
    "😀😀x",  # astral code points (21 bits)
    "全屋停电！！！２小时",  # full-width forms and digits the preprocessor folds
    "Ok OK ok",
    "灯",
    "漏水漏水漏水漏水",  # repeated n-grams count, then sublinear tf
    "ÅÉ ﬁ",  # NFKC compatibility characters
    "e\u0301\u0327 a\u030a",  # combining marks NFKC composes and reorders
    "\u0301开头的组合符",  # a combining mark at the start of a text
]


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    alphabet = list("水管漏电灯不亮门锁坏了师傅很快修好态度差又来一次 ,.!！？0123456789abcXYZ")
    out = []
    for _ in range(n):
        k = int(rng.integers(0, 25))
        out.append("".join(rng.choice(alphabet, size=k)))
    return out + EDGE


def _same(a, b) -> None:
    a = a.tocsr()
    a.sort_indices()
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.data, b.data, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "vec",
    [
        char_ngram_vectorizer((1, 3), 2),
        char_ngram_vectorizer((1, 3), 1, normalize=False),
        TfidfVectorizer(analyzer="char", ngram_range=(2, 3)),
        TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=False, norm=None),
        TfidfVectorizer(analyzer="char", ngram_range=(1, 1), use_idf=False),
    ],
    ids=["project", "no-normalize", "bigrams+", "raw-tf", "unigrams-no-idf"],
)
def test_equals_scikit_learn(vec):
    texts = _texts(3000)
    vec.fit(texts[:2000])
    # small chunks: n-grams must not run across the chunk or the text boundaries
    _same(vec.transform(texts), tfidf_transform(vec, texts, chunk=257))


def test_unseen_grams_empty_input_and_fallback():
    vec = char_ngram_vectorizer((1, 3), 1).fit(["水管漏水", "灯不亮"])
    B = tfidf_transform(vec, ["全新的字", "水管"])
    assert B[0].nnz == 0 and B[1].nnz > 0  # nothing known: an empty row, not an error
    assert tfidf_transform(vec, []).shape == (0, len(vec.vocabulary_))
    # a configuration the packed keys do not cover goes to scikit-learn
    words = TfidfVectorizer(analyzer="word").fit(["ab bc", "bc cd"])
    _same(words.transform(["ab cd", "bc"]), tfidf_transform(words, ["ab cd", "bc"]))
    long = TfidfVectorizer(analyzer="char", ngram_range=(2, 5)).fit(["水管漏水了", "灯不亮了"])
    _same(long.transform(["水管漏了"]), tfidf_transform(long, ["水管漏了"]))


REAL = Path(__file__).resolve().parents[2] / "shared/data/real"
REAL_TEXTS = {
    "waimai_10k/waimai_10k.csv": ["review"],
    "chnsenticorp_htl_all/ChnSentiCorp_htl_all.csv": ["review"],
    "online_shopping_10_cats/online_shopping_10_cats.csv": ["review"],
    "teddycup2020_gov_messages/messages_with_replies_fj4.csv": ["留言详情", "答复意见"],
    "asap_dianping_sample/test_sample.csv": ["reviewbody"],
}


@pytest.mark.real_data
@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} absent (third-party data)")
@pytest.mark.parametrize("path", sorted(REAL_TEXTS))
def test_equals_scikit_learn_on_real_third_party_text(path):
    """Residents' and citizens' own writing: emoji, traditional characters, line breaks, tabs,
    full-width forms, long letters. The vocabulary learns from half, both halves are compared."""
    f = REAL / path
    if not f.exists():
        pytest.skip(f"{f} absent")
    df = pd.read_csv(f, encoding="utf-8-sig")
    texts = [str(t) for c in REAL_TEXTS[path] for t in df[c].dropna().tolist()][:6000]
    vec = char_ngram_vectorizer((1, 3), 2).fit(texts[::2])
    _same(vec.transform(texts), tfidf_transform(vec, texts, chunk=3001))
