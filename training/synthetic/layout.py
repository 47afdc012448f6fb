"""The street plan of a drive: road width, kerbs, sidewalks, frontages, intersections, and the ground zones.

World frame: metres, +z up, the main street runs along +x with its centre line at y = 0; traffic drives
on the right, the ego ``ego_offset`` right of the centre line (residential streets have no lane markings
and cars keep to the middle; marked streets have a centre line). Each side (+1 = left, -1 = right) has, from the
road edge outward (``u = side * y``): an optional parking lane, a kerb, an optional grass verge with
street trees, a sidewalk, then a frontage that changes every few tens of metres (front gardens and
buildings, buildings at the sidewalk, open fields, woodland, a parking lot), and fields beyond.
Cross streets (X and T junctions) cut through the sides every 60-140 m.

Shares are tuned towards the real SemanticKITTI scans (see ``benchmarks/synthetic_realism.py``): in
KITTI's residential streets, vegetation and terrain together are ~40-55 % of the points, road ~15-20 %,
sidewalk 10-25 %, buildings 2-15 %, cars 0.4-2 %, parking ~0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elite_ros.labels import RAW_NAMES

from .ground import (
    EDGE_LINE_INSET,
    NO_PAINT,
    PAINT_BAYS_X,
    PAINT_STREET_X,
    PAINT_STREET_Y,
    Relief,
    Zone,
    ZoneMap,
    resolve,
)
from .materials import Material

RAW = {name: raw for raw, name in RAW_NAMES.items()}  # class name -> raw SemanticKITTI id

Y_FAR = 90.0  # metres: the ground extends this far to either side of the street
# metres, kerb to centre line: real KITTI scans (spvnas, Open3D-ML 000700) show ~8-9 m of road with the
# ego ~4 m from the right kerb; residential streets are 6.4-10 m wide
ROAD_HALF_WIDTH = (2.8, 4.2)
CENTRE_LINE_MIN_HALF_WIDTH = 3.5  # metres: narrower streets have no lane markings
EGO_OFFSET = (0.25, 0.5)  # the ego keeps this fraction of the half width right of the centre line
EGO_KERB_CLEARANCE = 2.3  # metres from the ego's centre line to the right kerb, at least
KERB = (0.04, 0.16)  # metres: sidewalk above the road (real scans: sidewalk - road 4-8 cm median)
CAMBER = (0.01, 0.03)  # road cross slope from the crown to the kerb
GRADE_STEP = 0.04  # std of the change of the longitudinal grade between profile pieces
MAX_GRADE = 0.08
GRADE_PIECE = (12.0, 40.0)  # metres between grade changes
SIDE_SLOPE = (-0.10, 0.08)  # terrain slope away from the street beyond the sidewalks (embankments)
SIDE_SLOPE_START, SIDE_SLOPE_LENGTH = 5.0, (8.0, 25.0)  # metres beyond the road edge
SEGMENT = (20.0, 60.0)  # metres: frontage segments along each side
JUNCTION_GAP = (60.0, 140.0)  # metres between cross streets
NO_SIDEWALK = 0.15  # chance that a side of the street has no sidewalk
BAY_LENGTH, LOT_BAY_WIDTH = 5.5, 2.6  # metres: kerbside bays, parking-lot bays
BAY_BLOCK = 70.0  # metres of street holding one marked kerbside bay (so that parking is rare but present)

FRONTAGES = ("garden", "urban", "field", "wood", "lot")
FRONTAGE_WEIGHTS = (0.45, 0.06, 0.22, 0.25, 0.02)


@dataclass(frozen=True)
class Side:
    """Cross-section of one side of the main street (constant along the drive), metres.

    Attributes:
        sign: +1 left, -1 right.
        kerb: sidewalk height above the road.
        parking: width of a parking lane at the road edge (0 = none); `parking_marked`: labelled parking.
        verge: grass strip between the kerb and the sidewalk (0 = none).
        sidewalk: sidewalk width (0 = none).
        verge_level, garden_level: terrain heights relative to the sidewalk.
    """

    sign: int
    kerb: float
    parking: float
    parking_marked: bool
    verge: float
    sidewalk: float
    verge_level: float
    garden_level: float


@dataclass(frozen=True)
class Segment:
    """A stretch [x0, x1) of one side with one frontage (garden, urban, field, wood, lot), metres.

    Attributes:
        depth: front gardens / field / lot depth from the sidewalk to the buildings or the wood edge.
        boundary: what lines the sidewalk's outer edge: hedge, fence or open.
        parked: chance that a parking slot along the kerb holds a car.
    """

    sign: int
    x0: float
    x1: float
    frontage: str
    depth: float
    boundary: str
    parked: float


@dataclass(frozen=True)
class Junction:
    """A cross street at x = `x` (centre), `half_width` metres each side, on the `signs` sides."""

    x: float
    half_width: float
    sidewalk: float
    verge: float
    signs: tuple[int, ...]

    def corridor(self, margin: float = 1.0) -> tuple[float, float]:
        """x interval kept clear of buildings, fences and hedges, metres."""
        reach = self.half_width + self.verge + self.sidewalk + margin
        return self.x - reach, self.x + reach


@dataclass(frozen=True)
class StreetPlan:
    """Everything about a drive's street that objects are placed by."""

    road_half_width: float
    ego_offset: float
    sides: dict[int, Side]
    segments: tuple[Segment, ...]
    junctions: tuple[Junction, ...]
    drives: tuple[tuple[int, float, float, float], ...]  # (sign, x0, x1, length from the sidewalk) gravel drives
    bays: tuple[tuple[int, float, float], ...]  # (sign, x0, x1) marked kerbside parking bays
    ground: ZoneMap
    x_range: tuple[float, float]

    @property
    def ego_lane_y(self) -> float:
        return -self.ego_offset

    @property
    def oncoming_lane_y(self) -> float:
        return 0.5 * self.road_half_width

    def u_edges(self, sign: int) -> dict[str, float]:
        """Outward distances of a side's band edges from the centre line, metres."""
        s = self.sides[sign]
        road = self.road_half_width
        park = road + s.parking
        verge = park + s.verge
        walk = verge + s.sidewalk
        return {"road": road, "parking": park, "verge": verge, "sidewalk": walk}

    def blocked(self, x: float, sign: int, margin: float = 1.0) -> bool:
        """Whether x lies in a cross-street corridor on side `sign`."""
        return any(sign in j.signs and j.corridor(margin)[0] <= x <= j.corridor(margin)[1] for j in self.junctions)

    def segment_at(self, x: float, sign: int) -> Segment:
        for seg in self.segments:
            if seg.sign == sign and seg.x0 <= x < seg.x1:
                return seg
        return next(seg for seg in self.segments if seg.sign == sign)


