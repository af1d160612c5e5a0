"""The synthetic ADAS fleet: ppml's running example.

Vehicles with driving-assistance systems log ``<location, time, sensor readings, action>`` while they
drive. :func:`make_fleet` simulates such a fleet on a synthetic city, deterministically for a seed:

* every vehicle has a **home** (in one of a few residential clusters, or scattered) and a **work**
  place (in one of a few business districts), and three favourite places it drives to in its spare time
  (a local one near home and two of the city's places of interest);
* a **driver style** (cautious / normal / aggressive) changes both how the car is driven (speed
  relative to the limit, headway, acceleration, lane keeping) and the policy that maps what the sensors
  see to an **action** (keep / brake / accelerate / change lane): the data is non-IID;
* a **usage pattern** (daily commuter / occasional / weekend driver) sets how many trips a vehicle
  makes: record counts span more than two orders of magnitude across vehicles (unbalanced clients);
* an **availability calendar** (7 days x 24 hours) says when the car is parked and connected, that is
  when it could take part in federated training (a weekend driver's car is off Monday to Friday);
* small **per-driver habits** (threshold offsets, a lane bias, a headway factor, a little label noise
  with a favourite wrong action) make individuals recognisable, so that a model trained on some
  vehicles fits them better than unseen vehicles of the same style (what membership inference measures).

Trips start and end at home, at work or at the vehicle's favourite places, so the raw logs that central
collection would hold reveal where each car sleeps (see :mod:`ppml.attacks.location`).

Records are stored columnar (:class:`AdasRecords`, one numpy array per column), sorted by vehicle and
then by time; the records of vehicle ``i`` are rows ``offsets[i]:offsets[i + 1]``. Generation is fully
vectorised and writes into preallocated columns chunk by chunk, so 100,000 vehicles take seconds and the
records are never held twice. The schema, the policy and the scaling constants are documented in
``docs/data.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from .._rng import as_generator
from .._validation import Interval, ParameterError, check_param
from .dataset import Dataset

__all__ = [
    "ACTIONS",
    "STYLES",
    "USAGES",
    "ROAD_TYPES",
    "FEATURES",
    "FEATURE_SCALES",
    "LOG_INTERVAL_S",
    "AdasRecords",
    "AdasFleet",
    "make_fleet",
]

ACTIONS: tuple[str, ...] = ("keep", "brake", "accelerate", "change_lane")
"""The action classes, in label order (``y == 1`` is ``"brake"``)."""

STYLES: tuple[str, ...] = ("cautious", "normal", "aggressive")
"""Driver styles, in the order of :attr:`AdasFleet.style`."""

USAGES: tuple[str, ...] = ("commuter", "occasional", "weekend")
"""Usage patterns, in the order of :attr:`AdasFleet.usage`."""

ROAD_TYPES: tuple[str, ...] = ("residential", "arterial", "highway")
"""Road types, in the order of the ``road_type`` column."""

SPEED_LIMITS_MPS: tuple[float, ...] = (30 / 3.6, 50 / 3.6, 100 / 3.6)
"""Speed limit of each road type in m/s (30, 50 and 100 km/h)."""

STYLE_SHARES: tuple[float, ...] = (0.3, 0.5, 0.2)
USAGE_SHARES: tuple[float, ...] = (0.5, 0.3, 0.2)

LOG_INTERVAL_S = 120.0
"""The logger writes one snapshot at least every this many seconds while driving, plus the first and
the last moment of each trip."""

TTC_CAP_S = 20.0
"""Time to collision is capped here (and is this value when the gap to the lead vehicle is not closing)."""

SENSOR_RANGE_M = 150.0
"""Range of the forward radar: ``lead_distance`` is this value when no lead vehicle is detected."""

FEATURES: tuple[str, ...] = (
    "speed",
    "acceleration",
    "lead_distance",
    "relative_speed",
    "lane_offset",
    "time_to_collision",
    "speed_limit",
    "road_type",
)
"""The model input columns of :meth:`AdasFleet.to_dataset` (``x`` and ``y`` are appended on request)."""

FEATURE_SCALES: Mapping[str, float] = MappingProxyType(
    {
        "speed": 40.0,  # m/s (144 km/h)
        "acceleration": 5.0,  # m/s^2
        "lead_distance": SENSOR_RANGE_M,  # m
        "relative_speed": 15.0,  # m/s
        "lane_offset": 1.75,  # m, half a 3.5 m lane
        "time_to_collision": TTC_CAP_S,  # s
        "speed_limit": 40.0,  # m/s
        "road_type": 2.0,  # index into ROAD_TYPES
    }
)
"""Fixed physical constants each feature is divided by. They do not depend on the data, so scaling
leaks nothing about any vehicle (a data-dependent standardisation would be a release of its own)."""

# --- How each style drives (index by style) -------------------------------------------------------
_SPEED_RATIO_MEAN = np.array([0.86, 0.95, 1.06])  # cruising speed / limit
_SPEED_RATIO_SD = np.array([0.07, 0.08, 0.10])
_HEADWAY_S = np.array([2.2, 1.6, 1.0])  # median time gap to the lead vehicle
_ACCEL_SD = np.array([0.5, 0.8, 1.3])  # m/s^2
_LANE_SD = np.array([0.12, 0.15, 0.20])  # m
_DRIFT_PROB = np.array([0.04, 0.06, 0.10])  # large lateral excursions (lane changes under way)
_CLOSING_PROB = np.array([0.20, 0.25, 0.32])  # closing in on the lead vehicle
_TRIP_SPEED_FACTOR = np.array([0.93, 1.0, 1.08])
_ACTIVITY_SPREAD = np.array([0.5, 1.0, 0.7])  # sigma of the log of the activity factor, by usage

# --- The style-dependent policy (index by style); per-driver offsets are added ----------------------
_TTC_BRAKE_S = np.array([4.0, 3.0, 2.0])  # brake below this time to collision
_HEADWAY_BRAKE_S = np.array([1.2, 0.8, 0.5])  # brake below this time gap
_OVER_TOLERANCE = np.array([0.05, 0.12, 0.25])  # brake above limit * (1 + this)
_LANE_THRESHOLD_M = np.array([0.9, 0.75, 0.6])  # change lane beyond this lateral offset
_TTC_PASS_S = np.array([6.0, 8.0, 10.0])  # overtake a slower lead vehicle below this TTC
_UNDER_SPEED = np.array([0.75, 0.85, 0.95])  # accelerate below limit * this

_GPS_NOISE_M = 8.0
_CHUNK_RECORDS = 1 << 20
_DAY_S = 86_400.0
_HOUR_S = 3_600.0


@dataclass(frozen=True, eq=False)
class AdasRecords:
    """The fleet's records, one numpy array per column (all of the same length).

    Rows are sorted by vehicle and then by time; :attr:`AdasFleet.offsets` delimits the vehicles.

    Attributes
    ----------
    x, y : ndarray of float32
        Position in metres on the city square (GPS noise of a few metres included).
    timestamp : ndarray of int32
        Seconds since the start of the simulated period (Monday 00:00).
    speed : ndarray of float32
        Speed in m/s.
    acceleration : ndarray of float32
        Longitudinal acceleration in m/s^2.
    lead_distance : ndarray of float32
        Distance to the lead vehicle in metres (``SENSOR_RANGE_M`` when none is detected).
    relative_speed : ndarray of float32
        Lead vehicle's speed minus own speed in m/s (negative: closing in).
    lane_offset : ndarray of float32
        Lateral offset from the lane centre in metres (positive: left).
    time_to_collision : ndarray of float32
        ``lead_distance / -relative_speed`` when closing in, capped at ``TTC_CAP_S`` seconds.
    speed_limit : ndarray of float32
        Speed limit of the current road in m/s.
    road_type : ndarray of int8
        Index into :data:`ROAD_TYPES`.
    trip : ndarray of int32
        Trip id, unique across the fleet and increasing with the row order.
    action : ndarray of int8
        Index into :data:`ACTIONS`: what the driver did.
    """

    x: np.ndarray
    y: np.ndarray
    timestamp: np.ndarray
    speed: np.ndarray
    acceleration: np.ndarray
    lead_distance: np.ndarray
    relative_speed: np.ndarray
    lane_offset: np.ndarray
    time_to_collision: np.ndarray
    speed_limit: np.ndarray
    road_type: np.ndarray
    trip: np.ndarray
    action: np.ndarray

    DTYPES: ClassVar[Mapping[str, Any]] = MappingProxyType(
        {
            "x": np.float32,
            "y": np.float32,
            "timestamp": np.int32,
            "speed": np.float32,
            "acceleration": np.float32,
            "lead_distance": np.float32,
            "relative_speed": np.float32,
            "lane_offset": np.float32,
            "time_to_collision": np.float32,
            "speed_limit": np.float32,
            "road_type": np.int8,
            "trip": np.int32,
            "action": np.int8,
        }
    )

    @classmethod
    def empty(cls, n_records: int) -> AdasRecords:
        """Preallocated (uninitialised) columns for ``n_records`` rows."""
        return cls(**{name: np.empty(n_records, dtype=dt) for name, dt in cls.DTYPES.items()})

    @property
    def columns(self) -> tuple[str, ...]:
        """The column names, in schema order."""
        return tuple(f.name for f in fields(self))

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.DTYPES:
            raise KeyError(f"no column {name!r}; the columns are {', '.join(self.DTYPES)}")
        return getattr(self, name)

    def __len__(self) -> int:
        return int(len(self.x))

    def __repr__(self) -> str:
        return f"AdasRecords(n_records={len(self)}, columns={self.columns})"

    def as_dict(self) -> dict[str, np.ndarray]:
        """The columns as a dict of the stored arrays (no copy)."""
        return {name: getattr(self, name) for name in self.DTYPES}

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``start:stop`` of every column, as views."""
        return {name: getattr(self, name)[start:stop] for name in self.DTYPES}

    @property
    def bytes_per_record(self) -> int:
        """Bytes one record takes in this layout."""
        return int(sum(np.dtype(dt).itemsize for dt in self.DTYPES.values()))

    @property
    def nbytes(self) -> int:
        """Bytes held by all columns."""
        return int(sum(getattr(self, name).nbytes for name in self.DTYPES))


