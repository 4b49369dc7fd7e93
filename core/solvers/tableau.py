"""Butcher tableaux of explicit Runge–Kutta methods.

A tableau (c, A, b[, b_low]) defines one step of size h from (t, x):

    k_i = f(t + c_i h, x + h * sum_{j<i} a_ij k_j),   i = 1..s
    x'  = x + h * sum_i b_i k_i

and, for embedded pairs, the error estimate e = h * sum_i (b_i - b_low_i) k_i, of order
`error_order` (x' - x'_low = O(h^(error_order+1))). Adding a method is adding a tableau.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ButcherTableau:
    """Coefficients of an explicit Runge–Kutta method (`a` is strictly lower triangular, ragged rows)."""

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_low: tuple[float, ...] | None = None
    error_order: int = 0
    fsal: bool = False

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def b_err(self) -> tuple[float, ...]:
        """Weights of the error estimate, `b - b_low`."""
        if self.b_low is None:
            raise ValueError(f"{self.name} has no embedded error estimate")
        return tuple(hi - lo for hi, lo in zip(self.b, self.b_low, strict=True))


EULER = ButcherTableau("euler", 1, c=(0.0,), a=((),), b=(1.0,))
MIDPOINT = ButcherTableau("midpoint", 2, c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))
HEUN = ButcherTableau("heun", 2, c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5))
RK4 = ButcherTableau(
    "rk4", 4, c=(0.0, 0.5, 0.5, 1.0), a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
)
# Bogacki & Shampine (1989), 3(2) pair, first-same-as-last.
BOSH3 = ButcherTableau(
    "bosh3", 3, c=(0.0, 0.5, 0.75, 1.0),
    a=((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
    b=(2 / 9, 1 / 3, 4 / 9, 0.0),
    b_low=(7 / 24, 1 / 4, 1 / 3, 1 / 8),
    error_order=2, fsal=True,
)
# Dormand & Prince (1980), 5(4) pair, first-same-as-last.
DOPRI5 = ButcherTableau(
    "dopri5", 5, c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
    b_low=(5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40),
    error_order=4, fsal=True,
)

FIXED_TABLEAUS: dict[str, ButcherTableau] = {t.name: t for t in (EULER, MIDPOINT, HEUN, RK4)}
ADAPTIVE_TABLEAUS: dict[str, ButcherTableau] = {t.name: t for t in (BOSH3, DOPRI5)}
