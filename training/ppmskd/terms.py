"""`LossTerms`: every weighted loss term of one step by name, and their sum."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor


@dataclass
class LossTerms:
    """terms: name -> scalar tensor, each already multiplied by its weight; total: their sum (scalar).

    Names written by `PPMSKD` (k = index of the student stage, 0-based, as in `StudentOutput.stages`):
    ``main_ce``, ``main_lovasz`` (student logits); per distilled stage ``stage{k}_3d`` (3D head CE +
    Lovasz), ``stage{k}_2d`` (2D head CE + Lovasz), ``stage{k}_kd`` (KL divergence); ``multi_2d``
    (2D multi-stage classifier CE + Lovasz).
    """

    terms: dict[str, Tensor]
    total: Tensor

    @classmethod
    def from_terms(cls, terms: Mapping[str, Tensor]) -> LossTerms:
        """The terms and their sum (at least one term)."""
        if not terms:
            raise ValueError("LossTerms needs at least one term")
        values = list(terms.values())
        total = values[0]
        for value in values[1:]:
            total = total + value
        return cls(terms=dict(terms), total=total)

    def with_term(self, name: str, value: Tensor) -> LossTerms:
        """A copy with one more (already weighted, scalar) term, the total updated; names are unique."""
        if name in self.terms:
            raise ValueError(f"LossTerms already holds a term {name!r}")
        if value.ndim != 0:
            raise ValueError(f"LossTerms term {name!r} must be a scalar, got shape {tuple(value.shape)}")
        return LossTerms(terms={**self.terms, name: value}, total=self.total + value)
