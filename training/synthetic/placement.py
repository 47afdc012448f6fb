"""Putting objects on a street plan: the scene builder's state and one method per kind of object.

`World` holds the primitive builder, the plan, the running instance ids and the current random stream;
`place` stands an object's parts on the ground under it (pitched and rolled with it), and `car`,
`person`, `rider`, `building`, `fence` and `pole` draw one object of each kind in the colours below.
`scene.generate_scene` decides where they go.
"""
from __future__ import annotations

import itertools

import numpy as np

from .layout import RAW, StreetPlan, stream
from .materials import Material
from .primitives import PrimitiveBuilder, rotation_matrix
from .vehicles import (
    METAL_GREY,
    Part,
    bicycle_parts,
    car_parts,
    motorcycle_parts,
    pedestrian_parts,
    random_car,
    rider_parts,
)

CAR_COLOURS = [(0.72, 0.72, 0.74), (0.08, 0.08, 0.09), (0.88, 0.88, 0.88), (0.60, 0.08, 0.07),
               (0.12, 0.20, 0.50), (0.30, 0.30, 0.32), (0.15, 0.30, 0.18), (0.75, 0.55, 0.15)]
FACADE_COLOURS = [(0.78, 0.70, 0.58), (0.55, 0.27, 0.20), (0.62, 0.62, 0.60), (0.86, 0.84, 0.80),
                  (0.80, 0.66, 0.40), (0.55, 0.60, 0.66)]
CLOTH_COLOURS = [(0.10, 0.12, 0.25), (0.70, 0.15, 0.12), (0.85, 0.85, 0.80), (0.20, 0.45, 0.25),
                 (0.90, 0.70, 0.10), (0.15, 0.15, 0.15), (0.45, 0.30, 0.55)]
SKIN_COLOURS = [(0.87, 0.70, 0.58), (0.63, 0.45, 0.32), (0.40, 0.27, 0.18)]
SIGN_COLOURS = [(0.80, 0.08, 0.08), (0.08, 0.28, 0.75), (0.95, 0.80, 0.10)]
FENCE_COLOURS = [(0.55, 0.42, 0.28), (0.62, 0.62, 0.60), (0.42, 0.33, 0.24)]


