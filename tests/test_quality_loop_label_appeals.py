"""Appeals of the labels (申诉改判): rework links and dissatisfaction, end to end.

An upheld appeal overrides the order's label (``models.labels`` overrides) in the store's
labels, the exported ``label_overrides.csv``, the relabelled data (``repairqc label``) and the
dossier's observed count; a rejected one changes nothing; the history stays in the store.
"""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from models.dossiers import DossierConfig, technician_dossiers
from models.labels import LABEL_OVERRIDE_COLUMNS, label_orders
from pipelines.cli import app
from serving.store import tables as T
from serving.store.db import Store, make_engine, upgrade
from serving.store.quality import ConflictError, InvalidError, NotFoundError
from tests.serving_fixtures import operation_store


@pytest.fixture()
def loop(tmp_path, database_url):
    """A store holding a synthetic operation (rework links are recorded on arrival), on each
    backend (SQLite; PostgreSQL with a test server)."""
    url, store, _ = operation_store(tmp_path, database_url=database_url)
    return url, store


def labels_of(store: Store, overrides=None) -> pd.DataFrame:
    lab = label_orders(store.orders_frame(), store.label_config, overrides=overrides)
    return lab.set_index("order_id")


def reworked(lab: pd.DataFrame) -> pd.DataFrame:
    """Orders labelled rework (window closed) that name a technician."""
    return lab[(lab["rework"] == 1) & lab["technician_id"].notna()]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_upheld_rework_appeal_flips_the_label_everywhere_and_rejected_changes_nothing(
    loop, tmp_path, monkeypatch
):
    url, store = loop
    base = labels_of(store)
    pos = reworked(base)
    assert len(pos) >= 2, "the synthetic operation needs two reworks"
    up, rej = pos.index[0], pos.index[1]
    tech_up, tech_rej = pos.loc[up, "technician_id"], pos.loc[rej, "technician_id"]

    ap = store.create_appeal(
        None,
        tech_up,
        "返修单是卫生间地漏堵塞，与上次维修不是同一故障",
        target="rework",
        order_id=up,
    )
    assert (ap["target"], ap["status"], ap["inspection_id"]) == ("rework", "pending", None)
    assert ap["rework_order_id"] == base.loc[up, "rework_order_id"]
    assert store.label_overrides_frame().empty  # pending: nothing changes yet
    with pytest.raises(ConflictError, match=f"order {up} already has rework appeal"):
        store.create_appeal(None, tech_up, "again", target="rework", order_id=up)
    store.decide_appeal(ap["appeal_id"], "upheld", "品质部-刘经理", "复核属实")

    ap2 = store.create_appeal(None, tech_rej, "住户自行改动管道", target="rework", order_id=rej)
    store.decide_appeal(ap2["appeal_id"], "rejected", "品质部-刘经理", "证据不足")

    ov = store.label_overrides_frame()
    assert list(ov.columns) == LABEL_OVERRIDE_COLUMNS
    assert ov[["order_id", "label", "value", "source"]].values.tolist() == [
        [up, "rework", 0, ap["appeal_id"]]
    ]
    assert "复核属实" in ov.loc[0, "reason"] and ov.loc[0, "decided_at"]

    # 1) the labels: only the upheld order changes
    lab = labels_of(store, ov)
    assert lab.loc[up, "rework"] == 0.0 and lab.loc[up, "rework_overridden"]
    assert lab.loc[rej, "rework"] == 1.0 and not lab.loc[rej, "rework_overridden"]
    assert (lab["rework"] != base["rework"]).sum() - (
        lab["rework"].isna() & base["rework"].isna()
    ).sum() == 1
    # the full history stays: both appeals with their decisions
    hist = store.appeals_frame().set_index("appeal_id")
    assert hist.loc[ap["appeal_id"], "status"] == "upheld"
    assert hist.loc[ap2["appeal_id"], "status"] == "rejected"
    assert set(hist["target"]) == {"rework"}

    # 2) exported and relabelled: label_overrides.csv next to the contract files
    out = tmp_path / "export"
    r = run("export", "--out", str(out), "--database-url", url)
    assert r.exit_code == 0, r.output
    csv = pd.read_csv(out / "label_overrides.csv", dtype=str, keep_default_na=False)
    assert list(csv.columns) == LABEL_OVERRIDE_COLUMNS and csv["order_id"].tolist() == [up]
    checked = tmp_path / "validated"
    r = run(
        "validate",
        *("--orders", str(out / "orders.csv"), "--technicians", str(out / "technicians.csv")),
        *("--units", str(out / "units.csv"), "--out", str(checked)),
    )
    assert r.exit_code == 0, r.output
    params = tmp_path / "params.yaml"
    params.write_text(f"label:\n  rework_window_days: {store.label_config.rework_window_days}\n")
    labelled_dir = tmp_path / "labelled"
    r = run(
        "label",
        *("--orders", str(checked / "orders.parquet"), "--out", str(labelled_dir)),
        *("--params", str(params), "--overrides", str(out / "label_overrides.csv")),
    )
    assert r.exit_code == 0, r.output
    relab = pd.read_parquet(labelled_dir / "labelled.parquet").set_index("order_id")
    assert relab.loc[up, "rework"] == 0.0 and relab.loc[up, "rework_overridden"]
    assert relab.loc[rej, "rework"] == 1.0
    assert pd.isna(relab.loc[up, "rework_order_id"])  # what training's as-of labels read

    # 3) the dossier read from the store counts one rework less for that technician
    import pipelines.report_data as RD
    from pipelines.report_sections import period_frame

    def no_model(_):
        raise FileNotFoundError("no model in this test")

    monkeypatch.setattr(RD, "load_model", no_model)
    orders = store.orders_frame()
    t0 = orders["reported_at"].min().floor("D")
    t1 = orders["reported_at"].max().ceil("D") + pd.Timedelta(days=1)
    inp = RD.store_inputs(store, t0, t1, label_config=store.label_config, reference_months=1)
    frame = period_frame(inp, t0, t1, None).assign(rework_risk=0.1, dissatisfaction_prob=0.1)
    d = technician_dossiers(frame, DossierConfig(), appeals=inp.appeals)["technicians"]
    mine = base[base["technician_id"] == tech_up]
    assert d[tech_up]["rework"]["observed"] == int((mine["rework"] == 1).sum()) - 1
    assert d[tech_up]["labels_overridden"]["rework"] == 1
    assert d[tech_up]["appeals"]["by_target"]["rework"] >= 1


