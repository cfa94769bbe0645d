"""Step caching: skip whole denoiser evaluations whose velocity is predictably close to the last one computed.

A flow-matching sampler integrates ``dx/dσ = v``; where ``v`` changes slowly along σ, the velocity of the last
evaluated step can stand in for the next ones. :class:`StepCache` measures, each time two evaluations are known,
how fast the (guided) velocity of each modality drifts per unit of σ,

    r_m = ‖v_m(σ_b) − v_m(σ_a)‖ / (‖v_m(σ_b)‖ · |σ_b − σ_a|),

and reuses ``v(σ_b)`` at a later step σ while the predicted relative drift ``r_m · |σ − σ_b|`` stays under
``threshold`` for *both* modalities: video and audio are skipped together (one denoiser call runs both towers and the
bridge, so neither tower ever meets a stale partner). The first ``warmup`` steps (where the velocity changes fastest
and ``r`` is learnt) and the last step are always evaluated. ``threshold=0`` evaluates every step.
"""

from __future__ import annotations

import torch


class StepCache:
    """Per-generation state of the cache policy (module docstring); ``reused`` lists the steps that took the cached
    velocity, ``skipped`` counts them."""

    def __init__(self, threshold: float, num_steps: int, warmup: int = 2):
        self.threshold, self.num_steps, self.warmup = float(threshold), int(num_steps), int(warmup)
        self.reused: list[int] = []
        self._last: tuple[torch.Tensor, ...] | None = None  # (sigmas [2], v_video, v_audio) of the last evaluation
        self._rate: list[float] | None = None  # drift per unit σ, per modality

    @property
    def skipped(self) -> int:
        return len(self.reused)

    @property
    def velocity(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._last[1], self._last[2]

    def reuse(self, step: int, sigmas: torch.Tensor) -> bool:
        """Whether step ``step`` at ``sigmas`` (σ_video, σ_audio) can take the cached velocity (counted if so)."""
        if self.threshold <= 0 or self._rate is None or step < self.warmup or step == self.num_steps - 1:
            return False
        drift = max(r * abs(float(s) - float(s0)) for r, s, s0 in zip(self._rate, sigmas, self._last[0]))
        if drift < self.threshold:
            self.reused.append(step)
            return True
        return False

    def store(self, sigmas: torch.Tensor, v_video: torch.Tensor, v_audio: torch.Tensor) -> None:
        """Record an evaluated step's velocities (and update the drift rates from the previous evaluation)."""
        if self.threshold <= 0:
            return
        if self._last is not None:
            rates = []
            for s, s0, v, v0 in zip(sigmas, self._last[0], (v_video, v_audio), self._last[1:]):
                dsigma = abs(float(s) - float(s0))
                change = float((v.float() - v0.float()).norm() / v.float().norm().clamp(min=1e-12))
                rates.append(change / dsigma if dsigma > 0 else float("inf"))
            self._rate = rates
        self._last = (sigmas.clone(), v_video, v_audio)
