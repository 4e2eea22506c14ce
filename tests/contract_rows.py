"""Small, hand-made contract rows for unit tests (text cells, as a CSV export holds them)."""

from __future__ import annotations

import pandas as pd

from models.schemas import ORDERS


def good_order(i: int = 0, **overrides: str) -> dict[str, str]:
    """One valid completed order as text cells; override any field."""
    row = {
        "order_id": f"WO{i:06d}",
        "community_id": "C01",
        "unit_id": f"C01-1-{i % 7:02d}01",
        "area_type": "indoor",
        "resident_id": f"R{i % 11}",
        "channel": "app",
        "category": "plumbing",
        "priority": "normal",
        "description": "厨房水管漏水，麻烦尽快来修",
        "reported_at": "2024-05-01 10:00:00",
        "dispatched_at": "2024-05-01 10:20:00",
        "arrived_at": "2024-05-01 11:30:00",
        "completed_at": "2024-05-01 12:15:00",
        "status": "completed",
        "technician_id": "T01",
        "paid": "false",
        "cost_yuan": "0",
        "parts_replaced": "true",
        "urge_count": "0",
        "rating": "5",
        "feedback_comment": "师傅很专业",
        "complaint": "false",
        "parent_order_id": "",
    }
    row.update(overrides)
    return row


def orders_frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    """Rows as a DataFrame with the contract's column order (plus any extras)."""
    df = pd.DataFrame(rows, dtype=object)
    first = [c for c in ORDERS.names if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]
