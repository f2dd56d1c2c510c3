"""A scripted CarRacing-v3 / MultiCarRacing-v0 driver: the demonstrations the world model can learn from
(the paper trains its world model on recorded human play). It is the ONLY code that reads an env's
internal state; the world model and the agent see pixels only.

Pure pursuit on the track's centre line: steer towards the track point `lookahead` tiles ahead of the
nearest one, hold a target speed that drops before sharp bends. It is made imperfect on purpose: with
probability `noise` per step (when not already perturbed) a perturbation starts and holds a random
steering (and half of the time a random gas) for 1..`hold` steps, so the data also shows what off-plan
actions do (a perfect driver's actions could be read off the road ahead, and a world model would not need
them).
In MultiCarRacing-v0 one driver drives one car (`car`), each with its own perturbations; it does not look
at the other cars.
"""

from __future__ import annotations

import math

import numpy as np

from .adapter import PixelEnv, from_env_action


class CarRacingDriver:
    """policy(obs) -> action in [-1, 1]^3 (steer, gas, brake), read from env's car and track."""

    def __init__(
        self,
        env: PixelEnv,
        rng: np.random.Generator,
        noise: float = 0.05,  # 4 seeds: 768 without noise, 571 with these, 335 with hold 8 (random: -31)
        hold: int = 4,
        lookahead: int = 6,
        speed: float = 100.0,
        car: int = 0,
        lock: float = 0.0,
    ):
        u = getattr(env.env, "unwrapped", env.env)
        kind = type(u).__name__
        ok = (kind == "CarRacing" and u.continuous) or (
            kind == "MultiCarRacingEnv" and not u.compact_actions and 0 <= car < u.num_agents
        )
        if not ok:
            raise ValueError(
                f"the driver drives continuous CarRacing or MultiCarRacing (3 action dims, car in range) "
                f"only, not {env.env_id}"
            )
        self.env, self.u, self.rng, self.car_index = env, u, rng, car
        self.noise, self.hold, self.lookahead, self.speed = noise, hold, lookahead, speed
        self.lock = lock  # the share of perturbations that hold full-lock steering (-1 or +1)
        self.reset()

    def _state(self):
        """(the car, track centre points (n, 2) in driving order, track heading per point (n,))."""
        if type(self.u).__name__ == "CarRacing":
            track = self.u.track  # tuples (alpha, beta = heading, x, y)
            return self.u.car, np.asarray([(t[2], t[3]) for t in track]), np.asarray([t[1] for t in track])
        pts = self.u.tile_centres
        d = np.roll(pts, -1, 0) - pts
        return self.u.cars[self.car_index], pts, np.arctan2(d[:, 1], d[:, 0])

    def reset(self) -> None:
        self.left, self.held = 0, None

    def _plan(self) -> np.ndarray:
        """The clean driver's env action (steer in [-1, 1], gas, brake in [0, 1])."""
        car, pts, track_heading = self._state()
        x, y = car.hull.position
        i = int(np.argmin((pts[:, 0] - x) ** 2 + (pts[:, 1] - y) ** 2))
        n = len(pts)
        # off the road (farther from the centre line than the road is wide): slow down and head for a
        # nearer point, or the car circles on the grass at speed
        off = (pts[i, 0] - x) ** 2 + (pts[i, 1] - y) ** 2 > 8.0**2
        tx, ty = pts[(i + (2 if off else self.lookahead)) % n]
        heading = car.hull.angle + math.pi / 2  # the car's forward axis is its local +y
        err = math.atan2(ty - y, tx - x) - heading
        err = (err + math.pi) % (2 * math.pi) - math.pi  # > 0: the target is to the left
        steer = float(np.clip(-err, -1, 1))  # steer -1 turns left (CarRacing negates it)
        # slow down before bends: the largest heading change over the next 20 tiles
        beta = track_heading[(i + np.arange(20)) % n]
        bend = float(np.abs((beta - beta[0] + math.pi) % (2 * math.pi) - math.pi).max())
        target = 15.0 if off else self.speed * (1.0 - 0.7 * min(1.0, bend / 1.2))
        v = float(np.hypot(*car.hull.linearVelocity))
        # at most half gas: full gas spins the rear wheels and the car slides off in bends (measured:
        # 6 seeds, mean return 713 with full gas, two of them off the track, 775 with half)
        gas = 0.5 * float(np.clip((target - v) / 10, 0, 1))
        brake = 0.6 if v > target + 10 else 0.0
        return np.array([steer, gas, brake], np.float32)

    def __call__(self, _obs: np.ndarray) -> np.ndarray:
        a = from_env_action(self._plan(), self.env.action_spec)
        if self.left == 0 and self.rng.random() < self.noise:  # start a held perturbation
            self.left = int(self.rng.integers(1, self.hold + 1))
            # a random steering, and half of the time a random gas too (brake released)
            gas = self.rng.uniform(-1, 1) if self.rng.random() < 0.5 else None
            steer = self.rng.uniform(-1, 1)
            if self.rng.random() < self.lock:  # full lock: uniform draws almost never reach it
                steer = float(self.rng.choice((-1.0, 1.0)))
            self.held = (steer, gas)
        if self.left > 0:  # held off-plan; the rest stays the plan's
            self.left -= 1
            a[0] = self.held[0]
            if self.held[1] is not None:
                a[1], a[2] = self.held[1], -1.0
        return a.astype(np.float32)
