"""PPO (stable-baselines3) on ``DevicePlacement-v0``, warm-started from the supervised DNN.

Paper A names an RL scheduler as future work; this is it. The PPO actor has the DNN's
layout (``net_arch=dict(pi=[128, 64], vf=[128, 64])``, ReLU) behind a
:class:`NormalisedFeatures` extractor holding the DNN's normaliser as fixed buffers, so:

1. **Weight copy** (:func:`copy_dnn_into`): the DNN trunk goes into
   ``policy.mlp_extractor.policy_net``; its single GPU logit ``z`` becomes the device
   logits ``[0, z]`` of ``action_net`` (softmax of ``[0, z]`` is exactly ``sigmoid(z)``);
   on edge targets (``MultiDiscrete([2, 6, 5])``) the DNN's core-level and cap-level heads
   fill the remaining logits. Before fine-tuning, the warm policy decides exactly as the
   DNN does (tested).
2. **Value warm-up** (:func:`warm_up_value`): with the actor frozen, the value network is
   regressed on returns collected with the warm policy, so the first policy updates use
   sensible advantages instead of a random critic's.
3. **Conservative fine-tuning** (:meth:`PpoConfig.warm`): small learning rate (1e-4),
   tight clip range (0.1) and an early-stopping target KL (0.02), so the warm start is
   refined rather than destroyed. :meth:`PpoConfig.cold` is SB3's default recipe on the
   same architecture (orthogonal initialisation), for comparison.

Plain-mode jobs are independent (a contextual bandit), so the default discount is
``gamma = 0`` (the return is the job's own reward); contention mode couples jobs through
the GPU queue and should use ``gamma > 0``.

:class:`PpoPolicy` serves through numpy (the actor's weights exported, normalisation folded
in), like the DNN; :class:`LearningCurve` records reward / Oracle reward on a fixed set of
jobs during training (:func:`steps_to_fraction` reads off 95 % / 99 %).
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from placement.agents.actor import ActorPolicy, NumpyMlp
from placement.agents.dnn import DnnPolicy
from placement.agents.knobs import KnobLevels
from placement.agents.policy import Policy
from placement.core.outcome import GPU
from placement.core.threshold import Thresholds
from placement.core.trace import file_sha256
from placement.envs.device_placement import (
    DEFAULT_CAP_LEVEL,
    DEFAULT_CORE_LEVEL,
    FEATURE_BOUND,
    N_CAP_LEVELS,
    N_CORE_LEVELS,
    DevicePlacementEnv,
)
from placement.model.features import (
    ESTIMATE_COLUMNS,
    FEATURE_INDEX,
    N_FEATURES,
    Normaliser,
)


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PpoConfig:
    """PPO hyper-parameters (SB3 names) plus the warm-start's value warm-up.

    ``value_warmup_steps``: environment steps collected with the warm policy to fit the
    critic (0 = none); ``value_warmup_epochs`` passes over them at ``value_warmup_lr``.
    """

    hidden: tuple[int, ...] = (128, 64)
    learning_rate: float = 1e-4
    n_steps: int = 512
    batch_size: int = 128
    n_epochs: int = 4
    gamma: float = 0.0
    gae_lambda: float = 0.95
    clip_range: float = 0.1
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = 0.02
    value_warmup_steps: int = 2048
    value_warmup_epochs: int = 30
    value_warmup_lr: float = 1e-3

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate}")
        if self.n_steps < 2 or self.batch_size < 2:
            raise ValueError("n_steps and batch_size must be >= 2 (SB3 normalises advantages per batch)")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.clip_range < 1.0:
            raise ValueError(f"clip_range must be in (0, 1), got {self.clip_range}")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError(f"target_kl must be > 0 or None, got {self.target_kl}")
        if self.value_warmup_steps < 0 or self.value_warmup_epochs < 0:
            raise ValueError("value_warmup_steps and value_warmup_epochs must be >= 0")

    @classmethod
    def warm(cls, **overrides: Any) -> PpoConfig:
        """Conservative fine-tuning of a warm start (the defaults)."""
        return cls(**overrides)

    @classmethod
    def cold(cls, **overrides: Any) -> PpoConfig:
        """SB3's PPO defaults (lr 3e-4, clip 0.2, 10 epochs, batch 64, no target KL) on the same
        architecture and discount, without a value warm-up."""
        base: dict[str, Any] = dict(learning_rate=3e-4, clip_range=0.2, n_epochs=10, batch_size=64,
                                    target_kl=None, value_warmup_steps=0)
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON-ready values (``hidden`` a list)."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PpoConfig:
        """The recipe from :meth:`to_dict` output (unknown keys ignored)."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


