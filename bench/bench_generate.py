"""Benchmark: generate ~1M orders (simulation + contract CSVs + ground truth) against 120 s.

Run with ``nice .venv/bin/python bench/bench_generate.py`` (one heavy process at a time on the
shared machine). 310 000 homes over 24 months give about a million orders.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipelines.generate import generate

TARGET_SECONDS = 120.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=310_000, help="homes (~1M orders, 24 months)")
    parser.add_argument("--months", type=int, default=24, help="months of history")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        t0 = time.perf_counter()
        summary = generate(Path(tmp), seed=args.seed, units=args.units, months=args.months)
        elapsed = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
    n = summary["orders"]
    print(f"orders:            {n:,}")
    print(f"simulate:          {summary['simulate_seconds']:.1f} s")
    print(f"total (with I/O):  {elapsed:.1f} s   ({size_mb:.0f} MB written)")
    print(f"throughput:        {n / elapsed:,.0f} orders/s")
    print(f"vs target {TARGET_SECONDS:.0f} s:    {elapsed / TARGET_SECONDS:.2f}x of budget")


if __name__ == "__main__":
    main()