class _Zones:
    """Distinct zone kinds, each stored once."""

    def __init__(self) -> None:
        self.zones: list[Zone] = []
        self._index: dict[Zone, int] = {}

    def __call__(self, zone: Zone) -> int:
        if zone not in self._index:
            self._index[zone] = len(self.zones)
            self.zones.append(zone)
        return self._index[zone]


PRIORITY = {"field": 0, "garden": 1, "yard": 1, "wood": 1, "lot": 2, "drive": 2, "verge": 3, "sidewalk": 4,
            "parking": 5, "bay": 5, "cross_road": 6, "road": 7}


def stream(seed: int, *tag: int) -> np.random.Generator:
    """An independent random stream of the world `seed` for one part of it (`tag`).

    Each part draws from its own stream, in the order of x along the street, so that the world near the
    start of a drive does not depend on how far the drive goes.
    """
    return np.random.default_rng([seed, *tag])


STREAM_STREET, STREAM_SEGMENTS, STREAM_DRIVES, STREAM_JUNCTIONS, STREAM_BAYS, STREAM_RELIEF, STREAM_PROFILE = range(
    101, 108)


def plan_street(seed: int, x_range: tuple[float, float]) -> StreetPlan:
    """A deterministic street for `seed` covering `x_range` (metres along the street)."""
    x_min, x_max = x_range
    rng = stream(seed, STREAM_STREET)
    u = rng.uniform
    road = float(u(*ROAD_HALF_WIDTH))
    ego_offset = min(float(u(*EGO_OFFSET)) * road, road - EGO_KERB_CLEARANCE)
    sides = {}
    for sign in (1, -1):
        parking = float(u(2.0, 2.4)) if rng.random() < 0.3 else 0.0
        verge = float(u(1.0, 4.0)) if rng.random() < 0.65 else 0.0
        walk = float(u(1.8, 4.2)) if rng.random() > NO_SIDEWALK else 0.0  # country roads: grass to the kerb
        sides[sign] = Side(sign, kerb=float(u(*KERB)), parking=parking, parking_marked=bool(rng.random() < 0.15),
                           verge=verge, sidewalk=walk, verge_level=float(u(-0.06, 0.04)),
                           garden_level=float(u(-0.12, 0.12)))
    segments, drives = [], []
    for sign in (1, -1):
        rng, drive_rng = stream(seed, STREAM_SEGMENTS, sign + 1), stream(seed, STREAM_DRIVES, sign + 1)
        u = rng.uniform
        x = x_min
        while x < x_max:
            length = float(u(*SEGMENT))
            frontage = FRONTAGES[int(rng.choice(len(FRONTAGES), p=FRONTAGE_WEIGHTS))]
            depth = {"garden": u(2.0, 9.0), "urban": u(0.0, 1.0), "field": u(12.0, 40.0), "wood": u(1.0, 6.0),
                     "lot": u(12.0, 18.0)}[frontage]
            boundary = str(rng.choice(["hedge", "fence", "open"], p=[0.65, 0.12, 0.23])) if frontage == "garden" else (
                str(rng.choice(["hedge", "fence", "open"], p=[0.45, 0.1, 0.45])) if frontage == "field" else "open")
            parked = float(rng.choice([0.0, 0.15, 0.3, 0.5], p=[0.4, 0.3, 0.2, 0.1]))
            seg = Segment(sign, x, x + length, frontage, float(depth), boundary, parked)
            segments.append(seg)
            if frontage == "garden":  # gravel drives through the gardens
                xd = seg.x0 + float(drive_rng.uniform(3.0, 12.0))
                while xd < seg.x1 - 3.0:
                    width = float(drive_rng.uniform(2.5, 4.0))
                    drives.append((sign, xd, xd + width, seg.depth + float(drive_rng.uniform(2.0, 10.0))))
                    xd += width + float(drive_rng.uniform(10.0, 30.0))
            x += length
    rng = stream(seed, STREAM_JUNCTIONS)
    u = rng.uniform
    junctions = []
    x = x_min + float(u(20.0, 100.0))
    while x < x_max + 30.0:  # past the end too: a corridor reaches back ~12 m, and the near world must not change
        kind = rng.random()
        signs = (1, -1) if kind < 0.5 else ((1,) if kind < 0.75 else (-1,))
        junctions.append(Junction(x, float(u(2.9, 4.0)), float(u(1.5, 3.0)), float(u(0.0, 2.0)) * (rng.random() < 0.4),
                                  signs))
        x += float(u(*JUNCTION_GAP))
    rng = stream(seed, STREAM_BAYS)
    bays = []
    for x0 in np.arange(x_min, x_max, BAY_BLOCK):  # a marked bay (or a lay-by) every BAY_BLOCK metres
        sign = 1 if rng.random() < 0.5 else -1
        start = float(x0 + rng.uniform(2.0, BAY_BLOCK - 18.0))
        bays.append((sign, start, start + float(rng.uniform(6.0, 11.0))))
    relief = _relief(seed, x_range, road)
    plan = StreetPlan(road, ego_offset, sides, tuple(segments), tuple(junctions), tuple(drives), tuple(bays),
                      None, x_range)  # type: ignore[arg-type]
    ground = _ground(plan, relief)
    return StreetPlan(road, ego_offset, sides, tuple(segments), tuple(junctions), tuple(drives), tuple(bays), ground,
                      x_range)


