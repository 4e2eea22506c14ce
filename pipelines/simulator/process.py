"""The order process: reports, dispatch, visits, repairs, failures and follow-ups.

Independent faults arrive as an inhomogeneous Poisson process per unit and category; each
generation of orders is then processed in one vectorised pass, and the repairs that fail come
back as the next generation (reworks) until none is left inside the window. The probabilities
the process draws from are kept so that the ground truth is the *true* probability of each
contract label, not a noisy realisation of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.schemas import CATEGORIES, PRIORITIES

from .config import SimulationConfig
from .timeline import HOLIDAY, Timeline, sample_hours
from .world import World

N_CAT = len(CATEGORIES)
NORMAL, URGENT, EMERGENCY = (PRIORITIES.index(p) for p in ("normal", "urgent", "emergency"))
CHANNEL_APP, CHANNEL_PHONE, CHANNEL_WECHAT, CHANNEL_WALK_IN, CHANNEL_PATROL = range(5)
OPEN, DISPATCHED, IN_PROGRESS, COMPLETED, CANCELLED = range(5)

#: Label window of the contract's rework label (days).
REWORK_WINDOW_DAYS = 30.0


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Reports:
    """One generation of reported faults, before processing.

    ``parent`` is the index (in the final order table) of the failed order a rework comes
    from, or -1; ``linked`` says whether the source system records that link.
    """

    unit: np.ndarray
    category: np.ndarray
    t: np.ndarray
    parent: np.ndarray
    linked: np.ndarray
    prev_tech: np.ndarray
    prev_priority: np.ndarray

    def __len__(self) -> int:
        return len(self.unit)


def unit_rate(
    world: World, unit: np.ndarray, category: np.ndarray, start_year: int, config: SimulationConfig
) -> np.ndarray:
    """Expected independent reports per year of (unit, category): base × proneness × age."""
    public = world.unit_public[unit]
    base = np.where(
        public, np.asarray(config.public_rates)[category], np.asarray(config.home_rates)[category]
    )
    age = np.maximum(0, start_year - world.unit_building_year[unit])
    return base * world.unit_proneness[unit] * config.age_rate_per_decade ** (age / 10.0)


def region_of(world: World, unit: np.ndarray) -> np.ndarray:
    """0 for southern, 1 for northern units (index into ``timeline.REGIONS``)."""
    return world.community_north[world.unit_community[unit]].astype(np.int64)


def background_reports(
    rng: np.random.Generator,
    world: World,
    timeline: Timeline,
    start_year: int,
    config: SimulationConfig,
) -> Reports:
    """Independent faults: Poisson counts per (unit, category), days by seasonal intensity."""
    homes = np.flatnonzero(~world.unit_public)
    home_cats = np.flatnonzero(np.asarray(config.home_rates) > 0)
    pub = np.flatnonzero(world.unit_public)
    unit = np.r_[np.repeat(homes, len(home_cats)), pub]
    cat = np.r_[np.tile(home_cats, len(homes)), world.unit_category[pub]]
    region = region_of(world, unit)
    total = timeline.cum_intensity[region, cat, timeline.n_days]
    expected = unit_rate(world, unit, cat, start_year, config) / 365.0 * total
    n = rng.poisson(expected)
    unit, cat, region = np.repeat(unit, n), np.repeat(cat, n), np.repeat(region, n)
    day = np.empty(len(unit), dtype=np.int64)
    u = rng.random(len(unit))
    for r in range(timeline.cum_intensity.shape[0]):
        for c in range(N_CAT):
            m = (region == r) & (cat == c)
            if m.any():
                cum = timeline.cum_intensity[r, c, 1 : timeline.n_days + 1]
                day[m] = np.searchsorted(cum, u[m] * cum[-1], side="right")
    day = np.minimum(day, timeline.n_days - 1)
    t = day + sample_hours(timeline, rng.random(len(unit))) / 24.0
    k = len(unit)
    return Reports(unit, cat, t, np.full(k, -1), np.zeros(k, bool), np.full(k, -1), np.full(k, -1))


def team_load(
    world: World,
    timeline: Timeline,
    reports: Reports,
    config: SimulationConfig,
    rework_share: float = 0.08,
) -> np.ndarray:
    """Orders per team and day relative to the team's staffed capacity (``[team, day]``).

    Computed from the independent reports, inflated by the expected share of reworks, so that
    every generation sees the same workload (reworks are too few to move it much).
    """
    n_team = len(world.team_name)
    n_days = len(timeline.day_type)
    team = world.community_team[world.unit_community[reports.unit]]
    day = reports.t.astype(np.int64)
    counts = np.bincount(team * n_days + day, minlength=n_team * n_days).reshape(n_team, n_days)
    start = np.clip(world.tech_hire_day, 0, n_days - 1)
    hires = np.bincount(world.tech_team * n_days + start, minlength=n_team * n_days)
    active = np.cumsum(hires.reshape(n_team, n_days), axis=1)
    staffing = np.asarray(config.staffing_factor)[timeline.day_type]
    capacity = np.maximum(active, 1) * config.tech_capacity_per_day * staffing
    return counts * (1.0 + rework_share) / capacity


def _pick(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """Uniform picks from a pool of technician indices."""
    return pool[rng.integers(0, len(pool), n)]


def assign_technicians(
    rng: np.random.Generator,
    world: World,
    team: np.ndarray,
    category: np.ndarray,
    day: np.ndarray,
    load: np.ndarray,
    prev_tech: np.ndarray,
    config: SimulationConfig,
) -> np.ndarray:
    """Pick the technician the dispatcher sends for each order.

    Certified staff of the team mostly; specialised subcontractors for elevators and as
    overflow on loaded days; the same technician again for many reworks. Technicians hired
    after the order's day are replaced by a veteran of the team.
    """
    tech = np.full(len(team), -1, dtype=np.int64)
    sub_cats = [CATEGORIES.index(c) for c in config.subcontracted]
    key = team * N_CAT + category
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.r_[True, key[order][1:] != key[order][:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        idx = order[a:b]
        g, c = int(team[idx[0]]), int(category[idx[0]])
        members = np.flatnonzero(world.tech_team == g)
        sub = world.tech_sub[members]
        in_house, subs = members[~sub], members[sub]
        certified = members[world.tech_certs[members, c]]
        if c in sub_cats:
            primary = subs[world.tech_certs[subs, c]]
            if len(primary) == 0:
                primary = np.flatnonzero(world.tech_sub & world.tech_certs[:, c])
            if len(primary) == 0:
                primary = in_house
        else:
            primary = certified if len(certified) else in_house
        k = len(idx)
        pick = np.where(
            rng.random(k) < config.p_pick_certified, _pick(rng, primary, k), _pick(rng, in_house, k)
        )
        overflow = rng.random(k) < np.clip(0.3 * (load[idx] - 1.0), 0.0, 0.4)
        if len(subs):
            pick = np.where(overflow & (c not in sub_cats), _pick(rng, subs, k), pick)
        veterans = in_house[world.tech_hire_day[in_house] <= 0]
        not_hired = world.tech_hire_day[pick] > day[idx]
        pick[not_hired] = _pick(rng, veterans, int(not_hired.sum()))
        tech[idx] = pick
    again = (prev_tech >= 0) & (rng.random(len(team)) < config.p_same_tech_rework)
    tech[again] = prev_tech[again]
    return tech


def _truncated_weibull(
    rng: np.random.Generator, n: int, shape: float, scale: float, lo: float, hi: float
) -> np.ndarray:
    """Weibull draws restricted to [lo, hi] by inverting the CDF on the allowed band."""
    f_lo = 1.0 - np.exp(-((lo / scale) ** shape))
    f_hi = 1.0 - np.exp(-((hi / scale) ** shape))
    u = rng.uniform(f_lo, f_hi, n)
    return scale * (-np.log1p(-u)) ** (1.0 / shape)


def _weibull_band_prob(x: float, shape: float, scale: float, lo: float, hi: float) -> float:
    """P(lag <= x) for the truncated Weibull of :func:`_truncated_weibull`."""

    def cdf(v: float) -> float:
        return 1.0 - float(np.exp(-((v / scale) ** shape)))

    return min(1.0, max(0.0, (cdf(x) - cdf(lo)) / (cdf(hi) - cdf(lo))))


#: Shortest and longest within-window lag of a re-report (days); the longest leaves room to
#: move a night-time re-report to the morning without leaving the 30-day window.
_LAG_LO, _LAG_HI = 0.02, 29.0


def _shift_to_office(
    t: np.ndarray, open_h: float, close_h: float, rng: np.random.Generator, spread_h: float = 2.0
) -> np.ndarray:
    """Move visits booked outside office hours to the next opening (+ a little)."""
    day = np.floor(t)
    hour = (t - day) * 24.0
    before = hour < open_h
    after = hour >= close_h - 1.0
    jitter = rng.uniform(0.0, spread_h, len(t)) / 24.0
    out = t.copy()
    out[before] = day[before] + open_h / 24.0 + jitter[before]
    out[after] = day[after] + 1.0 + open_h / 24.0 + jitter[after]
    return out


def process_reports(
    rng: np.random.Generator,
    world: World,
    timeline: Timeline,
    load_table: np.ndarray,
    reports: Reports,
    start_year: int,
    config: SimulationConfig,
) -> dict[str, np.ndarray]:
    """Run one generation of reports through dispatch, repair, failure and follow-up.

    Returns a dict of aligned arrays: the observable order fields (as codes and float days
    since start), the ground-truth drivers and probabilities, and ``rework_t``/``rework_linked``
    (NaN/False when the repair did not fail or comes back after the window).
    """
    n = len(reports)
    t_end = float(timeline.n_days)
    unit, cat, t = reports.unit, reports.category, reports.t
    is_rework = reports.parent >= 0
    comm = world.unit_community[unit]
    team = world.community_team[comm]
    public = world.unit_public[unit]
    resident = world.unit_resident[unit]
    home = ~public
    temper = np.where(home, world.resident_temperament[np.maximum(resident, 0)], 0)
    habit = np.where(home, world.resident_habit[np.maximum(resident, 0)], 2)
    day = t.astype(np.int64)
    hour = (t - day) * 24.0
    dtype = timeline.day_type[day]
    holiday = dtype == HOLIDAY
    night = (hour < 7.0) | (hour >= 22.0)
    mgmt = world.community_mgmt[comm]
    age_dec = np.maximum(0, start_year - world.unit_building_year[unit]) / 10.0
    load = load_table[team, day]

    # the fault and how it is reported
    severity = rng.normal(0.0, 1.0, n) + 0.3 * is_rework
    s = config.severity_priority_coef * severity
    p_em = sigmoid(np.asarray(config.emergency_logit)[cat] + s)
    p_ur = sigmoid(np.asarray(config.urgent_logit)[cat] + s)
    u = rng.random(n)
    priority = np.where(u < p_em, EMERGENCY, np.where(u < p_em + (1 - p_em) * p_ur, URGENT, NORMAL))
    priority = np.where(is_rework, np.maximum(priority, reports.prev_priority), priority)
    home_channel = rng.choice(4, n, p=[0.36, 0.30, 0.26, 0.08])
    phone = (priority == EMERGENCY) | night
    home_channel = np.where(phone & (rng.random(n) < 0.5), CHANNEL_PHONE, home_channel)
    pub_channel = rng.choice(
        [CHANNEL_PATROL, CHANNEL_PHONE, CHANNEL_APP, CHANNEL_WECHAT], n, p=[0.55, 0.25, 0.1, 0.1]
    )
    channel = np.where(public, pub_channel, home_channel)
    cancelled = ~is_rework & (rng.random(n) < config.cancel_prob)

    # dispatch and visit: office hours, day type, team load, management, night
    open_h, close_h = config.office_hours
    wait_h = np.where(
        (priority == NORMAL) & (hour < open_h),
        open_h - hour,
        np.where((priority == NORMAL) & (hour >= close_h), 24.0 - hour + open_h, 0.0),
    )
    day_f = np.asarray(config.dispatch_day_factor)[dtype]
    load_f = 1.0 + config.load_delay_coef * np.maximum(0.0, load - config.load_free)
    mgmt_f = np.exp(-0.2 * mgmt)
    night_f = np.where(night & (priority != NORMAL), 1.5, 1.0)
    slow = day_f * load_f * mgmt_f * night_f
    sig = config.delay_sigma
    dispatch_h = (
        wait_h + np.asarray(config.dispatch_median_h)[priority] * rng.lognormal(0, sig, n) * slow
    )
    arrival_h = np.asarray(config.arrival_median_h)[priority] * rng.lognormal(0, sig, n) * slow
    t_disp = t + dispatch_h / 24.0
    t_arr = t_disp + arrival_h / 24.0
    booked = priority == NORMAL
    t_arr[booked] = _shift_to_office(t_arr[booked], open_h, close_h, rng)

    tech = assign_technicians(rng, world, team, cat, day, load, reports.prev_tech, config)
    sub = world.tech_sub[tech]
    tenure = np.clip((day - world.tech_hire_day[tech]) / 365.25, 0.0, config.tenure_cap_years)
    skill = world.tech_skill[tech] + config.skill_per_tenure_year * (
        tenure - config.tenure_cap_years / 2
    )
    attitude = world.tech_attitude[tech]
    needs_cert = np.isin(cat, [CATEGORIES.index(c) for c in config.cert_required])
    uncertified = needs_cert & ~world.tech_certs[tech, cat]
    parts = rng.random(n) < sigmoid(
        np.asarray(config.parts_logit)[cat] + config.parts_severity * severity + 0.2 * age_dec
    )
    rushed = rng.random(n) < sigmoid(
        config.rushed_intercept
        + config.rushed_load * np.maximum(0.0, load - 1.0)
        + 0.3 * sub
        - 0.2 * attitude
    )
    overloaded = load > config.overload_threshold
    work_h = (
        np.asarray(config.work_median_h)[cat] * rng.lognormal(0, 0.6, n) * np.where(parts, 1.3, 1.0)
    )
    work_h *= np.where(rushed, 0.5, 1.0)
    waits = parts & (rng.random(n) < config.parts_wait_prob)
    work_h += waits * rng.uniform(*config.parts_wait_days, n) * 24.0
    t_comp = t_arr + work_h / 24.0

    # cancellations and the state at the end of the data
    early_cancel = cancelled & (rng.random(n) < 0.5)
    t_disp[early_cancel] = np.nan
    t_arr[cancelled] = np.nan
    t_comp[cancelled] = np.nan
    status = np.select(
        [cancelled, t_comp <= t_end, t_arr <= t_end, t_disp <= t_end],
        [CANCELLED, COMPLETED, IN_PROGRESS, DISPATCHED],
        OPEN,
    )
    t_disp[~(t_disp <= t_end)] = np.nan
    t_arr[~(t_arr <= t_end)] = np.nan
    t_comp[~(t_comp <= t_end)] = np.nan
    tech = np.where(np.isnan(t_disp), -1, tech)
    done = status == COMPLETED

    # repair failure → rework (the next generation)
    logit = (
        config.fail_intercept
        + config.rework_drift * t / t_end
        + config.fail_skill * skill
        + config.fail_proneness * np.log(world.unit_proneness[unit])
        + config.fail_age * age_dec
        + np.asarray(config.fail_category)[cat]
        + config.fail_parts * parts
        + config.fail_rushed * rushed
        + config.fail_uncertified * uncertified
        + config.fail_overload * overloaded
        + config.fail_subcontractor * sub
        + config.fail_severity * severity
    )
    p_fail = np.where(done, sigmoid(logit), 0.0)
    failed = rng.random(n) < p_fail
    within = rng.random(n) < config.rework_within_prob
    k, lam = config.rework_weibull_shape, config.rework_weibull_scale_days
    lag = np.where(
        within,
        _truncated_weibull(rng, n, k, lam, _LAG_LO, _LAG_HI),
        rng.uniform(*config.rework_late_days, n),
    )
    linked = rng.random(n) < config.parent_link_prob
    rework_t = t_comp + lag
    r_hour = (rework_t - np.floor(rework_t)) * 24.0
    morning = r_hour < 7.0  # people report the next morning, not at 3 am
    rework_t[morning] = np.floor(rework_t[morning]) + (7.0 + rng.uniform(0, 2, n)[morning]) / 24.0
    rework_t = np.where(failed & (rework_t < t_end), rework_t, np.nan)

    # true P(rework label): own failure re-reported in the window (or linked later, if inside
    # the data) ∪ an independent fault of the same unit + category in the window
    lo_late, hi_late = config.rework_late_days
    horizon = t_end - t_comp
    p_late_in = np.clip((horizon - lo_late) / (hi_late - lo_late), 0.0, 1.0)
    q = config.rework_within_prob + (
        1 - config.rework_within_prob
    ) * config.parent_link_prob * np.nan_to_num(p_late_in)
    region = region_of(world, unit)
    tc = np.nan_to_num(t_comp)
    hazard = (
        unit_rate(world, unit, cat, start_year, config)
        / 365.0
        * (1.0 - config.cancel_prob)
        * timeline.integrated_intensity(region, cat, tc, tc + REWORK_WINDOW_DAYS)
    )
    p_background = np.where(done, 1.0 - np.exp(-hazard), np.nan)
    p_rework = np.where(done, 1.0 - (1.0 - p_fail * q) * (1.0 - p_background), np.nan)

    # follow-up: urges, charges, latent dissatisfaction, response, rating, complaint, comment
    sla_arr = np.asarray(config.sla_arrival_h)[priority]
    sla_disp = np.asarray(config.sla_dispatch_h)[priority]
    waited_h = (np.where(np.isnan(t_arr), min(t_end, 1e9), t_arr) - t) * 24.0
    waited_h = np.where(cancelled, dispatch_h, waited_h)
    delay_factor = waited_h / sla_arr
    dispatch_factor = dispatch_h / sla_disp
    overdue = np.maximum(0.0, delay_factor - 0.5)
    urge_mean = (config.urge_base + config.urge_coef * overdue**0.8) * np.asarray(
        config.urge_temperament
    )[temper]
    urges = np.where(home, rng.poisson(np.minimum(urge_mean, 10.0)), 0)

    new_building = (start_year - world.unit_building_year[unit]) < config.warranty_years
    paid = home & ~new_building & (rng.random(n) < np.asarray(config.paid_prob)[parts.astype(int)])
    cost = paid * (
        config.labour_median_yuan * rng.lognormal(0, 0.5, n)
        + parts * config.parts_median_yuan * rng.lognormal(0, 0.8, n)
    )
    cost = np.round(cost)
    angry = temper == 2
    z = (
        config.dis_intercept
        + config.dis_delay * np.log1p(np.maximum(0.0, delay_factor - 1.0))
        + config.dis_urge * urges
        + config.dis_rework * is_rework
        + config.dis_attitude * attitude
        + config.dis_skill * skill
        + np.asarray(config.dis_temperament)[temper]
        + config.dis_paid * paid
        + config.dis_cost * np.log1p(cost / 100.0)
        + config.dis_holiday * holiday
        + config.dis_management * mgmt
    )
    p_early_given_fail = config.rework_within_prob * _weibull_band_prob(
        config.followup_days, k, lam, _LAG_LO, _LAG_HI
    )
    early = failed & within & (lag < config.followup_days)
    z_eff = z + config.dis_early_failure * early
    dissatisfied = rng.random(n) < sigmoid(z_eff)

    base = np.where(home, np.asarray(config.respond_base)[habit], 0.0)
    angry_f = np.where(angry, config.respond_angry, 1.0)
    resp1 = np.minimum(0.95, base * config.respond_dissatisfied * angry_f)

    def rating_probs(zz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P(5), P(4), P(3) of a satisfied resident (always-5 and harsh habits shift it)."""
        p5 = sigmoid(-zz - 1.5 - 2.5 * (habit == 3))
        p5 = np.where(habit == 1, 1.0, p5)
        return p5, (1 - p5) * 0.75, (1 - p5) * 0.25

    def resp0(zz: np.ndarray) -> np.ndarray:
        """P(answer the follow-up | satisfied), marginal over the rating."""
        p5, p4, p3 = rating_probs(zz)
        r = lambda m: np.minimum(0.95, base * m * angry_f)  # noqa: E731
        return p5 * r(config.respond_five) + p4 * r(1.0) + p3 * r(config.respond_three)

    p_complaint = sigmoid(
        config.complaint_intercept
        + config.complaint_angry * angry
        + config.complaint_urge * urges
        + config.complaint_rework * is_rework
        + config.complaint_public * public
    )
    r1 = 1.0 - (1.0 - p_complaint) * (1.0 - resp1)
    pe = np.where(done, p_fail * p_early_given_fail, 0.0)
    pd0, pd1 = sigmoid(z), sigmoid(z + config.dis_early_failure)
    p_any = (1 - pe) * pd0 * r1 + pe * pd1 * r1
    p_lab = (
        p_any
        + (1 - pe) * (1 - pd0) * resp0(z)
        + pe * (1 - pd1) * resp0(z + config.dis_early_failure)
    )
    p_latent = (1 - pe) * pd0 + pe * pd1

    # realise the follow-up
    p5, p4, _ = rating_probs(z_eff)
    u = rng.random(n)
    sat_rating = np.where(u < p5, 5, np.where(u < p5 + p4, 4, 3))
    bad_rating = np.where(rng.random(n) < sigmoid(0.6 + 0.4 * z_eff + 0.5 * angry), 1, 2)
    rating = np.where(dissatisfied, bad_rating, sat_rating)
    m = np.select([rating == 5, rating == 3], [config.respond_five, config.respond_three], 1.0)
    p_resp = np.where(dissatisfied, resp1, np.minimum(0.95, base * m * angry_f))
    responded = done & (rng.random(n) < p_resp)
    complaint = done & dissatisfied & (rng.random(n) < p_complaint)
    p_comment = np.where(
        responded,
        config.comment_if_rated + config.comment_dissatisfied * dissatisfied,
        config.comment_if_unrated + 0.1 * dissatisfied,
    )
    commented = done & home & (rng.random(n) < p_comment)

    nan = np.nan
    return {
        "unit": unit,
        "category": cat,
        "t_report": t,
        "t_dispatch": t_disp,
        "t_arrive": t_arr,
        "t_complete": t_comp,
        "status": status,
        "priority": priority,
        "channel": channel,
        "tech": tech,
        "parts": parts,
        "paid": paid,
        "cost": cost,
        "urges": urges,
        "rating": np.where(responded, rating, 0),
        "complaint": complaint,
        "commented": commented,
        "responded": responded,
        "parent": reports.parent,
        "linked": reports.linked,
        "is_rework": is_rework,
        "severity": severity,
        "temperament": np.where(home, temper, -1),
        "habit": np.where(home, habit, -1),
        "tech_skill": np.where(tech >= 0, skill, nan),
        "tech_attitude": np.where(tech >= 0, attitude, nan),
        "tech_sub": sub & (tech >= 0),
        "uncertified": uncertified & (tech >= 0),
        "rushed": rushed & done,
        "load": load,
        "overloaded": overloaded,
        "holiday": holiday,
        "night": night,
        "delay_factor": delay_factor,
        "dispatch_factor": dispatch_factor,
        "failed": failed & done,
        "early_failure": early & done,
        "dissatisfied_latent": dissatisfied & done,
        "p_fail": np.where(done, p_fail, nan),
        "p_background": p_background,
        "p_rework": p_rework,
        "p_dissatisfied": np.where(done, p_any, nan),
        "p_dissatisfied_if_labelled": np.where(
            done & (p_lab > 0), p_any / np.maximum(p_lab, 1e-12), nan
        ),
        "p_dissatisfied_latent": np.where(done, p_latent, nan),
        "rework_t": rework_t,
        "rework_linked": linked,
        "age_decades": age_dec,
    }
