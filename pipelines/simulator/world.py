"""The simulated world: communities, buildings, units, residents, teams and technicians.

Everything here is latent structure the order process draws on; only the columns a real
property-management system would hold leave the simulator (``technicians.csv``, ``units.csv``),
the rest (proneness, temperament, skill, attitude) goes to the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.dtypes import StringDType

from models.schemas import CATEGORIES

from .config import SimulationConfig

NORTH_CITIES = ("北京", "天津", "济南", "沈阳", "西安", "郑州")
SOUTH_CITIES = ("上海", "杭州", "南京", "广州", "深圳", "成都", "武汉")
TEMPERAMENTS = ("calm", "picky", "angry")
HABITS = ("normal", "always_five", "never_answers", "harsh")

#: Short codes of the categories in public-location ids.
CATEGORY_CODES = ("PL", "EL", "HV", "FS", "DW", "WP", "WF", "LF", "PF", "OT")

_S = StringDType()


def _zpad(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal strings of integers, vectorised."""
    return np.strings.zfill(np.asarray(values).astype(_S), width)


def _cat(*parts: np.ndarray | str) -> np.ndarray:
    """Concatenate string arrays/scalars element-wise."""
    out = np.asarray(parts[0], dtype=_S)
    for p in parts[1:]:
        out = np.strings.add(out, np.asarray(p, dtype=_S))
    return out


@dataclass(frozen=True)
class World:
    """Latent and observable attributes of every entity, as aligned numpy arrays.

    Units are homes followed by public locations; ``unit_category`` is -1 for homes (any
    category can break there) and the single category of a public location.
    """

    community_id: np.ndarray
    community_city: np.ndarray
    community_north: np.ndarray
    community_year: np.ndarray
    community_mgmt: np.ndarray
    community_team: np.ndarray
    team_name: np.ndarray
    unit_id: np.ndarray
    unit_community: np.ndarray
    unit_public: np.ndarray
    unit_category: np.ndarray
    unit_building_year: np.ndarray
    unit_floor: np.ndarray
    unit_area: np.ndarray
    unit_proneness: np.ndarray
    unit_resident: np.ndarray
    resident_id: np.ndarray
    resident_temperament: np.ndarray
    resident_habit: np.ndarray
    tech_id: np.ndarray
    tech_team: np.ndarray
    tech_hire_day: np.ndarray
    tech_sub: np.ndarray
    tech_certs: np.ndarray
    tech_skill: np.ndarray
    tech_attitude: np.ndarray

    @property
    def n_units(self) -> int:
        """Homes plus public locations."""
        return len(self.unit_id)