# --------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------
class NormalisedFeatures(BaseFeaturesExtractor):
    """``(obs - mean) / scale`` with fixed buffers (the DNN's normaliser for the first
    ``N_FEATURES`` entries; contention extras keep mean 0 and scale 1). No parameters."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, observation_space: spaces.Box, mean: list[float], scale: list[float]) -> None:
        n = int(observation_space.shape[0])
        super().__init__(observation_space, features_dim=n)
        m = torch.zeros(n)
        s = torch.ones(n)
        m[: len(mean)] = torch.tensor(mean, dtype=torch.float32)
        s[: len(scale)] = torch.tensor(scale, dtype=torch.float32)
        self.register_buffer("mean", m)
        self.register_buffer("scale", s)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Normalised observations ``(obs - mean) / scale``, same shape."""
        return (observations - self.mean) / self.scale


def make_ppo(env: gym.Env | Any, normaliser: Normaliser, config: PpoConfig, seed: int) -> PPO:
    """A PPO agent with the DNN's architecture and normalisation on ``env`` (not yet warm)."""
    obs_space = env.observation_space
    if not isinstance(obs_space, spaces.Box) or obs_space.shape is None or obs_space.shape[0] < N_FEATURES:
        raise ValueError(f"PPO needs a Box observation of >= {N_FEATURES} raw features (DevicePlacement-v0)")
    policy_kwargs = dict(
        net_arch=dict(pi=list(config.hidden), vf=list(config.hidden)),
        activation_fn=nn.ReLU,
        features_extractor_class=NormalisedFeatures,
        features_extractor_kwargs=dict(mean=normaliser.mean.tolist(), scale=normaliser.scale.tolist()),
        share_features_extractor=True,
    )
    return PPO(
        "MlpPolicy",
        env,
        learning_rate=config.learning_rate,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        n_epochs=config.n_epochs,
        gamma=config.gamma,
        gae_lambda=config.gae_lambda,
        clip_range=config.clip_range,
        ent_coef=config.ent_coef,
        vf_coef=config.vf_coef,
        max_grad_norm=config.max_grad_norm,
        target_kl=config.target_kl,
        policy_kwargs=policy_kwargs,
        seed=seed,
        device="cpu",
        verbose=0,
    )


def _knobbed(model: PPO) -> bool:
    return isinstance(model.action_space, spaces.MultiDiscrete)


def _action_net(model: PPO) -> nn.Linear:
    net = model.policy.action_net
    if not isinstance(net, nn.Linear):
        raise TypeError(f"expected a linear action head, got {type(net).__name__}")
    return net


def _actor_layers(model: PPO) -> list[nn.Linear]:
    return [m for m in model.policy.mlp_extractor.policy_net if isinstance(m, nn.Linear)]


def _extractor(model: PPO) -> NormalisedFeatures:
    ext = model.policy.features_extractor
    if not isinstance(ext, NormalisedFeatures):
        raise TypeError(f"PPO model was not built by make_ppo (features extractor {type(ext).__name__})")
    return ext


@torch.no_grad()
def copy_dnn_into(model: PPO, dnn: DnnPolicy) -> None:
    """Copy the DNN into the PPO actor (see the module docstring). Raises when the layouts differ."""
    pi_linear = _actor_layers(model)
    dnn_linear = dnn.net.linear_layers()
    if [lin.out_features for lin in pi_linear] != [lin.out_features for lin in dnn_linear]:
        raise ValueError(
            f"PPO actor layers {[lin.out_features for lin in pi_linear]} differ from the DNN's "
            f"{[lin.out_features for lin in dnn_linear]}: use PpoConfig(hidden=dnn.config.hidden)"
        )
    for k, (dst, src) in enumerate(zip(pi_linear, dnn_linear, strict=True)):
        if k == 0:
            dst.weight.zero_()
            dst.weight[:, : src.in_features] = src.weight  # contention extras start at weight 0
        else:
            dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)
    action_net = _action_net(model)
    action_net.weight.zero_()
    action_net.bias.zero_()
    action_net.weight[1] = dnn.net.gpu_head.weight[0]
    action_net.bias[1] = dnn.net.gpu_head.bias[0]
    if _knobbed(model):
        core_rows = slice(2, 2 + N_CORE_LEVELS)
        cap_rows = slice(2 + N_CORE_LEVELS, 2 + N_CORE_LEVELS + N_CAP_LEVELS)
        if dnn.net.core_head is not None and dnn.net.core_head.out_features == N_CORE_LEVELS:
            action_net.weight[core_rows] = dnn.net.core_head.weight
            action_net.bias[core_rows] = dnn.net.core_head.bias
        else:  # no knob labels: start at the default levels (all cores), as the DNN answers
            action_net.bias[2 + DEFAULT_CORE_LEVEL] = 4.0
        if dnn.net.cap_head is not None and dnn.net.cap_head.out_features == N_CAP_LEVELS:
            action_net.weight[cap_rows] = dnn.net.cap_head.weight
            action_net.bias[cap_rows] = dnn.net.cap_head.bias
        else:
            action_net.bias[2 + N_CORE_LEVELS + DEFAULT_CAP_LEVEL] = 4.0


