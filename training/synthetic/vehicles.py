"""Vehicles, riders and people as parts (boxes, ellipsoids) in the object's own frame.

Object frame: x forward, y left, z up from the ground, origin at the centre of the footprint. A part is
``(kind, center (3,), size (3,), yaw, material, colour or None = the object's colour)``.

Cars are sedans, hatchbacks, estates, SUVs and vans with KITTI-like sizes (the KITTI 3D-object "Car"
mean is about 3.9 x 1.6 x 1.56 m, the anchor size of PointPillars / SECOND, Lang et al. 2019): a body
with wheel arches and rounded ends, a glass greenhouse (an ellipsoid narrowing above the belt line),
and wheels visible in the arches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .materials import Material
from .primitives import BOX, ELLIPSOID

Part = tuple[int, tuple[float, float, float], tuple[float, float, float], float, Material, tuple | None]
METAL_GREY = (0.55, 0.56, 0.58)

#: car styles: (weight, length range, width range, height range, belt height, greenhouse length / L,
#: greenhouse centre / L), metres
CAR_STYLES = {
    "hatchback": (0.38, (3.7, 4.3), (1.65, 1.80), (1.42, 1.55), 0.93, 0.62, -0.10),
    "sedan": (0.24, (4.3, 4.9), (1.72, 1.85), (1.38, 1.48), 0.90, 0.52, -0.04),
    "estate": (0.16, (4.4, 4.9), (1.75, 1.85), (1.45, 1.55), 0.92, 0.66, -0.08),
    "suv": (0.12, (4.2, 4.8), (1.80, 1.95), (1.60, 1.78), 1.02, 0.62, -0.08),
    "van": (0.10, (4.7, 5.3), (1.88, 2.00), (1.85, 2.10), 1.05, 0.80, -0.06),
}


@dataclass(frozen=True)
class CarShape:
    """Dimensions of one car, metres."""

    length: float
    width: float
    height: float
    belt: float
    cabin_length: float
    cabin_x: float
    wheel_radius: float


def random_car(rng: np.random.Generator) -> CarShape:
    """A car of a random style (weights of CAR_STYLES) with sizes drawn inside the style's ranges."""
    names = list(CAR_STYLES)
    weights = np.array([CAR_STYLES[n][0] for n in names])
    _, lr, wr, hr, belt, cab, cab_x = CAR_STYLES[names[int(rng.choice(len(names), p=weights / weights.sum()))]]
    length, width, height = rng.uniform(*lr), rng.uniform(*wr), rng.uniform(*hr)
    return CarShape(float(length), float(width), float(height), belt + float(rng.uniform(-0.04, 0.04)),
                    cab * length, cab_x * length, float(rng.uniform(0.29, 0.34)))


def car_parts(shape: CarShape) -> list[Part]:
    L, W, H, belt, R = shape.length, shape.width, shape.height, shape.belt, shape.wheel_radius
    wheelbase = 0.6 * L
    arch = wheelbase / 2 - R - 0.06, wheelbase / 2 + R + 0.06  # x extent of a wheel arch (each end)
    nose = min(0.45, 0.75 * (L / 2 - arch[1]))  # the rounded ends (bumpers), metres
    sill, arch_top = 0.26, 2 * R + 0.05
    mid = (sill + belt) / 2
    parts: list[Part] = [
        # upper body over the arches, full length between the rounded ends
        (BOX, (0.0, 0.0, (arch_top + belt) / 2), (L / 2 - nose, W / 2, (belt - arch_top) / 2), 0.0, Material.PAINT,
         None),
        # doors / sills between the arches
        (BOX, (0.0, 0.0, (sill + arch_top) / 2), (arch[0], W / 2, (arch_top - sill) / 2), 0.0, Material.PAINT, None),
        # wheel wells' inner walls
        (BOX, (0.0, 0.0, (sill + arch_top) / 2), (L / 2 - nose, W / 2 - 0.28, (arch_top - sill) / 2), 0.0,
         Material.PAINT, (0.12, 0.12, 0.12)),
    ]
    for d in (-1.0, 1.0):
        bumper = (arch[1] + L / 2 - nose) / 2
        half = ((L / 2 - nose - arch[1]) / 2, W / 2, (arch_top - 0.32) / 2)
        parts.append((BOX, (d * bumper, 0.0, (0.32 + arch_top) / 2), half, 0.0, Material.PAINT, None))
        parts.append((ELLIPSOID, (d * (L / 2 - nose), 0.0, mid + 0.03), (nose, W / 2 - 0.03, (belt - 0.3) / 2 + 0.04),
                      0.0, Material.PAINT, None))
    # greenhouse: an ellipsoid centred below the belt line, so it narrows above it (tumblehome), but never
    # reaching below the sills (the ground under a car stays visible between its wheels)
    centre = max(belt - 0.25, 0.5 * (sill + 0.05 + H))
    parts.append((ELLIPSOID, (shape.cabin_x, 0.0, centre), (shape.cabin_length / 2, W / 2 - 0.05, H - centre), 0.0,
                  Material.CABIN, None))
    for wx in (wheelbase / 2, -wheelbase / 2):
        for sy in (-1.0, 1.0):
            parts.append((ELLIPSOID, (wx, sy * (W / 2 - 0.13), R), (R, 0.11, R), 0.0, Material.TYRE, None))
    return parts


def truck_parts() -> list[Part]:
    return [(BOX, (2.85, 0.0, 1.55), (0.9, 1.2, 1.2), 0.0, Material.CABIN, None),
            (BOX, (2.85, 0.0, 0.75), (0.92, 1.22, 0.42), 0.0, Material.PAINT, None),
            (BOX, (-0.95, 0.0, 1.95), (2.8, 1.25, 1.5), 0.0, Material.PAINT, (0.88, 0.88, 0.86)),
            *_wheels((2.8, -1.3, -2.9), 1.05, 0.5, 0.16)]


def other_vehicle_parts() -> list[Part]:
    """A caravan / camper-van: SemanticKITTI's other-vehicle (trailers, caravans, buses)."""
    return [(BOX, (0.0, 0.0, 1.45), (2.9, 1.1, 1.05), 0.0, Material.PAINT, None),
            (ELLIPSOID, (0.4, 0.0, 2.1), (2.6, 1.08, 0.45), 0.0, Material.PAINT, None),
            (BOX, (3.3, 0.0, 0.55), (0.5, 0.05, 0.05), 0.0, Material.METAL, METAL_GREY),  # drawbar
            *_wheels((0.0,), 0.95, 0.36, 0.14)]


def _wheels(xs, half_track: float, radius: float, thickness: float) -> list[Part]:
    return [(ELLIPSOID, (wx, sy * half_track, radius), (radius, thickness, radius), 0.0, Material.TYRE, None)
            for wx in xs for sy in (-1.0, 1.0)]


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
