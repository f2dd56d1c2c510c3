"""The one environment interface every part of minidreamer4 uses.

`PixelEnv` wraps a gymnasium env with image observations:
- observations: float32 (C, H, W) in [0, 1], resized to (size, size); `env.frame` holds the same frame as
  uint8, which is what the episode store keeps;
- actions: float vectors in [-1, 1], one entry per action dimension. Box bounds are mapped linearly; each
  Discrete / MultiDiscrete / MultiBinary dimension with n choices is the bin grid -1 + 2 k / (n - 1), the same
  binning the models use for continuous dimensions (`action_bins`);
- action repeat (rewards summed) and an episode time limit in agent steps;
- `skip_start`: env steps taken with a no-op action right after every reset, not observed (CarRacing-v3
  spends its first 50 frames zooming the camera in);
- `replay(seed, actions)`: the state an episode of the store reached, rebuilt from its seed and actions
  (gymnasium's Box2D racing envs skip drawing the frames on the way: 50x faster, the same state).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ActionSpec:
    """What the models need to know about actions: per-dimension bin counts and how to reach the env."""

    kind: str  # "box" | "discrete" | "multidiscrete" | "multibinary"
    bins: tuple[int, ...]  # bins per dimension (continuous: action_bins; discrete: number of choices)
    low: tuple[float, ...] = ()  # Box bounds (kind == "box")
    high: tuple[float, ...] = ()
    start: tuple[int, ...] = ()  # Discrete start offsets

    @property
    def dims(self) -> int:
        return len(self.bins)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> ActionSpec:
        return ActionSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def action_to_bins(a, bins):
    """[-1, 1] values -> nearest bin index per dimension. Works on numpy arrays and torch tensors alike."""
    n = bins - 1
    return (((a.clip(-1, 1) + 1) / 2) * n).round()


def bins_to_action(idx, bins):
    """Bin index -> the bin's centre in [-1, 1] (a single-choice dimension maps to 0)."""
    n = bins - 1
    return idx * 2 / n.clip(1) - 1 + (n == 0) * 1.0


def action_spec_of(space, action_bins: int) -> ActionSpec:
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        if space.shape is None or len(space.shape) != 1:
            raise ValueError(f"Box action spaces must be 1-D vectors, got shape {space.shape}")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError(f"Box action space {space} has infinite bounds; give it finite ones")
        if action_bins < 2:
            raise ValueError(f"action_bins must be >= 2, got {action_bins}")
        d = space.shape[0]
        return ActionSpec(
            "box", (action_bins,) * d, tuple(map(float, space.low)), tuple(map(float, space.high))
        )
    if isinstance(space, spaces.Discrete):
        return ActionSpec("discrete", (int(space.n),), start=(int(space.start),))
    if isinstance(space, spaces.MultiDiscrete):
        if space.nvec.ndim != 1:
            raise ValueError("only 1-D MultiDiscrete action spaces are supported")
        return ActionSpec(
            "multidiscrete", tuple(int(n) for n in space.nvec), start=tuple(int(s) for s in space.start)
        )
    if isinstance(space, spaces.MultiBinary):
        n = int(np.prod(space.shape))
        return ActionSpec("multibinary", (2,) * n)
    raise ValueError(f"unsupported action space {space}: use Box, Discrete, MultiDiscrete or MultiBinary")


def to_env_action(a: np.ndarray, spec: ActionSpec):
    """Agent action in [-1, 1]^dims -> what env.step expects."""
    a = np.asarray(a, dtype=np.float32).reshape(spec.dims)
    if spec.kind == "box":
        low, high = np.asarray(spec.low, np.float32), np.asarray(spec.high, np.float32)
        return (low + (a.clip(-1, 1) + 1) / 2 * (high - low)).astype(np.float32)
    idx = action_to_bins(a, np.asarray(spec.bins)).astype(np.int64)
    if spec.kind == "discrete":
        return int(idx[0] + spec.start[0])
    if spec.kind == "multidiscrete":
        return idx + np.asarray(spec.start, np.int64)
    return idx.astype(np.int8)  # multibinary