@dataclass(frozen=True, eq=False)
class AdasFleet:
    """A simulated fleet of vehicles and their driving logs (build it with :func:`make_fleet`).

    Attributes
    ----------
    n_vehicles : int
        Number of vehicles; vehicle ids are ``0 .. n_vehicles - 1``.
    days : int
        Length of the simulated period in days; day 0 is a Monday.
    city_size_m : float
        Side of the square city in metres; positions lie in ``[0, city_size_m]``.
    seed : int or None
        The integer seed, when the fleet was made from one.
    home, work : ndarray of shape (n, 2) float64
        Home and work place of each vehicle, in metres. Occasional and weekend drivers have a work
        place too, but do not drive there.
    places : ndarray of shape (n, 3, 2) float64
        Each vehicle's three favourite leisure places, most visited first: a local place 300 m to
        1.5 km from home, then two of the city's places of interest.
    style : ndarray of shape (n,) int8
        Index into :data:`STYLES`.
    usage : ndarray of shape (n,) int8
        Index into :data:`USAGES`.
    availability : ndarray of shape (n, 7, 24) bool
        ``availability[i, d, h]``: vehicle ``i`` is parked and connected (could train) on day of week
        ``d`` (0 = Monday) during hour ``h``.
    offsets : ndarray of shape (n + 1,) int64
        Records of vehicle ``i`` are rows ``offsets[i]:offsets[i + 1]`` of :attr:`records`.
    records : AdasRecords
        The logs, columnar.
    habits : mapping of str to ndarray
        Ground truth of each driver's habits, for analysis only (see ``docs/data.md``).
    """

    n_vehicles: int
    days: int
    city_size_m: float
    seed: int | None
    home: np.ndarray
    work: np.ndarray
    places: np.ndarray
    style: np.ndarray
    usage: np.ndarray
    availability: np.ndarray
    offsets: np.ndarray
    records: AdasRecords
    habits: Mapping[str, np.ndarray]

    FEATURES: ClassVar[tuple[str, ...]] = FEATURES

    def __repr__(self) -> str:
        return (
            f"AdasFleet(n_vehicles={self.n_vehicles}, days={self.days}, city_size_m={self.city_size_m}, "
            f"n_records={self.n_records}, seed={self.seed})"
        )

    @property
    def n_records(self) -> int:
        """Total number of records."""
        return int(self.offsets[-1])

    def record_counts(self) -> np.ndarray:
        """Number of records of each vehicle, shape ``(n,)`` int64."""
        return np.diff(self.offsets)

    def owners(self) -> np.ndarray:
        """The vehicle id of every record, shape ``(n_records,)`` int64."""
        return np.repeat(np.arange(self.n_vehicles, dtype=np.int64), self.record_counts())

    def _check_vehicle(self, vehicle: int) -> int:
        check_param("vehicle", vehicle, "AdasFleet", Interval(int, 0, self.n_vehicles - 1, "both"))
        return int(vehicle)

    def records_of(self, vehicle: int) -> dict[str, np.ndarray]:
        """The records of one vehicle, as views into :attr:`records`."""
        v = self._check_vehicle(vehicle)
        return self.records.rows(int(self.offsets[v]), int(self.offsets[v + 1]))

    def available(self, day_of_week: int, hour: int) -> np.ndarray:
        """Which vehicles are parked and connected on ``day_of_week`` (0 = Monday) at ``hour``.

        Returns
        -------
        ndarray of shape (n,) bool
        """
        check_param("day_of_week", day_of_week, "AdasFleet.available", Interval(int, 0, 6, "both"))
        check_param("hour", hour, "AdasFleet.available", Interval(int, 0, 23, "both"))
        return self.availability[:, int(day_of_week), int(hour)]

    def to_dataset(self, include_location: bool = False, location_frequencies: int = 0) -> Dataset:
        """The records as a supervised dataset: sensor features in, action out, one owner per vehicle.

        Features are the columns :attr:`FEATURES`, each divided by its fixed constant in
        :data:`FEATURE_SCALES`. With ``include_location``, ``x`` and ``y`` are appended, mapped to
        ``[-1, 1]`` by the city's size (a parameter, not a statistic of the data).

        Parameters
        ----------
        include_location : bool, default False
            Append the position columns (which let a model single out vehicles by where they drive).
        location_frequencies : int, default 0
            With ``include_location``, also append a fixed sinusoidal encoding of the position,
            ``sin(pi 2^k u), cos(pi 2^k u)`` for ``u`` in ``(x, y)`` and ``k = 0 .. F-1`` (the positional
            encoding of Fourier-feature networks): with ``F = 8`` the finest wavelength is about 1/128
            of the city, a few blocks, so even a small MLP can tell neighbourhoods apart and learn how
            the cars that drive there behave. It depends on the city's size only, not on the data.

        Returns
        -------
        Dataset
            ``X`` float32 ``(n_records, n_features)``, ``y`` int64 action indices, ``owners`` the vehicle
            id of each record; ``meta`` holds ``style`` and ``usage`` per vehicle and the scales.
        """
        check_param("include_location", include_location, "AdasFleet.to_dataset", bool)
        check_param(
            "location_frequencies", location_frequencies, "AdasFleet.to_dataset", Interval(int, 0, 16, "both")
        )
        if location_frequencies and not include_location:
            raise ParameterError(
                "The 'location_frequencies' parameter of AdasFleet.to_dataset must be 0 unless "
                f"include_location is True. Got {location_frequencies!r} instead.",
                param="location_frequencies",
            )
        encoded = tuple(
            f"{fn}({u}*pi*2^{k})"
            for k in range(location_frequencies)
            for u in ("x", "y")
            for fn in ("sin", "cos")
        )
        names = self.FEATURES + (("x", "y") if include_location else ()) + encoded
        X = np.empty((self.n_records, len(names)), dtype=np.float32)
        for j, name in enumerate(self.FEATURES):
            np.divide(self.records[name], np.float32(FEATURE_SCALES[name]), out=X[:, j], casting="unsafe")
        if include_location:
            half = np.float32(self.city_size_m / 2.0)
            for j, name in enumerate(("x", "y"), start=len(self.FEATURES)):
                np.subtract(self.records[name], half, out=X[:, j])
                X[:, j] /= half
            j = len(self.FEATURES) + 2
            for k in range(location_frequencies):
                for u in (len(self.FEATURES), len(self.FEATURES) + 1):
                    phase = X[:, u] * np.float32(np.pi * 2**k)
                    np.sin(phase, out=X[:, j])
                    np.cos(phase, out=X[:, j + 1])
                    j += 2
        scales = dict(FEATURE_SCALES)
        if include_location:
            scales.update(x=self.city_size_m / 2.0, y=self.city_size_m / 2.0)
        return Dataset(
            X=X,
            y=self.records.action.astype(np.int64),
            name="adas",
            num_classes=len(ACTIONS),
            owners=self.owners(),
            feature_names=names,
            source="synthetic",
            class_names=ACTIONS,
            meta={
                "style": self.style,
                "usage": self.usage,
                "styles": STYLES,
                "usages": USAGES,
                "scales": scales,
                "seed": self.seed,
                "days": self.days,
            },
        )

    def pooled_logs(self) -> dict[str, np.ndarray]:
        """What central collection would hold: every record with a pseudonymous vehicle id.

        The pseudonym is the vehicle index: a number that names no person. The logs keep position and
        time, which is what lets :class:`ppml.attacks.location.HomeInference` link it to a home.

        Returns
        -------
        dict of str to ndarray
            ``"pseudonym"`` (int64, one per record) and every column of :class:`AdasRecords` (views).
        """
        logs = {"pseudonym": self.owners()}
        logs.update(self.records.as_dict())
        return logs

    def nbytes_per_vehicle(self) -> np.ndarray:
        """Raw bytes each vehicle would upload under central collection, shape ``(n,)`` int64.

        Every record with all its columns, in the stored dtypes (:attr:`AdasRecords.bytes_per_record`).
        """
        return self.record_counts() * np.int64(self.records.bytes_per_record)


