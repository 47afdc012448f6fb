"""A procedural street: the ground of a street plan, buildings, vegetation, street furniture, vehicles, people.

The plan (``layout.plan_street``) fixes the cross-section, frontages and junctions; this module decides
where objects go, and `placement.World` draws each one standing on the ground under it (vehicles pitch
and roll with it). Objects carry raw SemanticKITTI ids and, for things, an instance id shared by all
their parts. Every 50 m of street holds each of the rarer classes once (a truck or other-vehicle, a
motorcycle, a bicycle, a bicyclist, a motorcyclist, people, a parking bay), so a short drive sees all
19 classes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .ground import ZoneMap, build_slabs
from .layout import RAW, Segment, StreetPlan, plan_street
from .placement import CAR_COLOURS, World, choice
from .primitives import Primitives
from .vegetation import bush, hedge, tree, wood_edge
from .vehicles import bicycle_parts, motorcycle_parts, other_vehicle_parts, truck_parts

RARE_BLOCK = 50.0  # metres of street holding one of each rare class
SLOT = (5.6, 6.8)  # metres per kerbside parking slot
# random streams of the object generators (layout.stream tags; the street plan uses 101-107)
STREAM_FRONTAGE, STREAM_PARKED, STREAM_BAY_CARS, STREAM_LAMPS, STREAM_SIGNS, STREAM_TREES = range(201, 207)
STREAM_JUNCTION, STREAM_RARE = 207, 208


@dataclass(frozen=True)
class Scene:
    """Everything in the world: solid primitives (the ground slabs among them) and the street plan."""

    primitives: Primitives
    plan: StreetPlan
    x_range: tuple[float, float]

    @property
    def ground(self) -> ZoneMap:
        return self.plan.ground


@dataclass(frozen=True)
class SceneConfig:
    """Street length and density knobs.

    Attributes:
        x_min, x_max: extent of generated content along the street, metres.
        oncoming_car_probability: chance of an oncoming car per 50 m of street.
    """

    x_min: float = -130.0
    x_max: float = 200.0
    oncoming_car_probability: float = 0.4


def generate_scene(seed: int, config: SceneConfig = SceneConfig()) -> Scene:
    """Build a deterministic street for `seed` covering ``config.x_min .. config.x_max``."""
    if not config.x_max > config.x_min:
        raise ValueError(f"SceneConfig.x_max ({config.x_max}) must exceed x_min ({config.x_min})")
    plan = plan_street(seed, (config.x_min, config.x_max))
    w = World(plan, seed)
    build_slabs(plan.ground, w.b)
    for sign in (1, -1):
        for k, seg in enumerate(s for s in plan.segments if s.sign == sign):
            w.use(STREAM_FRONTAGE, sign + 1, k)
            _frontage(w, seg)
        _kerbside(w, sign)
    for k, junction in enumerate(plan.junctions):
        w.use(STREAM_JUNCTION, k)
        _junction(w, junction)
    for k, x0 in enumerate(np.arange(config.x_min, config.x_max, RARE_BLOCK)):
        w.use(STREAM_RARE, k)
        _rare(w, float(x0), config)
    return Scene(_number_instances(w.b.build()), plan, (config.x_min, config.x_max))


def _number_instances(p: Primitives) -> Primitives:
    """Renumber instances 1, 2, ... by where the objects stand along the street (their first part's x), so
    that an object's id does not depend on how far the street was generated or in which order."""
    ids = p.instance.astype(np.int64)
    things = np.unique(ids[ids > 0])
    if things.size == 0:
        return p
    first = np.array([np.flatnonzero(ids == i)[0] for i in things])
    anchor = p.center[first]
    order = np.lexsort((anchor[:, 1], anchor[:, 0]))
    lut = np.zeros(int(ids.max()) + 1, np.int64)
    lut[things[order]] = np.arange(1, things.size + 1)
    if things.size >= 1 << 16:
        raise ValueError(f"{things.size} object instances do not fit the 16-bit instance ids")
    return replace(p, instance=lut[ids].astype(np.uint16))


def _kerbside(w: World, sign: int) -> None:
    """Parked cars along one side, lamp posts and signs at the kerb, street trees in the verge."""
    plan = w.plan
    e, side = plan.u_edges(sign), plan.sides[sign]
    x_min, x_max = plan.x_range
    rng = w.use(STREAM_PARKED, sign + 1)
    if side.parking > 0:
        x = x_min + rng.uniform(0.0, 4.0)
        u_car = 0.5 * (e["road"] + e["parking"])
        while x < x_max - 6.0:
            slot = rng.uniform(*SLOT)
            seg = plan.segment_at(x, sign)
            if not plan.blocked(x + slot / 2, sign, 4.0) and rng.random() < seg.parked:
                yaw = choice(rng, [0.0, np.pi]) + rng.uniform(-0.04, 0.04)
                w.car(x + slot / 2, sign * (u_car + rng.uniform(-0.15, 0.1)), yaw)
            x += slot
    rng = w.use(STREAM_BAY_CARS, sign + 1)
    for bay_sign, x0, x1 in plan.bays:
        if bay_sign == sign and side.parking == 0 and rng.random() < 0.5:
            u_bay = e["road"] + 1.15
            w.car(0.5 * (x0 + x1) + rng.uniform(-1.0, 1.0), sign * u_bay, choice(rng, [0.0, np.pi]))
    rng = w.use(STREAM_LAMPS, sign + 1)
    lamp_x = x_min + rng.uniform(0.0, 30.0)
    while lamp_x < x_max:
        if not plan.blocked(lamp_x, sign, 0.5):
            w.pole(lamp_x, sign * (e["parking"] + 0.4), sign, lamp=True)
        lamp_x += rng.uniform(24.0, 36.0)
    rng = w.use(STREAM_SIGNS, sign + 1)
    sign_x = x_min + rng.uniform(0.0, 40.0)
    while sign_x < x_max:
        if not plan.blocked(sign_x, sign, 0.5):
            w.pole(sign_x, sign * (e["parking"] + 0.3), sign, lamp=False)
        sign_x += rng.uniform(30.0, 70.0)
    rng = w.use(STREAM_TREES, sign + 1)
    if side.verge > 0.9:
        x = x_min + rng.uniform(0.0, 8.0)
        u_tree = e["parking"] + side.verge / 2
        while x < x_max:
            if not plan.blocked(x, sign, 1.5):
                tree(w.b, rng, x, sign * u_tree, w.height(x, sign * u_tree), size=rng.uniform(0.7, 1.2))
                if side.verge > 1.6 and rng.random() < 0.5:  # low shrubs between the street trees
                    xb = x + rng.uniform(3.0, 5.0)
                    bush(w.b, rng, xb, sign * u_tree, w.height(xb, sign * u_tree), size=rng.uniform(0.5, 0.8))
            x += rng.uniform(7.0, 13.0)


def _frontage(w: World, seg: Segment) -> None:
    """What stands beyond the sidewalk along one segment: hedges / fences, gardens, buildings, fields, woods."""
    plan, rng = w.plan, w.rng
    sign = seg.sign
    out = plan.u_edges(sign)["sidewalk"]
    u = rng.uniform

    def free(x0: float, x1: float, margin: float = 1.0) -> list[tuple[float, float]]:
        """Sub-intervals of [x0, x1] outside the cross-street corridors of this side."""
        pieces = [(x0, x1)]
        for j in plan.junctions:
            if sign in j.signs:
                a, b = j.corridor(margin)
                pieces = [p for q in pieces for p in ((q[0], min(q[1], a)), (max(q[0], b), q[1])) if p[1] - p[0] > 0.5]
        return pieces

    boundary_u = out + 0.05
    for a, b in free(seg.x0, seg.x1):
        if seg.boundary == "hedge":
            height, depth = u(0.9, 2.5), u(0.7, 1.4)
            hedge(w.b, rng, a, b, sign * (boundary_u + depth / 2), lambda x: w.height(x, sign * boundary_u), depth,
                  height)
        elif seg.boundary == "fence":
            w.fence(a, sign * (out + 0.1), b, sign * (out + 0.1), u(0.8, 1.6))
    if seg.frontage in ("garden", "urban"):
        for a, b in free(seg.x0, seg.x1, 2.0):
            x = a + u(0.0, 3.0)
            while x < b - 5.0:
                width = min(u(8.0, 18.0), b - x)
                y0 = out + seg.depth
                w.building(x, x + width, *sorted((sign * y0, sign * (y0 + u(8.0, 14.0)))), u(5.0, 16.0))
                gap = u(2.5, 8.0)
                if seg.frontage == "garden" and seg.depth > 1.5 and rng.random() < 0.25:  # fence between houses
                    fx = x + width + gap / 2
                    w.fence(fx, sign * (out + 0.3), fx, sign * (y0 + 3.0), u(0.9, 1.6))
                x += width + gap
            if seg.depth > 4.0 and rng.random() < 0.5:  # a hedge or shrubs along the house fronts
                y_front = out + seg.depth - 0.7
                hedge(w.b, rng, a, b, sign * y_front, lambda x, yf=y_front: w.height(x, sign * yf), u(0.6, 1.0),
                      u(0.7, 1.5))
            if seg.depth > 2.0:
                x = a + u(0.0, 6.0)
                while x < b:
                    uu = out + u(0.8, seg.depth - 0.5)
                    if rng.random() < 0.7:
                        bush(w.b, rng, x, sign * uu, w.height(x, sign * uu), size=u(0.8, 1.5))
                    else:
                        tree(w.b, rng, x, sign * uu, w.height(x, sign * uu), size=u(0.6, 1.1))
                    x += u(3.0, 8.0)
    elif seg.frontage == "field":
        for a, b in free(seg.x0, seg.x1):
            x = a + u(0.0, 8.0)
            while x < b:
                uu = out + u(2.0, seg.depth)
                (bush if rng.random() < 0.6 else tree)(w.b, rng, x, sign * uu, w.height(x, sign * uu), u(0.7, 1.3))
                x += u(6.0, 16.0)
            far = out + seg.depth
            if rng.random() < 0.6:
                wood_edge(w.b, rng, a, b, sign * far, sign, w.height)
            else:
                x = a + u(0.0, 4.0)
                while x < b - 6.0:
                    width = min(u(8.0, 20.0), b - x)
                    w.building(x, x + width, *sorted((sign * far, sign * (far + u(8.0, 14.0)))), u(4.0, 12.0))
                    x += width + u(3.0, 10.0)
    elif seg.frontage == "wood":
        for a, b in free(seg.x0, seg.x1):
            wood_edge(w.b, rng, a, b, sign * (out + seg.depth), sign, w.height)
            x = a + u(0.0, 5.0)
            while x < b:
                uu = out + u(0.5, max(seg.depth, 1.0))
                bush(w.b, rng, x, sign * uu, w.height(x, sign * uu), u(0.8, 1.5))
                x += u(3.0, 8.0)
    elif seg.frontage == "lot":
        for a, b in free(seg.x0 + 2.0, seg.x1 - 2.0, 2.0):
            for row_u, yaw in ((out + 1.0 + 2.7, np.pi / 2), (out + seg.depth - 2.7, -np.pi / 2)):
                if row_u + 2.0 > out + seg.depth:
                    continue
                x = a + 1.3
                while x < b - 1.3:
                    if rng.random() < 0.55:
                        w.car(x, sign * row_u, yaw + u(-0.05, 0.05))
                    x += 2.6
        far = out + seg.depth + 1.0
        for a, b in free(seg.x0, seg.x1):
            hedge(w.b, rng, a, b, sign * (far + 0.5), lambda x: w.height(x, sign * far), 1.0, u(1.0, 2.0))


def _junction(w: World, j) -> None:
    """Corner signs, cars parked along and waiting in the cross street, buildings along it."""
    plan, rng = w.plan, w.rng
    for sign in j.signs:
        start = plan.u_edges(sign)["sidewalk"]
        for d in (-1.0, 1.0):
            corner_x = j.x + d * (j.half_width + j.verge + 0.4)
            w.pole(corner_x, sign * (start + 0.5), sign, lamp=False)
            x_park = j.x + d * (j.half_width - 1.1)
            uu = start + rng.uniform(3.0, 10.0)
            while uu < 70.0:
                if rng.random() < 0.15:
                    w.car(x_park, sign * uu, np.pi / 2 * sign * d + rng.uniform(-0.04, 0.04))
                uu += rng.uniform(*SLOT)
            reach = j.half_width + j.verge + j.sidewalk
            uu = start + rng.uniform(14.0, 24.0)
            while uu < 70.0:
                depth = rng.uniform(8.0, 16.0)
                setback = rng.uniform(2.0, 8.0)
                xa = j.x + d * (reach + setback)
                xb = xa + d * rng.uniform(8.0, 12.0)
                w.building(min(xa, xb), max(xa, xb), *sorted((sign * uu, sign * (uu + depth))), rng.uniform(5.0, 14.0))
                uu += depth + rng.uniform(4.0, 12.0)
        if rng.random() < 0.4:  # a car waiting to turn out of the cross street
            w.car(j.x - sign * j.half_width / 2, sign * (plan.road_half_width + rng.uniform(3.0, 6.0)),
                  -sign * np.pi / 2 + rng.uniform(-0.1, 0.1))


def _rare(w: World, x0: float, config: SceneConfig) -> None:
    """One of each rarer class in [x0, x0 + RARE_BLOCK): a big vehicle, two-wheelers, riders, people, a bay."""
    plan, rng = w.plan, w.rng
    u = rng.uniform
    road = plan.road_half_width
    x1 = x0 + RARE_BLOCK

    def clear_x(sign: int, margin: float = 4.0) -> float:
        for _ in range(20):
            x = u(x0 + 2.0, x1 - 2.0)
            if not plan.blocked(x, sign, margin):
                return float(x)
        return float(u(x0 + 2.0, x1 - 2.0))

    # a truck or a caravan: parked down a cross street, else at the left kerb, else oncoming
    truck = int(x0 // RARE_BLOCK) % 2 == 0
    parts, raw, half = ((truck_parts(), RAW["truck"], (3.0, 1.0)) if truck
                        else (other_vehicle_parts(), RAW["other-vehicle"], (2.5, 0.9)))
    colour = choice(rng, CAR_COLOURS[2:5]) if truck else choice(rng, [(0.92, 0.90, 0.84), (0.85, 0.75, 0.45)])
    near = [j for j in plan.junctions if x0 - 10.0 <= j.x < x1 + 10.0]
    if near:
        j = near[int(rng.integers(len(near)))]
        sign = choice(rng, list(j.signs))
        d = choice(rng, [-1.0, 1.0])
        w.place(parts, j.x + d * (j.half_width - 1.3), sign * u(14.0, 30.0), sign * d * np.pi / 2, raw, colour, half)
    elif plan.sides[1].parking > 0:
        e = plan.u_edges(1)
        w.place(parts, clear_x(1, 6.0), 0.5 * (e["road"] + e["parking"]) + 0.2, choice(rng, [0.0, np.pi]), raw,
                colour, half)
    else:
        sign = choice(rng, [1, -1])  # parked in a yard or field beyond the sidewalk
        x = clear_x(sign, 6.0)
        yard = sign * (plan.u_edges(sign)["sidewalk"] + u(8.0, 20.0))
        w.place(parts, x, yard, choice(rng, [0.0, np.pi]) + u(-0.3, 0.3), raw, colour, half)
    # parked two-wheelers on the sidewalks
    for parts, raw in ((bicycle_parts(), RAW["bicycle"]), (motorcycle_parts(), RAW["motorcycle"])):
        sign = choice(rng, [1, -1])
        e = plan.u_edges(sign)
        x = clear_x(sign, 1.0)
        w.place(parts, x, sign * (e["sidewalk"] - 0.5), choice(rng, [0.0, np.pi]), raw, choice(rng, CAR_COLOURS),
                (0.5, 0.15))
    # people on the sidewalks
    for _ in range(int(rng.integers(1, 4))):
        sign = choice(rng, [1, -1])
        e = plan.u_edges(sign)
        x = clear_x(sign, 0.0)
        w.person(x, sign * u(e["verge"] + 0.4, max(e["sidewalk"] - 0.4, e["verge"] + 0.6)))
    # riders: a bicyclist at the right edge (or the left one on a narrow road), a motorcyclist oncoming
    if road - plan.ego_offset > 2.1 and rng.random() < 0.5:  # room to pass the bicyclist on the right
        w.rider(u(x0, x1), -(road - 0.55), 0.0, bicycle=True)
    else:
        w.rider(u(x0 + 20.0, x1), road - 0.55, np.pi, bicycle=True)
    w.rider(u(x0, x0 + 12.0), plan.oncoming_lane_y + u(-0.3, 0.3), np.pi, bicycle=False)
    if rng.random() < config.oncoming_car_probability:
        w.car(u(x0 + 14.0, x0 + 19.0), plan.oncoming_lane_y + u(-0.2, 0.2), np.pi + u(-0.03, 0.03))
