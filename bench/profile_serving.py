"""Per-phase timing of sequential single-order ``POST /v1/score`` (where the p99 comes from).

``bench/bench_serving.py`` measures the goal (wall-clock p50/p99 from a client); on a shared
machine its tail is mostly other processes. This tool explains a request's time instead: the
server runs in a subprocess with its phases wrapped in timers (validation, store calls, history
append, features, heads, reasons, ...) and GC pauses recorded, a client sends ``--requests``
sequential single orders (fresh ids, as the bench does), and each server event is assigned to
the request whose client-side window it falls in (``time.perf_counter`` is the same monotonic
clock in both processes). Printed: per phase (wall time, or with ``--cpu`` the thread CPU
time of the timed call: robust on a shared machine) the mean, p50, p99 and max of its time per
request, for an early and a late part of the run, plus the server CPU per request and the
phases of the slowest requests.

    nice -n 10 .venv/bin/python bench/profile_serving.py --requests 2000

Development tool, not a goal measurement; the wrappers add ~1-2 us per wrapped call.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: (module, attribute path) of the functions timed in the server, and the phase name.
PHASES: list[tuple[str, str, str]] = [
    ("serving.engine", "validate_raw", "validate"),
    ("serving.engine", "Scorer.score", "score_total"),
    ("serving.engine", "Scorer.flush", "history_flush"),
    ("serving.engine", "HistoryCache.add", "history_add"),
    ("serving.engine", "Scorer._decide", "decide"),
    ("serving.engine", "feature_arrays", "features"),
    ("serving.engine", "feature_matrix", "feature_matrix"),
    ("serving.engine", "db_rows_and_columns", "db_rows"),
    ("serving.engine", "Scorer._model_flags", "model_flags"),
    ("serving.engine", "S.hard_rule_reasons", "hard_rules"),
    ("serving.engine", "S.draw", "draw"),
    ("serving.engine", "HistoryCache.days_since_unit_complaint", "complaint_days"),
    ("serving.store.db", "Store.find_decisions", "db_find"),
    ("serving.store.db", "Store.upsert_orders", "db_upsert_orders"),
    ("serving.store.db", "Store.insert_decisions", "db_insert_decisions"),
    ("serving.store.db", "Store.cached_role_of", "auth"),
    ("serving.history", "IncrementalHistory.append", "history_append"),
    ("serving.history", "IncrementalHistory._compact_frames", "frame_merge"),
    ("models.reasons", "Reasoner.top", "reasons"),
    ("models.estimators", "RiskHead.predict_proba_matrix", "heads"),
    ("serving.routes.score", "_respond", "respond"),
    ("serving.engine", "Coalescer.submit_raw", "coalescer"),
]


# ---- server side -------------------------------------------------------------------------------
#: (phase, wall start, wall end, thread CPU seconds) per timed call
EVENTS: list[tuple[str, float, float, float]] = []


def _wrap(fn, name: str):
    import functools

    @functools.wraps(fn)
    def timed(*a, **k):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*a, **k)
        finally:
            EVENTS.append((name, t0, time.perf_counter(), time.thread_time() - c0))

    return timed


def _instrument() -> None:
    import importlib

    for mod, path, name in PHASES:
        obj = importlib.import_module(mod)
        *parents, attr = path.split(".")
        for p in parents:
            obj = getattr(obj, p)
        setattr(obj, attr, _wrap(getattr(obj, attr), name))

    from serving.store.db import Store

    orig = Store.transaction

    @contextlib.contextmanager
    def transaction(self, conn=None):
        cm = orig(self, conn)
        t0, c0 = time.perf_counter(), time.thread_time()
        value = cm.__enter__()
        EVENTS.append(("db_begin", t0, time.perf_counter(), time.thread_time() - c0))
        try:
            yield value
        except BaseException:
            if not cm.__exit__(*sys.exc_info()):
                raise
        else:
            t0, c0 = time.perf_counter(), time.thread_time()
            cm.__exit__(None, None, None)
            EVENTS.append(("db_commit", t0, time.perf_counter(), time.thread_time() - c0))

    Store.transaction = transaction

    gc_start: dict[int, float] = {}

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_start[threading.get_ident()] = time.perf_counter()
        else:
            t0 = gc_start.pop(threading.get_ident(), None)
            if t0 is not None:
                t1 = time.perf_counter()
                EVENTS.append((f"gc{info['generation']}", t0, t1, t1 - t0))

    gc.callbacks.append(on_gc)


def serve(port: int, model_dir: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn

    from pipelines.serve import _settings
    from serving.main import create_app

    _instrument()
    app = create_app(_settings(model_dir=Path(model_dir)))

    async def asgi(scope, receive, send):  # the server's whole time per request
        if scope["type"] == "http" and scope["path"] == "/__events":
            body = json.dumps(EVENTS).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        t0 = time.perf_counter()
        try:
            await app(scope, receive, send)
        finally:
            if scope["type"] == "http" and scope["path"] == "/v1/score":
                t1 = time.perf_counter()
                EVENTS.append(("server_total", t0, t1, t1 - t0))

    uvicorn.run(asgi, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---- client side -------------------------------------------------------------------------------
def drive(n: int, cpu: bool) -> None:
    import httpx
    import numpy as np

    from bench.bench_serving import cpu_seconds, free_port, fresh, payload, setup, wait_up

    model_dir, _, history, recent, env, keys = setup("profile_serving_")
    key = keys["system"]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", "--port", str(port), "--model-dir", str(model_dir)],
        env=env, cwd=ROOT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    windows = []
    try:
        wait_up(base + "/ready")
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as c:
            c.post("/v1/score", json={"orders": payload(history)}, timeout=300).raise_for_status()
            time.sleep(3.0)  # binned reasons (background) and the first rebuild
            rows = payload(fresh(recent, "-p"))
            cpu0, loop0 = cpu_seconds(server.pid), _thread_cpu(server.pid, server.pid)
            for i in range(n):
                o = rows[i % len(rows)] | {"order_id": f"{rows[i % len(rows)]['order_id']}-{i}"}
                t0 = time.perf_counter()
                c.post("/v1/score", json={"orders": [o]}).raise_for_status()
                windows.append((t0, time.perf_counter()))
            cpu_ms = 1000 * (cpu_seconds(server.pid) - cpu0) / n
            loop_ms = 1000 * (_thread_cpu(server.pid, server.pid) - loop0) / n
            events = c.get("/__events", timeout=60).json()
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"event-loop thread CPU per request: {loop_ms:.2f} ms (HTTP, routing, body parsing)")
    analyse(events, windows, cpu_ms, np, cpu)


def _thread_cpu(pid: int, tid: int) -> float:
    """User + system CPU seconds of one thread (Linux /proc)."""
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def analyse(events, windows, cpu_ms, np, cpu: bool) -> None:
    """Per phase and request: wall time (or, with ``cpu``, the calling thread's CPU time)."""
    starts = np.array([w[0] for w in windows])
    lat = np.array([(b - a) * 1000 for a, b in windows])
    n = len(windows)
    per: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(n))
    gap: dict[str, float] = defaultdict(float)
    for name, t0, t1, c in events:
        i = int(np.searchsorted(starts, t0, side="right")) - 1
        if i < 0:
            continue
        took = (c if cpu else t1 - t0) * 1000
        if t0 <= windows[i][1]:
            per[name][i] += took
        else:  # after the response, before the next request (e.g. the deferred append)
            gap[name] += took
            if i + 1 < n and t1 > windows[i + 1][0]:  # still running when the next came
                per[name + "(overlap)"][i + 1] += (t1 - windows[i + 1][0]) * 1000
    per["client_latency"] = lat
    print(f"server CPU per request: {cpu_ms:.2f} ms over {n} sequential requests")
    parts = {"early": slice(0, min(300, n)), "late": slice(max(n - 400, 0), n), "all": slice(0, n)}
    for label, sl in parts.items():
        print(f"\n== {label}: requests {sl.start}..{sl.stop - 1}")
        print(f"{'phase':>26} {'mean':>7} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'hits':>5}")
        for name in sorted(per, key=lambda k: -per[k][sl].mean()):
            v = per[name][sl]
            print(
                f"{name:>26} {v.mean():7.3f} {np.percentile(v, 50):7.3f} "
                f"{np.percentile(v, 90):7.3f} {np.percentile(v, 99):7.3f} {v.max():7.2f} "
                f"{int((v > 0).sum()):5d}"
            )
    print("\nbetween requests (ms per request):", {k: round(v / n, 3) for k, v in gap.items()})
    worst = np.argsort(lat)[-15:][::-1]
    med = {k: np.median(v) for k, v in per.items()}
    print("\nslowest requests: latency, then phases above their median (ms)")
    for i in worst:
        extra = sorted(
            ((per[k][i] - med[k], k) for k in per if k not in ("client_latency",)), reverse=True
        )[:5]
        print(f"#{i:5d} {lat[i]:6.2f}  " + ", ".join(f"{k} +{d:.2f}" for d, k in extra if d > 0.2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", nargs="?", default="drive", choices=["drive", "serve"])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--cpu", action="store_true", help="phases in thread CPU time, not wall")
    ap.add_argument("--port", type=int)
    ap.add_argument("--model-dir")
    a = ap.parse_args()
    if a.mode == "serve":
        serve(a.port, a.model_dir)
    else:
        drive(a.requests, a.cpu)


if __name__ == "__main__":
    main()
