#!/usr/bin/env python
# ruff: noqa: E741  (O, I: the orders frame and an index, as in the simulation notes)
"""Independent simulator of property-management repair work orders (物业报修工单).

Written from the data contract alone (``../shared/spec/order-data-contract.md``) by a helper who
had not read ``pipelines/simulator``: its latent process, seasonality, text and id formats are
its own, so ``bench/bench_forward.py --data DIR`` on its output measures how the models carry
to data the project was not built on (the situation of independently simulated contract
files). It writes ``orders.csv``, ``technicians.csv``, ``units.csv`` and
``ground_truth.parquet`` (``p_rework``: the exact probability of the contract's rework label;
``p_dissatisfied_if_labelled``). Do not tune the models to it either.

Usage::

    python bench/independent_sim.py --out /tmp/ind_d2 --seed 1 --units 32000 --rework-drift 2.0
    nice python bench/bench_forward.py --data /tmp/ind_d2 --until 2025-06-01

Process (per unit x category "fault chain", simulated sequentially in time):
  * background faults arrive as a non-homogeneous Poisson process with rate
        base_cat * exp(z_family(home) + structural terms) * season(cat, day) * dow * holiday
        * hour-profile
  * each order is dispatched, attended, repaired (latent technician skill, load, rushing, parts...)
  * after completion the repair fails with latent probability p_fail; a failed repair produces a
    repeat report at activity-clock delay L ~ LogNormal(mu_cat, SIG_REP) (activity clock advances
    exactly one unit per calendar day, so P(repeat within 30 days) = F_L(30) exactly).  If a
    background fault arrives before the repeat, the new visit absorbs the pending failure.
  * 30 % of repeats carry parent_order_id.
  * cancelled reports (independent Poisson stream, plus duplicates) never count.
p_rework is computed analytically from this process (see compute_p_rework).
"""

import argparse
import math
import os
import random
import time

import numpy as np
import pandas as pd
from scipy.special import expit, ndtr

# the contract's categories, written out on purpose rather than imported from models.schemas:
# the simulator follows the contract, not the project's reading of it
CATS = [
    "plumbing",
    "electrical",
    "hvac",
    "fire_safety",
    "door_window",
    "waterproofing",
    "wall_floor",
    "elevator",
    "public_facility",
    "other",
]
CI = {c: i for i, c in enumerate(CATS)}
NC = len(CATS)
# category family used for a unit's latent proneness:
# 0 water, 1 electro-mechanical, 2 structure, 3 misc
FAM = np.array([0, 1, 1, 3, 2, 0, 2, 1, 2, 3])

# indoor background rates (non-cancelled reports / home / day at average season & proneness)
INDOOR_RATE = {
    "plumbing": 0.00095,
    "electrical": 0.00058,
    "hvac": 0.00034,
    "fire_safety": 0.00004,
    "door_window": 0.00048,
    "waterproofing": 0.00019,
    "wall_floor": 0.00033,
    "other": 0.00028,
}
PUBLIC_RATE = {
    "core": {
        "elevator": 0.0055,
        "fire_safety": 0.0018,
        "electrical": 0.0035,
        "door_window": 0.0035,
        "waterproofing": 0.0009,
        "wall_floor": 0.0008,
        "public_facility": 0.0008,
    },
    "ground": {
        "public_facility": 0.009,
        "plumbing": 0.0028,
        "electrical": 0.0035,
        "wall_floor": 0.0018,
        "other": 0.0025,
        "fire_safety": 0.0009,
    },
    "garage": {
        "electrical": 0.0035,
        "fire_safety": 0.0025,
        "waterproofing": 0.0018,
        "door_window": 0.0025,
        "public_facility": 0.0035,
    },
}
CANCEL_RATIO = 0.065  # cancelled background reports per non-cancelled one
DUP_PROB = 0.03  # duplicate (cancelled) report right after a real one
LINK_PROB = 0.30  # repeats naming their parent
SIG_REP = 0.85  # log-sd of repeat delay (activity days)
MU_REP = np.log(
    np.array([8.0, 6.0, 9.0, 7.0, 9.0, 14.0, 12.0, 5.0, 8.0, 8.0])
)  # median delay by category
WINDOW = 30.0

PFAIL_CAT = np.array([0.15, 0.0, 0.3, -0.3, -0.2, 0.9, 0.3, 0.35, 0.0, -0.4])
SEV_CAT = np.array([0.0, -0.1, 0.1, -0.4, -0.2, 0.4, 0.0, 0.2, -0.2, -0.6])
PARTS_CAT = np.array([0.2, -0.2, 0.1, -0.3, 0.0, 0.6, 0.3, 0.2, 0.0, -0.8])
REPAIR_H = np.array([1.0, 0.8, 1.5, 0.7, 1.0, 3.5, 3.0, 1.8, 1.2, 0.7])
PARTS_COST = np.array([60, 40, 220, 50, 80, 500, 300, 150, 100, 30], dtype=float)
PARTS_MATTER = np.isin(
    np.arange(NC), [CI["plumbing"], CI["electrical"], CI["hvac"], CI["door_window"], CI["elevator"]]
)
EMERG_CATS = np.isin(
    np.arange(NC),
    [CI["plumbing"], CI["electrical"], CI["elevator"], CI["fire_safety"], CI["waterproofing"]],
)
SLA_H = np.array([24.0, 4.0, 1.0])  # arrival SLA for normal / urgent / emergency
PRI_NAMES = np.array(["normal", "urgent", "emergency"])

