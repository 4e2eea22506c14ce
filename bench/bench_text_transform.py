"""Benchmark: vectorising order descriptions, scikit-learn's transform vs ``models.char_ngrams``.

Every risk-model fit vectorises every description of its frame (``DescriptionMatrix``), and
the scoring paths vectorise the descriptions they score. This times both transforms on the
same generated descriptions with the project's vectoriser (fitted as the description models
fit it), checks they agree to the last bit, and prints the ratio measured in this run.

Usage::

    nice .venv/bin/python bench/bench_text_transform.py              # ~100k orders
    nice .venv/bin/python bench/bench_text_transform.py --units 100000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    """Generate descriptions, time both transforms, print the ratio."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--units", type=int, default=32000, help="homes to simulate (~3 orders each)")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--vocabulary-rows", type=int, default=100_000, help="texts it learns from")
    args = p.parse_args()

    from models.char_ngrams import tfidf_transform
    from models.description import description_texts
    from models.sentiment import char_ngram_vectorizer
    from pipelines.features import load_orders
    from pipelines.generate import generate

    with tempfile.TemporaryDirectory(prefix="bench_text_") as tmp:
        d = Path(tmp)
        generate(d, seed=args.seed, units=args.units, months=24)
        orders, _, _ = load_orders(d / "orders.csv", d / "technicians.csv", d / "units.csv")
    texts = list(description_texts(orders["description"]))
    vec = char_ngram_vectorizer((1, 3), 5).fit(texts[-args.vocabulary_rows :])

    t0 = time.perf_counter()
    ref = vec.transform(texts).tocsr()
    t_sk = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = tfidf_transform(vec, texts)
    t_fast = time.perf_counter() - t0
    ref.sort_indices()
    same = (
        ref.shape == fast.shape
        and np.array_equal(ref.indptr, fast.indptr)
        and np.array_equal(ref.indices, fast.indices)
        and np.allclose(ref.data, fast.data, rtol=1e-12, atol=0)
    )
    print(f"descriptions:          {len(texts):,} ({len(vec.vocabulary_):,} n-grams)")
    print(f"scikit-learn:          {t_sk:.2f} s")
    print(f"models.char_ngrams:    {t_fast:.2f} s")
    print(f"speed-up:              {t_sk / t_fast:.2f}x (same matrix: {same})")
    if not same:
        raise SystemExit("the fast transform differs from scikit-learn's")


if __name__ == "__main__":
    main()
