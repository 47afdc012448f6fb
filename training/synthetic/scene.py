"""A procedural street: ground zones, kerbs, buildings, vegetation, street furniture, vehicles and people.

World frame: metres, +z up, the street runs along +x with its centre line at y = 0; traffic drives on
the right (the ego lane is y = -1.75, heading +x). Cross-section, from left (+y) to right (-y):

    yards (other-ground) | buildings | front gardens (terrain) | sidewalk | parking strip | road |
    sidewalk | grass verge (terrain) with trees, bushes, gravel patches, a parking lot | fence | buildings

Every 30 m block holds every one of the 19 SemanticKITTI classes, so any scan sees all of them.
Objects carry raw SemanticKITTI ids and, for things, an instance id shared by all their parts.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from elite_ros.labels import RAW_NAMES

from .materials import Material
from .primitives import BOX, CYLINDER, ELLIPSOID, PrimitiveBuilder, Primitives

RAW = {name: raw for raw, name in RAW_NAMES.items()}  # class name -> raw SemanticKITTI id

# Street cross-section, world y in metres (positive = left of the driving direction).
ROAD_HALF_WIDTH = 3.5  # two 3.5 m lanes
EGO_LANE_Y = -1.75
ONCOMING_LANE_Y = 1.75
PARKING_OUTER_Y = 6.0  # parking strip 3.5..6.0 on the left
LEFT_SIDEWALK_OUTER_Y = 9.0
FRONT_GARDEN_OUTER_Y = 11.0
RIGHT_SIDEWALK_OUTER_Y = -6.0
FENCE_Y = -16.0
RIGHT_BUILDING_Y = -20.0
KERB_HEIGHT = 0.12  # metres, sidewalk slabs above the road
BLOCK_LENGTH = 30.0  # metres of street holding one of each class
SLAB_LENGTH = 15.0  # sidewalks are cut into slabs so that a camera culls them well
LANE_DASH, LANE_PERIOD, MARKING_HALF_WIDTH = 3.0, 9.0, 0.07  # centre-line dashes, metres
EDGE_LINE_Y = 3.3  # solid lines |y| = 3.3 m
PARKING_BAY_LENGTH, LOT_BAY_WIDTH, BAY_LINE_WIDTH = 5.5, 2.6, 0.1

CAR_COLOURS = [(0.72, 0.72, 0.74), (0.08, 0.08, 0.09), (0.88, 0.88, 0.88), (0.60, 0.08, 0.07),
               (0.12, 0.20, 0.50), (0.30, 0.30, 0.32), (0.15, 0.30, 0.18), (0.75, 0.55, 0.15)]
FACADE_COLOURS = [(0.78, 0.70, 0.58), (0.55, 0.27, 0.20), (0.62, 0.62, 0.60), (0.86, 0.84, 0.80),
                  (0.80, 0.66, 0.40), (0.55, 0.60, 0.66)]
CLOTH_COLOURS = [(0.10, 0.12, 0.25), (0.70, 0.15, 0.12), (0.85, 0.85, 0.80), (0.20, 0.45, 0.25),
                 (0.90, 0.70, 0.10), (0.15, 0.15, 0.15), (0.45, 0.30, 0.55)]
SKIN_COLOURS = [(0.87, 0.70, 0.58), (0.63, 0.45, 0.32), (0.40, 0.27, 0.18)]
SIGN_COLOURS = [(0.80, 0.08, 0.08), (0.08, 0.28, 0.75), (0.95, 0.80, 0.10)]
FENCE_COLOURS = [(0.55, 0.42, 0.28), (0.62, 0.62, 0.60), (0.42, 0.33, 0.24)]
METAL_GREY = (0.55, 0.56, 0.58)


@dataclass(frozen=True)
class GroundLayout:
    """Ground classes on the z = 0 plane as a function of (x, y).

    Attributes:
        band_edges: (B-1,) ascending y boundaries of bands along the street, metres.
        band_raw: (B,) raw id of each band.
        patches: (K, 5) rectangles x0, x1, y0, y1, bay spacing (0 = no painted bays) overriding the bands.
        patch_raw: (K,) raw id of each patch.
    """

    band_edges: np.ndarray
    band_raw: np.ndarray
    patches: np.ndarray
    patch_raw: np.ndarray

    def classify(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground points (n,) -> (raw ids (n,) uint32 incl. lane-marking 60, painted (n,) bool)."""
        raw = self.band_raw[np.searchsorted(self.band_edges, y, side="right")].astype(np.uint32)
        bay = np.where(raw == RAW["parking"], PARKING_BAY_LENGTH, 0.0)
        if len(self.patches) and x.size:
            near = (self.patches[:, 1] >= x.min()) & (self.patches[:, 0] <= x.max())
            for (x0, x1, y0, y1, spacing), patch_raw in zip(self.patches[near], self.patch_raw[near]):
                inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
                raw[inside] = patch_raw
                bay[inside] = spacing
        road = raw == RAW["road"]
        dash = (np.abs(y) < MARKING_HALF_WIDTH) & (np.mod(x, LANE_PERIOD) < LANE_DASH)
        edge = np.abs(np.abs(y) - EDGE_LINE_Y) < MARKING_HALF_WIDTH
        marking = road & (dash | edge)
        raw[marking] = RAW["lane-marking"]
        with np.errstate(invalid="ignore", divide="ignore"):
            bays = (raw == RAW["parking"]) & (bay > 0) & (np.mod(x, np.where(bay > 0, bay, 1.0)) < BAY_LINE_WIDTH)
        return raw, marking | bays


