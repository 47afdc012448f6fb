"""The ground: a gently sloping relief cut into zones (road, sidewalk, terrain, ...) made of tilted slabs.

The relief is a smooth large-scale height ``S(x, y) = a(x) + cross_fall * y + c(y)`` (metres) with a
and c piecewise linear, so it is planar on every rectangle between their breakpoints. Zones are
axis-aligned rectangles with a priority (a higher one covers a lower one); each zone kind sits a fixed
`offset` above S (kerbs: sidewalks above the road; verges, gardens and fields at their own levels).
The resolved map is turned into box slabs (``primitives.BOX``) whose top faces are those planes, so
the ground is ray-cast like any other solid: kerb faces are the slabs' sides, and the camera and the
LiDAR see exactly the same ground. Small-scale roughness (grass, gravel) is added at the hit points
(:func:`roughness`), by material, from a deterministic noise field of the world position.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .materials import Material
from .noise import fractal
from .primitives import NO_PAINT, PrimitiveBuilder, plane_rotation

GROUND_DEPTH = 0.4  # metres: slabs reach this far below their top (deeper than any step between zones)
MAX_SLAB_LENGTH = 24.0  # metres along x: long zones are cut so that culling keeps far slabs cheap
MARKING_HALF_WIDTH = 0.07  # metres: painted lines are 0.14 m wide
LANE_DASH, LANE_PERIOD = 3.0, 9.0  # metres: centre-line dashes (3 m paint, 6 m gap)
EDGE_LINE_INSET = 0.25  # metres: solid edge lines this far inside the road edge
BAY_LINE_WIDTH = 0.1  # metres: parking bay separators
STOP_LINE_WIDTH = 0.3  # metres

# paint modes (the first of a slab's four paint parameters; see `paint_mask`)
PAINT_NONE, PAINT_STREET_X, PAINT_STREET_Y, PAINT_BAYS_X, PAINT_BAYS_Y = 0, 1, 2, 3, 4

#: roughness of each ground material: (amplitude metres, feature size metres); grass lawns are bumpy
ROUGHNESS = {Material.GRASS: (0.05, 0.7), Material.GRAVEL: (0.02, 0.4), Material.PAVING: (0.004, 1.0),
             Material.ASPHALT: (0.004, 2.0), Material.PARKING: (0.006, 2.0)}


@dataclass(frozen=True)
class Relief:
    """Large-scale height ``S(x, y) = a(x) + cross_fall * y + c(y)``, metres.

    Attributes:
        ax, az: (Kx,) ascending breakpoints along the street and the longitudinal profile a there, metres.
        cy, cz: (Ky,) ascending lateral breakpoints and the lateral profile c there, metres.
        cross_fall: lateral slope added everywhere (dimensionless).
    """

    ax: np.ndarray
    az: np.ndarray
    cy: np.ndarray
    cz: np.ndarray
    cross_fall: float

    def height(self, x, y) -> np.ndarray:
        """S at world (x, y) (any matching shapes), metres."""
        return np.interp(x, self.ax, self.az) + self.cross_fall * np.asarray(y) + np.interp(y, self.cy, self.cz)

    def facet_slopes(self, x0: float, x1: float, y0: float, y1: float) -> tuple[float, float]:
        """(dS/dx, dS/dy) on a rectangle lying inside one facet (between breakpoints)."""
        sx = (np.interp(x1, self.ax, self.az) - np.interp(x0, self.ax, self.az)) / (x1 - x0)
        sy = self.cross_fall + (np.interp(y1, self.cy, self.cz) - np.interp(y0, self.cy, self.cz)) / (y1 - y0)
        return float(sx), float(sy)


@dataclass(frozen=True)
class Zone:
    """One kind of ground: its class, material, level above the relief and paint.

    Attributes:
        raw: raw SemanticKITTI id of the surface.
        material: its material.
        offset: height of the surface above S, metres.
        use: what stands there (``layout`` places objects by it): road, parking, sidewalk, verge, garden,
            yard, field, wood, lot.
        paint: the slab paint parameters (mode, centre, edge half-distance, bay spacing), metres.
    """

    raw: int
    material: Material
    offset: float
    use: str
    paint: tuple[float, float, float, float] = NO_PAINT


@dataclass(frozen=True)
class ZoneMap:
    """The resolved ground: a non-uniform grid of cells, each holding one zone.

    Attributes:
        relief: the large-scale height.
        zones: the zone kinds (cells index into it).
        x_edges: (Nx + 1,) ascending cell edges along x, metres; y_edges likewise (Ny + 1,).
        cells: (Nx, Ny) int32 zone index per cell.
    """

    relief: Relief
    zones: tuple[Zone, ...]
    x_edges: np.ndarray
    y_edges: np.ndarray
    cells: np.ndarray

    def zone_index(self, x, y) -> np.ndarray:
        """Zone index at world (x, y) (clamped to the map), same shape as x."""
        i = np.clip(np.searchsorted(self.x_edges, x, side="right") - 1, 0, self.cells.shape[0] - 1)
        j = np.clip(np.searchsorted(self.y_edges, y, side="right") - 1, 0, self.cells.shape[1] - 1)
        return self.cells[i, j]

    def zone(self, x: float, y: float) -> Zone:
        return self.zones[int(self.zone_index(x, y))]

    def height(self, x, y) -> np.ndarray:
        """Ground surface height at world (x, y) without roughness, metres."""
        offsets = np.array([z.offset for z in self.zones])
        return self.relief.height(x, y) + offsets[self.zone_index(x, y)]

    def footprint_height(self, x: float, y: float, half_x: float, half_y: float, yaw: float = 0.0
                         ) -> tuple[float, float]:
        """(lowest, highest) ground height under a rectangle centred at (x, y), sampled on a 5 x 5 grid."""
        u, v = np.meshgrid(np.linspace(-half_x, half_x, 5), np.linspace(-half_y, half_y, 5))
        c, s = np.cos(yaw), np.sin(yaw)
        h = self.height(x + c * u - s * v, y + s * u + c * v)
        return float(h.min()), float(h.max())


def resolve(relief: Relief, zones: list[Zone], rects: list[tuple[float, float, float, float, int, int]],
            x_range: tuple[float, float], y_range: tuple[float, float]) -> ZoneMap:
    """Zone rectangles (x0, x1, y0, y1, priority, zone index) -> the map (higher priority wins; the first
    zone fills what no rectangle covers). Cell edges include the relief breakpoints, so each cell is planar."""
    xs = [x_range[0], x_range[1], *relief.ax]
    ys = [y_range[0], y_range[1], *relief.cy]
    for x0, x1, y0, y1, _, _ in rects:
        xs += [x0, x1]
        ys += [y0, y1]
    x_edges = np.unique(np.clip(np.array(xs, np.float64), *x_range))
    y_edges = np.unique(np.clip(np.array(ys, np.float64), *y_range))
    cells = np.zeros((len(x_edges) - 1, len(y_edges) - 1), np.int32)
    for x0, x1, y0, y1, _, zone in sorted(rects, key=lambda r: r[4]):
        i0, i1 = np.searchsorted(x_edges, [max(x0, x_range[0]), min(x1, x_range[1])])
        j0, j1 = np.searchsorted(y_edges, [max(y0, y_range[0]), min(y1, y_range[1])])
        cells[i0:i1, j0:j1] = zone
    return ZoneMap(relief, tuple(zones), x_edges, y_edges, cells)


def build_slabs(ground: ZoneMap, builder: PrimitiveBuilder) -> int:
    """Add box slabs covering the map: runs of equal cells along x (within a relief facet, at most
    MAX_SLAB_LENGTH long), merged across y where neighbouring runs match. Returns the number of slabs."""
    relief = ground.relief
    x_breaks = set(np.round(relief.ax, 9).tolist())
    y_breaks = set(np.round(relief.cy, 9).tolist())
    xe, ye = ground.x_edges, ground.y_edges
    open_rects: dict[tuple[int, int, int], int] = {}  # (x start, x end, zone) -> first y cell
    count = 0

    def emit(key: tuple[int, int, int], j0: int, j1: int) -> None:
        nonlocal count
        i0, i1, zone = key
        _slab(builder, relief, ground.zones[zone], float(xe[i0]), float(xe[i1]), float(ye[j0]), float(ye[j1]))
        count += 1

    for j in range(len(ye) - 1):
        runs = set()
        start = 0
        for i in range(1, len(xe)):
            if (i == len(xe) - 1 or ground.cells[i, j] != ground.cells[start, j]
                    or round(float(xe[i]), 9) in x_breaks or xe[i] - xe[start] >= MAX_SLAB_LENGTH):
                runs.add((start, i, int(ground.cells[start, j])))
                start = i
        if round(float(ye[j]), 9) in y_breaks:  # never merge across a lateral relief breakpoint
            for key, j0 in open_rects.items():
                emit(key, j0, j)
            open_rects = {}
        for key in [k for k in open_rects if k not in runs]:
            emit(key, open_rects.pop(key), j)
        for key in runs:
            open_rects.setdefault(key, j)
    for key, j0 in open_rects.items():
        emit(key, j0, len(ye) - 1)
    return count


def _slab(builder: PrimitiveBuilder, relief: Relief, zone: Zone, x0: float, x1: float, y0: float, y1: float) -> None:
    sx, sy = relief.facet_slopes(x0, x1, y0, y1)
    rot = plane_rotation(sx, sy)
    xm, ym = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    top = np.array([xm, ym, float(relief.height(xm, ym)) + zone.offset])
    half = (0.5 * (x1 - x0) / rot[0, 0], 0.5 * (y1 - y0) / rot[1, 1], 0.5 * GROUND_DEPTH)
    builder.box(top - rot[:, 2] * half[2], half, 0.0, zone.raw, 0, zone.material, rotation=rot, paint=zone.paint)


def paint_mask(paint: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which ground hits are painted: paint (n, 4) slab parameters, world x, y (n,) -> (n,) bool.

    Modes: PAINT_STREET_X / _Y: a street along x (y) with its centre line at paint[1] (dashed, if
    paint[3] > 0) and solid edge lines paint[2] to either side (none if 0); PAINT_BAYS_X / _Y: bay lines
    every paint[3] metres along x (y).
    """
    mode = paint[:, 0].astype(np.int64)
    along = np.where(mode == PAINT_STREET_Y, y, x)  # coordinate along the street
    across = np.where(mode == PAINT_STREET_Y, x, y) - paint[:, 1]
    street = (mode == PAINT_STREET_X) | (mode == PAINT_STREET_Y)
    dash = (paint[:, 3] > 0) & (np.abs(across) < MARKING_HALF_WIDTH) & (np.mod(along, LANE_PERIOD) < LANE_DASH)
    edge = (paint[:, 2] > 0) & (np.abs(np.abs(across) - paint[:, 2]) < MARKING_HALF_WIDTH)
    bays = (mode == PAINT_BAYS_X) | (mode == PAINT_BAYS_Y)
    spacing = np.where(paint[:, 3] > 0, paint[:, 3], 1.0)
    bay_line = np.mod(np.where(mode == PAINT_BAYS_Y, y, x), spacing) < BAY_LINE_WIDTH
    return (street & (dash | edge)) | (bays & bay_line)


def roughness(material: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height (n,) of the small-scale surface relief at ground hits of `material` (n,), metres (0 elsewhere)."""
    out = np.zeros(np.shape(x))
    for m, (amplitude, scale) in ROUGHNESS.items():
        sel = material == int(m)
        if sel.any():
            out[sel] = amplitude * 2.0 * (fractal(x[sel], y[sel], scale, 3, seed=70 + int(m)) - 0.5)
    return out