def _vec_returns(rewards: np.ndarray, dones: np.ndarray, boot: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted returns of ``(T, n_envs)`` rollouts; ``boot`` = value added at truncations
    and at the rollout's end (already discounted by nothing)."""
    out = np.zeros_like(rewards)
    running = boot[-1]
    for t in range(len(rewards) - 1, -1, -1):
        running = np.where(dones[t], boot[t], running)
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def warm_up_value(model: PPO, steps: int, epochs: int, lr: float, seed: int = 0) -> dict[str, float]:
    """Fit the critic (actor frozen) on ``steps`` transitions of the current policy.

    Returns ``{"value_mse_before", "value_mse_after", "steps"}``. With ``gamma = 0`` the
    targets are the rewards themselves; otherwise discounted returns bootstrapped with the
    critic at truncations, refitted each epoch.
    """
    venv = model.get_env()
    if venv is None or steps <= 0 or epochs <= 0:
        return {"steps": 0}
    venv.seed(seed)
    obs = venv.reset()
    n_envs = venv.num_envs
    rollout_obs, rewards, dones, final_obs = [], [], [], []
    for _ in range(max(1, steps // n_envs)):
        action, _ = model.predict(obs, deterministic=False)  # type: ignore[arg-type]
        next_obs, reward, done, infos = venv.step(action)
        rollout_obs.append(obs)
        rewards.append(reward)
        dones.append(done)
        final_obs.append(np.stack([info.get("terminal_observation", nxt) for info, nxt in zip(infos, next_obs, strict=True)]))
        obs = next_obs
    x = torch.as_tensor(np.concatenate(rollout_obs), dtype=torch.float32)  # type: ignore[arg-type]
    r = np.asarray(rewards, dtype=np.float64)
    d = np.asarray(dones, dtype=bool)
    finals = torch.as_tensor(np.concatenate(final_obs), dtype=torch.float32)
    gamma = float(model.gamma)
    policy = model.policy
    params = list(policy.mlp_extractor.value_net.parameters()) + list(policy.value_net.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def targets() -> torch.Tensor:
        if gamma == 0.0:
            return torch.as_tensor(r.reshape(-1), dtype=torch.float32)
        with torch.no_grad():
            boot = policy.predict_values(finals).numpy().reshape(r.shape)
        return torch.as_tensor(_vec_returns(r, d, boot, gamma).reshape(-1), dtype=torch.float32)

    def mse(y: torch.Tensor) -> float:
        with torch.no_grad():
            return float(((policy.predict_values(x).flatten() - y) ** 2).mean())

    y = targets()
    before = mse(y)
    policy.set_training_mode(True)
    for _ in range(epochs):
        y = targets()
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), model.batch_size):
            idx = perm[start : start + model.batch_size]
            opt.zero_grad()
            loss = ((policy.predict_values(x[idx]).flatten() - y[idx]) ** 2).mean()
            loss.backward()
            opt.step()
    policy.set_training_mode(False)
    return {"steps": int(len(x)), "value_mse_before": before, "value_mse_after": mse(targets())}


def warm_start(dnn: DnnPolicy, env: gym.Env | Any, config: PpoConfig | None = None, seed: int = 0,
               after_copy: Callable[[PPO], None] | None = None) -> tuple[PPO, dict[str, float]]:
    """A PPO agent on ``env`` whose actor is the DNN and whose critic is warmed up.

    ``after_copy(model)`` runs once the weights are copied, before the value warm-up's
    environment steps (e.g. to score the policy as copied: step 0 of a learning curve)."""
    cfg = config or PpoConfig.warm()
    if cfg.hidden != dnn.config.hidden:
        cfg = replace(cfg, hidden=dnn.config.hidden)
    model = make_ppo(env, dnn.normaliser, cfg, seed)
    copy_dnn_into(model, dnn)
    if after_copy is not None:
        after_copy(model)
    warm = warm_up_value(model, cfg.value_warmup_steps, cfg.value_warmup_epochs, cfg.value_warmup_lr, seed)
    return model, warm


# --------------------------------------------------------------------------------------
# serving
# --------------------------------------------------------------------------------------
class PpoPolicy(ActorPolicy):
    """A trained SB3 PPO agent as a placement policy, decisions by numpy (the actor's weights,
    :class:`placement.agents.actor.ActorPolicy`).

    ``predict`` answers the device (0/1) like every :class:`~placement.agents.policy.Policy`;
    :meth:`env_action` answers the environment's full action (``[device, core_level,
    cap_level]`` on a knob environment).
    """

    name = "ppo"

    def __init__(self, model: PPO | None, knob_levels: KnobLevels | None = None, *, saved: Path | None = None) -> None:
        """``model``: the SB3 agent; or None with ``saved``, the zip it was saved to: decisions then
        come from the actor's weights read from the zip (no SB3 agent, so no optimizer, which costs
        over 2 s of imports on first use), and :attr:`model` loads the agent on first access (the
        learner's fine-tuning)."""
        if model is None and saved is None:
            raise ValueError("PpoPolicy needs the SB3 model or the path of its saved zip")
        self._model = model
        self._saved = saved
        self._saved_sha256 = file_sha256(saved) if model is None and saved is not None else None
        if model is not None:
            knobbed = _knobbed(model)
            mlp = _exported_actor(model)
        else:
            mlp, knobbed = _saved_actor(saved)  # type: ignore[arg-type]
        super().__init__(mlp, knobbed, knob_levels)

    @property
    def model(self) -> PPO:
        """The SB3 agent (loaded from the saved zip on first access when built from one)."""
        if self._model is None:
            path = self._saved
            if path is None:  # unreachable: __init__ refuses neither
                raise ValueError("PpoPolicy has neither a model nor a saved zip")
            if file_sha256(path) != self._saved_sha256:  # PPO.load unpickles: only the file that was read
                raise ValueError(f"{path} changed since its policy was loaded: reload the model")
            self._model = PPO.load(str(path), device="cpu", custom_objects={"policy_kwargs": _saved_policy_kwargs(path)})
        return self._model

    def refresh(self) -> None:
        """Re-export the numpy weights (after the SB3 model was trained further)."""
        self.mlp = _exported_actor(self.model)

    def save(self, path: Path) -> None:
        """Save the SB3 agent to ``path`` (zip), without its wall-clock episode statistics."""
        # episode statistics carry wall-clock times; serving does not need them
        self.model.save(str(path), exclude=["ep_info_buffer", "ep_success_buffer"])


def load_ppo_policy(path: Path, knob_levels: KnobLevels | None = None) -> PpoPolicy:
    """Load a PPO zip written by :meth:`PpoPolicy.save` (the SB3 agent, which unpickles, only when
    :attr:`PpoPolicy.model` is first read: verify the file first, as
    :func:`placement.agents.artifact.load_model` does)."""
    _saved_policy_kwargs(path)  # refuse an architecture this module did not build, now
    return PpoPolicy(None, knob_levels, saved=path)


def _exported_actor(model: PPO) -> NumpyMlp:
    """The SB3 agent's actor (normaliser, policy layers, action head) as numpy."""
    extractor = _extractor(model)
    layers = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in _actor_layers(model)]
    action_net = _action_net(model)
    head = (action_net.weight.detach().numpy(), action_net.bias.detach().numpy())
    return NumpyMlp.from_layers(layers, head, extractor.mean.numpy(), extractor.scale.numpy(),
                                int(extractor.mean.shape[0]))


def _saved_actor(path: Path) -> tuple[NumpyMlp, bool]:
    """The actor of a saved PPO zip as numpy (normaliser, policy layers, action head) read from its
    weights file (``torch.load(weights_only=True)``: tensors only), and whether it has knob actions
    (an action head wider than the two devices)."""
    import io

    with zipfile.ZipFile(path) as archive:
        state = torch.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu", weights_only=True)
    prefix = "mlp_extractor.policy_net."
    indices = sorted({int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)})
    layers = [(state[f"{prefix}{i}.weight"].numpy(), state[f"{prefix}{i}.bias"].numpy()) for i in indices]
    head = (state["action_net.weight"].numpy(), state["action_net.bias"].numpy())
    mean, scale = state["features_extractor.mean"].numpy(), state["features_extractor.scale"].numpy()
    return NumpyMlp.from_layers(layers, head, mean, scale, int(mean.shape[0])), int(head[0].shape[0]) > 2


