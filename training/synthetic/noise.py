"""Deterministic procedural noise for textures: integer hashing, value noise and fractal sums (numpy)."""
from __future__ import annotations

import numpy as np

_M1, _M2, _M3 = np.uint32(0x27D4EB2D), np.uint32(0x165667B1), np.uint32(0x9E3779B1)


def hash01(*coords: np.ndarray, seed: int = 0) -> np.ndarray:
    """Integer lattice coordinates (same shape) -> a repeatable pseudo-random value in [0, 1) per element."""
    with np.errstate(over="ignore"):
        h = np.full(np.shape(coords[0]), np.uint32((seed * 0x85EBCA6B + 0x3C6EF372) & 0xFFFFFFFF), np.uint32)
        for c in coords:
            h = h ^ (np.asarray(c).astype(np.int64).astype(np.uint32) * _M3)
            h = (h ^ (h >> np.uint32(15))) * _M1
            h = (h ^ (h >> np.uint32(13))) * _M2
        h ^= h >> np.uint32(16)
    return h.astype(np.float64) * (1.0 / 4294967296.0)


def value_noise(x: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Smooth 2-D value noise in [0, 1) on a unit lattice (x, y in lattice units)."""
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    a = hash01(x0, y0, seed=seed)
    b = hash01(x0 + 1, y0, seed=seed)
    c = hash01(x0, y0 + 1, seed=seed)
    d = hash01(x0 + 1, y0 + 1, seed=seed)
    return (a + (b - a) * sx) * (1 - sy) + (c + (d - c) * sx) * sy


def fractal(x: np.ndarray, y: np.ndarray, scale: float, octaves: int = 3, seed: int = 0) -> np.ndarray:
    """Sum of `octaves` value-noise layers (feature size `scale` metres, halving each octave), in [0, 1)."""
    total = np.zeros(np.shape(x))
    weight, norm = 1.0, 0.0
    freq = 1.0 / scale
    for octave in range(octaves):
        total += weight * value_noise(x * freq, y * freq, seed=seed + 101 * octave)
        norm += weight
        weight *= 0.5
        freq *= 2.0
    return total / norm