def test_dissatisfaction_appeal_and_validation(loop):
    _, store = loop
    base = labels_of(store)
    unhappy = base[(base["dissatisfied"] == 1) & base["technician_id"].notna()]
    happy = base[
        (base["dissatisfied"] == 0)
        & base["technician_id"].notna()
        & base["feedback_comment"].isna()
        & ~base["complaint"].fillna(False).astype(bool)
    ]
    oid, tech = unhappy.index[0], unhappy.iloc[0]["technician_id"]
    other = next(t for t in base["technician_id"].dropna().unique() if t != tech)
    with pytest.raises(InvalidError, match=f"technician_id: {other} did not do order {oid}"):
        store.create_appeal(None, other, "x", target="dissatisfaction", order_id=oid)
    with pytest.raises(InvalidError, match="target: must be one of inspection, rework"):
        store.create_appeal(None, tech, "x", target="rating", order_id=oid)
    with pytest.raises(InvalidError, match="order_id: required when target is rework"):
        store.create_appeal(None, tech, "x", target="rework")
    with pytest.raises(NotFoundError, match="order WO-NONE does not exist"):
        store.create_appeal(None, tech, "x", target="rework", order_id="WO-NONE")
    if len(happy):
        h = happy.iloc[0]
        with pytest.raises(ConflictError, match="no complaint, low rating or comment"):
            store.create_appeal(
                None, h["technician_id"], "x", target="dissatisfaction", order_id=happy.index[0]
            )
    no_link = base[base["rework"] == 0].index[0]
    with pytest.raises(ConflictError, match=f"order {no_link} has no rework link"):
        store.create_appeal(
            None,
            base.loc[no_link, "technician_id"] or "T",
            "x",
            target="rework",
            order_id=no_link,
        )
    ap = store.create_appeal(
        None, tech, "业主投诉的是停车收费，与维修无关", target="dissatisfaction", order_id=oid
    )
    store.decide_appeal(ap["appeal_id"], "upheld", "品质经理", None)
    ov = store.label_overrides_frame()
    assert ov[["order_id", "label", "value"]].values.tolist() == [[oid, "dissatisfied", 0]]
    lab = labels_of(store, ov)
    assert lab.loc[oid, "dissatisfied"] == 0.0 and lab.loc[oid, "dissatisfied_overridden"]
    assert not lab.loc[oid, "rework_overridden"]
    # an inspection appeal on the same order is independent of the label appeal
    assert store.appeals_frame()["inspection_id"].isna().all()


def test_migration_0003_keeps_inspection_appeals_and_downgrades(tmp_path):
    import datetime as dt

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from serving.store.db import MIGRATIONS_DIR

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)

    def migrate(fn, rev):
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            fn(cfg, rev)

    migrate(command.upgrade, "0002")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO appeals (appeal_id, inspection_id, order_id, technician_id, reason, "
                "status, submitted_at) VALUES ('AP-old', 7, 'WO1', 'T1', '非本次', 'pending', :t)"
            ),
            {"t": dt.datetime(2024, 5, 2, tzinfo=dt.UTC)},
        )
    upgrade(engine)  # 0002 -> head
    store = Store(engine)
    old = store.get_appeal("AP-old")
    assert (old["target"], old["inspection_id"], old["rework_order_id"]) == ("inspection", 7, None)
    with engine.begin() as conn:  # a label appeal has no inspection result
        conn.execute(
            T.appeals.insert().values(
                appeal_id="AP-new",
                target="rework",
                order_id="WO2",
                technician_id="T1",
                reason="另一处故障",
                status="pending",
                submitted_at=dt.datetime(2024, 6, 1, tzinfo=dt.UTC),
            )
        )
    migrate(command.downgrade, "0002")
    with engine.connect() as conn:
        ids = conn.execute(sa.text("SELECT appeal_id FROM appeals")).scalars().all()
    assert ids == ["AP-old"]  # label appeals cannot exist before 0003