def choice(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


class World:
    """Scene construction state: the builder, the plan, instance ids, the random stream."""

    def __init__(self, plan: StreetPlan, seed: int) -> None:
        self.b = PrimitiveBuilder()
        self.plan = plan
        self.seed = seed
        self.rng = stream(seed, 0)
        self.instances = itertools.count(1)

    def use(self, *tag: int) -> np.random.Generator:
        """Draw from the stream `tag` of the world's seed from now on (see `layout.stream`)."""
        self.rng = stream(self.seed, *tag)
        return self.rng

    def height(self, x: float, y: float) -> float:
        return float(self.plan.ground.height(x, y))

    def place(self, parts: list[Part], x: float, y: float, yaw: float, raw: int, colour, half=(1.0, 0.5),
              instance: int | None = None) -> None:
        """Put an object's parts on the ground at (x, y), pitched and rolled with it over its `half` footprint."""
        c, s = np.cos(yaw), np.sin(yaw)
        hx, hy = half
        h = self.plan.ground.height
        front, back = h(x + c * hx, y + s * hx), h(x - c * hx, y - s * hx)
        left, right = h(x - s * hy, y + c * hy), h(x + s * hy, y - c * hy)
        pitch = float(np.arctan2(front - back, 2 * hx))
        roll = float(np.arctan2(left - right, 2 * hy))
        z = float(0.25 * (front + back + left + right))
        rot = rotation_matrix(yaw, pitch, roll)
        inst = next(self.instances) if instance is None else instance
        for kind, centre, size, part_yaw, material, part_colour in parts:
            world = np.array([x, y, z]) + rot @ np.asarray(centre)
            self.b.add(kind, world, size, 0.0, raw, inst, material, colour if part_colour is None else part_colour,
                       rotation=rot @ rotation_matrix(part_yaw))

    def car(self, x: float, y: float, yaw: float) -> float:
        shape = random_car(self.rng)
        self.place(car_parts(shape), x, y, yaw, RAW["car"], choice(self.rng, CAR_COLOURS),
                   (shape.length * 0.3, shape.width * 0.45))
        return shape.length

    def person(self, x: float, y: float) -> None:
        rng = self.rng
        parts = pedestrian_parts(rng.uniform(1.55, 1.9), choice(rng, CLOTH_COLOURS),
                                 choice(rng, CLOTH_COLOURS[:2] + CLOTH_COLOURS[5:6]), choice(rng, SKIN_COLOURS))
        self.place(parts, x, y, rng.uniform(-np.pi, np.pi), RAW["person"], None, (0.1, 0.1))

    def rider(self, x: float, y: float, yaw: float, bicycle: bool) -> None:
        """A bicyclist or motorcyclist: vehicle and person share the rider class and one instance id."""
        rng = self.rng
        shirt, trousers = choice(rng, CLOTH_COLOURS), choice(rng, CLOTH_COLOURS[:2])
        if bicycle:
            vehicle, raw = bicycle_parts(), RAW["bicyclist"]
            rider = rider_parts(0.92, shirt, trousers, choice(rng, SKIN_COLOURS), Material.SKIN)
        else:
            vehicle, raw = motorcycle_parts(), RAW["motorcyclist"]
            rider = rider_parts(0.93, shirt, trousers, choice(rng, CAR_COLOURS), Material.PAINT)  # helmet
        self.place(vehicle + rider, x, y, yaw + rng.uniform(-0.05, 0.05), raw, choice(rng, CAR_COLOURS), (0.6, 0.2))

    def building(self, x0: float, x1: float, y0: float, y1: float, height: float) -> None:
        """A block over [x0, x1] x [y0, y1] metres, its base below the lowest ground under it."""
        xm, ym = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        low, high = self.plan.ground.footprint_height(xm, ym, 0.5 * (x1 - x0), 0.5 * (y1 - y0))
        z0, z1 = low - 0.5, high + height
        self.b.box((xm, ym, 0.5 * (z0 + z1)), (0.5 * (x1 - x0), 0.5 * (y1 - y0), 0.5 * (z1 - z0)), 0.0,
                   RAW["building"], 0, Material.FACADE, choice(self.rng, FACADE_COLOURS))

    def fence(self, x0: float, y0: float, x1: float, y1: float, height: float, colour=None) -> None:
        """A straight fence from (x0, y0) to (x1, y1), in pieces that follow the ground."""
        length = float(np.hypot(x1 - x0, y1 - y0))
        if length < 0.3:
            return
        yaw = float(np.arctan2(y1 - y0, x1 - x0))
        colour = colour or choice(self.rng, FENCE_COLOURS)
        pieces = max(1, int(np.ceil(length / 5.0)))
        for k in range(pieces):
            a, c = k / pieces, (k + 1) / pieces
            xm, ym = x0 + (a + c) / 2 * (x1 - x0), y0 + (a + c) / 2 * (y1 - y0)
            z = self.height(xm, ym)
            self.b.box((xm, ym, z + height / 2 - 0.05), (length / pieces / 2, 0.03, height / 2 + 0.05), yaw,
                       RAW["fence"], 0, Material.FENCE, colour)

    def pole(self, x: float, y: float, sign: int, lamp: bool) -> None:
        """A lamp post (arm over the road, towards -`sign` y) or a traffic sign, standing on the ground."""
        z = self.height(x, y)
        if lamp:
            self.b.cylinder(x, y, z - 0.2, z + 7.5, 0.09, RAW["pole"], 0, Material.METAL, METAL_GREY)
            self.b.box((x, y - sign * 0.9, z + 7.45), (0.05, 0.9, 0.05), 0.0, RAW["pole"], 0, Material.METAL,
                       METAL_GREY)
            self.b.box((x, y - sign * 1.7, z + 7.35), (0.22, 0.14, 0.07), 0.0, RAW["pole"], 0, Material.METAL,
                       (0.35, 0.36, 0.38))
        else:
            self.b.cylinder(x, y, z - 0.2, z + 2.3, 0.035, RAW["pole"], 0, Material.METAL, METAL_GREY)
            yaw = 0.0 if sign < 0 else np.pi  # the sign's face looks at the traffic coming towards it
            self.b.box((x, y, z + 2.62), (0.02, 0.32, 0.32), yaw, RAW["traffic-sign"], 0, Material.SIGN,
                       choice(self.rng, SIGN_COLOURS))