@dataclass(frozen=True)
class Scene:
    """Everything in the world: solid primitives plus the ground plane z = 0 with its class zones."""

    primitives: Primitives
    ground: GroundLayout
    x_range: tuple[float, float]


@dataclass(frozen=True)
class SceneConfig:
    """Street length and density knobs.

    Attributes:
        x_min, x_max: extent of generated content along the street, metres.
        oncoming_car_probability: chance of an oncoming car per block.
    """

    x_min: float = -130.0
    x_max: float = 200.0
    oncoming_car_probability: float = 0.6


# An object part in the object's frame (x forward, y left, z up from the ground):
# (kind, center (3,), size (3,), yaw, material, colour or None = the object's colour)
Part = tuple[int, tuple[float, float, float], tuple[float, float, float], float, Material, tuple | None]


def _place(b: PrimitiveBuilder, parts: list[Part], x: float, y: float, yaw: float, raw: int, instance: int,
           colour) -> None:
    c, s = np.cos(yaw), np.sin(yaw)
    for kind, (px, py, pz), size, part_yaw, material, part_colour in parts:
        b.add(kind, (x + c * px - s * py, y + s * px + c * py, pz), size, yaw + part_yaw, raw, instance,
              material, colour if part_colour is None else part_colour)


def _wheels(xs, half_track: float, radius: float, thickness: float) -> list[Part]:
    return [(ELLIPSOID, (wx, sy * half_track, radius), (radius, thickness, radius), 0.0, Material.TYRE, None)
            for wx in xs for sy in (-1.0, 1.0)]


def car_parts() -> list[Part]:
    return [(BOX, (0.0, 0.0, 0.65), (2.15, 0.88, 0.35), 0.0, Material.PAINT, None),
            (BOX, (-0.25, 0.0, 1.25), (1.15, 0.78, 0.25), 0.0, Material.CABIN, None),
            *_wheels((1.35, -1.35), 0.80, 0.33, 0.11)]


