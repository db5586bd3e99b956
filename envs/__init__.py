"""Gymnasium environments of the placement service.

``placement/DevicePlacement-v0`` is registered here, the one place: importing :mod:`envs`
makes ``gymnasium.make("placement/DevicePlacement-v0", ...)`` work. The spec (observation
table, action space, reward, episode end, arguments) is the docstring of
:class:`placement.envs.device_placement.DevicePlacementEnv`.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from placement.envs.device_placement import (
    ENV_ID,
    DevicePlacementEnv,
    decode_action,
    encode_decision,
)

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="placement.envs.device_placement:DevicePlacementEnv")

__all__ = ["ENV_ID", "DevicePlacementEnv", "decode_action", "encode_decision"]