def _relief(seed: int, x_range: tuple[float, float], road: float) -> Relief:
    """Longitudinal grade changes, camber (crown at y = 0), sidewalk cross slope, embankments."""
    rng = stream(seed, STREAM_RELIEF)
    camber = float(rng.uniform(*CAMBER))
    cross_fall = float(rng.uniform(-0.015, 0.015))
    cy, cz = [0.0], [0.0]
    for sign in (1, -1):
        start = road + SIDE_SLOPE_START
        length = float(rng.uniform(*SIDE_SLOPE_LENGTH))
        slope = float(rng.uniform(*SIDE_SLOPE))
        walk = -camber * road + 0.015 * SIDE_SLOPE_START  # sidewalks rise 1.5 % away from the kerb
        for u_, z in ((road, -camber * road), (start, walk), (start + length, walk + slope * length),
                      (Y_FAR + 1.0, walk + slope * length)):
            cy.append(sign * u_)
            cz.append(z)
    order = np.argsort(cy)
    rng = stream(seed, STREAM_PROFILE)
    x_min, x_max = x_range
    ax, az = [x_min - 1.0], [0.0]
    grade = float(rng.normal(0.0, 0.02))
    while ax[-1] < x_max + 1.0:
        step = float(rng.uniform(*GRADE_PIECE))
        az.append(az[-1] + grade * step)
        ax.append(ax[-1] + step)
        grade = float(np.clip(grade + rng.normal(0.0, GRADE_STEP), -MAX_GRADE, MAX_GRADE))
    az_arr = np.array(az) - np.interp(0.0, ax, az)  # S(0, 0) = 0 at the first pose
    return Relief(np.array(ax), az_arr, np.array(cy)[order], np.array(cz)[order], cross_fall)