def truck_parts() -> list[Part]:
    return [(BOX, (2.85, 0.0, 1.55), (0.9, 1.2, 1.2), 0.0, Material.CABIN, None),
            (BOX, (2.85, 0.0, 0.75), (0.92, 1.22, 0.42), 0.0, Material.PAINT, None),
            (BOX, (-0.95, 0.0, 1.95), (2.8, 1.25, 1.5), 0.0, Material.PAINT, (0.88, 0.88, 0.86)),
            *_wheels((2.8, -1.3, -2.9), 1.05, 0.5, 0.16)]


def other_vehicle_parts() -> list[Part]:
    """A caravan / camper-van: SemanticKITTI's other-vehicle (trailers, caravans, buses)."""
    return [(BOX, (0.0, 0.0, 1.75), (3.1, 1.1, 1.35), 0.0, Material.PAINT, None),
            (BOX, (0.4, 0.0, 2.2), (2.0, 1.12, 0.35), 0.0, Material.CABIN, None),
            *_wheels((1.9, -1.9), 0.95, 0.4, 0.14)]


def bicycle_parts() -> list[Part]:
    return [(ELLIPSOID, (0.52, 0.0, 0.34), (0.34, 0.025, 0.34), 0.0, Material.TYRE, None),
            (ELLIPSOID, (-0.52, 0.0, 0.34), (0.34, 0.025, 0.34), 0.0, Material.TYRE, None),
            (BOX, (0.0, 0.0, 0.55), (0.42, 0.025, 0.03), 0.0, Material.PAINT, None),
            (BOX, (0.05, 0.0, 0.78), (0.38, 0.025, 0.025), 0.0, Material.PAINT, None),
            (BOX, (-0.2, 0.0, 0.62), (0.025, 0.025, 0.27), 0.0, Material.PAINT, None),
            (BOX, (0.45, 0.0, 0.72), (0.025, 0.025, 0.3), 0.0, Material.PAINT, None),
            (BOX, (0.45, 0.0, 1.0), (0.03, 0.28, 0.02), 0.0, Material.METAL, METAL_GREY),
            (BOX, (-0.2, 0.0, 0.92), (0.13, 0.07, 0.03), 0.0, Material.CLOTH, (0.1, 0.1, 0.1))]


def motorcycle_parts() -> list[Part]:
    return [(ELLIPSOID, (0.72, 0.0, 0.31), (0.31, 0.07, 0.31), 0.0, Material.TYRE, None),
            (ELLIPSOID, (-0.72, 0.0, 0.31), (0.31, 0.07, 0.31), 0.0, Material.TYRE, None),
            (BOX, (0.0, 0.0, 0.62), (0.55, 0.18, 0.22), 0.0, Material.PAINT, None),
            (BOX, (-0.25, 0.0, 0.90), (0.38, 0.15, 0.06), 0.0, Material.CLOTH, (0.08, 0.08, 0.08)),
            (BOX, (0.6, 0.0, 1.02), (0.04, 0.36, 0.03), 0.0, Material.METAL, METAL_GREY)]


def pedestrian_parts(height: float, shirt, trousers, skin) -> list[Part]:
    k = height / 1.75
    return [(BOX, (0.0, 0.1 * k, 0.44 * k), (0.08 * k, 0.08 * k, 0.44 * k), 0.0, Material.CLOTH, trousers),
            (BOX, (0.0, -0.1 * k, 0.44 * k), (0.08 * k, 0.08 * k, 0.44 * k), 0.0, Material.CLOTH, trousers),
            (BOX, (0.0, 0.0, 1.18 * k), (0.13 * k, 0.21 * k, 0.31 * k), 0.0, Material.CLOTH, shirt),
            (BOX, (0.0, 0.27 * k, 1.15 * k), (0.06 * k, 0.05 * k, 0.29 * k), 0.0, Material.CLOTH, shirt),
            (BOX, (0.0, -0.27 * k, 1.15 * k), (0.06 * k, 0.05 * k, 0.29 * k), 0.0, Material.CLOTH, shirt),
            (ELLIPSOID, (0.0, 0.0, 1.63 * k), (0.10 * k, 0.09 * k, 0.12 * k), 0.0, Material.SKIN, skin)]


