"""Policies the replay simulator can run, by name (`get_policy`)."""
from __future__ import annotations

from controller.planning.policies.base import BasePolicy
from controller.planning.policies.clover_sa import CloverSAPolicy
from controller.planning.policies.hindsight import HindsightPolicy
from controller.planning.policies.interface import Policy
from controller.planning.policies.oracle import OraclePolicy
from controller.planning.policies.ours import (
    EnergyOnlyPolicy,
    OursMeanPolicy,
    OursMyopicPolicy,
    OursPolicy,
)
from controller.planning.policies.rand import RandPolicy

POLICIES: dict[str, type[Policy]] = {
    p.name: p for p in (BasePolicy, OursPolicy, OursMyopicPolicy, OursMeanPolicy, HindsightPolicy, CloverSAPolicy,
                        RandPolicy, OraclePolicy, EnergyOnlyPolicy)
}


def get_policy(name: str, seed: int = 0) -> Policy:
    """A fresh policy instance; live-search policies take the seed of their random draws."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}") from None
    return cls(seed) if cls in (CloverSAPolicy, RandPolicy) else cls()


__all__ = ["POLICIES", "Policy", "get_policy"]