def _ground(plan: StreetPlan, relief: Relief) -> ZoneMap:
    """The zone rectangles of the plan, resolved into the ground map."""
    zones = _Zones()
    rects: list[tuple[float, float, float, float, int, int]] = []
    x_min, x_max = plan.x_range
    road = plan.road_half_width
    marked = road >= CENTRE_LINE_MIN_HALF_WIDTH
    asphalt = Zone(RAW["road"], Material.ASPHALT, 0.0, "road",
                   (PAINT_STREET_X, 0.0, road - EDGE_LINE_INSET, 1.0) if marked else NO_PAINT)

    def add(x0: float, x1: float, sign: int, u0: float, u1: float, kind: str, zone: Zone) -> None:
        y0, y1 = sorted((sign * u0, sign * u1))
        rects.append((x0, x1, y0, y1, PRIORITY[kind], zones(zone)))

    field = Zone(RAW["terrain"], Material.GRASS, 0.0, "field")
    zones(field)  # index 0: fills the map
    rects.append((x_min, x_max, -road, road, PRIORITY["road"], zones(asphalt)))
    for sign, side in plan.sides.items():
        e = plan.u_edges(sign)
        kerb = side.kerb
        walk = Zone(RAW["sidewalk"], Material.PAVING, kerb, "sidewalk")
        if side.parking > 0:
            bays = Zone(RAW["parking"], Material.PARKING, 0.0, "parking", (PAINT_BAYS_X, 0.0, 0.0, BAY_LENGTH))
            lane = bays if side.parking_marked else Zone(RAW["road"], Material.ASPHALT, 0.0, "parking")
            add(x_min, x_max, sign, e["road"], e["parking"], "parking", lane)
        if side.verge > 0:
            add(x_min, x_max, sign, e["parking"], e["verge"], "verge",
                Zone(RAW["terrain"], Material.GRASS, kerb + side.verge_level, "verge"))
        if side.sidewalk > 0:
            add(x_min, x_max, sign, e["verge"], e["sidewalk"], "sidewalk", walk)
        garden = Zone(RAW["terrain"], Material.GRASS, kerb + side.garden_level, "garden")
        yard = Zone(RAW["other-ground"], Material.GRAVEL, kerb + side.garden_level + 0.02, "yard")
        wood = Zone(RAW["terrain"], Material.GRASS, kerb + side.garden_level, "wood")
        for seg in (s for s in plan.segments if s.sign == sign):
            out = e["sidewalk"]
            if seg.frontage in ("garden", "urban"):
                add(seg.x0, seg.x1, sign, out, out + seg.depth, "garden", garden)
                add(seg.x0, seg.x1, sign, out + seg.depth, out + seg.depth + 22.0, "yard",
                    yard if seg.frontage == "urban" else garden)
            elif seg.frontage == "field":
                add(seg.x0, seg.x1, sign, out, Y_FAR, "garden", garden)
            elif seg.frontage == "wood":
                add(seg.x0, seg.x1, sign, out, out + 40.0, "wood", wood)
            elif seg.frontage == "lot":
                lot = Zone(RAW["parking"], Material.PARKING, kerb, "lot", (PAINT_BAYS_X, 0.0, 0.0, LOT_BAY_WIDTH))
                add(seg.x0 + 2.0, seg.x1 - 2.0, sign, out + 1.0, out + seg.depth, "lot", lot)
                add(seg.x0, seg.x1, sign, out, out + seg.depth + 3.0, "garden", garden)
        for d_sign, x0, x1, length in plan.drives:
            if d_sign == sign:
                add(x0, x1, sign, out, out + length, "drive", yard)
    for sign, x0, x1 in plan.bays:
        bay = Zone(RAW["parking"], Material.PARKING, 0.0, "bay", (PAINT_BAYS_X, 0.0, 0.0, BAY_LENGTH))
        add(x0, x1, sign, road, road + max(plan.sides[sign].parking, 2.3), "bay", bay)
    for j in plan.junctions:
        cross = Zone(RAW["road"], Material.ASPHALT, 0.0, "road", (PAINT_STREET_Y, j.x, 0.0, 1.0))
        for sign in j.signs:
            side = plan.sides[sign]
            add(j.x - j.half_width, j.x + j.half_width, sign, road, Y_FAR, "cross_road", cross)
            walk = Zone(RAW["sidewalk"], Material.PAVING, side.kerb, "sidewalk")
            verge = Zone(RAW["terrain"], Material.GRASS, side.kerb + side.verge_level, "verge")
            start = plan.u_edges(sign)["parking"]
            for d in (-1.0, 1.0):
                inner = j.x + d * j.half_width
                if j.verge > 0:
                    add(*sorted((inner, inner + d * j.verge)), sign, start, Y_FAR, "verge", verge)
                a = inner + d * j.verge
                add(*sorted((a, a + d * j.sidewalk)), sign, start, Y_FAR, "sidewalk", walk)
    return resolve(relief, zones.zones, rects, (x_min, x_max), (-Y_FAR, Y_FAR))