def make_fleet(
    n_vehicles: int = 500,
    *,
    seed: int | np.random.SeedSequence | np.random.Generator,
    days: int = 28,
    city_size_m: float = 20_000.0,
) -> AdasFleet:
    """Simulate a fleet of ADAS vehicles, deterministically for ``seed``.

    Parameters
    ----------
    n_vehicles : int, default 500
        Number of vehicles.
    seed : int, SeedSequence or numpy Generator
        Everything (the city, the drivers, the trips, the sensor readings) follows from it.
    days : int, default 28
        Length of the simulated period in days (7 to 366); day 0 is a Monday.
    city_size_m : float, default 20000.0
        Side of the square city in metres (2 km to 200 km); the layout scales with it.

    Returns
    -------
    AdasFleet

    Notes
    -----
    The default fleet (500 vehicles, 28 days) holds about 0.1 million records. 100,000 vehicles take a
    few seconds and about 1 GB (see ``docs/data.md``).
    """
    owner = "make_fleet"
    check_param("n_vehicles", n_vehicles, owner, Interval(int, 1, None, "left"))
    check_param("days", days, owner, Interval(int, 7, 366, "both"))
    check_param("city_size_m", city_size_m, owner, Interval(float, 2_000.0, 200_000.0, "both"))
    check_param(
        "seed", seed, owner, Interval(int, 0, None, "left"), np.random.SeedSequence, np.random.Generator
    )
    rng = as_generator(seed)
    n, size = int(n_vehicles), float(city_size_m)

    style = rng.choice(len(STYLES), size=n, p=STYLE_SHARES).astype(np.int8)
    usage = rng.choice(len(USAGES), size=n, p=USAGE_SHARES).astype(np.int8)
    home, work, places = _places(rng, n, size)
    habits = _habits(rng, usage)
    availability = _availability(rng, usage)
    trips = _trips(rng, n, int(days), size, style, usage, home, work, places, habits)

    counts = np.bincount(trips["vehicle"], weights=trips["n_records"], minlength=n).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    records = AdasRecords.empty(int(offsets[-1]))
    _fill_records(rng, records, trips, style, habits, size)

    for arr in (home, work, places, style, usage, availability, offsets, *habits.values()):
        arr.setflags(write=False)
    for arr in records.as_dict().values():
        arr.setflags(write=False)
    return AdasFleet(
        n_vehicles=n,
        days=int(days),
        city_size_m=size,
        seed=int(seed) if isinstance(seed, (int, np.integer)) else None,
        home=home,
        work=work,
        places=places,
        style=style,
        usage=usage,
        availability=availability,
        offsets=offsets,
        records=records,
        habits=MappingProxyType(habits),
    )


