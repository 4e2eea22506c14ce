"""Every knob of the order simulator, gathered in one frozen dataclass.

The defaults are tuned so that the generated data behaves like a real property-management
export: ~100k orders for the default 24 months, about 9 % rework and about 12 % dissatisfied
among labelled orders, SLA breaches concentrated at nights, weekends and holidays. Keeping them
here (rather than buried in the process code) lets tests and experiments turn one driver up or
off and check that models pick the change up.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.schemas import CATEGORIES, PRIORITIES


def _by_category(**values: float) -> tuple[float, ...]:
    """Order per-category values like ``models.schemas.CATEGORIES`` (missing → 0)."""
    unknown = set(values) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown categories: {sorted(unknown)}")
    return tuple(float(values.get(c, 0.0)) for c in CATEGORIES)


def _by_priority(normal: float, urgent: float, emergency: float) -> tuple[float, ...]:
    """Order per-priority values like ``models.schemas.PRIORITIES``."""
    return tuple(
        float({"normal": normal, "urgent": urgent, "emergency": emergency}[p]) for p in PRIORITIES
    )


@dataclass(frozen=True)
class SeasonBump:
    """A seasonal peak in the report rate of one category.

    Attributes
    ----------
    category
        Contract category name.
    region
        ``"north"``, ``"south"`` or ``"all"``: northern winters freeze pipes, the southern
        梅雨 season brings leaks, summer heat brings air-conditioning calls everywhere.
    center_doy
        Day of year of the peak.
    width_days
        Standard deviation of the (circular) Gaussian bump.
    amplitude
        Extra rate at the peak, relative to the category's base rate.
    """

    category: str
    region: str
    center_doy: float
    width_days: float
    amplitude: float


DEFAULT_SEASONS: tuple[SeasonBump, ...] = (
    SeasonBump("hvac", "all", 205, 25, 1.6),  # summer air conditioning
    SeasonBump("hvac", "south", 210, 22, 1.0),  # hotter, longer southern summer
    SeasonBump("hvac", "north", 15, 35, 1.2),  # 暖气不热 in the heating season
    SeasonBump("waterproofing", "south", 172, 14, 2.5),  # 梅雨
    SeasonBump("waterproofing", "all", 210, 20, 1.0),  # summer storms
    SeasonBump("wall_floor", "south", 175, 20, 0.7),  # damp walls, mould
    SeasonBump("plumbing", "north", 18, 22, 0.9),  # frozen / burst pipes
    SeasonBump("electrical", "all", 205, 30, 0.4),  # summer load trips breakers
)


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of the simulated world and order process.

    Rates are per year; durations in hours unless the name says days. Per-category tuples follow
    ``models.schemas.CATEGORIES``; per-priority tuples follow ``models.schemas.PRIORITIES``
    (normal, urgent, emergency).

    Attributes
    ----------
    units_per_community
        Homes per community; the number of communities is ``units / units_per_community``
        (30 at the default 30 000 homes).
    communities_per_team
        Communities served by one repair team (班组), grouped within a city.
    north_share
        Share of communities in northern (heated, freezing) cities.
    units_per_tech
        Homes per in-house technician; subcontractors come on top.
    subcontractor_share
        Subcontractors per in-house technician in a team.
    new_hire_share
        Share of technicians hired during the simulated window (short tenure, lower skill).
    tech_capacity_per_day
        Orders one technician handles per day before the team counts as loaded.
    proneness_shape
        Gamma shape of the latent fault-proneness of a unit (mean 1); smaller = more
        heterogeneous, i.e. a few units keep breaking.
    age_rate_per_decade
        Multiplicative increase of the fault rate per decade of building age.
    home_rates
        Reports per home per year for each category (before proneness and season).
    public_rates
        Reports per public location per year for each category.
    public_locations_per_building
        Public locations per building and category (elevator count is derived from floors).
    community_locations
        Categories of the community-wide public locations (gates, playgrounds, street lights).
    cert_probs
        Chance an in-house technician holds each category's certification.
    subcontractor_specialties
        Specialties of subcontracted technicians; each team gets the first two at least.
    sub_skill_shift, sub_attitude_shift
        Mean skill / attitude of subcontractors relative to in-house staff.
    skill_per_tenure_year, tenure_cap_years
        Skill gained per year of tenure, up to the cap.
    building_year_range
        Range of community completion years.
    temperament_probs
        Resident temperament shares: calm, picky, angry.
    habit_probs
        Rating habits: normal, always gives 5, never answers follow-ups, harsh.
    report_day_factor
        Report-rate factor on workdays, weekends, public holidays.
    staffing_factor
        Team capacity on workdays, weekends, public holidays (thin holiday staffing).
    dispatch_day_factor
        Dispatch/arrival slowdown on workdays, weekends, public holidays.
    hour_profile
        Relative report intensity for each hour of the day.
    dispatch_median_h, arrival_median_h
        Median hours report→dispatch and dispatch→arrival by priority.
    delay_sigma
        Log-normal spread of the delays.
    office_hours
        (start, end) hour of the dispatch desk for normal orders; normal visits are booked
        inside it as well.
    load_delay_coef
        Delay multiplier per unit of team load above ``load_free``.
    load_free
        Load (orders / capacity) below which delays do not grow.
    work_median_h
        Median on-site work time per category.
    parts_logit, parts_severity
        Logit of replacing parts per category, and its increase with the fault's severity.
    parts_wait_prob
        Chance that a job with parts waits for them (adds ``parts_wait_days``).
    sla_dispatch_h, sla_arrival_h
        SLA hours by priority (dispatch 0.25/0.5/2, arrival 0.5/2/24 for emergency/urgent/
        normal).
    emergency_logit, urgent_logit
        Per-category logits of emergency and (else) urgent priority.
    severity_priority_coef
        Effect of the latent severity on priority.
    cancel_prob
        Chance that an independent (non-rework) report is cancelled.
    cert_required
        Categories that need a certified technician; others count as certified for anyone.
    subcontracted
        Categories normally done by specialised subcontractors (维保单位).
    p_pick_certified
        Chance the dispatcher picks a certified technician when one exists in the team.
    p_same_tech_rework
        Chance a rework goes back to the technician of the failed repair.
    fail_intercept, fail_skill, fail_proneness, fail_age, fail_category, fail_parts,
    fail_rushed, fail_uncertified, fail_overload, fail_subcontractor, fail_severity
        Logit of a repair failing (driving rework).
    rework_drift
        Added to the failure logit in proportion to the report's time over the history, from 0
        at the first day to this value at the last: a rework rate that drifts upward (ageing
        stock, a worse contractor), to check that calibration on a later slice holds. 0 (the
        default) keeps the rate stationary.
    overload_threshold
        Team load above which a day counts as overloaded.
    rushed_intercept, rushed_load
        Logit of a rushed job (half the usual on-site time).
    rework_within_prob
        Chance a failure is reported again within the 30-day label window.
    rework_weibull_shape, rework_weibull_scale_days
        Lag from completion to the re-report, for re-reports within the window.
    rework_late_days
        Uniform range of the lag for late re-reports.
    parent_link_prob
        Chance the source system links a rework to its parent (``parent_order_id``).
    followup_days
        Days from completion to the follow-up call; a failure before it sours the rating.
    urge_base, urge_coef, urge_temperament
        Poisson mean of urges: base + coef × (overdue share of the SLA)^0.8, scaled by the
        resident's temperament (calm, picky, angry).
    paid_prob
        Chance an indoor repair is paid without / with parts (公区 repairs are never paid).
    warranty_years
        Buildings younger than this are under warranty (unpaid).
    labour_median_yuan, parts_median_yuan
        Median labour and parts charge of paid repairs.
    dis_*
        Logit of latent dissatisfaction.
    respond_base
        Follow-up response probability per rating habit (normal, always-5, never, harsh).
    respond_dissatisfied, respond_five, respond_three, respond_angry
        Response multipliers: the unhappy and the delighted answer more.
    complaint_intercept, complaint_angry, complaint_urge, complaint_rework, complaint_public
        Logit of a complaint given dissatisfaction.
    comment_if_rated, comment_if_unrated, comment_dissatisfied
        Chance of a follow-up comment.
    comment_off_tone
        Chance a comment's words do not match the resident's verdict: an unhappy resident who
        answers politely or perfunctorily (好的/谢谢), a satisfied one who grumbles about one
        aspect. Real rated comments carry this noise (a text model on them is ~0.9 accurate,
        not perfect); without it the comment would be a give-away of the rating.
    tone_noise
        Chance the description's tone is drawn at random instead of from the temperament.
    repeat_cue_rework, repeat_cue_prior, repeat_cue_false
        Chance of a repeat cue (又坏了…) on reworks, on independent repeats of a recent
        problem, and on first-time reports.
    typo_prob
        Chance of a homophone typo in a text.
    seasons
        Seasonal peaks of the report rate (:class:`SeasonBump`).
    """

    units_per_community: int = 1000
    communities_per_team: int = 4
    north_share: float = 0.4
    units_per_tech: int = 800
    subcontractor_share: float = 0.3
    new_hire_share: float = 0.15
    tech_capacity_per_day: float = 4.0
    proneness_shape: float = 1.5
    age_rate_per_decade: float = 1.25
    home_rates: tuple[float, ...] = _by_category(
        plumbing=0.26,
        electrical=0.14,
        hvac=0.09,
        fire_safety=0.01,
        door_window=0.11,
        waterproofing=0.05,
        wall_floor=0.07,
        other=0.07,
    )
    public_rates: tuple[float, ...] = _by_category(
        plumbing=0.25,
        electrical=0.45,
        hvac=0.15,
        fire_safety=0.25,
        door_window=0.4,
        waterproofing=0.2,
        wall_floor=0.2,
        elevator=0.65,
        public_facility=0.5,
        other=0.2,
    )
    public_locations_per_building: tuple[int, ...] = tuple(
        int(v)
        for v in _by_category(
            plumbing=1,
            electrical=2,
            fire_safety=2,
            door_window=1,
            waterproofing=1,
            wall_floor=1,
            public_facility=1,
        )
    )
    community_locations: tuple[str, ...] = (
        "public_facility",
        "public_facility",
        "public_facility",
        "public_facility",
        "electrical",
        "hvac",
        "other",
    )
    cert_probs: tuple[float, ...] = _by_category(
        plumbing=0.7,
        electrical=0.6,
        hvac=0.3,
        fire_safety=0.15,
        door_window=0.1,
        waterproofing=0.2,
        wall_floor=0.1,
    )
    subcontractor_specialties: tuple[str, ...] = (
        "elevator",
        "fire_safety",
        "hvac",
        "waterproofing",
        "electrical",
    )
    sub_skill_shift: float = -0.4
    sub_attitude_shift: float = -0.3
    skill_per_tenure_year: float = 0.12
    tenure_cap_years: float = 5.0
    building_year_range: tuple[int, int] = (1990, 2022)
    temperament_probs: tuple[float, float, float] = (0.60, 0.25, 0.15)
    habit_probs: tuple[float, float, float, float] = (0.66, 0.11, 0.18, 0.05)
    report_day_factor: tuple[float, float, float] = (1.0, 1.1, 0.85)
    staffing_factor: tuple[float, float, float] = (1.0, 0.7, 0.45)
    dispatch_day_factor: tuple[float, float, float] = (1.0, 1.25, 1.7)
    hour_profile: tuple[float, ...] = (
        0.6, 0.4, 0.3, 0.3, 0.3, 0.5, 1.2, 2.5, 4.5, 6.5, 6.8, 6.0,
        4.5, 4.2, 5.0, 5.2, 5.0, 4.8, 5.0, 5.5, 5.2, 4.0, 2.5, 1.3,
    )  # fmt: skip
    dispatch_median_h: tuple[float, ...] = _by_priority(normal=0.9, urgent=0.15, emergency=0.05)
    arrival_median_h: tuple[float, ...] = _by_priority(normal=5.0, urgent=0.6, emergency=0.15)
    delay_sigma: float = 0.75
    office_hours: tuple[float, float] = (8.0, 20.0)
    load_delay_coef: float = 1.5
    load_free: float = 0.8
    work_median_h: tuple[float, ...] = _by_category(
        plumbing=1.0,
        electrical=0.8,
        hvac=1.5,
        fire_safety=0.7,
        door_window=0.8,
        waterproofing=3.0,
        wall_floor=2.5,
        elevator=1.5,
        public_facility=1.0,
        other=0.7,
    )
    parts_logit: tuple[float, ...] = _by_category(
        plumbing=0.0,
        electrical=-0.3,
        hvac=-0.2,
        fire_safety=0.2,
        door_window=-0.2,
        waterproofing=0.5,
        wall_floor=0.3,
        elevator=-0.5,
        public_facility=-0.3,
        other=-0.6,
    )
    parts_severity: float = 0.5
    parts_wait_prob: float = 0.07
    parts_wait_days: tuple[float, float] = (0.5, 4.0)
    sla_dispatch_h: tuple[float, ...] = _by_priority(normal=2.0, urgent=0.5, emergency=0.25)
    sla_arrival_h: tuple[float, ...] = _by_priority(normal=24.0, urgent=2.0, emergency=0.5)
    emergency_logit: tuple[float, ...] = _by_category(
        plumbing=-2.6,
        electrical=-2.6,
        hvac=-4.0,
        fire_safety=-2.0,
        door_window=-3.5,
        waterproofing=-3.0,
        wall_floor=-5.0,
        elevator=-1.8,
        public_facility=-4.0,
        other=-4.5,
    )
    urgent_logit: tuple[float, ...] = _by_category(
        plumbing=-1.2,
        electrical=-1.2,
        hvac=-1.0,
        fire_safety=-1.0,
        door_window=-1.5,
        waterproofing=-1.3,
        wall_floor=-2.5,
        elevator=-0.8,
        public_facility=-2.0,
        other=-2.5,
    )
    severity_priority_coef: float = 1.0
    cancel_prob: float = 0.025
    cert_required: tuple[str, ...] = ("plumbing", "electrical", "hvac", "fire_safety", "elevator")
    subcontracted: tuple[str, ...] = ("elevator",)
    p_pick_certified: float = 0.75
    p_same_tech_rework: float = 0.55
    fail_intercept: float = -3.9
    rework_drift: float = 0.0
    fail_skill: float = -0.55
    fail_proneness: float = 0.6
    fail_age: float = 0.25
    fail_category: tuple[float, ...] = _by_category(
        plumbing=0.3,
        electrical=0.0,
        hvac=0.1,
        fire_safety=-0.3,
        door_window=-0.2,
        waterproofing=0.8,
        wall_floor=0.2,
        elevator=0.3,
        public_facility=-0.1,
        other=-0.4,
    )
    fail_parts: float = -0.35
    fail_rushed: float = 0.7
    fail_uncertified: float = 0.6
    fail_overload: float = 0.4
    fail_subcontractor: float = 0.3
    fail_severity: float = 0.35
    overload_threshold: float = 1.2
    rushed_intercept: float = -2.6
    rushed_load: float = 1.5
    rework_within_prob: float = 0.88
    rework_weibull_shape: float = 0.8
    rework_weibull_scale_days: float = 6.0
    rework_late_days: tuple[float, float] = (31.0, 75.0)
    parent_link_prob: float = 0.4
    followup_days: float = 3.0
    urge_base: float = 0.05
    urge_coef: float = 0.8
    urge_temperament: tuple[float, float, float] = (0.7, 1.0, 1.8)
    paid_prob: tuple[float, float] = (0.25, 0.55)
    warranty_years: int = 2
    labour_median_yuan: float = 60.0
    parts_median_yuan: float = 90.0
    dis_intercept: float = -3.65
    dis_delay: float = 0.9
    dis_urge: float = 0.35
    dis_rework: float = 0.8
    dis_attitude: float = -0.7
    dis_skill: float = -0.2
    dis_temperament: tuple[float, float, float] = (0.0, 0.6, 1.3)
    dis_paid: float = 0.3
    dis_cost: float = 0.3
    dis_holiday: float = 0.25
    dis_management: float = -0.2
    dis_early_failure: float = 1.8
    respond_base: tuple[float, float, float, float] = (0.55, 0.7, 0.0, 0.5)
    respond_dissatisfied: float = 1.45
    respond_five: float = 1.15
    respond_three: float = 0.85
    respond_angry: float = 1.15
    complaint_intercept: float = -1.2
    complaint_angry: float = 0.8
    complaint_urge: float = 0.3
    complaint_rework: float = 0.5
    complaint_public: float = -0.8
    comment_if_rated: float = 0.45
    comment_if_unrated: float = 0.06
    comment_dissatisfied: float = 0.2
    comment_off_tone: float = 0.15
    tone_noise: float = 0.2
    repeat_cue_rework: float = 0.7
    repeat_cue_prior: float = 0.3
    repeat_cue_false: float = 0.03
    typo_prob: float = 0.05
    seasons: tuple[SeasonBump, ...] = DEFAULT_SEASONS