def from_env_action(x, spec: ActionSpec) -> np.ndarray:
    """The inverse of to_env_action: an env action -> agent action in [-1, 1]^dims."""
    if spec.kind == "box":
        low, high = np.asarray(spec.low, np.float32), np.asarray(spec.high, np.float32)
        return (2 * (np.asarray(x, np.float32) - low) / (high - low) - 1).astype(np.float32)
    idx = np.asarray(x, np.int64).reshape(spec.dims) - (np.asarray(spec.start) if spec.start else 0)
    return bins_to_action(idx.astype(np.float32), np.asarray(spec.bins, np.float32)).astype(np.float32)


def is_image_space(space) -> bool:
    try:
        image_shape_of(space)
        return True
    except ValueError:
        return False


def image_shape_of(space) -> tuple[int, int, int]:
    """(H, W, C) of an image observation space, or a clear error saying why it is not one."""
    from gymnasium import spaces

    why = None
    if not isinstance(space, spaces.Box):
        why = f"it is a {type(space).__name__}, not a Box"
    elif len(space.shape) == 2:
        return (*space.shape, 1)
    elif len(space.shape) != 3 or space.shape[-1] not in (1, 3):
        why = f"its shape {space.shape} is not (H, W), (H, W, 1) or (H, W, 3)"
    else:
        return tuple(space.shape)
    raise ValueError(f"observation space {space} is not an image: {why}. minidreamer4 learns from pixels.")


class PixelEnv:
    """gymnasium env -> (C, H, W) float observations in [0, 1] and [-1, 1] actions. See module docstring."""

    def __init__(
        self,
        env,
        env_id: str,
        size: int = 64,
        action_repeat: int = 1,
        max_steps: int = 1000,
        action_bins: int = 11,
        skip_start: int = 0,
    ):
        h, w, c = image_shape_of(env.observation_space)
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        if skip_start < 0:
            raise ValueError(f"skip_start must be >= 0, got {skip_start}")
        self.env, self.env_id = env, env_id
        self.size, self.action_repeat, self.max_steps = size, action_repeat, max_steps
        self.skip_start = skip_start
        self.channels = c
        self.action_spec = action_spec_of(env.action_space, action_bins)
        self._float_obs = env.observation_space.dtype != np.uint8
        self.frame: np.ndarray | None = None  # latest observation, uint8 (C, size, size)
        self.t = 0

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def _convert(self, obs) -> np.ndarray:
        if obs is None:  # inside _physics_only: nothing was drawn
            return np.zeros(self.obs_shape, np.float32)
        obs = np.asarray(obs)
        if self._float_obs:  # float images in [0, 1]
            obs = (obs.clip(0, 1) * 255).round().astype(np.uint8)
        if obs.ndim == 2:
            obs = obs[..., None]
        if obs.shape[0] != self.size or obs.shape[1] != self.size:
            img = Image.fromarray(obs[..., 0] if self.channels == 1 else obs)
            obs = np.asarray(img.resize((self.size, self.size), Image.BILINEAR))
            if obs.ndim == 2:
                obs = obs[..., None]
        self.frame = np.ascontiguousarray(obs.transpose(2, 0, 1))
        return self.frame.astype(np.float32) / 255.0

    def noop(self):
        """The env action that does nothing: zeros for Box spaces (CarRacing: no steering, gas or brake),
        the first choice of discrete ones."""
        spec = self.action_spec
        if spec.kind == "box":
            return np.zeros(spec.dims, np.float32).clip(spec.low, spec.high)
        return to_env_action(-np.ones(spec.dims, np.float32), spec)

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, _ = self.env.reset(seed=seed)
        for _ in range(self.skip_start):  # not observed (see the module docstring)
            obs, _, term, trunc, _ = self.env.step(self.noop())
            if term or trunc:
                raise RuntimeError(f"{self.env_id}: the episode ended within skip_start={self.skip_start}")
        self.t = 0
        return self._convert(obs)

    @contextlib.contextmanager
    def _physics_only(self):
        """Inside: gymnasium's Box2D racing envs step their physics without drawing frames (their step()
        draws every frame, 98% of its time); other envs step as usual. Observations inside are not valid."""
        u = getattr(self.env, "unwrapped", self.env)
        if type(u).__name__ != "CarRacing" or not hasattr(u, "_render"):
            yield
            return
        u._render = lambda *a, **k: None  # an instance attribute hides the method
        try:
            yield
        finally:
            del u._render

    def replay(self, seed: int, actions: np.ndarray) -> bool:
        """Resets with `seed` and applies `actions` (T, dims) as step() does, without looking at the frames
        on the way: afterwards the env is where the recorded episode was after those T steps, and step()
        continues from there (it branches). Returns False when the episode ended before the last action.
        The current observation is not rendered: the next step() gives the next one."""
        with self._physics_only():
            self.reset(seed=seed)
            for a in actions:
                _, _, term, trunc, _ = self.step(a)
                if term or trunc:
                    return False
        return True

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        env_action = to_env_action(action, self.action_spec)
        total, terminated, truncated, info = 0.0, False, False, {}
        for _ in range(self.action_repeat):
            obs, r, terminated, truncated, info = self.env.step(env_action)
            total += float(r)
            if terminated or truncated:
                break
        self.t += 1
        if self.t >= self.max_steps and not terminated:
            truncated = True
        return self._convert(obs), total, bool(terminated), bool(truncated), info

    def close(self) -> None:
        self.env.close()


