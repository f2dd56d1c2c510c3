"""A trained world model as an environment: train any agent inside the dream.

    env = minidreamer4.DreamEnv("runs/cpu")            # a gymnasium.Env
    obs, info = env.reset(seed=0)                      # a real held-out context; obs: its last frame
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

`reset()` starts from a real context of `context` frames of a held-out episode (latents by the encoding
rule, latents.py); `step(action)` dreams the next frame with the dynamics model (K sampling steps, KV cache,
a sliding window of `dynamics.context` frames), decodes it, and reads the reward and the termination
from the agent heads (the finetuned reward and continuation heads; a run without a finetune checkpoint
gives reward 0 and never terminates). Observations are uint8 (H, W, C) frames at the run's `env.size`;
actions are the original env's (its Box, Discrete, ... space).

`DreamVecEnv(run_dir, num_envs)` is the batched form with a torch API: every call works on all dreams at
once, which is where the world model is fast (one forward for the batch):
    obs = venv.reset(seed=0)                           # (N, H, W, C) uint8 tensor
    obs, reward, terminated, truncated, info = venv.step(actions)   # actions (N, A) in [-1, 1]
The dreams reset together; one that terminated keeps its `terminated` flag (and dreams on) until then.
Its actions are the models' own [-1, 1] vectors (envs/adapter.py), so a torch agent needs no conversion.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from .data import EpisodeStore, SegmentSampler
from .envs.adapter import ActionSpec, from_env_action
from .latents import LatentCache, tok_span
from .run import episodes_dir, load_run_config, pick_device, run_dir


def space_of(spec: ActionSpec) -> spaces.Space:
    """The original env's action space, rebuilt from the ActionSpec stored with the episodes."""
    if spec.kind == "box":
        return spaces.Box(np.asarray(spec.low, np.float32), np.asarray(spec.high, np.float32))
    if spec.kind == "discrete":
        return spaces.Discrete(spec.bins[0], start=spec.start[0])
    if spec.kind == "multidiscrete":
        return spaces.MultiDiscrete(list(spec.bins), start=list(spec.start))
    return spaces.MultiBinary(len(spec.bins))


