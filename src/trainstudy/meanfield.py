"""The mean-field theory of a deep random network at init (Poole et al. 2016, Schoenholz et al. 2017).

Weights W ~ N(0, σ_w²/fan_in), biases b ~ N(0, σ_b²), activation φ. For an infinitely wide layer the
pre-activations are Gaussian; their length and the correlation of two inputs follow two maps:

    q^l   = σ_w² E_z[φ(√q^{l-1} z)²] + σ_b²                                  (length)
    c^l   = (σ_w² E[φ(u₁)φ(u₂)] + σ_b²) / q*,  u₁, u₂ ~ N(0, q*) correlated c^{l-1}   (correlation)

with fixed points q* and c*. χ₁ = σ_w² E[φ'(√q* z)²] is the slope of the c-map at c = 1: below 1 (ordered
phase) nearby inputs converge, c* = 1; above 1 (chaotic phase) they decorrelate to a c* < 1. Correlations
reach c* like exp(−l/ξ_c), ξ_c = −1/ln(σ_w² E[φ'(u₁)φ'(u₂)]) at c*; it diverges at χ₁ = 1, the edge of chaos.

The Gaussian integrals are Gauss–Hermite quadrature (numpy's hermgauss), in one and two dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

NODES = 80          # even: no node at 0, where ReLU's derivative jumps
MAX_ITER = 10_000   # the q- and c-maps' iterations to their fixed points
TOL = 1e-12
Q_LIMIT = 1e12      # a q beyond this has no fixed point (ReLU at σ_w² > 2)
EDGE = 1e-9         # a c* within this of 1 is taken as 1 (χ₁ a hair above 1)

_x, _w = np.polynomial.hermite.hermgauss(NODES)
Z, WZ = _x * math.sqrt(2.0), _w / math.sqrt(math.pi)   # E[f(z)] = Σ WZ f(Z) for z ~ N(0, 1)

ACTIVATIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "tanh": (np.tanh, lambda u: 1.0 / np.cosh(u) ** 2),
    "relu": (lambda u: np.maximum(u, 0.0), lambda u: (u > 0).astype(float)),
}


@dataclass(frozen=True)
class Theory:
    """The fixed points and depth scale of one (activation, σ_w², σ_b²); q* is inf where none exists."""

    activation: str
    sigma_w2: float
    sigma_b2: float
    q_star: float
    chi_1: float
    c_star: float
    xi_c: float

    @property
    def phase(self) -> str:
        if not math.isfinite(self.q_star):
            return "unbounded"
        return "ordered" if self.chi_1 < 1 else "chaotic" if self.chi_1 > 1 else "critical"


def gaussian(f: Callable[[np.ndarray], np.ndarray], q: float) -> float:
    """E[f(u)] for u ~ N(0, q)."""
    return float(np.sum(WZ * f(math.sqrt(q) * Z)))


def gaussian_pair(f: Callable[[np.ndarray], np.ndarray], q: float, c: float) -> float:
    """E[f(u₁) f(u₂)] for u₁, u₂ ~ N(0, q) with correlation c."""
    z1, z2 = Z[:, None], Z[None, :]
    u1 = math.sqrt(q) * z1
    u2 = math.sqrt(q) * (c * z1 + math.sqrt(max(1.0 - c * c, 0.0)) * z2)
    return float(np.sum(WZ[:, None] * WZ[None, :] * f(u1) * f(u2)))


def q_map(q: float, activation: str, sigma_w2: float, sigma_b2: float) -> float:
    phi = ACTIVATIONS[activation][0]
    return sigma_w2 * gaussian(lambda u: phi(u) ** 2, q) + sigma_b2


def c_map(c: float, q: float, activation: str, sigma_w2: float, sigma_b2: float) -> float:
    """The next layer's correlation, for two inputs of length q (their next length is q_map(q))."""
    phi = ACTIVATIONS[activation][0]
    return (sigma_w2 * gaussian_pair(phi, q, c) + sigma_b2) / q_map(q, activation, sigma_w2, sigma_b2)


def q_fixed_point(activation: str, sigma_w2: float, sigma_b2: float, q0: float = 1.0) -> float:
    """q* by iterating the q-map from q0 (inf where q grows without bound, or settles nowhere)."""
    q = q0
    for _ in range(MAX_ITER):
        nxt = q_map(q, activation, sigma_w2, sigma_b2)
        if nxt > Q_LIMIT:
            return math.inf
        if abs(nxt - q) <= TOL * max(q, 1.0):
            return nxt
        q = nxt
    return math.inf


def theory(activation: str, sigma_w2: float, sigma_b2: float) -> Theory:
    """q*, χ₁, c* and ξ_c of a deep mean_field network (activation tanh or relu)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"no mean-field theory here for {activation!r}; it covers {', '.join(ACTIVATIONS)}")
    q_star = q_fixed_point(activation, sigma_w2, sigma_b2)
    if not math.isfinite(q_star):
        return Theory(activation, sigma_w2, sigma_b2, math.inf, math.nan, math.nan, math.nan)
    dphi = ACTIVATIONS[activation][1]
    chi_1 = sigma_w2 * gaussian(lambda u: dphi(u) ** 2, q_star)
    c_star = 1.0
    if chi_1 > 1:  # c = 1 repels: the stable c* < 1 is where the c-map crosses the diagonal below it
        c_star = _crossing(lambda c: c_map(c, q_star, activation, sigma_w2, sigma_b2) - c, 0.0, 1.0 - EDGE)
    chi_c = chi_1 if c_star == 1.0 else sigma_w2 * gaussian_pair(dphi, q_star, c_star)
    xi_c = math.inf if chi_c == 1.0 else -1.0 / math.log(chi_c)
    return Theory(activation, sigma_w2, sigma_b2, q_star, chi_1, c_star, xi_c)


def _crossing(f: Callable[[float], float], low: float, high: float) -> float:
    """Bisection for f's zero in [low, high], f(low) >= 0; ``high`` (taken as the edge, 1) where f(high) >= 0."""
    if f(high) >= 0:
        return 1.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if f(mid) >= 0 else (low, mid)
    return (low + high) / 2


def layer_predictions(activation: str, sigma_w2: float, sigma_b2: float, q_in: float, c_in: float,
                      layers: int) -> list[tuple[float, float]]:
    """(q, c) the theory predicts for each layer's pre-activations, given the inputs' mean square ``q_in`` and
    mean cosine ``c_in``: the first layer is linear in the input, the rest follow the maps."""
    q = sigma_w2 * q_in + sigma_b2
    c = (sigma_w2 * q_in * c_in + sigma_b2) / q
    out = [(q, c)]
    for _ in range(layers - 1):
        if q > Q_LIMIT:
            out += [(math.inf, math.nan)] * (layers - len(out))
            break
        q, c = q_map(q, activation, sigma_w2, sigma_b2), min(c_map(c, q, activation, sigma_w2, sigma_b2), 1.0)
        out.append((q, c))
    return out


def critical_sigma_w2(activation: str, sigma_b2: float, low: float = 0.1, high: float = 20.0) -> float:
    """The σ_w² of the edge of chaos (χ₁ = 1) at this σ_b², by bisection on χ₁ − 1 (χ₁ grows with σ_w²; a
    σ_w² without a q* counts as chaotic). NaN where χ₁ = 1 is not crossed in [low, high]."""
    def above(s: float) -> bool:
        chi = theory(activation, s, sigma_b2).chi_1
        return not math.isfinite(chi) or chi > 1.0

    if above(low) or not above(high):
        return math.nan
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (low, mid) if above(mid) else (mid, high)
    return (low + high) / 2