def _saved_policy_kwargs(path: Path) -> dict[str, Any]:
    """The policy keyword arguments of a saved PPO zip, rebuilt from the readable copy SB3 writes
    beside the pickle. The pickle names classes by module path, and artifacts written before the
    namespace move name ``agents.ppo.NormalisedFeatures`` (now ``placement.agents.ppo``); rebuilding
    reads both. Only the architecture this module builds is accepted (ReLU, NormalisedFeatures)."""
    with zipfile.ZipFile(path) as archive:
        saved = json.loads(archive.read("data"))["policy_kwargs"]
    if "ReLU" not in str(saved.get("activation_fn", "")) or "NormalisedFeatures" not in str(
            saved.get("features_extractor_class", "")):
        raise ValueError(f"{path}: not a PPO policy this service wrote (activation_fn "
                         f"{saved.get('activation_fn')!r}, features_extractor_class {saved.get('features_extractor_class')!r})")
    extractor = saved["features_extractor_kwargs"]
    return dict(
        net_arch={key: list(value) for key, value in saved["net_arch"].items()},
        activation_fn=nn.ReLU,
        features_extractor_class=NormalisedFeatures,
        features_extractor_kwargs=dict(mean=list(extractor["mean"]), scale=list(extractor["scale"])),
        share_features_extractor=bool(saved.get("share_features_extractor", True)),
    )


