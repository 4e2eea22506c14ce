"""Tiny seeded generator of typed contract orders with known risk drivers, for fast tests.

Not the project's data generator (``pipelines/generate.py``): just enough structure that the
features and models have something to find (technician skill, certification, repeats, overdue
arrivals, resident temperament) and an oracle probability per order to compare against.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.schemas import CATEGORIES, TIMEZONE

DESC = {
    "plumbing": "卫生间水管漏水",
    "electrical": "客厅插座没电",
    "hvac": "空调不制冷",
    "fire_safety": "消防栓箱门坏了",
    "door_window": "入户门锁打不开",
    "waterproofing": "楼上渗水到我家天花板",
    "wall_floor": "墙面瓷砖脱落",
    "elevator": "电梯按钮失灵",
    "public_facility": "楼道灯不亮",
    "other": "其他问题需要处理",
}


def make_orders(
    n: int = 3000,
    seed: int = 0,
    days: int = 360,
    n_tech: int = 25,
    n_units: int = 300,
    rework_drift: float = 0.0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return ``(orders, technicians, units, ground_truth)`` typed like validation's output.

    ``rework_drift`` adds this much to the rework log-odds by the end of the period (linear in
    time): the base rate drifts upward, as the goals require calibration to survive.
    """
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz=TIMEZONE)
    cats = np.array(CATEGORIES)
    tech_ids = np.array([f"T{i:03d}" for i in range(n_tech)])
    skill = rng.normal(0, 1, n_tech)
    certs = [
        ";".join(sorted(set(rng.choice(cats, size=rng.integers(2, 7), replace=False))))
        for _ in range(n_tech)
    ]
    technicians = pd.DataFrame(
        {
            "technician_id": pd.array(tech_ids, dtype="string"),
            "team": pd.array([f"team{i % 4}" for i in range(n_tech)], dtype="string"),
            "hire_date": pd.to_datetime("2018-01-01")
            + pd.to_timedelta(rng.integers(0, 2000, n_tech), unit="D"),
            "certifications": pd.array(certs, dtype="string"),
            "employment": pd.array(
                rng.choice(["in_house", "subcontractor"], n_tech, p=[0.7, 0.3]), dtype="string"
            ),
        }
    )
    unit_ids = np.array([f"U{i:04d}" for i in range(n_units)])
    unit_comm = np.array([f"C{i % 6}" for i in range(n_units)])
    units = pd.DataFrame(
        {
            "unit_id": pd.array(unit_ids, dtype="string"),
            "community_id": pd.array(unit_comm, dtype="string"),
            "building_year": pd.array(rng.integers(1995, 2022, n_units), dtype="Int64"),
            "floor": pd.array(rng.integers(1, 30, n_units), dtype="Int64"),
            "area_m2": rng.uniform(40, 160, n_units),
        }
    )
    temper = rng.normal(0, 1, n_units)

    rows = []
    base_n = int(n * 0.85)
    t_rep = np.sort(rng.uniform(0, days, base_n))
    queue: list[tuple[float, int, str, str]] = []  # (time, unit, category, parent)
    ids = 0
    last_done: dict[tuple[int, str], float] = {}
    events = [(t, int(rng.integers(n_units)), str(rng.choice(cats)), None) for t in t_rep]
    i = 0
    while i < len(events) or queue:
        if queue and (i >= len(events) or queue[0][0] < events[i][0]):
            t, u, c, parent = queue.pop(0)
        else:
            t, u, c, parent = events[i]
            i += 1
        if t >= days:
            continue
        oid = f"O{ids:06d}"
        ids += 1
        k = int(rng.integers(n_tech))
        prio = rng.choice(["normal", "urgent", "emergency"], p=[0.75, 0.2, 0.05])
        sla = {"normal": 24.0, "urgent": 4.0, "emergency": 1.0}[prio]
        arrival_h = sla * rng.lognormal(-0.5, 0.7)
        dispatch_h = arrival_h * rng.uniform(0.1, 0.5)
        repair_h = rng.lognormal(0.3, 0.5)
        certified = c in certs[k].split(";")
        repeat = (u, c) in last_done and t - last_done[(u, c)] < 30
        parts = rng.random() < 0.4
        urge = rng.poisson(max(arrival_h / sla - 0.5, 0.05))
        lr = -2.6 + rework_drift * t / days - 0.9 * skill[k]
        lr += 0.9 * (not certified) + 1.0 * repeat + 0.4 * parts
        p_rw = 1 / (1 + np.exp(-lr))
        ld = -2.2 + 1.2 * (arrival_h > sla) + 0.35 * urge + 0.9 * temper[u] + 1.0 * p_rw
        p_ds = 1 / (1 + np.exp(-ld))
        rework = rng.random() < p_rw
        dissat = rng.random() < p_ds
        done = t + (arrival_h + repair_h) / 24
        last_done[(u, c)] = done
        status = "completed" if rng.random() > 0.03 else "cancelled"
        if status == "completed" and rework:
            queue.append((done + rng.uniform(1, 25), u, c, oid if rng.random() < 0.3 else None))
            queue.sort(key=lambda e: e[0])
        responded = rng.random() < 0.75
        rating = (rng.integers(1, 3) if dissat else rng.integers(3, 6)) if responded else None
        complaint = bool(dissat and rng.random() < 0.2)
        desc = (
            DESC[c]
            + ("，又坏了" if repeat and rng.random() < 0.5 else "")
            + ("，很急" if prio != "normal" else "")
        )
        comment = None
        if responded and rng.random() < 0.5:
            comment = "太慢了，不满意" if dissat else "师傅很专业，谢谢"
        rows.append(
            dict(
                order_id=oid,
                community_id=unit_comm[u],
                unit_id=unit_ids[u],
                area_type="indoor",
                resident_id=f"R{u:04d}",
                channel=rng.choice(["app", "phone", "wechat"]),
                category=c,
                priority=prio,
                description=desc,
                reported_at=t,
                dispatched_at=t + dispatch_h / 24,
                arrived_at=t + arrival_h / 24,
                completed_at=done if status == "completed" else np.nan,
                status=status,
                technician_id=tech_ids[k],
                paid=bool(rng.random() < 0.2),
                cost_yuan=float(rng.uniform(0, 200)) if parts else 0.0,
                parts_replaced=parts,
                urge_count=int(urge),
                rating=rating if status == "completed" else None,
                feedback_comment=comment if status == "completed" else None,
                complaint=complaint if status == "completed" else None,
                parent_order_id=parent,
                p_rework=p_rw,
                p_dissatisfied=p_ds,
            )
        )
    df = pd.DataFrame(rows)
    for c in ("reported_at", "dispatched_at", "arrived_at", "completed_at"):
        df[c] = (start + pd.to_timedelta(df[c] * 86400, unit="s")).dt.floor("s")
    for c in (
        "order_id",
        "community_id",
        "unit_id",
        "area_type",
        "resident_id",
        "channel",
        "category",
        "priority",
        "description",
        "status",
        "technician_id",
        "feedback_comment",
        "parent_order_id",
    ):
        df[c] = df[c].astype("string")
    for c in ("paid", "parts_replaced", "complaint"):
        df[c] = df[c].astype("boolean")
    for c in ("urge_count", "rating"):
        df[c] = pd.array(df[c], dtype="Int64")
    df["cost_yuan"] = df["cost_yuan"].astype("float64")
    truth = df[["order_id", "p_rework", "p_dissatisfied"]].copy()
    orders = df.drop(columns=["p_rework", "p_dissatisfied"])
    return orders, technicians, units, truth


def typed(rows: list[dict]) -> pd.DataFrame:
    """Typed orders from a few hand-written rows (timestamps as local-time strings)."""
    from models.features import coerce_orders

    defaults = dict(
        community_id="C1",
        area_type="indoor",
        channel="app",
        category="plumbing",
        priority="normal",
        description="水管漏水",
        status="completed",
        technician_id="T1",
    )
    return coerce_orders(pd.DataFrame([{**defaults, **r} for r in rows]))