def rider_parts(seat_height: float, shirt, trousers, head, head_material: Material) -> list[Part]:
    """A person sitting on a two-wheeler (seat at `seat_height` metres, hands forward)."""
    z = seat_height
    return [(BOX, (0.05, 0.13, z - 0.05), (0.22, 0.07, 0.07), 0.0, Material.CLOTH, trousers),
            (BOX, (0.05, -0.13, z - 0.05), (0.22, 0.07, 0.07), 0.0, Material.CLOTH, trousers),
            (BOX, (0.25, 0.13, z - 0.3), (0.06, 0.06, 0.25), 0.0, Material.CLOTH, trousers),
            (BOX, (0.25, -0.13, z - 0.3), (0.06, 0.06, 0.25), 0.0, Material.CLOTH, trousers),
            (BOX, (-0.1, 0.0, z + 0.32), (0.13, 0.2, 0.3), 0.0, Material.CLOTH, shirt),
            (BOX, (0.2, 0.22, z + 0.4), (0.25, 0.05, 0.05), 0.0, Material.CLOTH, shirt),
            (BOX, (0.2, -0.22, z + 0.4), (0.25, 0.05, 0.05), 0.0, Material.CLOTH, shirt),
            (ELLIPSOID, (-0.05, 0.0, z + 0.78), (0.12, 0.11, 0.13), 0.0, head_material, head)]


def generate_scene(seed: int, config: SceneConfig = SceneConfig()) -> Scene:
    """Build a deterministic street for `seed` covering ``config.x_min .. config.x_max``."""
    if not config.x_max > config.x_min:
        raise ValueError(f"SceneConfig.x_max ({config.x_max}) must exceed x_min ({config.x_min})")
    rng = np.random.default_rng(seed)
    builder = PrimitiveBuilder()
    instances = itertools.count(1)
    patches: list[tuple[float, float, float, float, float, int]] = []

    for x0 in np.arange(config.x_min, config.x_max, SLAB_LENGTH):
        half = SLAB_LENGTH / 2
        for y0, y1 in ((PARKING_OUTER_Y, LEFT_SIDEWALK_OUTER_Y), (RIGHT_SIDEWALK_OUTER_Y, -ROAD_HALF_WIDTH)):
            builder.box((x0 + half, (y0 + y1) / 2, KERB_HEIGHT / 2), (half, (y1 - y0) / 2, KERB_HEIGHT / 2), 0.0,
                        RAW["sidewalk"], 0, Material.PAVING)

    for k, bx in enumerate(np.arange(config.x_min, config.x_max, BLOCK_LENGTH)):
        _block(builder, rng, instances, patches, float(bx), k, config)

    band_edges = np.array([FENCE_Y, RIGHT_SIDEWALK_OUTER_Y, -ROAD_HALF_WIDTH, ROAD_HALF_WIDTH, PARKING_OUTER_Y,
                           LEFT_SIDEWALK_OUTER_Y, FRONT_GARDEN_OUTER_Y])
    band_raw = np.array([RAW["terrain"], RAW["terrain"], RAW["sidewalk"], RAW["road"], RAW["parking"],
                         RAW["sidewalk"], RAW["terrain"], RAW["other-ground"]], np.uint32)
    patch_array = np.array([p[:5] for p in patches], np.float64).reshape(-1, 5)
    ground = GroundLayout(band_edges, band_raw, patch_array, np.array([p[5] for p in patches], np.uint32))
    return Scene(builder.build(), ground, (config.x_min, config.x_max))