HOUR_IN = np.array(
    [
        0.25,
        0.15,
        0.1,
        0.1,
        0.1,
        0.15,
        0.35,
        0.8,
        1.3,
        1.6,
        1.6,
        1.5,
        1.2,
        1.1,
        1.3,
        1.4,
        1.4,
        1.4,
        1.5,
        1.7,
        1.7,
        1.4,
        1.0,
        0.6,
    ]
)
HOUR_PUB = np.array(
    [0.1] * 6
    + [0.3, 0.8, 2.0, 2.2, 2.0, 1.5, 1.0, 1.6, 2.0, 1.8, 1.4, 0.9, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
)
SPRING = {
    2023: "2023-01-22",
    2024: "2024-02-10",
    2025: "2025-01-29",
    2026: "2026-02-17",
    2027: "2027-02-06",
    2028: "2028-01-26",
}


def circ_bump(doy, center, width):
    d = np.abs(doy - center)
    d = np.minimum(d, 365.25 - d)
    return np.exp(-0.5 * (d / width) ** 2)


def season_log(cat, doy):
    b = circ_bump
    s = np.zeros_like(doy, dtype=float)
    if cat == "plumbing":
        s += 0.25 * b(doy, 176, 30) + 0.2 * b(doy, 15, 20)
    elif cat == "waterproofing":
        s += 1.0 * b(doy, 171, 32) + 0.45 * b(doy, 232, 22) - 0.35 * b(doy, 10, 45)
    elif cat == "hvac":
        s += (
            1.0 * b(doy, 205, 24)
            + 0.6 * b(doy, 8, 22)
            - 0.5 * b(doy, 110, 25)
            - 0.5 * b(doy, 295, 25)
        )
    elif cat == "electrical":
        s += 0.3 * b(doy, 205, 30) + 0.15 * b(doy, 15, 25)
    elif cat == "elevator":
        s += 0.15 * b(doy, 205, 35)
    elif cat == "wall_floor":
        s += 0.2 * b(doy, 180, 40)
    return s


class Calendar:
    def __init__(self, start, T, extra_days=70):
        self.start = start
        self.T = T
        self.nd = int(math.ceil(T)) + extra_days
        days = pd.date_range(start.normalize(), periods=self.nd, freq="D")
        self.doy = days.day_of_year.values.astype(float)
        self.dow = days.day_of_week.values
        hol_in = np.ones(self.nd)
        hol_pub = np.ones(self.nd)
        self.holiday = np.zeros(self.nd, bool)
        for y in range(days[0].year, days[-1].year + 1):
            sf = pd.Timestamp(SPRING.get(y, f"{y}-02-05"))
            m = (days >= sf - pd.Timedelta(days=2)) & (days <= sf + pd.Timedelta(days=6))
            hol_in[m] = 0.6
            hol_pub[m] = 0.5
            self.holiday |= m
            nd = (days >= pd.Timestamp(f"{y}-10-01")) & (days <= pd.Timestamp(f"{y}-10-07"))
            hol_in[nd] = 0.85
            hol_pub[nd] = 0.6
            self.holiday |= nd
        dow_in = np.where(self.dow >= 5, 1.12, 0.96)
        dow_pub = np.where(self.dow >= 5, 0.75, 1.1)
        self.day_in = hol_in * dow_in
        self.day_pub = hol_pub * dow_pub
        self.w_in = HOUR_IN / HOUR_IN.mean()
        self.w_pub = HOUR_PUB / HOUR_PUB.mean()
        self.nslot = self.nd * 24
        self.grid = np.arange(self.nslot + 1) / 24.0  # days
        # activity clocks (one unit per day exactly)
        self.A = {}
        for pub, w in ((0, self.w_in), (1, self.w_pub)):
            inc = np.tile(w / 24.0, self.nd)
            self.A[pub] = np.concatenate([[0.0], np.cumsum(inc)])
        # cumulative hazards per (cat, pub)
        self.H = np.zeros((NC * 2, self.nslot + 1))
        for c, cat in enumerate(CATS):
            sl = season_log(cat, self.doy)
            m = np.exp(sl)
            ref = np.exp(season_log(cat, np.arange(1, 366, dtype=float))).mean()
            m = m / ref
            for pub in (0, 1):
                day = self.day_in if pub == 0 else self.day_pub
                w = self.w_in if pub == 0 else self.w_pub
                inc = (np.repeat(m * day, 24) * np.tile(w, self.nd)) / 24.0
                self.H[c * 2 + pub] = np.concatenate([[0.0], np.cumsum(inc)])
        self.Hend = self.H[:, -1]

    def Hat(self, key, t):
        return np.interp(t, self.grid, self.H[key])

    def Hinv(self, key, h):
        out = np.interp(h, self.H[key], self.grid)
        return np.where(h >= self.H[key][-1], np.inf, out)

    def Aat(self, pub, t):
        return np.interp(t, self.grid, self.A[pub])

    def Ainv(self, pub, a):
        out = np.interp(a, self.A[pub], self.grid)
        return np.where(a >= self.A[pub][-1], np.inf, out)


def build_world(rng, n_units, start, cal):
    W = {}
    n_comm = int(np.clip(round(n_units / 800), 20, 60))
    sizes = rng.dirichlet(np.full(n_comm, 2.0)) * n_units
    sizes = np.maximum(sizes, 40)
    sizes = np.round(sizes / sizes.sum() * n_units).astype(int)
    sizes[-1] += n_units - sizes.sum()
    if sizes[-1] < 10:
        sizes[-1] = 10
    comm_year = np.clip(np.round(2024 - rng.gamma(2.2, 5.5, n_comm)), 1988, start.year - 1).astype(
        int
    )
    comm_q = rng.normal(0, 0.45, n_comm) + 0.012 * (comm_year - 2010)
    comm_ids = np.array([f"XQ{ci + 101:03d}" for ci in range(n_comm)])
    # ---- homes & buildings
    h_comm, h_bld, h_floor, h_room, h_year, h_top, h_area = [], [], [], [], [], [], []
    bld_comm, bld_no, bld_year = [], [], []
    for ci in range(n_comm):
        n = sizes[ci]
        got = 0
        b = 0
        while got < n:
            b += 1
            year = comm_year[ci] + int(rng.integers(0, 4))
            year = min(year, start.year - 1)
            if comm_year[ci] < 2004:
                F = int(rng.choice([5, 6, 7]))
                per = int(rng.choice([4, 6]))
            else:
                F = int(rng.choice([11, 18, 26, 32]))
                per = int(rng.choice([2, 4, 4, 6]))
            k = min(F * per, n - got)
            fl = np.repeat(np.arange(1, F + 1), per)[:k]
            rm = np.tile(np.arange(1, per + 1), F)[:k]
            h_comm.append(np.full(k, ci))
            h_bld.append(np.full(k, b))
            h_floor.append(fl)
            h_room.append(rm)
            h_year.append(np.full(k, year))
            h_top.append(fl == F)
            base_area = 78 if comm_year[ci] < 2004 else 98
            h_area.append(np.round(np.exp(rng.normal(np.log(base_area), 0.28, k)), 1))
            bld_comm.append(ci)
            bld_no.append(b)
            bld_year.append(year)
            got += k
    H = dict(
        comm=np.concatenate(h_comm),
        bld=np.concatenate(h_bld),
        floor=np.concatenate(h_floor),
        room=np.concatenate(h_room),
        year=np.concatenate(h_year),
        top=np.concatenate(h_top),
        area=np.concatenate(h_area),
    )
    nh = len(H["comm"])
    H["unit_id"] = np.array(
        [
            f"H{c + 101:03d}-{b:02d}-{f:02d}{r:02d}"
            for c, b, f, r in zip(H["comm"], H["bld"], H["floor"], H["room"], strict=False)
        ]
    )
    # latent proneness per family: general home factor + family specific
    g = rng.normal(0, 0.45, nh)
    H["z"] = g[:, None] + rng.normal(0, 0.65, (nh, 4))
    # ---- public locations
    p_comm, p_type, p_bld, p_year, p_uid = [], [], [], [], []
    for ci, b, y in zip(bld_comm, bld_no, bld_year, strict=False):
        p_comm.append(ci)
        p_type.append("core")
        p_bld.append(b)
        p_year.append(y)
        p_uid.append(f"P{ci + 101:03d}-{b:02d}-CORE")
    for ci in range(n_comm):
        ng = 1 + int(sizes[ci] > 600) + int(sizes[ci] > 1500)
        for j in range(ng):
            p_comm.append(ci)
            p_type.append("ground")
            p_bld.append(0)
            p_year.append(comm_year[ci])
            p_uid.append(f"P{ci + 101:03d}-G{j + 1}")
        if comm_year[ci] >= 2004:
            p_comm.append(ci)
            p_type.append("garage")
            p_bld.append(0)
            p_year.append(comm_year[ci])
            p_uid.append(f"P{ci + 101:03d}-K1")
    P = dict(
        comm=np.array(p_comm),
        type=np.array(p_type),
        bld=np.array(p_bld),
        year=np.array(p_year),
        unit_id=np.array(p_uid),
    )
    npub = len(P["comm"])
    P["z"] = rng.normal(0, 0.55, (npub, 1)) + rng.normal(0, 0.45, (npub, 4))
    # ---- residents
    nres_h = rng.choice([1, 2, 3], size=nh, p=[0.5, 0.35, 0.15])
    res_start = np.concatenate([[0], np.cumsum(nres_h)[:-1]])
    nr = int(nres_h.sum())
    R = dict(
        home=np.repeat(np.arange(nh), nres_h),
        tau=rng.normal(0, 1, nr),
        resp=rng.normal(0, 1.0, nr),
        gen=rng.normal(0, 0.7, nr),
        old=rng.random(nr) < 0.3,
    )
    R["comm"] = H["comm"][R["home"]]
    ids = rng.choice(9_000_000, size=nr, replace=False) + 1_000_000
    R["rid"] = np.array([f"YZ{i}" for i in ids])
    H["res_start"] = res_start
    H["res_n"] = nres_h
    comm_res_start = np.searchsorted(R["comm"], np.arange(n_comm))
    comm_res_n = np.bincount(R["comm"], minlength=n_comm)
    # ---- teams & technicians
    n_team = int(np.clip(round(n_comm / 3.5), 6, 16))
    comm_team = rng.permutation(np.arange(n_comm) % n_team)
    team_homes = np.bincount(comm_team, weights=sizes, minlength=n_team)
    tech_per_team = np.maximum(3, np.round(team_homes / 280)).astype(int)
    teams = [f"维修{i + 1}组" for i in range(n_team)]
    sub_specs = [
        ("外包-电梯", "elevator", max(4, n_units // 5000)),
        ("外包-防水", "waterproofing", max(4, n_units // 5000)),
        ("外包-空调", "hvac", max(4, n_units // 5000)),
        ("外包-综合", None, max(5, n_units // 3000)),
    ]
    T_team, T_sub, T_spec = [], [], []
    for i in range(n_team):
        T_team += [i] * tech_per_team[i]
        T_sub += [False] * tech_per_team[i]
        T_spec += [-1] * tech_per_team[i]
    for j, (name, spec, k) in enumerate(sub_specs):
        teams.append(name)
        T_team += [n_team + j] * k
        T_sub += [True] * k
        T_spec += [CI[spec] if spec else -1] * k
    T_team = np.array(T_team)
    T_sub = np.array(T_sub)
    T_spec = np.array(T_spec)
    nt = len(T_team)
    tenure = np.clip(rng.exponential(4.5, nt), 0.2, 22)
    late = rng.random(nt) < 0.12  # hired during the data period
    hire_t = np.where(late, rng.uniform(0, min(cal.T * 0.75, 540), nt), -tenure * 365.25)
    skill = (
        rng.normal(0, 0.6, nt)
        + 0.3 * (np.log1p(np.maximum(-hire_t, 30) / 365.25) - 1.4)
        - 0.35 * ((T_sub) & (T_spec < 0))
    )
    manner = rng.normal(0, 0.6, nt)
    cert = np.zeros((nt, NC), bool)
    base_cp = {
        "plumbing": 0.6,
        "electrical": 0.55,
        "hvac": 0.22,
        "fire_safety": 0.2,
        "door_window": 0.4,
        "waterproofing": 0.12,
        "wall_floor": 0.35,
        "elevator": 0.0,
        "public_facility": 0.3,
        "other": 0.3,
    }
    for c, cat in enumerate(CATS):
        p = expit(np.log(max(base_cp[cat], 1e-3) / (1 - base_cp[cat] + 1e-9)) + 0.8 * skill)
        p = np.where(T_sub & (T_spec < 0), 0.25, p)
        cert[:, c] = rng.random(nt) < p
    for k in range(nt):
        if T_spec[k] >= 0:
            cert[k, T_spec[k]] = rng.random() < 0.92
            if T_spec[k] == CI["elevator"]:
                cert[k, CI["electrical"]] = rng.random() < 0.5
            if T_spec[k] == CI["hvac"]:
                cert[k, CI["electrical"]] = rng.random() < 0.6
            if T_spec[k] == CI["waterproofing"]:
                cert[k, CI["wall_floor"]] = rng.random() < 0.5
    pref = rng.normal(0, 0.3, nt)
    M = max(np.bincount(T_team))
    members = -np.ones((len(teams), M), int)
    for ti in range(len(teams)):
        mm = np.nonzero(T_team == ti)[0]
        members[ti, : len(mm)] = mm
    hire_dates = (cal.start + pd.to_timedelta(np.round(hire_t), "D")).strftime("%Y-%m-%d")
    Tch = dict(
        team=T_team,
        sub=T_sub,
        spec=T_spec,
        hire_t=hire_t,
        skill=skill,
        manner=manner,
        cert=cert,
        pref=pref,
        members=members,
        names=teams,
        hire_date=np.array(hire_dates),
        tid=np.array([f"WX{k + 1:04d}" for k in range(nt)]),
    )
    # ---- team load (latent): seasonal demand + AR(1) staffing shocks + holidays
    nd = cal.nd
    dem = np.zeros(nd)
    for cat, r in INDOOR_RATE.items():
        dem += r * np.exp(season_log(cat, cal.doy))
    ldem = np.log(dem)
    ldem = (ldem - ldem.mean()) / (ldem.std() + 1e-9)
    load = np.zeros((len(teams), nd))
    for ti in range(len(teams)):
        ar = np.zeros(nd)
        e = rng.normal(0, 0.13, nd)
        ar[0] = rng.normal(0, 0.3)
        for d in range(1, nd):
            ar[d] = 0.93 * ar[d - 1] + e[d]
        load[ti] = 0.35 * ldem + ar + rng.normal(0, 0.25) + 0.5 * cal.holiday
    W.update(
        n_comm=n_comm,
        comm_ids=comm_ids,
        comm_year=comm_year,
        comm_q=comm_q,
        comm_team=comm_team,
        H=H,
        P=P,
        R=R,
        Tch=Tch,
        load=load,
        comm_res_start=comm_res_start,
        comm_res_n=comm_res_n,
        n_team=n_team,
    )
    # ---- fault chains
    ci_list, unit_list, pub_list, rate_list = [], [], [], []
    for cat, r in INDOOR_RATE.items():
        c = CI[cat]
        zf = H["z"][:, FAM[c]]
        age = start.year - H["year"]
        struct = 0.0
        if cat in ("plumbing", "electrical", "waterproofing", "wall_floor"):
            struct = struct + 0.025 * (age - 12)
        if cat in ("door_window", "wall_floor"):
            struct = struct + 0.45 * (age <= 3)
        if cat == "waterproofing":
            struct = struct + 1.0 * H["top"] + 0.3 * (H["floor"] <= 1)
        if cat == "plumbing":
            struct = struct + 0.35 * (H["floor"] <= 2)
        struct = struct - 0.2 * comm_q[H["comm"]]
        rate = r * np.exp(zf - 0.5 * (0.45**2 + 0.65**2) + struct)
        ci_list.append(np.full(nh, c))
        unit_list.append(np.arange(nh))
        pub_list.append(np.zeros(nh, int))
        rate_list.append(rate)
    for k in range(npub):
        ty = P["type"][k]
        age = start.year - P["year"][k]
        for cat, r in PUBLIC_RATE[ty].items():
            c = CI[cat]
            rate = r * np.exp(
                P["z"][k, FAM[c]]
                - 0.5 * (0.55**2 + 0.45**2)
                + 0.02 * (age - 12)
                - 0.2 * comm_q[P["comm"][k]]
            )
            ci_list.append(np.array([c]))
            unit_list.append(np.array([k]))
            pub_list.append(np.array([1]))
            rate_list.append(np.array([rate]))
    W["ch_cat"] = np.concatenate(ci_list)
    W["ch_unit"] = np.concatenate(unit_list)
    W["ch_pub"] = np.concatenate(pub_list)
    W["ch_rate"] = np.concatenate(rate_list)
    W["ch_key"] = W["ch_cat"] * 2 + W["ch_pub"]
    W["ch_comm"] = np.where(
        W["ch_pub"] == 1,
        P["comm"][np.where(W["ch_pub"] == 1, W["ch_unit"], 0)],
        H["comm"][np.where(W["ch_pub"] == 0, W["ch_unit"], 0)],
    )
    W["ch_z"] = np.where(
        W["ch_pub"] == 1,
        P["z"][np.where(W["ch_pub"] == 1, W["ch_unit"], 0), FAM[W["ch_cat"]]],
        H["z"][np.where(W["ch_pub"] == 0, W["ch_unit"], 0), FAM[W["ch_cat"]]],
    )
    W["ch_year"] = np.where(
        W["ch_pub"] == 1,
        P["year"][np.where(W["ch_pub"] == 1, W["ch_unit"], 0)],
        H["year"][np.where(W["ch_pub"] == 0, W["ch_unit"], 0)],
    )
    return W


def next_background(cal, keys, rates, t0, rng):
    """first non-cancelled background arrival after t0 (inf if beyond grid)."""
    out = np.empty(len(keys))
    E = rng.exponential(size=len(keys))
    for k in np.unique(keys):
        m = keys == k
        h0 = cal.Hat(k, t0[m])
        out[m] = cal.Hinv(k, h0 + E[m] / rates[m])
    return out


def local_hour(t):
    return np.floor((t * 24.0) % 24.0)


def next_morning(t, hour, jitter):
    """time of the next local `hour` o'clock after t (same day if before)."""
    day = np.floor(t)
    cand = day + hour / 24.0
    cand = np.where(cand <= t, cand + 1.0, cand)
    return cand + jitter


def make_orders(W, cal, rng, ch, t_rep, is_rep, drift):
    """simulate one order for each chain in ch reported at t_rep. returns dict of arrays."""
    n = len(ch)
    H, _P, R, Tch = W["H"], W["P"], W["R"], W["Tch"]
    cat = W["ch_cat"][ch]
    pub = W["ch_pub"][ch]
    unit = W["ch_unit"][ch]
    comm = W["ch_comm"][ch]
    z = W["ch_z"][ch]
    q = W["comm_q"][comm]
    age = (cal.start.year + t_rep / 365.25) - W["ch_year"][ch]
    day = np.minimum(np.floor(t_rep).astype(int), cal.nd - 1)
    hour = local_hour(t_rep)
    night = (hour >= 22) | (hour < 7)
    # reporter
    patrol = (pub == 1) & (rng.random(n) < 0.6)
    u = rng.random(n)
    hres = H["res_start"][np.where(pub == 0, unit, 0)] + np.floor(
        u * H["res_n"][np.where(pub == 0, unit, 0)]
    ).astype(int)
    cres = W["comm_res_start"][comm] + np.floor(u * W["comm_res_n"][comm]).astype(int)
    res = np.where(pub == 0, hres, cres)
    res = np.where(patrol, -1, res)
    rr = np.where(res >= 0, res, 0)
    tau = np.where(res >= 0, R["tau"][rr], 0.0)
    old = R["old"][rr]
    # channel
    uu = rng.random(n)
    ch_old = np.array(["phone", "walk_in", "wechat", "app"])
    cp_old = np.cumsum([0.45, 0.25, 0.2, 0.1])
    ch_yng = np.array(["app", "wechat", "phone", "walk_in"])
    cp_yng = np.cumsum([0.5, 0.3, 0.17, 0.03])
    chan = np.where(
        old,
        ch_old[np.searchsorted(cp_old, uu * 0.99999)],
        ch_yng[np.searchsorted(cp_yng, uu * 0.99999)],
    )
    chan = np.where(patrol, "patrol", chan)
    # severity
    s_star = SEV_CAT[cat] + 0.35 * z + 0.45 * is_rep + rng.logistic(size=n)
    sev = (s_star > 0.3).astype(int) + (s_star > 2.0).astype(int)
    # priority
    u1, u2, u3 = rng.random(n), rng.random(n), rng.random(n)
    emer = (sev == 2) & ((EMERG_CATS[cat] & (u1 < 0.75)) | (u1 < 0.2))
    urg = ~emer & (
        ((sev >= 1) & (u2 < 0.45 + 0.2 * night)) | (sev == 2) | ((tau > 1.2) & (u3 < 0.25))
    )
    pri = np.where(emer, 2, np.where(urg, 1, 0))
    sla = SLA_H[pri]
    # team
    team = W["comm_team"][comm].copy()
    nt_in = W["n_team"]
    ut = rng.random(n)
    lo = W["load"][team, day]
    team = np.where((cat == CI["elevator"]) & (ut < 0.9), nt_in + 0, team)
    team = np.where((cat == CI["waterproofing"]) & (ut < 0.55), nt_in + 1, team)
    team = np.where((cat == CI["hvac"]) & (ut < 0.4), nt_in + 2, team)
    gen_sub = ~np.isin(cat, [CI["elevator"], CI["waterproofing"], CI["hvac"]]) & (
        ut < 0.05 + 0.1 * (lo > 0.8)
    )
    team = np.where(gen_sub, nt_in + 3, team)
    lo = W["load"][team, day]
    # technician: gumbel-max over team members
    mem = Tch["members"][team]  # n x M
    valid = mem >= 0
    mm = np.where(valid, mem, 0)
    logit = Tch["pref"][mm] + 1.4 * Tch["cert"][mm, cat[:, None]]
    active = Tch["hire_t"][mm] <= t_rep[:, None]
    logit = np.where(valid & active, logit, np.where(valid, -50.0, -np.inf))
    logit = logit + rng.gumbel(size=logit.shape)
    tech = mm[np.arange(n), np.argmax(logit, axis=1)]
    skill = Tch["skill"][tech]
    sub = Tch["sub"][tech]
    cert = Tch["cert"][tech, cat]
    manner = Tch["manner"][tech]
    # dispatch
    med_d = np.array([1.5, 0.4, 0.1])[pri]
    dd = med_d * np.exp(0.8 * rng.normal(size=n) + 0.45 * lo - 0.25 * q) / 24.0
    t_dis = np.where(night & (pri == 0), next_morning(t_rep, 8, 0.5 * dd), t_rep + dd)
    # arrival
    med_a = np.array([6.0, 1.8, 0.6])[pri]
    ad = (
        med_a
        * np.exp(0.9 * rng.normal(size=n) + 0.35 * lo - 0.2 * q)
        * np.where(sub, 1.4, 1.0)
        / 24.0
    )
    t_arr = t_dis + ad
    ah = local_hour(t_arr)
    odd = (pri == 0) & ((ah < 8) | (ah >= 20))
    t_arr = np.where(odd, next_morning(t_arr, 9, rng.uniform(0, 3, n) / 24.0), t_arr)
    appt = (pri == 0) & (pub == 0) & (rng.random(n) < 0.25)
    t_arr = t_arr + np.where(appt, rng.integers(1, 3, n), 0)
    # repair
    eps = rng.normal(0, 0.45, n)
    dur_h = REPAIR_H[cat] * np.array([1.0, 1.7, 3.0])[sev] * np.exp(-0.1 * skill - 0.2 * lo + eps)
    parts = rng.random(n) < expit(PARTS_CAT[cat] + 0.9 * sev - 0.6)
    stage = (
        np.isin(cat, [CI["waterproofing"], CI["wall_floor"]]) & (sev >= 1) & (rng.random(n) < 0.5)
    )
    extra = np.where(stage, rng.uniform(1, 5, n), 0.0)
    pwait = parts & (rng.random(n) < 0.2)
    extra += np.where(pwait, rng.uniform(0.5, 3, n), 0.0)
    t_comp = t_arr + dur_h / 24.0 + extra
    # paid / cost
    warranty = age <= 2.0
    pp = np.where(parts, 0.65, 0.12) * np.where(cat == CI["waterproofing"], 0.45, 1.0)
    paid = (pub == 0) & ~warranty & (rng.random(n) < pp)
    cost = np.where(
        paid,
        np.round(
            rng.choice([30, 40, 50, 60, 80, 100], n)
            + parts * PARTS_COST[cat] * np.exp(rng.normal(0, 0.6, n))
        ),
        0.0,
    )
    # urge
    wait_h = (t_arr - t_rep) * 24.0
    ratio = wait_h / sla
    lam = 0.05 + 0.45 * np.maximum(ratio - 0.7, 0) ** 0.8 * np.exp(0.35 * tau) + 0.25 * extra
    urge = np.minimum(rng.poisson(np.where(patrol, 0.0, lam)), 15)
    # ---- latent repair failure
    frac_t = np.clip(t_comp / cal.T, 0, 1)
    lf = (
        -3.8
        + PFAIL_CAT[cat]
        + 0.6 * z
        + 0.5 * sev
        - 0.55 * skill
        + 0.5 * (~cert)
        + 0.25 * sub
        + 0.3 * lo
        - 0.6 * eps
        - 0.3 * (parts & PARTS_MATTER[cat])
        + 0.5 * ((sev == 2) & ~parts)
        + 0.5 * is_rep
        - 0.3 * q
        + 0.02 * (age - 12)
        + drift * frac_t
    )
    p_fail = expit(lf)
    p_fail_nd = expit(
        lf - drift * frac_t
    )  # residents judge workmanship; drift kept out of dissatisfaction
    fail = rng.random(n) < p_fail
    Lrep = np.exp(MU_REP[cat] + SIG_REP * rng.normal(size=n))
    link = rng.random(n) < LINK_PROB
    # ---- dissatisfaction
    ld = (
        -3.8
        + 0.75 * np.log1p(ratio)
        + 0.3 * urge
        + 0.9 * is_rep
        + 0.3 * sev
        + 0.7 * tau
        - 0.55 * manner
        - 0.3 * skill
        + 0.35 * paid
        + 0.5 * (cost > 200)
        + 4.0 * (p_fail_nd - 0.08)
        + 0.25 * extra
        - 0.35 * q
        + 0.3 * sub
    )
    p_dis = expit(ld)
    D = rng.random(n) < p_dis
    resp = np.where(res >= 0, R["resp"][rr], -9.0)
    ch_eff = (
        pd.Series(chan)
        .map({"app": 0.4, "wechat": 0.3, "phone": 0.0, "walk_in": -0.3, "patrol": -9.0})
        .values
    )
    r_ans = np.where(patrol, 0.0, expit(0.2 + 0.9 * resp + ch_eff))
    q_c = np.where(patrol, 0.0, expit(-1.0 + 0.7 * tau + 0.25 * urge))
    t_fu = t_comp + rng.uniform(0.5, 3.0, n)
    fu_ok = t_fu <= cal.T
    ans = fu_ok & (rng.random(n) < r_ans)
    comp = fu_ok & D & (rng.random(n) < q_c)
    pl1 = q_c + (1 - q_c) * r_ans
    pl0 = r_ans
    den = p_dis * pl1 + (1 - p_dis) * pl0
    p_dis_lab = np.where(den > 0, p_dis * pl1 / np.maximum(den, 1e-12), p_dis)
    # ratings
    ur = rng.random(n)
    gen = np.where(res >= 0, R["gen"][rr], 0.0)
    p5 = expit(1.3 - 0.6 * tau + gen)
    r_ok = np.where(rng.random(n) < p5, 5, np.where(rng.random(n) < 0.75, 4, 3))
    r_bad = np.where(ur < 0.55, 1, 2)
    r_cmp = np.where(ur < 0.55, 1, np.where(ur < 0.85, 2, 3))
    rating = np.where(D, np.where(comp, r_cmp, r_bad), r_ok)
    rating = np.where(ans, rating, 0)
    return dict(
        chain=ch,
        cat=cat,
        pub=pub,
        unit=unit,
        comm=comm,
        z=z,
        t_rep=t_rep,
        t_dis=t_dis,
        t_arr=t_arr,
        t_comp=t_comp,
        is_rep=is_rep,
        res=res,
        tau=tau,
        chan=chan,
        sev=sev,
        pri=pri,
        night=night,
        tech=tech,
        team=team,
        skill=skill,
        cert=cert,
        sub=sub,
        lo=lo,
        eps=eps,
        parts=parts,
        paid=paid,
        cost=cost,
        urge=urge,
        extra=extra,
        p_fail=p_fail,
        fail=fail,
        Lrep=Lrep,
        link=link,
        p_dis=p_dis,
        p_dis_lab=p_dis_lab,
        D=D,
        ans=ans,
        comp=comp,
        rating=rating,
        age=age,
        ratio=ratio,
        manner=manner,
        fu_ok=fu_ok,
        patrol=patrol,
    )


def compute_p_rework(cal, W, O, K=96):
    """exact P(contract rework label = 1 | latent state at completion) for completed orders."""
    n = len(O["t_comp"])
    out = np.full(n, np.nan)
    done = O["t_comp"] <= cal.T
    idx = np.nonzero(done)[0]
    ch = O["chain"][idx]
    key = W["ch_key"][ch]
    rate = W["ch_rate"][ch]
    pub = W["ch_pub"][ch]
    cat = W["ch_cat"][ch]
    c = O["t_comp"][idx]
    p = O["p_fail"][idx]
    lam30 = np.empty(len(idx))
    for k in np.unique(key):
        m = key == k
        lam30[m] = rate[m] * (cal.Hat(k, c[m] + WINDOW) - cal.Hat(k, c[m]))
    B30 = np.exp(-lam30)
    mu = MU_REP[cat]
    S30 = 1.0 - ndtr((np.log(WINDOW) - mu) / SIG_REP)
    # I = E[ 1{L>30} 1{R(L)<=T} exp(-Lambda(c+30, R(L))) ], quadrature in x = log L
    I = np.zeros(len(idx))
    x0 = np.log(WINDOW)
    for cc in np.unique(cat):
        mcat = cat == cc
        xs = np.linspace(x0, MU_REP[cc] + 7 * SIG_REP, K)
        wts = np.exp(-0.5 * ((xs - MU_REP[cc]) / SIG_REP) ** 2) / (SIG_REP * np.sqrt(2 * np.pi))
        wts = wts * np.gradient(xs)
        wts[0] *= 0.5
        wts[-1] *= 0.5
        wts *= S30[mcat][0] / wts.sum() if wts.sum() > 0 else 1.0
        Lg = np.exp(xs)
        for pb in (0, 1):
            for k in np.unique(key[mcat & (pub == pb)]):
                m = np.nonzero(mcat & (pub == pb) & (key == k))[0]
                for s in range(0, len(m), 20000):
                    mi = m[s : s + 20000]
                    A0 = cal.Aat(pb, c[mi])
                    Rt = cal.Ainv(pb, A0[:, None] + Lg[None, :])
                    obs = Rt <= cal.T
                    Rc = np.where(obs, Rt, cal.T)
                    h30 = cal.Hat(k, c[mi] + WINDOW)
                    hR = cal.Hat(k, Rc.ravel()).reshape(Rc.shape)
                    surv = np.exp(-rate[mi][:, None] * np.maximum(hR - h30[:, None], 0.0))
                    I[mi] = (obs * surv) @ wts
    P0 = B30 * ((1 - p) + p * (S30 - LINK_PROB * I))
    out[idx] = 1.0 - P0
    return out


def simulate(args):
    t0 = time.time()
    rng = np.random.default_rng(args.seed)
    start = pd.Timestamp(args.start)
    end = start + pd.DateOffset(months=args.months)
    T = (end - start).total_seconds() / 86400.0
    cal = Calendar(start, T)
    W = build_world(rng, args.units, start, cal)
    nch = len(W["ch_cat"])
    t_idle = np.zeros(nch)
    r_time = np.full(nch, np.inf)
    r_parent = np.full(nch, -1)
    r_link = np.zeros(nch, bool)
    n_prev = np.zeros(nch, int)
    alive = np.ones(nch, bool)
    batches = []
    n_ord = 0
    it = 0
    while alive.any():
        it += 1
        idx = np.nonzero(alive)[0]
        t_bg = next_background(cal, W["ch_key"][idx], W["ch_rate"][idx], t_idle[idx], rng)
        rep = r_time[idx] < t_bg
        t_next = np.where(rep, r_time[idx], t_bg)
        ok = t_next <= T
        alive[idx[~ok]] = False
        idx, t_next, rep = idx[ok], t_next[ok], rep[ok]
        if len(idx) == 0:
            break
        O = make_orders(W, cal, rng, idx, t_next, rep, args.rework_drift)
        O["gid"] = n_ord + np.arange(len(idx))
        O["parent"] = np.where(rep & r_link[idx], r_parent[idx], -1)
        O["n_prev"] = n_prev[idx].copy()
        n_ord += len(idx)
        batches.append(O)
        fin = O["t_comp"] <= T
        alive[idx[~fin]] = False
        # next state
        pubs = W["ch_pub"][idx]
        rt = np.full(len(idx), np.inf)
        for pb in (0, 1):
            m = fin & O["fail"] & (pubs == pb)
            rt[m] = cal.Ainv(pb, cal.Aat(pb, O["t_comp"][m]) + O["Lrep"][m])
        t_idle[idx] = O["t_comp"]
        r_time[idx] = rt
        r_parent[idx] = O["gid"]
        r_link[idx] = O["link"]
        n_prev[idx] += 1
    O = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    print(
        f"[sim] chains={nch} iterations={it} real orders={n_ord} ({time.time() - t0:.1f}s)",
        flush=True,
    )
    O["p_rework"] = compute_p_rework(cal, W, O)
    print(f"[sim] p_rework computed ({time.time() - t0:.1f}s)", flush=True)
    return cal, W, O


# ----------------------------------------------------------------------------------------- text
LEAK = [
    ["有点滴水", "关不紧", "出水很小"],
    ["一直漏水", "漏水比较严重", "接口处一直渗水"],
    [
        "爆管了，水喷出来了",
        "大量漏水，地上全是水",
        "阀门关不住，一直在漏",
        "水漫出来了，已经渗到楼下",
    ],
]
CLOG = [
    ["有点堵", "下水慢"],
    ["堵住了", "下水很慢还反味", "冲不下去"],
    ["堵死了，污水反上来了", "漫水了，污水流得到处都是"],
]
# TXT[(category, public)] = list of (objects, [sev0 symptoms, sev1, sev2])
TXT = {
    ("plumbing", 0): [
        (["厨房水龙头", "卫生间水龙头", "淋浴花洒", "角阀", "水管接头", "热水器进水管"], LEAK),
        (["洗手盆下水", "厨房下水管", "地漏", "马桶"], CLOG),
    ],
    ("electrical", 0): [
        (
            ["客厅灯", "卫生间灯", "卧室吸顶灯", "开关面板"],
            [
                ["不亮了", "有时候会闪", "开关松了"],
                ["一开就跳闸", "好几个灯都不亮"],
                ["冒烟了", "有烧焦的味道"],
            ],
        ),
        (
            ["卧室插座", "厨房插座", "卫生间插座"],
            [["接触不良", "松了"], ["冒火花", "没电了"], ["烧黑了，有焦味", "冒烟了"]],
        ),
        (
            ["空开", "电闸", "入户配电箱"],
            [
                ["偶尔跳闸"],
                ["经常跳闸", "半个屋子没电", "合不上"],
                ["全屋停电了", "有烧焦的味道，很危险", "电线发烫有焦味"],
            ],
        ),
    ],
    ("hvac", 0): [
        (
            ["客厅空调", "卧室空调", "中央空调"],
            [
                ["制冷效果差", "有点异响", "遥控没反应", "出风口滴水"],
                ["不制冷", "不制热", "外机噪音很大", "漏水滴到墙上"],
                ["完全不工作，家里有老人孩子", "外机冒烟"],
            ],
        ),
        (
            ["地暖", "暖气片"],
            [
                ["不太热", "有点异响"],
                ["不热了", "阀门漏水"],
                ["漏水，地板都泡了", "完全不热，家里有老人孩子"],
            ],
        ),
        (["新风系统"], [["噪音大", "有异味"], ["不转了"], ["冒烟了"]]),
    ],
    ("fire_safety", 0): [
        (
            ["烟感", "燃气报警器", "可燃气体探测器"],
            [
                ["一直滴滴响", "指示灯不亮", "过期了"],
                ["误报警", "一直报警"],
                ["一直在响，有燃气味"],
            ],
        ),
        (["喷淋头"], [["有点锈"], ["渗水"], ["喷水了"]]),
    ],
    ("door_window", 0): [
        (
            ["入户门锁", "防盗门", "卧室门"],
            [
                ["关不严", "有点松", "合页有异响"],
                ["锁打不开", "锁芯坏了", "关不上"],
                ["坏了进不了家", "锁不上，没法锁门"],
            ],
        ),
        (
            ["窗户", "阳台推拉门", "纱窗"],
            [
                ["关不严", "纱网破了", "滑轮有异响"],
                ["关不上", "卡住了", "把手坏了"],
                ["玻璃裂了，有掉落危险", "整扇窗松动要掉下来了"],
            ],
        ),
        (["可视对讲"], [["有杂音"], ["没有声音", "开不了单元门"], ["完全坏了，老人进不了门"]]),
    ],
    ("waterproofing", 0): [
        (
            ["卫生间", "阳台", "外墙", "屋顶", "厨房墙面", "窗台", "卫生间顶上", "卧室墙角"],
            [
                ["墙角有点潮", "有少量水渍"],
                ["渗水", "一下雨就漏", "天花板有水印往下滴", "墙面发霉起皮"],
                ["漏水严重，楼下都淹了", "下雨天屋里像下小雨", "整面墙都在渗水"],
            ],
        )
    ],
    ("wall_floor", 0): [
        (
            ["客厅地砖", "卫生间瓷砖", "木地板", "厨房地砖"],
            [
                ["有裂缝", "有点起鼓"],
                ["大面积空鼓", "开裂翘起", "起拱了"],
                ["整片脱落", "翘起来绊倒了老人"],
            ],
        ),
        (
            ["墙面", "天花板", "踢脚线", "卧室墙面"],
            [
                ["有裂缝", "墙皮脱落一点"],
                ["大块脱落", "裂缝越来越大"],
                ["掉灰块，怕砸到人", "裂缝很大"],
            ],
        ),
    ],
    ("other", 0): [
        (
            ["晾衣架", "信报箱", "排气扇", "橱柜门", "油烟机", "水表", "门铃"],
            [
                ["坏了", "有点松", "不好用"],
                ["完全不能用", "掉下来了"],
                ["掉下来差点砸到人", "完全坏了，很危险"],
            ],
        )
    ],
    ("plumbing", 1): [
        (["绿化带水管", "地下室水管", "公共卫生间水龙头"], LEAK),
        (["雨水井", "污水井"], [["有点堵"], ["堵了，积水"], ["冒水了，路面全淹了"]]),
    ],
    ("electrical", 1): [
        (
            ["楼道灯", "地库照明", "路灯", "单元门口灯"],
            [["不亮了", "闪烁"], ["一整排都不亮"], ["漏电，很危险"]],
        ),
        (["公共配电箱"], [["有异响"], ["跳闸了"], ["冒烟了"]]),
    ],
    ("fire_safety", 1): [
        (
            ["楼道灭火器", "消防栓", "应急灯", "安全出口指示灯", "防火门"],
            [["过期了", "不亮", "有破损"], ["损坏", "缺失"], ["损坏严重，存在安全隐患"]],
        )
    ],
    ("door_window", 1): [
        (
            ["单元门", "门禁", "楼道窗户", "地库入口门"],
            [
                ["关不严", "有异响"],
                ["打不开", "关不上", "刷卡没反应"],
                ["完全坏了，单元门敞开", "玻璃碎了"],
            ],
        )
    ],
    ("waterproofing", 1): [
        (
            ["屋面", "地库顶板", "楼道墙面", "电梯井"],
            [["有水渍"], ["渗水", "下雨就漏"], ["大面积漏水"]],
        )
    ],
    ("wall_floor", 1): [
        (
            ["路面", "楼道墙面", "台阶", "地库地坪"],
            [["有裂缝", "破损"], ["坑洼", "起砂"], ["塌陷，很危险"]],
        )
    ],
    ("other", 1): [
        (["宣传栏", "快递柜", "信报箱", "垃圾桶"], [["坏了", "松动"], ["完全不能用"], ["倒了"]])
    ],
    ("elevator", 1): [
        (
            ["电梯", "客梯", "货梯"],
            [
                ["有异响", "按钮不灵", "门关得很慢", "轿厢灯不亮"],
                ["停运了", "经常停在半层", "开关门异常", "运行抖动厉害"],
                ["困人了！", "有人被困在里面", "突然下坠了一下，很危险"],
            ],
        )
    ],
    ("public_facility", 1): [
        (
            [
                "小区大门道闸",
                "健身器材",
                "儿童滑梯",
                "路灯",
                "垃圾站",
                "楼道扶手",
                "监控探头",
                "休闲座椅",
            ],
            [
                ["有点松动", "不太好用", "掉漆生锈"],
                ["坏了", "不能用了"],
                ["倒了", "断了很危险", "砸到人了"],
            ],
        )
    ],
}
REC_STRONG = [
    "又坏了，",
    "又出问题了，",
    "上次修过，没几天又",
    "之前修过一次了，还是",
    "第二次报修了，",
    "修了又坏，",
    "才修完又",
]
REC_WEAK = ["之前也有过类似问题，", "以前报过一次，", "老毛病了，"]
ANGER = [
    "请尽快处理！",
    "太影响生活了！",
    "物业到底管不管？",
    "再不修我就投诉了",
    "都等不了了！！",
    "很生气",
]
ANGER_REP = [
    "这已经不是第一次了，很生气！",
    "同样的问题反复修，能不能修好？",
    "上次的师傅根本没修好",
]
POLITE = ["麻烦师傅上门看看", "谢谢", "麻烦尽快安排", "辛苦了", "麻烦了"]
AVAIL = ["家里下午有人", "周末上门", "晚上7点后在家", "随时可以来", "上午有人", "来之前打电话"]
AGING = {
    0: ["水管老化了", "管子锈得厉害"],
    1: ["线路老化", "设备用了很多年了"],
    2: ["房子年头久了"],
    3: ["用了很多年了"],
}
POS = [
    "师傅很专业，修得很快",
    "态度很好，谢谢",
    "很满意",
    "处理及时，点赞",
    "师傅很耐心",
    "修好了，谢谢物业",
    "好评",
]
NEU = ["还行", "修好了", "一般", "来得有点晚，不过修好了", "价格有点贵", "凑合"]
NEG = {
    "delay": ["等了太久才来", "催了好几次才上门", "说好的时间没来", "响应太慢"],
    "quality": ["修得很敷衍", "感觉没修好", "干活很马虎", "师傅不专业"],
    "manner": ["师傅态度很差", "不耐烦，说话很冲", "进门不穿鞋套，弄得很脏"],
    "paid": ["收费太贵了", "乱收费", "材料费比外面贵很多"],
    "repeat": ["同一个问题修了好几次", "反复报修，一直修不好"],
}


def gen_text(O, W, seed):
    R = random.Random(seed)
    n = len(O["cat"])
    desc = [None] * n
    comm_out = [""] * n
    P = W["P"]
    for i in range(n):
        c = CATS[O["cat"][i]]
        sev = int(O["sev"][i])
        tau = float(O["tau"][i])
        rep = bool(O["is_rep"][i])
        pub = O["pub"][i] == 1
        parts = []
        if O["night"][i] and sev >= 1 and R.random() < 0.4:
            parts.append(R.choice(["半夜了，", "刚才", "现在"]))
        if rep and R.random() < 0.6:
            parts.append(R.choice(REC_STRONG))
        elif O["n_prev"][i] > 0 and R.random() < 0.22:
            parts.append(R.choice(REC_WEAK))
        elif R.random() < 0.02:
            parts.append(R.choice(REC_WEAK))
        grp = R.choice(TXT[(c, 1 if pub else 0)])
        obj = R.choice(grp[0])
        sym = R.choice(grp[1][sev])
        if pub:
            b = P["bld"][O["unit"][i]]
            loc = f"{b}号楼" if b > 0 else R.choice(["小区", "南门", "北区", "中心花园", "地库"])
            if c == "elevator" and b > 0 and R.random() < 0.5:
                obj = f"{R.randint(1, 3)}单元电梯"
            body = loc + obj + sym
            if O["patrol"][i]:
                parts.insert(0, R.choice(["巡检发现：", "巡查：", "【巡检】", ""]))
        else:
            body = obj + sym
        parts.append(body)
        if sev >= 1 and R.random() < 0.3:
            parts.append(R.choice(["，已经好几天了", "，从昨天开始的", "，越来越严重"]))
        if O["age"][i] > 15 and O["z"][i] > 0.5 and R.random() < 0.4:
            parts.append("，" + R.choice(AGING[FAM[O["cat"][i]]]))
        pa = 1 / (1 + math.exp(-(-2.3 + 1.0 * tau + 1.0 * rep)))
        if R.random() < pa:
            parts.append(
                "，" + (R.choice(ANGER_REP) if rep and R.random() < 0.5 else R.choice(ANGER))
            )
        elif not O["patrol"][i] and R.random() < 0.45 - 0.1 * tau:
            parts.append("，" + R.choice(POLITE))
        if O["pri"][i] == 2 and R.random() < 0.5:
            parts.insert(0, R.choice(["紧急！", "【紧急】", "急！"]))
        if O["pri"][i] == 0 and not pub and R.random() < 0.3:
            parts.append("，" + R.choice(AVAIL))
        s = "".join(parts).replace("，，", "，").replace("，，", "，")
        if R.random() < 0.1:
            s = s.replace("，", " ")
        desc[i] = s
        # feedback comment
        if O["ans"][i] or O["comp"][i]:
            rt = int(O["rating"][i])
            if O["D"][i]:
                if R.random() < (0.65 if O["ans"][i] else 0.5):
                    w = {
                        "delay": 0.3 + O["urge"][i] + max(O["ratio"][i] - 1, 0),
                        "quality": 1.0 + 5 * O["p_fail"][i],
                        "manner": 0.3 + max(-O["manner"][i], 0) * 1.5,
                        "paid": 0.1 + 2.0 * O["paid"][i],
                        "repeat": 0.05 + 2.0 * rep,
                    }
                    k = R.choices(list(w), weights=list(w.values()))[0]
                    comm_out[i] = R.choice(NEG[k]) + (
                        R.choice(["！", "。", "", "，要求整改"]) if R.random() < 0.5 else ""
                    )
            elif O["ans"][i]:
                if rt == 5 and R.random() < 0.2:
                    comm_out[i] = R.choice(POS)
                elif rt in (3, 4) and R.random() < 0.3:
                    comm_out[i] = R.choice(NEU if rt == 3 or R.random() < 0.5 else POS)
    return desc, comm_out


# ----------------------------------------------------------------------------------------- export
def fmt_ts(cal, t, style):
    """t in days from start (NaN -> ''), style 0: +08:00, 1: naive local, 2: UTC Z"""
    out = np.full(len(t), "", dtype=object)
    ok = np.isfinite(t)
    ts = cal.start + pd.to_timedelta(np.round(t[ok] * 86400).astype(np.int64), "s")
    loc = np.asarray(ts.strftime("%Y-%m-%dT%H:%M:%S"), dtype=object)
    utc = np.asarray((ts - pd.Timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%SZ"), dtype=object)
    st = style[ok]
    v = np.where(st == 0, loc + "+08:00", np.where(st == 1, loc, utc))
    out[ok] = v
    return out


def add_cancelled(cal, W, O, rng):
    """cancelled reports: independent Poisson stream per chain + duplicates of real reports."""
    rate = W["ch_rate"] * CANCEL_RATIO
    keys = W["ch_key"]
    Hend = np.array([cal.Hat(k, cal.T) for k in range(NC * 2)])[keys]
    cnt = rng.poisson(rate * Hend)
    ch = np.repeat(np.arange(len(rate)), cnt)
    t = np.empty(len(ch))
    u = rng.random(len(ch))
    for k in np.unique(keys[ch]):
        m = keys[ch] == k
        t[m] = cal.Hinv(k, u[m] * cal.Hat(k, cal.T))
    dup = rng.random(len(O["chain"])) < DUP_PROB
    ch2 = O["chain"][dup]
    t2 = O["t_rep"][dup] + rng.uniform(0.2, 8, dup.sum()) / 24.0
    ch = np.concatenate([ch, ch2])
    t = np.concatenate([t, t2])
    keep = t <= cal.T
    ch, t = ch[keep], t[keep]
    C = make_orders(W, cal, rng, ch, t, np.zeros(len(ch), bool), 0.0)
    n = len(ch)
    disp = rng.random(n) < 0.45
    C["t_dis"] = np.where(disp, C["t_dis"], np.nan)
    C["t_arr"] = np.full(n, np.nan)
    C["t_comp"] = np.full(n, np.nan)
    C["n_prev"] = np.zeros(n, int)
    C["parent"] = np.full(n, -1)
    C["cancelled"] = np.ones(n, bool)
    C["p_rework"] = np.full(n, np.nan)
    return C


def export(cal, W, O, out_dir, rng, seed):
    os.makedirs(out_dir, exist_ok=True)
    T = cal.T
    n_real = len(O["chain"])
    O["cancelled"] = np.zeros(n_real, bool)
    C = add_cancelled(cal, W, O, rng)
    keys = [
        "chain",
        "cat",
        "pub",
        "unit",
        "comm",
        "z",
        "t_rep",
        "t_dis",
        "t_arr",
        "t_comp",
        "is_rep",
        "res",
        "tau",
        "chan",
        "sev",
        "pri",
        "night",
        "tech",
        "team",
        "parts",
        "paid",
        "cost",
        "urge",
        "p_fail",
        "fail",
        "p_dis",
        "p_dis_lab",
        "D",
        "ans",
        "comp",
        "rating",
        "age",
        "ratio",
        "manner",
        "n_prev",
        "parent",
        "cancelled",
        "p_rework",
        "patrol",
        "extra",
        "skill",
        "cert",
        "sub",
        "lo",
        "fu_ok",
    ]
    A = {k: np.concatenate([O[k], C[k]]) for k in keys}
    n = len(A["chain"])
    np.arange(n)  # index into A; real orders keep gid == position < n_real
    # status & visibility at snapshot T
    canc = A["cancelled"]
    t_dis = np.where(A["t_dis"] <= T, A["t_dis"], np.nan)
    t_arr = np.where(A["t_arr"] <= T, A["t_arr"], np.nan)
    t_comp = np.where(A["t_comp"] <= T, A["t_comp"], np.nan)
    done = np.isfinite(t_comp) & ~canc
    status = np.where(
        canc,
        "cancelled",
        np.where(
            done,
            "completed",
            np.where(
                np.isfinite(t_arr),
                "in_progress",
                np.where(np.isfinite(t_dis), "dispatched", "open"),
            ),
        ),
    )
    # ordering & ids
    order = np.argsort(A["t_rep"], kind="stable")
    rank = np.empty(n, int)
    rank[order] = np.arange(n)
    day_str = np.asarray(
        (cal.start + pd.to_timedelta(np.floor(A["t_rep"]).astype(np.int64), "D")).strftime("%Y%m%d")
    )
    seq = rank + 1
    oid = np.array([f"GD{d}{s:06d}" for d, s in zip(day_str, seq, strict=False)], dtype=object)
    # format style per community (+ some row noise)
    comm_style = np.random.default_rng(seed + 17).choice(
        [0, 1, 2], size=W["n_comm"], p=[0.68, 0.27, 0.05]
    )
    style = comm_style[A["comm"]]
    flip = rng.random(n) < 0.03
    style = np.where(flip, rng.choice([0, 1, 2], size=n), style)
    desc, comment = gen_text(A, W, seed)
    H, P, R, Tch = W["H"], W["P"], W["R"], W["Tch"]
    unit_id = np.where(
        A["pub"] == 1,
        P["unit_id"][np.where(A["pub"] == 1, A["unit"], 0)],
        H["unit_id"][np.where(A["pub"] == 0, A["unit"], 0)],
    )
    res_id = np.where(A["res"] >= 0, R["rid"][np.maximum(A["res"], 0)], "")
    has_tech = np.isfinite(t_dis) | done
    has_tech = has_tech & ~(canc & (rng.random(n) < 0.4))
    tech_id = np.where(has_tech, Tch["tid"][A["tech"]], "")
    # optional fields, partly empty
    paid_s = np.where(A["paid"], "true", "false").astype(object)
    paid_miss = rng.random(n) < 0.04
    cost_s = np.array([f"{c:.2f}" if c != int(c) else f"{int(c)}" for c in A["cost"]], dtype=object)
    cost_s = np.where(~A["paid"] & (rng.random(n) < 0.3), "", cost_s)
    parts_s = np.where(A["parts"], "true", "false").astype(object)
    urge_s = A["urge"].astype(str).astype(object)
    urge_s = np.where(rng.random(n) < 0.03, "", urge_s)
    ok_exec = done
    paid_s = np.where(ok_exec & ~paid_miss, paid_s, "")
    cost_s = np.where(ok_exec & ~paid_miss, cost_s, "")
    parts_s = np.where(ok_exec, parts_s, "")
    urge_s = np.where(canc, np.where(rng.random(n) < 0.5, "0", ""), urge_s)
    ans = A["ans"] & done
    cmp_ = A["comp"] & done
    rating_s = np.where(ans, A["rating"].astype(str), "").astype(object)
    complaint_s = np.where(cmp_, "true", np.where(ans, "false", "")).astype(object)
    comment_s = np.where(ans | cmp_, np.array(comment, dtype=object), "")
    # dispatched_at occasionally missing on completed orders
    t_dis_out = np.where(done & (rng.random(n) < 0.02), np.nan, t_dis)
    parent = A["parent"]
    parent_s = np.where(parent >= 0, oid[np.maximum(parent, 0)], "")
    df = pd.DataFrame(
        {
            "order_id": oid,
            "community_id": W["comm_ids"][A["comm"]],
            "unit_id": unit_id,
            "area_type": np.where(A["pub"] == 1, "public", "indoor"),
            "resident_id": res_id,
            "channel": A["chan"],
            "category": np.array(CATS)[A["cat"]],
            "priority": PRI_NAMES[A["pri"]],
            "description": desc,
            "reported_at": fmt_ts(cal, A["t_rep"], style),
            "dispatched_at": fmt_ts(cal, t_dis_out, style),
            "arrived_at": fmt_ts(cal, np.where(canc, np.nan, t_arr), style),
            "completed_at": fmt_ts(cal, np.where(done, t_comp, np.nan), style),
            "status": status,
            "technician_id": tech_id,
            "paid": paid_s,
            "cost_yuan": cost_s,
            "parts_replaced": parts_s,
            "urge_count": urge_s,
            "rating": rating_s,
            "feedback_comment": comment_s,
            "complaint": complaint_s,
            "parent_order_id": parent_s,
        }
    )
    df = df.iloc[order].reset_index(drop=True)
    df.to_csv(os.path.join(out_dir, "orders.csv"), index=False, encoding="utf-8")
    units = pd.DataFrame(
        {
            "unit_id": H["unit_id"],
            "community_id": W["comm_ids"][H["comm"]],
            "building_year": H["year"],
            "floor": H["floor"],
            "area_m2": H["area"],
        }
    )
    units.to_csv(os.path.join(out_dir, "units.csv"), index=False, encoding="utf-8")
    cert_s = [";".join(np.array(CATS)[Tch["cert"][k]]) for k in range(len(Tch["tid"]))]
    techs = pd.DataFrame(
        {
            "technician_id": Tch["tid"],
            "team": np.array(Tch["names"])[Tch["team"]],
            "hire_date": Tch["hire_date"],
            "certifications": cert_s,
            "employment": np.where(Tch["sub"], "subcontractor", "in_house"),
        }
    )
    techs.to_csv(os.path.join(out_dir, "technicians.csv"), index=False, encoding="utf-8")
    gt = pd.DataFrame(
        {
            "order_id": oid,
            "p_rework": np.where(done, A["p_rework"], np.nan),
            "p_dissatisfied_if_labelled": np.where(done, A["p_dis_lab"], np.nan),
            "p_dissatisfied": np.where(done, A["p_dis"], np.nan),
            "p_fail": np.where(done, A["p_fail"], np.nan),
            "failed": A["fail"] & done,
            "is_repeat": A["is_rep"],
            "severity": A["sev"],
            "home_proneness": A["z"],
            "tech_skill": A["skill"],
            "certified": A["cert"],
            "team_load": A["lo"],
            "resident_temper": A["tau"],
            "dissatisfied_latent": A["D"] & done,
            "followup_possible": A["fu_ok"] & done,
            "cancelled": canc,
        }
    )
    gt = gt.iloc[order].reset_index(drop=True)
    gt.to_parquet(os.path.join(out_dir, "ground_truth.parquet"), index=False)
    return df, gt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--units", type=int, default=32000)
    ap.add_argument("--rework-drift", type=float, default=0.0)
    ap.add_argument("--start", default="2024-01-01")
    ap.add_argument("--no-check", action="store_true", help="skip the label/oracle summary")
    args = ap.parse_args()
    t0 = time.time()
    cal, W, O = simulate(args)
    rng = np.random.default_rng(args.seed + 7919)
    df, gt = export(cal, W, O, args.out, rng, args.seed)
    print(f"[sim] wrote {len(df)} orders to {args.out} ({time.time() - t0:.1f}s)", flush=True)
    if not args.no_check:
        import independent_sim_check

        independent_sim_check.report(args.out)


if __name__ == "__main__":
    main()
