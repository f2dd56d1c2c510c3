"""DotTrack-v0: a tiny pixel racing env in pure numpy, so tests and quick runs need no Box2D.

A red car (a dot) sits on a procedurally drawn closed road (a wobbly ring: the same one every episode
with a random start point, or a new shape every episode with random_track=True) on green grass, seen
top-down with a fixed camera. The car's radius is a tenth of the image (at least 2.5 pixels): at 1.5
pixels (0.7% of a 32x32 image) a 2-minute tokenizer learned to leave it out, and no model downstream could
see where the car was. The action in [-1, 1]^2 pushes the car (no momentum by default). Reward is
progress along the road, counter-clockwise (10 per lap) while on the road, and -0.1 per step off it; the
arena wall stops the car, and episodes end only at the time limit. So the reward depends on the action, and
a good policy must steer along the curve: learnable, but not by a constant action.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

GRASS = np.array([40, 150, 50], np.uint8)
ROAD = np.array([110, 110, 110], np.uint8)
LINE = np.array([240, 240, 240], np.uint8)
CAR = np.array([220, 30, 30], np.uint8)


class DotTrackEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        size: int = 64,
        max_steps: int = 1000,
        render_mode: str | None = "rgb_array",
        random_track: bool = False,
    ):
        self.size, self.max_steps, self.render_mode = size, max_steps, render_mode
        self.random_track = random_track
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.road_width = 0.16  # half-width, in world units (the arena is [-1, 1]^2)
        # per step: v <- drag v + accel a, pos <- pos + v. With drag 0 the car moves where the action points,
        # 0.06 units (1 pixel at 32x32) at full action, so the next frame cannot be predicted without the
        # action (the earlier momentum, drag 0.85 and accel 0.012, moved the car 0.2 pixels per action)
        self.accel, self.drag = 0.06, 0.0
        # pixel centres in world coordinates, (size, size) each; y points up
        c = (np.arange(size) + 0.5) / size * 2 - 1
        self._px, self._py = np.meshgrid(c, -c)

    # the track: centre-line radius as a function of angle, r(theta) = r0 (1 + sum_k a_k sin(k theta + phi_k))
    def _radius(self, theta):
        r = np.ones_like(theta)
        for k, a, ph in zip((2, 3), self._amp, self._phase):
            r = r + a * np.sin(k * theta + ph)
        return self._r0 * r

    def _on_road(self, x, y) -> np.ndarray:
        return np.abs(np.hypot(x, y) - self._radius(np.arctan2(y, x))) < self.road_width

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        # the default track is the same every episode (only the start point varies), so the tokenizer
        # learns the background in seconds and spends its capacity on the car; random_track=True draws
        # a new shape each episode (a harder, generalisation version of the task)
        shape_rng = rng if self.random_track else np.random.default_rng(1234)
        self._r0 = shape_rng.uniform(0.55, 0.65)
        self._amp = shape_rng.uniform(-0.12, 0.12, size=2)
        self._phase = shape_rng.uniform(0, 2 * np.pi, size=2)
        bg = np.empty((self.size, self.size, 3), np.uint8)
        bg[:] = GRASS
        bg[self._on_road(self._px, self._py)] = ROAD
        theta0 = rng.uniform(0, 2 * np.pi)
        line_at = theta0 if self.random_track else 0.0  # a fixed track keeps a fixed background
        line = np.abs(np.angle(np.exp(1j * (np.arctan2(self._py, self._px) - line_at)))) < 0.04
        bg[line & self._on_road(self._px, self._py)] = LINE  # a line across the road: lets a viewer see laps
        self._bg = bg
        r = self._radius(np.array(theta0))
        self.pos = np.array([r * np.cos(theta0), r * np.sin(theta0)])
        self.vel = np.zeros(2)
        self._theta = theta0
        self.t = 0
        return self.render(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64).reshape(2), -1, 1)
        self.vel = self.drag * self.vel + self.accel * a
        self.pos = self.pos + self.vel
        self.t += 1
        # the arena wall stops the car (off the road, so it keeps paying -0.1 a step); it does not end the
        # episode: with a wall that ended it at -1, driving straight into it beat random (+0.16 against
        # -7.32 over 100 steps), and an agent learned exactly that instead of following the road
        if np.any(np.abs(self.pos) > 1.0):
            self.pos, self.vel = np.clip(self.pos, -1, 1), np.zeros(2)
        theta = np.arctan2(self.pos[1], self.pos[0])
        dtheta = np.angle(np.exp(1j * (theta - self._theta)))  # wrapped to (-pi, pi]
        self._theta = theta
        if self._on_road(self.pos[0], self.pos[1]):
            reward = 10.0 * dtheta / (2 * np.pi)
        else:
            reward = -0.1
        truncated = self.t >= self.max_steps
        return self.render(), float(reward), False, truncated, {"on_road": reward > -0.1}

    def road_follower(self, pos: np.ndarray | None = None) -> np.ndarray:
        """A hand-written reference policy that reads the state, not pixels: push along the road's tangent,
        counter-clockwise, plus a pull towards the centre line. pos: world positions (..., 2), default the
        car's; returns actions (..., 2) in [-1, 1]. The benchmarks score it as what a good driver earns."""
        pos = self.pos if pos is None else np.asarray(pos, np.float64)
        x, y = pos[..., 0], pos[..., 1]
        r = np.hypot(x, y).clip(1e-6)[..., None]
        tangent = np.stack([-y, x], -1) / r
        pull = np.clip((self._radius(np.arctan2(y, x))[..., None] - r) * 5, -1, 1)
        return np.clip(tangent + pos / r * pull, -1, 1).astype(np.float32)

    def render(self) -> np.ndarray:
        img = self._bg.copy()
        rad = max(2.5, self.size / 10)  # big enough that a reconstruction loss cannot ignore it
        cx, cy = (self.pos[0] + 1) / 2 * self.size, (1 - self.pos[1]) / 2 * self.size  # pixel coordinates
        x0, x1 = int(max(0, cx - rad - 1)), int(min(self.size, cx + rad + 2))
        y0, y1 = int(max(0, cy - rad - 1)), int(min(self.size, cy + rad + 2))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        disc = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= rad**2
        img[y0:y1, x0:x1][disc] = CAR
        return img