# --------------------------------------------------------------------------------------
# evaluation on a fixed set of jobs, learning curves
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalJobs:
    """A fixed set of environment jobs: observations, the reward of every action (flat index
    as the environment numbers them) and the Oracle's reward, for fast, exact scoring."""

    obs: npt.NDArray[np.float32]
    rewards: npt.NDArray[np.float64]
    oracle_reward: npt.NDArray[np.float64]
    knobbed: bool

    def flat_index(self, actions: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """The environment's flat action index of each action: device only (``(n,)``, default knob
        levels on knobbed jobs) or ``(n, 3)`` device, core level, cap level."""
        a = np.asarray(actions, dtype=np.int64)
        if not self.knobbed:
            return a.reshape(-1)
        if a.ndim == 1:  # device only: default knob levels
            return (a * N_CORE_LEVELS + DEFAULT_CORE_LEVEL) * N_CAP_LEVELS + DEFAULT_CAP_LEVEL
        return (a[:, 0] * N_CORE_LEVELS + a[:, 1]) * N_CAP_LEVELS + a[:, 2]

    def reward_ratio(self, actions: npt.ArrayLike) -> float:
        """Mean reward of ``actions`` over the Oracle's mean reward (1.0 = Oracle)."""
        k = self.flat_index(actions)
        got = self.rewards[np.arange(len(k)), k]
        return float(got.mean() / self.oracle_reward.mean())


def collect_eval_jobs(env: DevicePlacementEnv, n: int, seed: int) -> EvalJobs:
    """Step ``env`` ``n`` times along the Oracle's actions, recording each job's observation
    and the rewards of all actions (plain mode: jobs are independent of the actions)."""
    if env.contention:
        raise ValueError("collect_eval_jobs needs a plain-mode environment (contention couples jobs)")
    obs, _ = env.reset(seed=seed)
    xs, rs, orc = [], [], []
    for _ in range(n):
        rewards = env.action_rewards()
        xs.append(obs)
        rs.append(rewards)
        orc.append(rewards.max())
        obs, _, _, truncated, _ = env.step(env.oracle_action())
        if truncated:
            obs, _ = env.reset()
    return EvalJobs(np.asarray(xs, dtype=np.float32), np.asarray(rs), np.asarray(orc), env.knobs)


def model_actions(model: PPO, obs: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """SB3's own deterministic actions (torch path)."""
    actions, _ = model.predict(obs, deterministic=True)
    return np.asarray(actions, dtype=np.int64)


@dataclass
class CurvePoint:
    """One learning-curve point: environment steps so far and the deterministic policy's reward /
    Oracle reward."""

    steps: int
    reward_ratio: float


class LearningCurve(BaseCallback):
    """Every ``every`` environment steps, the deterministic policy's reward / Oracle reward on
    ``jobs``. ``offset`` adds steps spent before ``learn`` (the value warm-up)."""

    def __init__(self, jobs: EvalJobs, every: int, offset: int = 0) -> None:
        super().__init__()
        self.jobs = jobs
        self.every = max(1, int(every))
        self.offset = int(offset)
        self.points: list[CurvePoint] = []
        self._next = 0

    def record(self, steps: int) -> None:
        """Append the deterministic policy's reward ratio to the Oracle at ``steps`` environment steps."""
        actions, _ = self.model.predict(self.jobs.obs, deterministic=True)
        self.points.append(CurvePoint(steps, self.jobs.reward_ratio(actions)))

    def _on_training_start(self) -> None:
        if not self.points or self.points[-1].steps < self.offset:
            self.record(self.offset)
        self._next = self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self.record(self.offset + self.num_timesteps)
            self._next += self.every
        return True

    def _on_training_end(self) -> None:
        if not self.points or self.points[-1].steps != self.offset + self.num_timesteps:
            self.record(self.offset + self.num_timesteps)


def steps_to_fraction(points: list[CurvePoint], fraction: float) -> int | None:
    """The first recorded step count whose reward ratio reaches ``fraction`` (``None``: never)."""
    for p in points:
        if p.reward_ratio >= fraction:
            return p.steps
    return None


class _Stopper(BaseCallback):
    def __init__(self, stop: Callable[[], bool]) -> None:
        super().__init__()
        self.stop = stop

    def _on_step(self) -> bool:
        return not self.stop()


def train_curve(
    model: PPO, jobs: EvalJobs, timesteps: int, *, every: int, offset: int = 0, stop_at: float | None = None,
    progress: bool = False,
) -> list[CurvePoint]:
    """``model.learn(timesteps)`` recording a :class:`LearningCurve`; stops early once the ratio
    reaches ``stop_at`` (when given)."""
    curve = LearningCurve(jobs, every, offset)
    callbacks: list[BaseCallback] = [curve]
    if stop_at is not None:
        callbacks.append(_Stopper(lambda: bool(curve.points) and curve.points[-1].reward_ratio >= stop_at))
    model.learn(total_timesteps=timesteps, callback=CallbackList(callbacks), progress_bar=progress)
    return curve.points


# --------------------------------------------------------------------------------------
# training entry points
# --------------------------------------------------------------------------------------
@dataclass
class PpoRun:
    """A trained PPO policy and how training went: ``metrics`` has the time steps, value warm-up,
    reward ratios to the Oracle (DNN, start, end), the learning curve and the environment's provenance."""

    policy: PpoPolicy
    metrics: dict[str, Any] = field(default_factory=dict)


def knob_labels(
    env: DevicePlacementEnv, x_raw: npt.ArrayLike, max_steps: int, seed: int, temperature: float = 0.05
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Soft knob targets per raw feature row of ``x_raw`` (rows are matched to the environment's
    observations by their exact feature vector without the estimate columns -- an edge row's
    estimated margins depend on the cores it is shown at, the job does not), read from ``env`` (its knob
    reward decides what is good): ``softmax(score / temperature)`` over the core levels (score:
    the best reward of that level on the Oracle's device) and, when the Oracle's device is the
    GPU, over the cap levels. Equally good levels (e.g. 6, 8 and 12 cores clipped to a 4-core
    Jetson Nano) share the target. NaN rows: unknown (non-edge targets, rows not drawn within
    ``max_steps``, caps of CPU placements). Shapes ``(n, N_CORE_LEVELS)``, ``(n, N_CAP_LEVELS)``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    x = np.ascontiguousarray(np.asarray(x_raw, dtype=np.float32))
    n = len(x)
    cores = np.full((n, N_CORE_LEVELS), np.nan, dtype=np.float32)
    caps = np.full((n, N_CAP_LEVELS), np.nan, dtype=np.float32)
    if not env.knobs:
        return cores, caps
    is_edge = x[:, FEATURE_INDEX["is_edge"]] > 0.5
    keep = np.array([i for i in range(N_FEATURES) if i not in {FEATURE_INDEX[c] for c in ESTIMATE_COLUMNS}])
    index: dict[bytes, list[int]] = {}
    for i in np.flatnonzero(is_edge):
        index.setdefault(np.clip(x[i, keep], -FEATURE_BOUND, FEATURE_BOUND).tobytes(), []).append(int(i))
    todo = set(index)

    def soft(score: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
        z = (score - score.max()) / temperature
        e = np.exp(z)
        return (e / e.sum()).astype(np.float32)

    obs, _ = env.reset(seed=seed)
    for _ in range(max_steps):
        if not todo:
            break
        action = env.oracle_action()
        key = np.asarray(obs[:N_FEATURES], dtype=np.float32)[keep].tobytes()
        if key in todo:
            device = int(np.asarray(action).reshape(-1)[0])
            table = env.action_rewards().reshape(2, N_CORE_LEVELS, N_CAP_LEVELS)
            rows = index[key]
            cores[rows] = soft(table[device].max(axis=1))
            if device == GPU:
                caps[rows] = soft(table[GPU].max(axis=0))
            todo.discard(key)
        obs, _, _, truncated, _ = env.step(action)
        if truncated:
            obs, _ = env.reset()
    return cores, caps


def train_warm_ppo(
    dnn: DnnPolicy,
    env: DevicePlacementEnv,
    *,
    timesteps: int,
    config: PpoConfig | None = None,
    seed: int = 0,
    eval_jobs: int = 2048,
    progress: bool = False,
) -> PpoRun:
    """Warm-start PPO from ``dnn`` on ``env`` and fine-tune for ``timesteps`` steps, recording the
    reward ratio to the Oracle on a fixed set of jobs before and after."""
    cfg = config or PpoConfig.warm()
    eval_env = DevicePlacementEnv(env.source, targets=list(env.targets), thresholds=env.thresholds)
    jobs = collect_eval_jobs(eval_env, eval_jobs, seed + 10_000)
    model, warm = warm_start(dnn, env, cfg, seed)
    every = max(cfg.n_steps, timesteps // 20) if timesteps else 1
    points = train_curve(model, jobs, timesteps, every=every, offset=int(warm.get("steps", 0)), progress=progress)
    policy = PpoPolicy(model, KnobLevels() if env.knobs else None)
    dnn_ratio = jobs.reward_ratio(env_actions(dnn, jobs.obs, jobs.knobbed))
    metrics = {
        "timesteps": timesteps,
        "value_warmup": warm,
        "eval_jobs": eval_jobs,
        "dnn_reward_ratio": dnn_ratio,
        "reward_ratio_start": points[0].reward_ratio if points else None,
        "reward_ratio_end": jobs.reward_ratio(policy.env_action(jobs.obs)) if eval_jobs else None,
        "curve": [asdict(p) for p in points],
        "knob_actions": bool(env.knobs),
        "env": env.provenance(),
    }
    return PpoRun(policy, metrics)


def env_actions(policy: Policy, obs: npt.NDArray[np.float32], knobbed: bool) -> npt.NDArray[np.int64]:
    """Environment actions of any policy: its ``env_action`` when it has one; a DNN with knob
    heads answers its argmax levels; other policies the device at default knob levels."""
    if isinstance(policy, PpoPolicy):
        return np.asarray(policy.env_action(obs))
    device = np.asarray(policy.predict(obs)[0], dtype=np.int64).reshape(-1)
    if not knobbed:
        return device
    if isinstance(policy, DnnPolicy) and policy.net.core_head is not None and policy.net.cap_head is not None:
        core_logits, cap_logits = policy.knob_logits(obs)
        return np.stack([device, np.argmax(core_logits, axis=1), np.argmax(cap_logits, axis=1)], axis=1)
    return np.stack([device, np.full_like(device, DEFAULT_CORE_LEVEL), np.full_like(device, DEFAULT_CAP_LEVEL)], axis=1)


def make_env(
    source: Any, thresholds: Thresholds | None = None, targets: list[str] | None = None, **kwargs: Any
) -> DevicePlacementEnv:
    """``DevicePlacement-v0`` (unwrapped) on a trace frame/path or ``"model"``."""
    return DevicePlacementEnv(source, targets=targets, thresholds=thresholds, **kwargs)


def fine_tune(loaded: Any, env: DevicePlacementEnv | gym.Env, total_timesteps: int, seed: int = 0,
              config: PpoConfig | None = None) -> PpoPolicy:
    """Continue training a loaded model (:class:`placement.agents.artifact.LoadedModel`) on ``env``, e.g.
    one replaying feedback-derived traces, conservatively; returns a new serving policy.

    When the loaded PPO's spaces match ``env`` its agent continues (same optimiser recipe);
    otherwise (no PPO saved, or another action space: e.g. no edge target online) a fresh
    agent is warm-started from the model's DNN.
    """
    if total_timesteps < 0:
        raise ValueError(f"total_timesteps must be >= 0, got {total_timesteps}")
    cfg = config or PpoConfig.warm()
    ppo: PpoPolicy | None = getattr(loaded, "ppo", None)
    if ppo is not None and ppo.model.observation_space == env.observation_space and ppo.model.action_space == env.action_space:
        model = ppo.model
        model.set_env(env)
        model.set_random_seed(seed)
        model.learn(total_timesteps=total_timesteps, reset_num_timesteps=False)
        return PpoPolicy(model, ppo.knob_levels)
    model, _ = warm_start(loaded.dnn, env, cfg, seed)
    if ppo is not None:
        _copy_actor(ppo.model, model)
    model.learn(total_timesteps=total_timesteps)
    knobbed = isinstance(env.action_space, spaces.MultiDiscrete)
    return PpoPolicy(model, KnobLevels() if knobbed else None)


@torch.no_grad()
def _copy_actor(src: PPO, dst: PPO) -> None:
    """Copy a trained actor between agents whose action spaces differ (device logits always;
    knob logits when both have them)."""
    s_pi = _actor_layers(src)
    d_pi = _actor_layers(dst)
    if [m.weight.shape for m in s_pi[1:]] != [m.weight.shape for m in d_pi[1:]]:
        return
    n = min(s_pi[0].in_features, d_pi[0].in_features)
    d_pi[0].weight.zero_()
    d_pi[0].weight[:, :n] = s_pi[0].weight[:, :n]
    d_pi[0].bias.copy_(s_pi[0].bias)
    for s, d in zip(s_pi[1:], d_pi[1:], strict=True):
        d.weight.copy_(s.weight)
        d.bias.copy_(s.bias)
    s_head, d_head = _action_net(src), _action_net(dst)
    rows = min(s_head.out_features, d_head.out_features) if _knobbed(src) and _knobbed(dst) else 2
    d_head.weight[:rows] = s_head.weight[:rows]
    d_head.bias[:rows] = s_head.bias[:rows]


# --------------------------------------------------------------------------------------
# online updates: a supervised step on the formed labels, then PPO anchored to it
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnchorConfig:
    """The online learner's update recipe (:func:`anchored_update`).

    ``supervised_steps`` full-batch Adam steps at ``supervised_lr`` of confidence-weighted
    binary cross-entropy on the device logit; then PPO for the given timesteps in chunks of
    ``n_steps``, each followed by ``anchor_steps`` steps of the behaviour-cloning anchor:
    weighted KL(p_supervised || p) on the training rows, so PPO may refine but not walk away
    from what the labels say (cf. PPO with a KL penalty, Schulman et al. 2017, sec. 4)."""

    supervised_steps: int = 150
    supervised_lr: float = 3e-3
    anchor_steps: int = 10
    anchor_lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.supervised_steps < 0 or self.anchor_steps < 0:
            raise ValueError("supervised_steps and anchor_steps must be >= 0")
        if not (self.supervised_lr > 0 and self.anchor_lr > 0):
            raise ValueError("supervised_lr and anchor_lr must be > 0")

    def to_dict(self) -> dict[str, Any]:
        """The recipe's fields as a plain dict."""
        return asdict(self)


def _obs_tensor(model: PPO, x_raw: npt.ArrayLike) -> torch.Tensor:
    x = np.asarray(x_raw, dtype=np.float32)
    n_in = int(np.prod(model.observation_space.shape or (N_FEATURES,)))
    if x.shape[1] < n_in:
        x = np.concatenate([x, np.zeros((len(x), n_in - x.shape[1]), dtype=np.float32)], axis=1)
    return torch.as_tensor(np.clip(x, -FEATURE_BOUND, FEATURE_BOUND))


def _device_logit(model: PPO, obs: torch.Tensor) -> torch.Tensor:
    policy = model.policy
    latent = policy.mlp_extractor.forward_actor(_extractor(model)(obs))
    logits = policy.action_net(latent)
    return logits[:, 1] - logits[:, 0]


def _actor_parameters(model: PPO) -> list[nn.Parameter]:
    params = [p for m in _actor_layers(model) for p in m.parameters()]
    return params + list(_action_net(model).parameters())


def supervised_actor_step(model: PPO, x_raw: npt.ArrayLike, labels: npt.ArrayLike, weights: npt.ArrayLike,
                          steps: int, lr: float) -> dict[str, float]:
    """Weighted BCE of the actor's device logit against ``labels`` (True = GPU), ``steps`` full-batch
    Adam steps on the actor (the critic is untouched). Returns the loss before and after."""
    obs = _obs_tensor(model, x_raw)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    w = torch.as_tensor(np.asarray(weights, dtype=np.float32))
    w = w / w.sum().clamp_min(1e-12)
    opt = torch.optim.Adam(_actor_parameters(model), lr=lr)

    def loss_fn() -> torch.Tensor:
        return (w * nn.functional.binary_cross_entropy_with_logits(_device_logit(model, obs), y, reduction="none")).sum()

    with torch.no_grad():
        before = float(loss_fn())
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(loss_fn())
    return {"loss_before": before, "loss_after": after}


def anchor_actor(model: PPO, obs: torch.Tensor, p_anchor: torch.Tensor, w: torch.Tensor, steps: int, lr: float) -> float:
    """``steps`` Adam steps on weighted KL(p_anchor || p) of the device choice. Returns the final KL."""
    opt = torch.optim.Adam(_actor_parameters(model), lr=lr)

    def kl() -> torch.Tensor:
        logp = nn.functional.logsigmoid(_device_logit(model, obs))
        logq = nn.functional.logsigmoid(-_device_logit(model, obs))
        pa = p_anchor.clamp(1e-6, 1 - 1e-6)
        return (w * (pa * (torch.log(pa) - logp) + (1 - pa) * (torch.log(1 - pa) - logq))).sum()

    for _ in range(steps):
        opt.zero_grad()
        loss = kl()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(kl())


def anchored_update(loaded: Any, env: DevicePlacementEnv | gym.Env, x_raw: npt.ArrayLike, labels: npt.ArrayLike,
                    weights: npt.ArrayLike, total_timesteps: int, seed: int = 0, config: PpoConfig | None = None,
                    anchor: AnchorConfig | None = None) -> tuple[PpoPolicy, dict[str, Any]]:
    """The online learner's candidate: the loaded model's PPO agent (or one warm-started from its
    DNN when the spaces differ, as :func:`fine_tune`), a supervised step on the formed labels
    weighted by confidence, then PPO on ``env`` anchored to that supervised result
    (:class:`AnchorConfig`). Returns the policy and the step's metrics."""
    if total_timesteps < 0:
        raise ValueError(f"total_timesteps must be >= 0, got {total_timesteps}")
    cfg = config or PpoConfig.warm()
    ac = anchor or AnchorConfig()
    ppo: PpoPolicy | None = getattr(loaded, "ppo", None)
    if ppo is not None and ppo.model.observation_space == env.observation_space and ppo.model.action_space == env.action_space:
        model = ppo.model
        model.set_env(env)
        model.set_random_seed(seed)
        knob_levels = ppo.knob_levels
    else:
        model, _ = warm_start(loaded.dnn, env, replace(cfg, value_warmup_steps=min(cfg.value_warmup_steps, 512)), seed)
        if ppo is not None:
            _copy_actor(ppo.model, model)
        knob_levels = KnobLevels() if isinstance(env.action_space, spaces.MultiDiscrete) else None
    torch.manual_seed(seed)
    sup = supervised_actor_step(model, x_raw, labels, weights, ac.supervised_steps, ac.supervised_lr)
    obs = _obs_tensor(model, x_raw)
    w = torch.as_tensor(np.asarray(weights, dtype=np.float32))
    w = w / w.sum().clamp_min(1e-12)
    with torch.no_grad():
        p_anchor = torch.sigmoid(_device_logit(model, obs))
    chunk = max(int(model.n_steps) * int(model.n_envs), 1)
    done, kls = 0, []
    while done < total_timesteps:
        model.learn(total_timesteps=min(chunk, total_timesteps - done), reset_num_timesteps=False)
        done += chunk
        kls.append(anchor_actor(model, obs, p_anchor, w, ac.anchor_steps, ac.anchor_lr))
    metrics = {"supervised": sup, "ppo_timesteps": int(total_timesteps), "anchor_kl_final": kls[-1] if kls else 0.0,
               "anchor": ac.to_dict()}
    return PpoPolicy(model, knob_levels), metrics