def build_world(
    rng: np.random.Generator, units: int, n_days: int, config: SimulationConfig
) -> World:
    """Draw communities, buildings, units, residents and technicians.

    Parameters
    ----------
    rng
        The simulation's random generator (consumed in a fixed order for determinism).
    units
        Number of homes (住户); public locations are added per building and community.
    n_days
        Length of the simulated window, for hire dates of new technicians.
    config
        World knobs.
    """
    n_cat = len(CATEGORIES)
    n_comm = max(2, round(units / config.units_per_community))
    north = rng.random(n_comm) < config.north_share
    north[0], north[-1] = False, True  # both climates always present
    city = np.where(
        north,
        np.asarray(NORTH_CITIES)[rng.integers(0, len(NORTH_CITIES), n_comm)],
        np.asarray(SOUTH_CITIES)[rng.integers(0, len(SOUTH_CITIES), n_comm)],
    )
    lo, hi = config.building_year_range
    comm_year = rng.integers(lo, hi + 1, n_comm)
    mgmt = rng.normal(0.0, 1.0, n_comm)
    width = max(3, len(str(n_comm)))
    comm_id = _cat("C", _zpad(np.arange(1, n_comm + 1), width))

    # teams: consecutive communities of the same city, a few per team
    order = np.lexsort((np.arange(n_comm), city))
    comm_team = np.empty(n_comm, dtype=np.int64)
    team_names: list[str] = []
    prev_city, in_team = None, 0
    for c in order:
        if city[c] != prev_city or in_team >= config.communities_per_team:
            same_city = sum(1 for t in team_names if t.startswith(str(city[c])))
            team_names.append(f"{city[c]}维修{same_city + 1}组")
            prev_city, in_team = city[c], 0
        comm_team[c] = len(team_names) - 1
        in_team += 1

    # homes per community (uneven sizes), buildings by era: old walk-ups vs high-rises
    share = rng.lognormal(0.0, 0.4, n_comm)
    homes_per_comm = np.maximum(1, np.floor(units * share / share.sum()).astype(np.int64))
    homes_per_comm[0] += units - homes_per_comm.sum()
    old = comm_year < 2000
    floors = np.where(old, rng.integers(5, 8, n_comm), rng.integers(11, 34, n_comm))
    per_floor = rng.integers(2, 5, n_comm)
    per_building = floors * per_floor

    home_comm = np.repeat(np.arange(n_comm), homes_per_comm)
    k = np.arange(units) - np.repeat(np.cumsum(homes_per_comm) - homes_per_comm, homes_per_comm)
    pb = per_building[home_comm]
    building = k // pb + 1
    within = k % pb
    floor = within // per_floor[home_comm] + 1
    room = within % per_floor[home_comm] + 1
    n_buildings = (homes_per_comm + per_building - 1) // per_building
    building_year = comm_year[home_comm] + rng.integers(0, 3, units) * (building % 3 == 0)
    home_id = _cat(
        comm_id[home_comm], "-", _zpad(building, 2), "-", _zpad(floor, 2), _zpad(room, 2)
    )
    area = np.round(np.clip(rng.normal(95.0, 28.0, units), 35.0, 260.0), 1)

    # public locations: per building and category, elevators only in high-rises
    loc_per_building = np.asarray(config.public_locations_per_building)
    b_comm = np.repeat(np.arange(n_comm), n_buildings)
    b_no = np.arange(len(b_comm)) - np.repeat(np.cumsum(n_buildings) - n_buildings, n_buildings) + 1
    elev = np.where(floors[b_comm] > 7, 1 + (per_floor[b_comm] >= 4), 0)
    counts = np.tile(loc_per_building, (len(b_comm), 1))
    counts[:, CATEGORIES.index("elevator")] = elev
    pub_b = np.repeat(np.repeat(np.arange(len(b_comm)), n_cat), counts.ravel())
    pub_cat = np.repeat(np.tile(np.arange(n_cat), len(b_comm)), counts.ravel())
    first = np.r_[True, (pub_b[1:] != pub_b[:-1]) | (pub_cat[1:] != pub_cat[:-1])]
    run_start = np.maximum.accumulate(np.where(first, np.arange(len(pub_b)), 0))
    pub_k = np.arange(len(pub_b)) - run_start + 1
    codes = np.asarray(CATEGORY_CODES, dtype=_S)
    pub_comm = b_comm[pub_b]
    pub_id = _cat(
        comm_id[pub_comm], "-", _zpad(b_no[pub_b], 2), "-P", codes[pub_cat], pub_k.astype(_S)
    )
    pub_year = comm_year[pub_comm]

    n_cl = len(config.community_locations)
    cl_comm = np.repeat(np.arange(n_comm), n_cl)
    cl_cat = np.tile([CATEGORIES.index(c) for c in config.community_locations], n_comm)
    cl_id = _cat(comm_id[cl_comm], "-PUB", _zpad(np.tile(np.arange(1, n_cl + 1), n_comm), 2))

    n_pub = len(pub_id) + len(cl_id)
    unit_id = np.concatenate([home_id, pub_id, cl_id])
    unit_comm = np.concatenate([home_comm, pub_comm, cl_comm])
    unit_public = np.r_[np.zeros(units, bool), np.ones(n_pub, bool)]
    unit_category = np.concatenate([np.full(units, -1), pub_cat, cl_cat])
    unit_year = np.concatenate([building_year, pub_year, comm_year[cl_comm]])
    unit_floor = np.r_[floor, np.full(n_pub, -999)]  # -999: no floor (written as empty)
    unit_area = np.r_[area, np.full(n_pub, np.nan)]
    shape = config.proneness_shape
    proneness = rng.gamma(shape, 1.0 / shape, len(unit_id))

    # residents: one reporting household per home
    temperament = rng.choice(3, units, p=np.asarray(config.temperament_probs))
    habit = rng.choice(4, units, p=np.asarray(config.habit_probs))
    resident_id = _cat("R", _zpad(np.arange(1, units + 1), 7))
    unit_resident = np.r_[np.arange(units), np.full(n_pub, -1)]

    # technicians per team: in-house staff sized by homes, plus specialised subcontractors
    n_team = len(team_names)
    team_homes = np.bincount(comm_team, weights=homes_per_comm, minlength=n_team)
    n_in = np.maximum(3, np.round(team_homes / config.units_per_tech)).astype(np.int64)
    n_sub = np.maximum(2, np.round(n_in * config.subcontractor_share)).astype(np.int64)
    t_team = np.r_[np.repeat(np.arange(n_team), n_in), np.repeat(np.arange(n_team), n_sub)]
    t_sub = np.r_[np.zeros(n_in.sum(), bool), np.ones(n_sub.sum(), bool)]
    n_tech = len(t_team)
    certs = rng.random((n_tech, n_cat)) < np.asarray(config.cert_probs)
    in_rank = np.arange(n_in.sum()) - np.repeat(np.cumsum(n_in) - n_in, n_in)
    certs[: n_in.sum()][in_rank == 0, CATEGORIES.index("plumbing")] = True
    certs[: n_in.sum()][in_rank == 1, CATEGORIES.index("electrical")] = True
    specs = [CATEGORIES.index(c) for c in config.subcontractor_specialties]
    sub_rank = np.arange(n_sub.sum()) - np.repeat(np.cumsum(n_sub) - n_sub, n_sub)
    spec = np.where(
        sub_rank < 2, np.asarray(specs)[np.minimum(sub_rank, 1)], rng.choice(specs, n_sub.sum())
    )
    sub_certs = np.zeros((n_sub.sum(), n_cat), bool)
    sub_certs[np.arange(n_sub.sum()), spec] = True
    sub_certs |= rng.random((n_sub.sum(), n_cat)) < np.asarray(config.cert_probs) * 0.3
    certs[n_in.sum() :] = sub_certs
    new_hire = rng.random(n_tech) < config.new_hire_share
    new_hire[: n_in.sum()][in_rank == 0] = False  # every team keeps a veteran to fall back on
    hire_day = np.where(
        new_hire,
        rng.integers(0, max(1, n_days - 30), n_tech),
        -np.round(rng.uniform(0.2, 12.0, n_tech) * 365.25).astype(np.int64),
    )
    skill = rng.normal(0.0, 1.0, n_tech) + config.sub_skill_shift * t_sub
    attitude = rng.normal(0.0, 1.0, n_tech) + config.sub_attitude_shift * t_sub
    tech_id = _cat("T", _zpad(np.arange(1, n_tech + 1), 5))

    return World(
        community_id=comm_id,
        community_city=city,
        community_north=north,
        community_year=comm_year,
        community_mgmt=mgmt,
        community_team=comm_team,
        team_name=np.asarray(team_names, dtype=_S),
        unit_id=unit_id,
        unit_community=unit_comm,
        unit_public=unit_public,
        unit_category=unit_category,
        unit_building_year=unit_year,
        unit_floor=unit_floor,
        unit_area=unit_area,
        unit_proneness=proneness,
        unit_resident=unit_resident,
        resident_id=resident_id,
        resident_temperament=temperament,
        resident_habit=habit,
        tech_id=tech_id,
        tech_team=t_team,
        tech_hire_day=hire_day,
        tech_sub=t_sub,
        tech_certs=certs,
        tech_skill=skill,
        tech_attitude=attitude,
    )
