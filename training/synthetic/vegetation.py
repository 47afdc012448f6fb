"""Trees, bushes, hedges and woodland edges: clumps of porous foliage (``Material.FOLIAGE``).

Foliage is not a solid surface: the ray caster lets beams penetrate it (``materials.POROSITY``), so a
clump's shape only bounds where leaves are. Clumps are ellipsoids and boxes, several per plant so that
crowns and hedges have irregular outlines. Heights are metres above the ground at the plant's foot.
"""
from __future__ import annotations

import numpy as np

from .layout import RAW
from .materials import Material
from .primitives import PrimitiveBuilder

BARK_COLOURS = [(0.34, 0.24, 0.15), (0.42, 0.36, 0.30), (0.28, 0.22, 0.16)]


def tree(b: PrimitiveBuilder, rng: np.random.Generator, x: float, y: float, z: float, size: float = 1.0) -> None:
    """A trunk and a crown of 3-6 foliage clumps; `size` scales the crown (1 = a 2-3.5 m radius crown)."""
    u = rng.uniform
    radius = u(1.6, 3.2) * size
    base = u(1.6, 3.2) * (0.6 + 0.4 * size)  # crown base above the ground
    top = base + 2.0 * radius * u(0.8, 1.2)
    trunk_r = u(0.07, 0.13) + 0.03 * radius  # street trees: 0.1-0.25 m
    b.cylinder(x, y, z - 0.2, z + base + 0.4 * (top - base), trunk_r, RAW["trunk"], 0, Material.BARK,
               BARK_COLOURS[int(rng.integers(len(BARK_COLOURS)))])
    cz = z + 0.5 * (base + top)
    for _ in range(int(rng.integers(3, 7))):
        r = radius * u(0.5, 0.8)
        offset = rng.normal(0.0, 0.35 * radius, 3)
        offset[2] *= 0.7
        centre = (x + offset[0], y + offset[1], max(cz + offset[2], z + base + r * 0.7))
        b.ellipsoid(centre, (r * u(0.85, 1.15), r * u(0.85, 1.15), r * u(0.7, 1.0)), u(0, np.pi), RAW["vegetation"],
                    0, Material.FOLIAGE)


def bush(b: PrimitiveBuilder, rng: np.random.Generator, x: float, y: float, z: float, size: float = 1.0) -> None:
    """A bush of 2-4 clumps, 0.5-1.8 m tall."""
    u = rng.uniform
    for _ in range(int(rng.integers(2, 5))):
        r = u(0.4, 1.0) * size
        h = u(0.6, 1.0) * r
        b.ellipsoid((x + u(-0.6, 0.6) * size, y + u(-0.6, 0.6) * size, z + h * u(0.5, 0.9)), (r * u(0.8, 1.3), r, h),
                    u(0, np.pi), RAW["vegetation"], 0, Material.FOLIAGE)


def hedge(b: PrimitiveBuilder, rng: np.random.Generator, x0: float, x1: float, y: float, height_at, depth: float,
          height: float) -> None:
    """A hedge from x0 to x1 centred at y, in 2-4 m pieces of slightly varying height and depth.

    `height_at(x)` gives the ground height at x along the hedge, metres.
    """
    u = rng.uniform
    x = x0
    while x < x1 - 0.3:
        length = min(u(2.0, 4.0), x1 - x)
        h = height * u(0.9, 1.1)
        d = depth * u(0.85, 1.15)
        xm = x + length / 2
        z = float(height_at(xm))
        b.box((xm, y + u(-0.08, 0.08), z + h / 2 - 0.1), (length / 2 + 0.1, d / 2, h / 2 + 0.1), u(-0.02, 0.02),
              RAW["vegetation"], 0, Material.FOLIAGE)
        x += length


def wood_edge(b: PrimitiveBuilder, rng: np.random.Generator, x0: float, x1: float, y: float, sign: int,
              height_at) -> None:
    """Woodland from x0 to x1 starting at y (outward = `sign`): undergrowth and a row of large crowns."""
    u = rng.uniform
    x = x0 + u(0.0, 3.0)
    while x < x1:
        depth = u(0.0, 4.0)
        ty = y + sign * (depth + 1.5)
        tree(b, rng, x, ty, float(height_at(x, ty)), size=u(1.0, 1.5))
        by = y + sign * u(0.3, 2.0)
        bush(b, rng, x + u(-2.0, 2.0), by, float(height_at(x, by)), size=u(1.0, 1.8))
        x += u(3.5, 7.0)