def _choice(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _block(b: PrimitiveBuilder, rng: np.random.Generator, instances, patches: list, bx: float, k: int,
           config: SceneConfig) -> None:
    """One 30 m block of street starting at x = bx (every class appears at least once)."""
    u = rng.uniform
    end = bx + BLOCK_LENGTH

    # Left: buildings behind front gardens, yards (other-ground) visible in the gaps.
    x = bx + u(0.0, 2.0)
    while x < end - 4.0:
        width = min(u(8.0, 16.0), end + 2.0 - x)
        y0, depth, height = FRONT_GARDEN_OUTER_Y + u(0.0, 1.5), u(8.0, 14.0), u(6.0, 18.0)
        b.box((x + width / 2, y0 + depth / 2, height / 2), (width / 2, depth / 2, height / 2), 0.0, RAW["building"],
              0, Material.FACADE, _choice(rng, FACADE_COLOURS))
        x += width + u(2.5, 6.0)
    bush_x = bx + u(2.0, 28.0)
    b.ellipsoid((bush_x, u(9.6, 10.4), 0.35), (u(0.6, 1.2), 0.55, u(0.5, 0.8)), u(0, np.pi), RAW["vegetation"], 0,
                Material.FOLIAGE)
    fence_x = bx + u(3.0, 20.0)
    b.box((fence_x + 3.0, FRONT_GARDEN_OUTER_Y - 0.2, 0.5), (3.0, 0.03, 0.5), 0.0, RAW["fence"], 0, Material.FENCE,
          _choice(rng, FENCE_COLOURS))

    # Street furniture: lamp posts on both sides, traffic signs.
    for lamp_x, lamp_y, side in ((bx + 2.0, PARKING_OUTER_Y + 0.35, -1.0), (bx + 17.0, -ROAD_HALF_WIDTH - 0.35, 1.0)):
        b.cylinder(lamp_x, lamp_y, 0.0, 7.5, 0.09, RAW["pole"], 0, Material.METAL, METAL_GREY)
        b.box((lamp_x, lamp_y + side * 0.9, 7.45), (0.05, 0.9, 0.05), 0.0, RAW["pole"], 0, Material.METAL, METAL_GREY)
        b.box((lamp_x, lamp_y + side * 1.7, 7.35), (0.22, 0.14, 0.07), 0.0, RAW["pole"], 0, Material.METAL,
              (0.35, 0.36, 0.38))
    for sign_x, sign_y in ((bx + u(12.0, 16.0), PARKING_OUTER_Y + 0.3), (bx + u(22.0, 28.0), -ROAD_HALF_WIDTH - 0.3)):
        b.cylinder(sign_x, sign_y, 0.0, 2.3, 0.035, RAW["pole"], 0, Material.METAL, METAL_GREY)
        yaw = 0.0 if sign_y < 0 else np.pi
        b.box((sign_x, sign_y, 2.62), (0.02, 0.32, 0.32), yaw, RAW["traffic-sign"], 0, Material.SIGN,
              _choice(rng, SIGN_COLOURS))

    # Parking strip: cars, one truck or other-vehicle, one motorcycle, and some empty bays.
    kinds = ["big", "motorcycle", "car", "car", "car"]
    rng.shuffle(kinds)
    x = bx + 3.0 + u(0.0, 1.0)
    parking_y = (ROAD_HALF_WIDTH + PARKING_OUTER_Y) / 2
    for kind in kinds:
        if kind == "big":
            raw, parts, length = ((RAW["truck"], truck_parts(), 7.6) if k % 2 == 0
                                  else (RAW["other-vehicle"], other_vehicle_parts(), 6.3))
        elif kind == "motorcycle":
            raw, parts, length = RAW["motorcycle"], motorcycle_parts(), 2.1
        else:
            raw, parts, length = RAW["car"], car_parts(), 4.3
        if x + length > end - 0.5:
            continue
        yaw = _choice(rng, [0.0, np.pi]) + u(-0.04, 0.04)
        colour = _choice(rng, CAR_COLOURS) if kind != "big" or k % 2 else _choice(rng, CAR_COLOURS[2:5])
        if raw == RAW["other-vehicle"]:
            colour = _choice(rng, [(0.92, 0.90, 0.84), (0.85, 0.75, 0.45)])
        _place(b, parts, x + length / 2, parking_y + u(-0.1, 0.1), yaw, raw, next(instances), colour)
        x += length + u(0.8, 2.5)

    # Sidewalks: parked bicycles (the right one is in the LiDAR's clear view) and pedestrians.
    _place(b, bicycle_parts(), bx + u(3.0, 14.0), RIGHT_SIDEWALK_OUTER_Y + 0.45, _choice(rng, [0.0, np.pi]),
           RAW["bicycle"], next(instances), _choice(rng, CAR_COLOURS))
    if rng.random() < 0.5:
        _place(b, motorcycle_parts(), bx + u(16.0, 27.0), RIGHT_SIDEWALK_OUTER_Y + 0.6, _choice(rng, [0.0, np.pi]),
               RAW["motorcycle"], next(instances), _choice(rng, CAR_COLOURS))
    if rng.random() < 0.5:
        _place(b, bicycle_parts(), bx + u(4.0, 26.0), LEFT_SIDEWALK_OUTER_Y - 0.45, _choice(rng, [0.0, np.pi]),
               RAW["bicycle"], next(instances), _choice(rng, CAR_COLOURS))
    for _ in range(int(rng.integers(1, 3))):
        _person(b, rng, instances, bx + u(1.0, 29.0), u(PARKING_OUTER_Y + 0.6, LEFT_SIDEWALK_OUTER_Y - 0.8))
    if rng.random() < 0.5:
        _person(b, rng, instances, bx + u(1.0, 29.0), u(RIGHT_SIDEWALK_OUTER_Y + 0.5, -ROAD_HALF_WIDTH - 0.8))

    # Road: a bicyclist at the right edge, a motorcyclist and maybe a car in the oncoming lane.
    _rider(b, rng, instances, bx + u(4.0, 26.0), -ROAD_HALF_WIDTH + 0.55, 0.0, bicycle=True)
    _rider(b, rng, instances, bx + u(3.0, 11.0), ONCOMING_LANE_Y + u(-0.3, 0.3), np.pi, bicycle=False)
    if rng.random() < config.oncoming_car_probability:
        _place(b, car_parts(), bx + u(17.0, 27.0), ONCOMING_LANE_Y + u(-0.2, 0.2), np.pi + u(-0.03, 0.03),
               RAW["car"], next(instances), _choice(rng, CAR_COLOURS))

    # Right: a hedge along the sidewalk, a gravel patch or a parking lot, trees and bushes, a fence.
    if rng.random() < 0.5:
        length, height = u(6.0, 14.0), u(0.7, 1.3)
        b.box((bx + u(2.0, 28.0 - length) + length / 2, RIGHT_SIDEWALK_OUTER_Y - 0.5, height / 2),
              (length / 2, 0.4, height / 2), 0.0, RAW["vegetation"], 0, Material.FOLIAGE)
    free_x: tuple[float, float] | None = None
    if k % 3 == 1:  # a parking lot with cars parked across it
        lot = (bx + 8.0, bx + 8.0 + 6 * LOT_BAY_WIDTH, -14.5, -8.0)
        patches.append((*lot, LOT_BAY_WIDTH, RAW["parking"]))
        for bay in range(6):
            if rng.random() < 0.6:
                _place(b, car_parts(), lot[0] + (bay + 0.5) * LOT_BAY_WIDTH, -11.0, _choice(rng, [0.5, -0.5]) * np.pi,
                       RAW["car"], next(instances), _choice(rng, CAR_COLOURS))
        free_x = (lot[0] - 1.0, lot[1] + 1.0)
    else:
        gx, gl = bx + u(0.0, 15.0), u(5.0, 12.0)
        patches.append((gx, gx + gl, u(-15.0, -12.0), u(-9.0, -7.0), 0.0, RAW["other-ground"]))
    for _ in range(2):
        tx = _free(rng, bx, free_x)
        ty, trunk_h, trunk_r = u(-14.0, -8.5), u(1.8, 3.2), u(0.15, 0.3)
        b.cylinder(tx, ty, 0.0, trunk_h + 0.5, trunk_r, RAW["trunk"], 0, Material.BARK)
        rx, rz = u(1.4, 2.6), u(1.5, 3.0)
        b.ellipsoid((tx, ty, trunk_h + 0.7 * rz), (rx, rx * u(0.8, 1.0), rz), u(0, np.pi), RAW["vegetation"], 0,
                    Material.FOLIAGE)
    for _ in range(2):
        rz = u(0.4, 0.9)
        b.ellipsoid((_free(rng, bx, free_x), u(-15.0, -7.5), 0.6 * rz), (u(0.5, 1.2), u(0.5, 1.2), rz), u(0, np.pi),
                    RAW["vegetation"], 0, Material.FOLIAGE)
    gap = bx + u(2.0, 25.0), u(2.0, 5.0)
    height, colour = u(1.2, 1.8), _choice(rng, FENCE_COLOURS)
    for f0, f1 in ((bx, gap[0]), (gap[0] + gap[1], end)):
        if f1 - f0 > 0.2:
            b.box(((f0 + f1) / 2, FENCE_Y, height / 2), ((f1 - f0) / 2, 0.03, height / 2), 0.0, RAW["fence"], 0,
                  Material.FENCE, colour)
    if rng.random() < 0.7:
        width, depth, height = u(8.0, 20.0), u(8.0, 14.0), u(4.0, 12.0)
        x = bx + u(0.0, 8.0)
        b.box((x + width / 2, RIGHT_BUILDING_Y - depth / 2, height / 2), (width / 2, depth / 2, height / 2), 0.0,
              RAW["building"], 0, Material.FACADE, _choice(rng, FACADE_COLOURS))


def _free(rng: np.random.Generator, bx: float, blocked: tuple[float, float] | None) -> float:
    """An x in the block outside the `blocked` interval (if any)."""
    for _ in range(20):
        x = bx + rng.uniform(1.0, BLOCK_LENGTH - 1.0)
        if blocked is None or not blocked[0] <= x <= blocked[1]:
            return float(x)
    return bx + 0.5


def _person(b: PrimitiveBuilder, rng: np.random.Generator, instances, x: float, y: float) -> None:
    parts = pedestrian_parts(rng.uniform(1.55, 1.9), _choice(rng, CLOTH_COLOURS), _choice(rng, CLOTH_COLOURS[:2] +
                             CLOTH_COLOURS[5:6]), _choice(rng, SKIN_COLOURS))
    _place(b, parts, x, y, rng.uniform(-np.pi, np.pi), RAW["person"], next(instances), None)


def _rider(b: PrimitiveBuilder, rng: np.random.Generator, instances, x: float, y: float, yaw: float,
           bicycle: bool) -> None:
    """A bicyclist or motorcyclist: vehicle and person share the rider class and one instance id."""
    shirt, trousers = _choice(rng, CLOTH_COLOURS), _choice(rng, CLOTH_COLOURS[:2])
    if bicycle:
        vehicle, raw = bicycle_parts(), RAW["bicyclist"]
        rider = rider_parts(0.92, shirt, trousers, _choice(rng, SKIN_COLOURS), Material.SKIN)
    else:
        vehicle, raw = motorcycle_parts(), RAW["motorcyclist"]
        rider = rider_parts(0.93, shirt, trousers, _choice(rng, CAR_COLOURS), Material.PAINT)  # helmet
    _place(b, vehicle + rider, x, y, yaw + rng.uniform(-0.05, 0.05), raw, next(instances), _choice(rng, CAR_COLOURS))
