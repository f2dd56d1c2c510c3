"""MultiCarRacing-v0 in the two other shapes RL libraries expect (the array form in multi_car_racing.py
stays what minidreamer4's own loop uses):

- `parallel_env(num_agents=2, ...)`: a PettingZoo ParallelEnv with per-car dicts, agents "car_0",
  "car_1", ...; a car leaves `agents` when it is done (off the playfield, or the race ended). Needs
  `pip install pettingzoo` (the `pettingzoo` extra); passes pettingzoo.test.parallel_api_test.
- `SingleCarRacing`: one car alone as a plain gymnasium.Env (observation (96, 96, 3), action (3,), float
  reward); passes gymnasium's check_env. Also `gymnasium.make("MultiCarRacing-single-v0")`.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .multi_car_racing import MultiCarRacingEnv


class SingleCarRacing(gym.Env):
    """MultiCarRacing-v0 with one car, seen without the agent axis."""

    metadata = MultiCarRacingEnv.metadata

    def __init__(self, **kwargs):
        self.race = MultiCarRacingEnv(num_agents=1, **kwargs)
        o, a = self.race.observation_space, self.race.action_space
        self.observation_space = spaces.Box(0, 255, o.shape[1:], np.uint8)
        self.action_space = spaces.Box(a.low[0], a.high[0], dtype=np.float32)
        self.render_mode = self.race.render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self.race.reset(seed=seed, options=options)
        return obs[0], info

    def step(self, action):
        obs, r, term, trunc, info = self.race.step(np.asarray(action, np.float32)[None])
        return obs[0], float(r[0]), bool(term[0]), bool(trunc[0]), info

    def render(self):
        return self.race.render()

    def close(self) -> None:
        self.race.close()


def parallel_env(num_agents: int = 2, **kwargs):
    """The PettingZoo ParallelEnv form of MultiCarRacing-v0 (module docstring)."""
    from pettingzoo import ParallelEnv

    class MultiCarRacingParallel(ParallelEnv):
        metadata = {"name": "multi_car_racing_v0", **MultiCarRacingEnv.metadata}

        def __init__(self):
            self.race = MultiCarRacingEnv(num_agents=num_agents, **kwargs)
            self.possible_agents = [f"car_{i}" for i in range(num_agents)]
            self.agents: list[str] = []
            o, a = self.race.observation_space, self.race.action_space
            self._obs_space = spaces.Box(0, 255, o.shape[1:], np.uint8)
            self._act_space = spaces.Box(a.low[0], a.high[0], dtype=np.float32)
            self.render_mode = self.race.render_mode

        def observation_space(self, agent):
            return self._obs_space

        def action_space(self, agent):
            return self._act_space

        def _split(self, x, agents):
            return {a: x[self.possible_agents.index(a)] for a in agents}

        def reset(self, seed=None, options=None):
            obs, info = self.race.reset(seed=seed, options=options)
            self.agents = list(self.possible_agents)
            return self._split(obs, self.agents), {a: dict(info) for a in self.agents}

        def step(self, actions):
            n = len(self.possible_agents)
            a = np.zeros((n, *self._act_space.shape), np.float32)
            for agent, act in actions.items():
                a[self.possible_agents.index(agent)] = act
            obs, r, term, trunc, info = self.race.step(a)
            live = list(self.agents)
            out = (
                self._split(obs, live),
                {k: float(v) for k, v in self._split(r, live).items()},
                {k: bool(v) for k, v in self._split(term, live).items()},
                {k: bool(v) for k, v in self._split(trunc, live).items()},
                {k: dict(info) for k in live},
            )
            self.agents = [k for k in live if not (out[2][k] or out[3][k])]
            return out

        def render(self):
            return self.race.render()

        def close(self):
            self.race.close()

    return MultiCarRacingParallel()
