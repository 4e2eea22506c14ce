"""Run the whole simulation and shape its result into contract tables plus ground truth."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.dtypes import StringDType

from models.schemas import CATEGORIES, CHANNELS, ORDERS, PRIORITIES, STATUSES, TECHNICIANS, UNITS

from . import text
from .config import SimulationConfig
from .process import COMPLETED, Reports, background_reports, process_reports, team_load
from .timeline import build_timeline
from .world import HABITS, TEMPERAMENTS, build_world

log = logging.getLogger(__name__)

_S = StringDType()

#: Window (days) before an order in which an earlier order of the same unit and category
#: makes a resident write "again", even when the earlier repair did not fail.
PRIOR_ORDER_DAYS = 90.0

#: Rework generations processed at most (a failure of a rework of a rework …).
MAX_GENERATIONS = 8


@dataclass(frozen=True)
class SimulationResult:
    """The generated tables.

    Attributes
    ----------
    orders, technicians, units
        Contract tables with typed columns (timestamps as naive Asia/Shanghai local
        ``datetime64``, nullable booleans/integers); ``pipelines.generate`` renders them.
    ground_truth
        One row per order (same order as ``orders``): true label probabilities and the latent
        drivers behind them. Probabilities are NaN for orders that are not completed.

        - ``p_rework``: P(the contract's rework label is positive) — the order's own failure
          re-reported within 30 days (or later with a parent link, inside the data) or an
          independent fault of the same unit and category within 30 days (``p_background``).
        - ``p_dissatisfied``: P(complaint or rating ≤ 2 | order), unconditional: orders
          nobody rates count as not dissatisfied here.
        - ``p_dissatisfied_if_labelled``: the same given the order has a rating or a
          complaint — the fair oracle on labelled orders, because response is missing not at
          random (unhappy residents answer more).
        - ``p_dissatisfied_latent``: P(the resident is dissatisfied), observed or not.
        - realised latents (``failed``, ``dissatisfied_latent``, ``is_rework``,
          ``true_parent_order_id`` even when the export has no link) and drivers
          (``tech_skill``, ``unit_proneness``, ``resident_temperament``, ``delay_factor``,
          ``load_factor``, …).
    """

    orders: pd.DataFrame
    technicians: pd.DataFrame
    units: pd.DataFrame
    ground_truth: pd.DataFrame


def _timestamps(start: np.datetime64, t: np.ndarray) -> np.ndarray:
    """Float days since ``start`` → second-resolution ``datetime64`` (NaN → NaT).

    Flooring keeps the lifecycle order of the float times.
    """
    secs = np.floor(np.nan_to_num(t, nan=0.0) * 86400.0).astype(np.int64)
    out = start + secs.astype("timedelta64[s]")
    out[np.isnan(t)] = np.datetime64("NaT")
    return out


def _prior_same_problem(unit: np.ndarray, category: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Whether the same unit and category had an order in the ``PRIOR_ORDER_DAYS`` before."""
    order = np.lexsort((t, category, unit))
    u, c, tt = unit[order], category[order], t[order]
    same = np.r_[False, (u[1:] == u[:-1]) & (c[1:] == c[:-1])]
    gap = np.r_[np.inf, tt[1:] - tt[:-1]]
    out = np.empty(len(t), bool)
    out[order] = same & (gap < PRIOR_ORDER_DAYS)
    return out


def simulate(
    seed: int,
    units: int,
    months: int,
    start: str = "2024-01-01",
    config: SimulationConfig | None = None,
) -> SimulationResult:
    """Simulate a property-management repair history.

    Parameters
    ----------
    seed
        Seed of the single ``np.random.default_rng`` all draws come from (deterministic).
    units
        Number of homes; public locations, communities, teams and technicians scale with it.
    months
        Length of the window in calendar months.
    start
        First day (``YYYY-MM-DD``, Asia/Shanghai).
    config
        Simulation knobs; defaults to :class:`SimulationConfig`.
    """
    cfg = config or SimulationConfig()
    rng = np.random.default_rng(seed)
    start_year = int(start[:4])
    timeline = build_timeline(start, months, cfg)
    world = build_world(rng, units, timeline.n_days, cfg)
    reports = background_reports(rng, world, timeline, start_year, cfg)
    load = team_load(world, timeline, reports, cfg)

    gens: list[dict[str, np.ndarray]] = []
    offset = 0
    for _ in range(MAX_GENERATIONS):
        if len(reports) == 0:
            break
        out = process_reports(rng, world, timeline, load, reports, start_year, cfg)
        gens.append(out)
        back = np.flatnonzero(~np.isnan(out["rework_t"]))
        reports = Reports(
            unit=out["unit"][back],
            category=out["category"][back],
            t=out["rework_t"][back],
            parent=offset + back,
            linked=out["rework_linked"][back],
            prev_tech=out["tech"][back],
            prev_priority=out["priority"][back],
        )
        offset += len(out["unit"])
    keys = [k for k in gens[0] if k not in ("rework_t", "rework_linked")]
    o = {k: np.concatenate([g[k] for g in gens]) for k in keys}
    log.info("simulated %d orders in %d generations", len(o["unit"]), len(gens))

    # sort by report time; ids follow it
    order = np.argsort(o["t_report"], kind="stable")
    o = {k: v[order] for k, v in o.items()}
    new_pos = np.empty(len(order), np.int64)
    new_pos[order] = np.arange(len(order))
    o["parent"] = np.where(o["parent"] >= 0, new_pos[np.maximum(o["parent"], 0)], -1)
    n = len(order)
    order_id = np.strings.add("WO", np.strings.zfill(np.arange(1, n + 1).astype(_S), 8))

    unit, cat = o["unit"], o["category"]
    public = world.unit_public[unit]
    home = ~public
    patrol = o["channel"] == CHANNELS.index("patrol")
    prior = _prior_same_problem(unit, cat, o["t_report"])
    is_rework = o["is_rework"]
    cue_p = np.where(
        is_rework,
        cfg.repeat_cue_rework,
        np.where(prior, cfg.repeat_cue_prior, cfg.repeat_cue_false),
    )
    cue_p = np.where(is_rework & (o["temperament"] == 2), np.minimum(1.0, cue_p + 0.15), cue_p)
    repeat_cue = home & (rng.random(n) < cue_p)
    temper = np.maximum(o["temperament"], 0)
    tone = np.where(rng.random(n) < cfg.tone_noise, rng.choice(3, n, p=[0.6, 0.25, 0.15]), temper)
    age = start_year - world.unit_building_year[unit]
    bno = (unit * 7 + 3) % 20 + 1  # stable pseudo building number of a public location's text
    description = text.descriptions(
        rng,
        cat,
        public,
        patrol,
        o["priority"],
        tone,
        o["severity"],
        repeat_cue,
        old_building=home & (age >= 20),
        building_no=bno,
        typo_prob=cfg.typo_prob,
    )
    comment = text.comments(
        rng,
        o["dissatisfied_latent"],
        o["rating"],
        o["delay_factor"],
        np.nan_to_num(o["tech_attitude"]),
        o["is_rework"] | o["early_failure"],
        o["cost"],
        np.nan_to_num(o["tech_skill"]),
        tone,
        cfg.typo_prob,
        off_tone=cfg.comment_off_tone,
    )

    done = o["status"] == COMPLETED
    dispatched = ~np.isnan(o["t_dispatch"])
    resident = world.unit_resident[unit]
    parent = o["parent"]
    linked = (parent >= 0) & o["linked"]
    orders = pd.DataFrame(
        {
            "order_id": order_id,
            "community_id": world.community_id[world.unit_community[unit]],
            "unit_id": world.unit_id[unit],
            "area_type": np.where(public, "public", "indoor"),
            "resident_id": np.where(home, world.resident_id[np.maximum(resident, 0)], None),
            "channel": np.asarray(CHANNELS)[o["channel"]],
            "category": np.asarray(CATEGORIES)[cat],
            "priority": np.asarray(PRIORITIES)[o["priority"]],
            "description": description,
            "reported_at": _timestamps(timeline.start, o["t_report"]),
            "dispatched_at": _timestamps(timeline.start, o["t_dispatch"]),
            "arrived_at": _timestamps(timeline.start, o["t_arrive"]),
            "completed_at": _timestamps(timeline.start, o["t_complete"]),
            "status": np.asarray(STATUSES)[o["status"]],
            "technician_id": np.where(dispatched, world.tech_id[np.maximum(o["tech"], 0)], None),
            "paid": pd.array(np.where(done, o["paid"], None), dtype="boolean"),
            "cost_yuan": np.where(done, o["cost"], np.nan),
            "parts_replaced": pd.array(np.where(done, o["parts"], None), dtype="boolean"),
            "urge_count": o["urges"],
            "rating": pd.array(np.where(o["rating"] > 0, o["rating"], None), dtype="Int64"),
            "feedback_comment": np.where(o["commented"], comment, None),
            "complaint": pd.array(np.where(done, o["complaint"], None), dtype="boolean"),
            "parent_order_id": np.where(linked, order_id[np.maximum(parent, 0)], None),
        }
    )
    assert list(orders.columns) == ORDERS.names

    gt = pd.DataFrame(
        {
            "order_id": order_id,
            "p_rework": o["p_rework"],
            "p_dissatisfied": o["p_dissatisfied"],
            "p_dissatisfied_if_labelled": o["p_dissatisfied_if_labelled"],
            "p_dissatisfied_latent": o["p_dissatisfied_latent"],
            "p_fail": o["p_fail"],
            "p_background": o["p_background"],
            "failed": o["failed"],
            "early_failure": o["early_failure"],
            "dissatisfied_latent": o["dissatisfied_latent"],
            "is_rework": is_rework,
            "true_parent_order_id": np.where(parent >= 0, order_id[np.maximum(parent, 0)], None),
            "repeat_cue": repeat_cue,
            "prior_same_problem": prior,
            "tech_skill": o["tech_skill"],
            "tech_attitude": o["tech_attitude"],
            "tech_subcontractor": o["tech_sub"],
            "uncertified": o["uncertified"],
            "unit_proneness": world.unit_proneness[unit],
            "building_age": age,
            "severity": o["severity"],
            "resident_temperament": np.where(
                o["temperament"] >= 0, np.asarray(TEMPERAMENTS)[temper], None
            ),
            "rating_habit": np.where(
                o["habit"] >= 0, np.asarray(HABITS)[np.maximum(o["habit"], 0)], None
            ),
            "description_tone": np.where(home & ~patrol, np.asarray(TEMPERAMENTS)[tone], None),
            "delay_factor": o["delay_factor"],
            "dispatch_factor": o["dispatch_factor"],
            "load_factor": o["load"],
            "overloaded": o["overloaded"],
            "rushed": o["rushed"],
            "holiday": o["holiday"],
            "night": o["night"],
            "management_quality": world.community_mgmt[world.unit_community[unit]],
            "north": world.community_north[world.unit_community[unit]],
        }
    )

    techs = pd.DataFrame(
        {
            "technician_id": world.tech_id,
            "team": world.team_name[world.tech_team],
            "hire_date": (timeline.start.astype("datetime64[D]") + world.tech_hire_day).astype(
                "datetime64[s]"
            ),
            "certifications": [
                ";".join(CATEGORIES[j] for j in np.flatnonzero(row)) for row in world.tech_certs
            ],
            "employment": np.where(world.tech_sub, "subcontractor", "in_house"),
        }
    )
    assert list(techs.columns) == TECHNICIANS.names
    floor = world.unit_floor
    units_df = pd.DataFrame(
        {
            "unit_id": world.unit_id,
            "community_id": world.community_id[world.unit_community],
            "building_year": world.unit_building_year.astype(np.int64),
            "floor": pd.array(np.where(floor == -999, None, floor), dtype="Int64"),
            "area_m2": world.unit_area,
        }
    )
    assert list(units_df.columns) == UNITS.names
    return SimulationResult(orders=orders, technicians=techs, units=units_df, ground_truth=gt)
