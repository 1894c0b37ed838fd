"""Signal plans from district flows: Webster's cycle and green splits, fed by a filter that knows the DP noise.

Rule (Webster 1958, Road Research Technical Paper 39), per district:

    y_i = q_i / s                      flow ratio of approach i (q: veh/s at an average intersection)
    Y   = min(y_ns + y_ew, Y_MAX)      critical flow ratio, capped where the formula stops being valid
    C   = (1.5 L + 5) / (1 - Y)        optimal cycle, clamped to [MIN_CYCLE, MAX_CYCLE]; L = total lost time
    g_i = G_MIN + (C - L - 2 G_MIN) y_i / (y_ns + y_ew)    effective greens in proportion to flow ratios

Inputs are estimates: a controller on DP aggregates sees each district total
plus noise whose variance the task publishes.  `FlowEstimator` is a scalar
Kalman filter per district and approach (random-walk demand, observation
variance = the released noise variance + Poisson variance), i.e. pure
post-processing of released values, which costs no privacy.  With exact
counts (the oracle) the observation variance is the Poisson part alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twinmpc.services.twin.traffic import LOST_PER_PHASE, SATURATION_FLOW, SignalPlan

Y_MAX = 0.9
MIN_CYCLE = 30.0
MAX_CYCLE = 150.0
G_MIN = 6.0
DRIFT = 0.3  # relative standard deviation of demand change from one window to the next
RULE = (f"webster-1958: y=q/s (s={SATURATION_FLOW} veh/s), Y=min(y_ns+y_ew,{Y_MAX}), C=(1.5L+5)/(1-Y) in "
        f"[{MIN_CYCLE:g},{MAX_CYCLE:g}] s (L={2 * LOST_PER_PHASE:g} s), g_i={G_MIN:g}+(C-L-{2 * G_MIN:g})*y_i/(y_ns+y_ew); "
        f"flows from a Kalman filter (drift {DRIFT}) on released totals")


def webster_plan(flows: np.ndarray) -> SignalPlan:
    """(D, 2) flows in veh/s at an average intersection -> one plan per district."""
    flows = np.asarray(flows, dtype=np.float64)
    if flows.ndim != 2 or flows.shape[1] != 2:
        raise ValueError("flows must be (districts, 2)")
    y = np.clip(flows / SATURATION_FLOW, 1e-3, None)
    total = y.sum(axis=1)
    lost = 2 * LOST_PER_PHASE
    cycle = np.clip((1.5 * lost + 5.0) / (1.0 - np.minimum(total, Y_MAX)), MIN_CYCLE, MAX_CYCLE)
    spare = cycle - lost - 2 * G_MIN
    green = G_MIN + spare[:, None] * y / total[:, None]
    return SignalPlan(cycle, green)


@dataclass
class FlowEstimator:
    """Kalman filter over (D, 2) district flows; ``update`` takes released totals and their noise variance."""

    sizes: np.ndarray  # intersections per district
    period_seconds: int
    estimate: np.ndarray  # (D, 2) prior: the surveyed average flows a fixed-time plan is built from
    variance: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.estimate = np.asarray(self.estimate, dtype=np.float64)
        if self.variance is None:
            self.variance = (DRIFT * self.estimate) ** 2

    def update(self, totals: np.ndarray, noise_variance: float | np.ndarray) -> np.ndarray:
        """Fold in one window's district totals (vehicles); return the flow estimate (veh/s per intersection).

        `noise_variance` is the released noise variance, one value for all
        districts or one per district (each district is its own task, so its
        own release).  A row of NaN totals is a district not collected this
        window: it gets the prediction step only (its estimate, and hence its
        plan, stays; its uncertainty grows by the drift).
        """
        exposure = self.sizes[:, None] * float(self.period_seconds)
        observed = np.asarray(totals, dtype=np.float64) / exposure
        seen = np.isfinite(observed)
        observed = np.where(seen, observed, self.estimate)
        noise = np.broadcast_to(np.asarray(noise_variance, dtype=np.float64).reshape(-1, 1), observed.shape)
        # Poisson counting noise of the window itself, plus the DP noise the task released.
        poisson = np.clip(observed, 1e-3, None) / exposure
        r = poisson + noise / exposure**2
        prior = self.variance + (DRIFT * np.clip(self.estimate, 1e-3, None)) ** 2
        gain = np.where(seen, prior / (prior + r), 0.0)
        self.estimate = self.estimate + gain * (observed - self.estimate)
        self.variance = (1.0 - gain) * prior
        return np.clip(self.estimate, 1e-3, None)