class MultiPixelEnv(PixelEnv):
    """A multi-agent env (observations (n, H, W, C), actions (n, A), per-agent rewards and terminations,
    like MultiCarRacing-v0) seen the PixelEnv way, one row per agent: observations (n, C, H, W) float in
    [0, 1], `frame` (n, C, H, W) uint8, actions (n, dims) in [-1, 1], rewards (n,), terminated (n,) and
    truncated (n,). An agent that is done stays done; the episode is over when every agent is."""

    def __init__(
        self,
        env,
        env_id: str,
        size: int = 64,
        action_repeat: int = 1,
        max_steps: int = 1000,
        action_bins: int = 11,
    ):
        from gymnasium import spaces

        ospace, aspace = env.observation_space, env.action_space
        self.num_agents = int(ospace.shape[0])
        one = type("OneAgent", (), {})()  # what one agent sees and does, for PixelEnv's checks
        one.observation_space = spaces.Box(0, 255, ospace.shape[1:], ospace.dtype)
        one.action_space = spaces.Box(aspace.low[0], aspace.high[0], dtype=aspace.dtype)
        super().__init__(one, env_id, size, action_repeat, max_steps, action_bins)
        self.env = env

    def _convert_all(self, obs) -> np.ndarray:
        out, frames = [], []
        for o in obs:
            out.append(self._convert(o))
            frames.append(self.frame)
        self.frame = np.stack(frames)
        return np.stack(out)

    def replay(self, seed: int, actions: np.ndarray) -> bool:
        raise NotImplementedError("replaying one agent's episode needs every agent's actions")

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, _ = self.env.reset(seed=seed)
        self.t = 0
        self.done = np.zeros(self.num_agents, bool)
        return self._convert_all(obs)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        a = np.asarray(action, np.float32).reshape(self.num_agents, self.action_spec.dims)
        env_action = np.stack([to_env_action(x, self.action_spec) for x in a])
        total = np.zeros(self.num_agents, np.float32)
        term, trunc = np.zeros(self.num_agents, bool), np.zeros(self.num_agents, bool)
        for _ in range(self.action_repeat):
            obs, r, te, tr, info = self.env.step(env_action)
            total += np.where(self.done | term | trunc, 0.0, np.asarray(r, np.float32))
            term |= np.asarray(te, bool) & ~self.done
            trunc |= np.asarray(tr, bool) & ~self.done & ~term
            if np.all(self.done | term | trunc):
                break
        self.t += 1
        if self.t >= self.max_steps:
            trunc |= ~(self.done | term)
        self.done |= term | trunc
        return self._convert_all(obs), total, term, trunc, info