class DreamVecEnv:
    """N dreams side by side (see the module docstring). device: 'auto' picks cuda > mps > cpu."""

    def __init__(
        self,
        run: str | Path,
        num_envs: int = 1,
        context: int = 8,
        max_steps: int = 500,
        steps: int | None = None,
        device: str = "cpu",
        split: str = "eval",
    ):
        from .train import load_dynamics, load_tokenizer
        from .train_agent import dreaming_config, load_agent

        self.cfg = dreaming_config(load_run_config(run))  # dreams to train agents in: agent.imagine_guidance
        self.device = pick_device(device)
        self.num_envs, self.context, self.max_steps, self.steps = num_envs, context, max_steps, steps
        if (run_dir(self.cfg) / "checkpoints" / "finetune.pt").exists():
            self.tok, self.dyn, self.heads = load_agent(self.cfg, self.device, "bc")
        else:  # a world model without agent heads: no reward, no termination
            self.tok, self.dyn = load_tokenizer(self.cfg, self.device), load_dynamics(self.cfg, self.device)
            self.heads = None
        self.span, self.window = tok_span(self.tok), self.cfg.dynamics.context
        store = EpisodeStore(episodes_dir(self.cfg))
        ref = store.reference()
        if ref is None:
            raise RuntimeError(f"{run}: the episode store {store.root} is empty: no context to dream from")
        self.spec = ActionSpec.from_dict(ref["action_spec"])
        self.obs_shape = tuple(ref["obs_shape"])  # (C, H, W)
        h = self.cfg.data.holdout_every
        self.sampler = SegmentSampler(store, context, num_envs, split if h > 0 else "all", h)
        self.latents = LatentCache(self.tok, False, self.device)
        self.rng_state = torch.get_rng_state()
        self.last: torch.Tensor | None = None

    # the dreams draw their noise from their own stream, seeded by reset: the same seed and actions give
    # the same dream, whatever else uses torch's global generator
    def _noise(self):
        return torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])

    @torch.no_grad()
    def reset(self, seed: int | None = None, episode: int | None = None, start: int | None = None):
        """New contexts for every dream: held-out segments drawn at random (seeded), or with `episode`
        (and `start`, its first frame) one chosen segment for all. Returns their last frames."""
        if seed is not None:
            self.sampler.rng = np.random.default_rng(seed)
            gen_seed = seed
        else:
            gen_seed = int(self.sampler.rng.integers(2**31))
        if episode is None:
            raw = self.sampler.sample(index=True)
        else:
            raw = self._chosen(episode, start)
        b = self.latents.batch(self.sampler, raw, keep_obs=True)
        with self._noise():
            torch.manual_seed(gen_seed)
            self.cache, self.dcache = self.dyn.new_cache(), self.tok.new_cache()
            out = self.dyn.add_context(
                b["z"], b["act"], b["has_act"], self.cache, self.window, return_agent=self.heads is not None
            )
            self.h = out[:, -1] if out is not None else None
            self.z_prev = b["z"][:, -1]  # (N, N_l, d_b): the frame head's previous frame
            self.tok.decode(b["z"], cache=self.dcache, window=self.span - 1)  # the decoder's context
            self.rng_state = torch.get_rng_state()
        self.t = 0
        self.terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self.last = b["obs"][:, -1].permute(0, 2, 3, 1).contiguous()  # (N, H, W, C) uint8, a real frame
        self.context_raw = raw
        return self.last

    def _chosen(self, episode: int, start: int | None) -> dict:
        if episode not in self.sampler.episodes:
            self.sampler.episodes[episode] = self.sampler.store.load(episode)[0]
        ep = self.sampler.episodes[episode]
        L = len(ep["obs"])
        s = max(0, L - self.context) if start is None else int(start)
        if not 0 <= s <= L - self.context:
            raise ValueError(f"episode {episode} has {L} frames: start must be in 0..{L - self.context}")
        T = self.context
        prev = np.arange(s - 1, s + T - 1)
        one = {
            "obs": ep["obs"][s : s + T],
            "act": np.where((prev >= 0)[:, None], ep["act"][prev.clip(0)], 0.0).astype(np.float32),
            "has_act": prev >= 0,
            "rew": np.zeros(T, np.float32),
            "term": np.zeros(T, bool),
        }
        raw = {k: np.stack([v] * self.num_envs) for k, v in one.items()}
        raw["ep"], raw["start"] = np.full(self.num_envs, episode), np.full(self.num_envs, s)
        return raw

    @torch.no_grad()
    def step(self, actions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """actions (N, A) in [-1, 1] -> next frames (N, H, W, C) uint8, rewards (N,), terminated (N,),
        truncated (N,), info."""
        if self.last is None:
            raise RuntimeError("call reset() before step()")
        a = torch.as_tensor(np.asarray(actions, np.float32), device=self.device).reshape(self.num_envs, -1)
        ones = torch.ones(self.num_envs, 1, dtype=torch.bool, device=self.device)
        with self._noise():
            torch.set_rng_state(self.rng_state)
            z = self.dyn.sample_frame(a, ones[:, 0], self.cache, self.steps, self.window)  # (N, N_l, d_b)
            out = self.dyn.add_context(
                z[:, None], a[:, None], ones, self.cache, self.window, return_agent=self.heads is not None
            )
            self.rng_state = torch.get_rng_state()
        frame = self.tok.decode(z[:, None], cache=self.dcache, window=self.span - 1)[:, 0]
        self.last = (frame.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        reward = torch.zeros(self.num_envs, device=self.device)
        if self.heads is not None:
            self.h = out[:, 0]
            reward = self.heads.step_reward(self.h, z, self.z_prev)
            self.terminated |= self.heads.cont_prob(self.h) < 0.5
        self.z_prev = z
        self.t += 1
        truncated = torch.full_like(self.terminated, self.t >= self.max_steps)
        return self.last, reward, self.terminated.clone(), truncated, {"step": self.t}


class DreamEnv(gym.Env):
    """One dream as a gymnasium.Env (see the module docstring); passes gymnasium's check_env."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        run: str | Path,
        context: int = 8,
        max_steps: int = 500,
        steps: int | None = None,
        device: str = "cpu",
        render_mode: str | None = "rgb_array",
    ):
        self.dreams = DreamVecEnv(run, 1, context, max_steps, steps, device)
        C, H, W = self.dreams.obs_shape
        self.observation_space = spaces.Box(0, 255, (H, W, C), np.uint8)
        self.action_space = space_of(self.dreams.spec)
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31))
        o = options or {}
        obs = self.dreams.reset(seed, o.get("episode"), o.get("start"))
        raw = self.dreams.context_raw
        return obs[0].cpu().numpy(), {"episode": int(raw["ep"][0]), "start": int(raw["start"][0])}

    def step(self, action):
        a = from_env_action(action, self.dreams.spec)[None]
        obs, r, term, trunc, info = self.dreams.step(a)
        return obs[0].cpu().numpy(), float(r[0]), bool(term[0]), bool(trunc[0]), info

    def render(self):
        return None if self.dreams.last is None else self.dreams.last[0].cpu().numpy()