# --------------------------------------------------------------------------------------------------
# The city and the drivers
# --------------------------------------------------------------------------------------------------
def _clip_city(p: np.ndarray, size: float) -> np.ndarray:
    return np.clip(p, 0.02 * size, 0.98 * size, out=p)


def _places(rng: np.random.Generator, n: int, size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Homes (residential clusters, some scattered), work places (business districts), leisure places."""
    n_res, n_biz, n_poi = 8, 3, 40
    res_centres = rng.uniform(0.1 * size, 0.9 * size, size=(n_res, 2))
    res_spread = rng.uniform(0.03, 0.07, size=n_res) * size
    res_weight = rng.dirichlet(np.full(n_res, 4.0))
    biz_centres = rng.uniform(0.3 * size, 0.7 * size, size=(n_biz, 2))
    biz_spread = rng.uniform(0.015, 0.03, size=n_biz) * size
    biz_weight = rng.dirichlet(np.full(n_biz, 4.0))
    poi = rng.uniform(0.05 * size, 0.95 * size, size=(n_poi, 2))
    poi_pop = rng.lognormal(0.0, 0.7, size=n_poi)

    cluster = rng.choice(n_res, size=n, p=res_weight)
    home = res_centres[cluster] + rng.normal(size=(n, 2)) * res_spread[cluster, None]
    scattered = rng.random(n) < 0.2
    home[scattered] = rng.uniform(0.02 * size, 0.98 * size, size=(int(scattered.sum()), 2))
    _clip_city(home, size)

    district = rng.choice(n_biz, size=n, p=biz_weight)
    work = biz_centres[district] + rng.normal(size=(n, 2)) * biz_spread[district, None]
    elsewhere = rng.random(n) < 0.15
    work[elsewhere] = rng.uniform(0.02 * size, 0.98 * size, size=(int(elsewhere.sum()), 2))
    _clip_city(work, size)

    # favourite places: a local one (shop, school) 300 m to 1.5 km from home, then two of the city's
    # places of interest, popular and near home more likely (Gumbel top-k, without replacement)
    places = np.empty((n, 3, 2))
    radius = rng.uniform(300.0, 1_500.0, size=n)
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    places[:, 0, 0] = home[:, 0] + radius * np.cos(angle)
    places[:, 0, 1] = home[:, 1] + radius * np.sin(angle)
    for start in range(0, n, 65_536):
        h = home[start : start + 65_536]
        d = np.hypot(h[:, None, 0] - poi[None, :, 0], h[:, None, 1] - poi[None, :, 1])
        logits = np.log(poi_pop)[None, :] - d / (0.25 * size) + rng.gumbel(size=d.shape)
        top = np.argsort(-logits, axis=1)[:, :2]
        places[start : start + 65_536, 1:] = poi[top] + rng.normal(scale=0.004 * size, size=(len(h), 2, 2))
    _clip_city(places, size)
    return home, work, places


def _habits(rng: np.random.Generator, usage: np.ndarray) -> dict[str, np.ndarray]:
    """Per-driver quirks on top of the style (ground truth, for analysis only)."""
    n = len(usage)
    return {
        # how much more (or less) than usual for its usage a vehicle is driven; occasional drivers vary most
        "activity": np.clip(rng.lognormal(0.0, _ACTIVITY_SPREAD[usage]), 0.03, 3.0),
        "speed_ratio_offset": rng.normal(0.0, 0.08, size=n),
        "headway_factor": rng.lognormal(0.0, 0.35, size=n),
        "lane_bias_m": rng.normal(0.0, 0.3, size=n),
        "ttc_brake_offset_s": rng.normal(0.0, 0.6, size=n),
        "over_tolerance_offset": rng.normal(0.0, 0.05, size=n),
        "under_speed_offset": rng.normal(0.0, 0.05, size=n),
        "lane_threshold_offset_m": rng.normal(0.0, 0.12, size=n),
        "label_noise": rng.uniform(0.01, 0.06, size=n),
        "quirk_action": rng.integers(0, len(ACTIONS), size=n).astype(np.int8),
        "commute_departure_h": rng.uniform(6.5, 9.5, size=n),
        "work_days_share": rng.uniform(0.7, 0.98, size=n),
    }


def _availability(rng: np.random.Generator, usage: np.ndarray) -> np.ndarray:
    """When each car is parked and connected, (n, 7, 24) bool; day 0 is Monday."""
    n = len(usage)
    hour = np.arange(24)[None, None, :]
    weekend_day = (np.arange(7) >= 5)[None, :, None]
    night_start = rng.integers(20, 24, size=n)[:, None, None]
    night_end = rng.integers(5, 8, size=n)[:, None, None]
    night = (hour >= night_start) | (hour < night_end)
    daytime = ~night
    extra = rng.random((n, 7, 24))
    u = usage[:, None, None]

    commuter = night | (daytime & weekend_day & (extra < 0.4))
    charges_at_work = (rng.random(n) < 0.3)[:, None, None]
    commuter |= charges_at_work & ~weekend_day & (hour >= 9) & (hour < 16)
    occasional = night | (hour < night_end + 2) | (daytime & (extra < 0.5))
    weekend = weekend_day & (night | (daytime & (extra < 0.3)))
    return np.where(u == 0, commuter, np.where(u == 1, occasional, weekend))


# --------------------------------------------------------------------------------------------------
# Outings and trips
# --------------------------------------------------------------------------------------------------
def _trips(
    rng: np.random.Generator,
    n: int,
    days: int,
    size: float,
    style: np.ndarray,
    usage: np.ndarray,
    home: np.ndarray,
    work: np.ndarray,
    places: np.ndarray,
    habits: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Outings (home -> destination -> home) on a (vehicle, day, slot) grid, then their two trips each.

    Slot 0 is the morning (the commute on working days), slot 1 the afternoon or evening.
    """
    dow = np.arange(days) % 7
    weekend = dow >= 5
    # probability of an outing per (usage, day type, slot), before the driver's activity factor
    p = np.zeros((len(USAGES), days, 2))
    p[0, :, 0] = np.where(weekend, 0.45, 1.0)  # working days: times the driver's work-day share
    p[0, :, 1] = np.where(weekend, 0.30, 0.15)
    p[1, :, 0] = 0.12
    p[1, :, 1] = 0.08
    p[2, :, 0] = np.where(weekend, 0.50, 0.0)
    p[2, :, 1] = np.where(weekend, 0.25, 0.0)
    commuter = usage == 0
    prob = p[usage]  # (n, days, 2)
    prob *= habits["activity"][:, None, None]
    commute_cell = commuter[:, None] & ~weekend[None, :]
    prob[:, :, 0] = np.where(commute_cell, habits["work_days_share"][:, None], prob[:, :, 0])
    np.clip(prob, 0.0, 0.98, out=prob)
    active = rng.random(prob.shape) < prob
    del prob

    # every vehicle drives at least once: a morning outing on a day its usage allows
    idle = np.flatnonzero(~active.any(axis=(1, 2)))
    if len(idle):
        week = rng.integers(0, days // 7, size=len(idle))
        day_in_week = np.where(
            usage[idle] == 2, rng.integers(5, 7, size=len(idle)), rng.integers(0, 7, size=len(idle))
        )
        active[idle, week * 7 + day_in_week, 0] = True

    cell = np.flatnonzero(active.ravel())
    del active
    veh = (cell // (days * 2)).astype(np.int64)
    day = (cell // 2) % days
    slot = cell % 2
    m = len(cell)
    is_weekend = weekend[day]
    is_commute = commuter[veh] & ~is_weekend & (slot == 0)

    # destination: work for commutes; otherwise a favourite place (60/30/10) or, one time in five, anywhere
    fav = rng.choice(3, size=m, p=(0.6, 0.3, 0.1))
    dest = places[veh, fav]
    anywhere = rng.random(m) < 0.2
    dest[anywhere] = rng.uniform(0.02 * size, 0.98 * size, size=(int(anywhere.sum()), 2))
    dest[is_commute] = work[veh[is_commute]]
    dest += rng.normal(scale=30.0, size=dest.shape)  # a different parking spot every time
    origin = home[veh] + rng.normal(scale=15.0, size=(m, 2))
    back = home[veh] + rng.normal(scale=15.0, size=(m, 2))
    for p_ in (dest, origin, back):
        np.clip(p_, 0.0, size, out=p_)

    # departure times (seconds in the day) and dwell times
    depart = np.where(
        is_commute,
        habits["commute_departure_h"][veh] * _HOUR_S + rng.normal(0.0, 1_200.0, size=m),
        np.where(
            slot == 0,
            rng.uniform(9.0, 12.0, size=m),
            np.where(is_weekend, rng.uniform(14.0, 18.0, size=m), rng.uniform(18.5, 21.0, size=m)),
        )
        * _HOUR_S,
    )
    dwell = np.where(
        is_commute,
        np.clip(rng.normal(8.5, 0.5, size=m), 6.0, 10.5) * _HOUR_S,
        rng.uniform(0.4, 3.0, size=m) * _HOUR_S,
    )

    trip_style = _TRIP_SPEED_FACTOR[style[veh]]
    len_out, dur_out = _route(origin, dest, trip_style)
    len_back, dur_back = _route(dest, back, trip_style)
    back_depart = depart + dur_out + dwell
    # an evening outing starts at least 30 minutes after the morning outing came home
    same_day_prev = np.zeros(m, dtype=bool)
    same_day_prev[1:] = (slot[1:] == 1) & (slot[:-1] == 0) & (veh[1:] == veh[:-1]) & (day[1:] == day[:-1])
    prev_home = np.empty(m)
    prev_home[1:] = (back_depart + dur_back)[:-1] + 1_800.0
    shift = np.where(same_day_prev, np.maximum(prev_home - depart, 0.0), 0.0)
    depart += shift
    back_depart += shift
    # be home before midnight where possible, never leave before arriving
    back_depart = np.maximum(np.minimum(back_depart, _DAY_S - dur_back - 300.0), depart + dur_out + 300.0)
    day_start = day * _DAY_S

    # interleave: trip 2k is outing k's way out, trip 2k + 1 its way back (time order within a vehicle)
    t = 2 * m

    def inter(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty((m, 2) + a.shape[1:], dtype=np.result_type(a, b))
        out[:, 0], out[:, 1] = a, b
        return out.reshape((t,) + a.shape[1:])

    length = inter(len_out, len_back)
    duration = inter(dur_out, dur_back)
    n_rec = np.maximum(2, 1 + np.ceil(duration / LOG_INTERVAL_S)).astype(np.int64)
    start = inter(origin, dest)
    end = inter(dest, back)
    # the logger sometimes gets its first GPS fix a little way down the road ("cold start")
    cold = np.where(rng.random(t) < 0.3, np.minimum(rng.uniform(50.0, 400.0, size=t), 0.5 * length), 0.0)
    return {
        "vehicle": np.repeat(veh, 2),
        "start": start,
        "end": end,
        "t0": inter(day_start + depart, day_start + back_depart),
        "length": length,
        "duration": duration,
        "n_records": n_rec,
        "x_first": rng.random(t) < 0.5,
        "cold_start_m": cold,
    }


def _route(a: np.ndarray, b: np.ndarray, style_factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Manhattan route length (m) and duration (s): longer trips use faster roads."""
    length = np.abs(b[:, 0] - a[:, 0]) + np.abs(b[:, 1] - a[:, 1])
    mean_speed = style_factor * (7.0 + 8.0 * np.minimum(length, 15_000.0) / 15_000.0)
    return length, length / mean_speed + 30.0


# --------------------------------------------------------------------------------------------------
# Records: positions, sensors and actions, written chunk by chunk into preallocated columns
# --------------------------------------------------------------------------------------------------
def _fill_records(
    rng: np.random.Generator,
    rec: AdasRecords,
    trips: dict[str, np.ndarray],
    style: np.ndarray,
    habits: dict[str, np.ndarray],
    size: float,
) -> None:
    n_rec = trips["n_records"]
    trip_offsets = np.zeros(len(n_rec) + 1, dtype=np.int64)
    np.cumsum(n_rec, out=trip_offsets[1:])
    total = int(trip_offsets[-1])
    bounds = np.searchsorted(trip_offsets, np.arange(0, total, _CHUNK_RECORDS), side="right") - 1
    bounds = np.unique(np.append(bounds, len(n_rec)))
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        _fill_chunk(rng, rec, trips, trip_offsets, int(a), int(b), style, habits, size)


def _fill_chunk(
    rng: np.random.Generator,
    rec: AdasRecords,
    trips: dict[str, np.ndarray],
    trip_offsets: np.ndarray,
    a: int,
    b: int,
    style: np.ndarray,
    habits: dict[str, np.ndarray],
    size: float,
) -> None:
    r0, r1 = int(trip_offsets[a]), int(trip_offsets[b])
    n = r1 - r0
    counts = trips["n_records"][a:b]
    local = np.repeat(np.arange(b - a), counts)  # trip of each record, relative to a
    k = np.arange(n) - (trip_offsets[a:b] - r0)[local]
    last = counts[local] - 1
    frac = k / last
    first_rec, last_rec = k == 0, k == last
    veh = trips["vehicle"][a:b][local]
    s = style[veh]

    # --- where and when: along a Manhattan route (x leg first or y leg first) ---
    length = trips["length"][a:b][local]
    dist = frac * length
    dist = np.where(first_rec, trips["cold_start_m"][a:b][local], dist)
    start, end = trips["start"][a:b], trips["end"][a:b]
    dx, dy = (end[:, 0] - start[:, 0])[local], (end[:, 1] - start[:, 1])[local]
    x_first = trips["x_first"][a:b][local]
    leg1 = np.where(x_first, np.abs(dx), np.abs(dy))
    along1 = np.minimum(dist, leg1)
    along2 = np.maximum(dist - leg1, 0.0)
    move_x = np.where(x_first, along1, along2) * np.sign(dx)
    move_y = np.where(x_first, along2, along1) * np.sign(dy)
    rec.x[r0:r1] = np.clip(start[local, 0] + move_x + rng.normal(0.0, _GPS_NOISE_M, size=n), 0.0, size)
    rec.y[r0:r1] = np.clip(start[local, 1] + move_y + rng.normal(0.0, _GPS_NOISE_M, size=n), 0.0, size)
    del move_x, move_y, along1, along2, leg1, dx, dy, x_first
    t = trips["t0"][a:b][local] + frac * trips["duration"][a:b][local]
    rec.timestamp[r0:r1] = np.rint(t)
    rec.trip[r0:r1] = np.arange(a, b, dtype=np.int32)[local]
    hour = (t // _HOUR_S) % 24
    del t, local

    # --- the road ---
    to_end = np.minimum(dist, length - dist)
    road = np.where(to_end < 500.0, 0, np.where((length > 8_000.0) & (to_end > 2_500.0), 2, 1)).astype(
        np.int8
    )
    rec.road_type[r0:r1] = road
    limit = np.asarray(SPEED_LIMITS_MPS)[road]
    rec.speed_limit[r0:r1] = limit
    del dist, length, to_end

    # --- how the car is driven (style + habits) ---
    rush = ((hour >= 7) & (hour < 9)) | ((hour >= 16) & (hour < 19))
    congested = rng.random(n) < np.where(rush, 0.35, 0.10)
    ratio = np.clip(
        rng.normal(_SPEED_RATIO_MEAN[s] + habits["speed_ratio_offset"][veh], _SPEED_RATIO_SD[s]), 0.2, 1.7
    )
    speed = limit * ratio * np.where(congested, rng.uniform(0.15, 0.6, size=n), 1.0)
    parking = first_rec | last_rec
    speed = np.where(parking, rng.uniform(0.0, 3.0, size=n), speed)
    accel = rng.normal(0.0, _ACCEL_SD[s])
    accel = np.where(first_rec, rng.uniform(0.5, 2.5, size=n), accel)
    accel = np.where(last_rec, -rng.uniform(0.5, 2.5, size=n), accel)

    lead = rng.random(n) < np.where(congested, 0.95, 0.65)
    headway = _HEADWAY_S[s] * habits["headway_factor"][veh] * rng.lognormal(0.0, 0.3, size=n)
    lead_distance = np.where(lead, np.clip(2.0 + headway * speed, 2.0, SENSOR_RANGE_M), SENSOR_RANGE_M)
    closing = rng.random(n) < _CLOSING_PROB[s]
    rel = np.where(
        lead, rng.normal(0.0, 1.2, size=n) - np.where(closing, rng.uniform(0.5, 7.0, size=n), 0.0), 0.0
    )
    ttc = np.where(rel < -0.1, lead_distance / np.maximum(-rel, 0.1), TTC_CAP_S)
    np.minimum(ttc, TTC_CAP_S, out=ttc)
    bias = habits["lane_bias_m"][veh]
    drift = rng.random(n) < _DRIFT_PROB[s]
    lane = (
        bias
        + rng.normal(0.0, _LANE_SD[s])
        + np.where(drift, rng.choice((-1.0, 1.0), size=n) * rng.uniform(0.5, 1.4, size=n), 0.0)
    )
    rec.speed[r0:r1] = speed
    rec.acceleration[r0:r1] = accel
    rec.lead_distance[r0:r1] = lead_distance
    rec.relative_speed[r0:r1] = rel
    rec.time_to_collision[r0:r1] = ttc
    rec.lane_offset[r0:r1] = lane
    del headway, closing, drift, ratio, congested, hour, rush

    # --- the action: the style's policy with the driver's own thresholds, then a little noise ---
    brake = (
        (ttc < _TTC_BRAKE_S[s] + habits["ttc_brake_offset_s"][veh])
        | (speed > limit * (1.0 + _OVER_TOLERANCE[s] + habits["over_tolerance_offset"][veh]))
        | (lead & (lead_distance - 2.0 < speed * _HEADWAY_BRAKE_S[s]) & (speed > 1.0))
        | ((accel < -0.5) & (speed < 0.3 * limit))
    )
    passing = ttc < _TTC_PASS_S[s]
    change = (
        ~brake
        & (road != 0)
        & (
            (np.abs(lane - bias) > _LANE_THRESHOLD_M[s] + habits["lane_threshold_offset_m"][veh])
            | (passing & (rel < -1.0) & (speed > 0.5 * limit))
        )
    )
    accelerate = (
        ~brake & ~change & ~passing & (speed < limit * (_UNDER_SPEED[s] + habits["under_speed_offset"][veh]))
    )
    action = np.where(brake, 1, np.where(change, 3, np.where(accelerate, 2, 0))).astype(np.int8)
    noisy = rng.random(n) < habits["label_noise"][veh]
    wrong = np.where(rng.random(n) < 0.5, habits["quirk_action"][veh], rng.integers(0, len(ACTIONS), size=n))
    rec.action[r0:r1] = np.where(noisy, wrong, action)
