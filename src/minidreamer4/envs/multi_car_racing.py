"""MultiCarRacing-v0: several cars race on one procedurally generated track, each seeing its own view.

Written for this project on gymnasium's Box2D car model (`gymnasium.envs.box2d.car_dynamics.Car`); the track,
the per-car cameras, the shared-tile reward and the rendering are ours.

- Track: a closed road whose centre line is a wobbly circle, r(theta) = R (1 + sum_k a_k sin(k theta + phi_k))
  for k = 2, 3, 4 with random a_k, phi_k, cut into tiles of about equal length. Tiles are Box2D sensors: a
  wheel on a tile gets road friction (grass has 60%) and the tile records which cars have visited it.
- Cars: `num_agents` cars on a starting grid behind the first tile, two abreast. Car bodies collide with one
  another (gymnasium's car collides with nothing but the road sensors; we widen the hull's collision mask).
- Observation: (num_agents, 96, 96, 3) uint8, car i's top-down view, rotated so car i points up and placed
  at the same spot of every frame; the other cars are visible in it (each car has its own colour).
- Action: (num_agents, 3) = (steer in [-1, 1], gas in [0, 1], brake in [0, 1]) per car, or with
  `compact_actions=True` (num_agents, 2) = (steer, throttle in [-1, 1]): throttle > 0 is gas, < 0 brakes.
- Reward, per car and frame: -0.1, plus 1000 / num_tiles x (1 - past_visitors / num_agents) the first time
  this car touches a tile (the first car there gets the full share, later ones less), minus
  `collision_penalty` when its body starts touching another car's, and -100 when it leaves the playfield.
- Termination per car: a car that leaves the playfield is done (it stops, gets no more reward, and stays
  visible) while the others go on. The episode ends when all cars are done, when every tile has been
  visited by some car, or at `max_steps` (truncation). `terminated` and `truncated` are (num_agents,) bools.
- `random_direction=True` races clockwise or counter-clockwise at random per episode.
- The same seed gives the same track and the same first observations. Runs headless (pygame surfaces only,
  no window); `render()` gives a whole-track view with every car.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from gymnasium import spaces

FPS = 50
PLAYFIELD = 330.0  # world units: a car beyond +-PLAYFIELD in x or y has left the playfield
TRACK_RADIUS = 150.0
TRACK_HALF_WIDTH = 6.5
TILE_LENGTH = 3.5
VIEW = 96  # per-car observation size in pixels
ZOOM = 2.8  # pixels per world unit in a car's view (the view spans about 34 units)
CAR_Y = 0.72  # the car sits at 72% of the view's height: it sees more ahead than behind
GRASS_CELL = 8.0  # side of one grass checker cell (world units): gives a sense of speed on grass

GRASS = (102, 204, 102)
GRASS_LIGHT = (110, 222, 110)
ROAD = ((102, 102, 102), (110, 110, 110))  # alternating tile shades: motion is visible on the road too
START = (235, 235, 235)
CAR_COLORS = [(204, 0, 0), (0, 70, 220), (230, 180, 0), (150, 0, 180), (0, 170, 170), (240, 110, 0)]
WHEEL_COLOR = (0, 0, 0)


class _Tile:
    """Box2D userData of a road tile: its index, polygon and the cars that have touched it."""

    def __init__(self, index: int, poly: np.ndarray):
        self.index, self.poly, self.visitors = index, poly, set()
        self.road_friction = 1.0


class _Hull:
    """Box2D userData of a car body, to tell car-car contacts apart from everything else."""

    def __init__(self, car: int):
        self.car = car


def _make_listener(env: MultiCarRacingEnv):
    from Box2D.b2 import contactListener

    class Contacts(contactListener):
        """Wheel-on-tile contacts give friction and tile rewards; hull-on-hull contacts are collisions."""

        def BeginContact(self, contact):
            self._touch(contact, True)

        def EndContact(self, contact):
            self._touch(contact, False)

        def _touch(self, contact, begin: bool):
            a, b = contact.fixtureA.body.userData, contact.fixtureB.body.userData
            if isinstance(a, _Hull) and isinstance(b, _Hull):
                if begin:
                    env._collide(a.car, b.car)
                return
            tile, wheel = (a, b) if isinstance(a, _Tile) else (b, a)
            if not isinstance(tile, _Tile) or not hasattr(wheel, "tiles"):
                return
            if begin:
                wheel.tiles.add(tile)
                env._visit(wheel.car_index, tile)
            else:
                wheel.tiles.discard(tile)

    return Contacts()


class MultiCarRacingEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": FPS}

    def __init__(
        self,
        num_agents: int = 2,
        compact_actions: bool = False,
        random_direction: bool = False,
        collision_penalty: float = 0.0,
        max_steps: int = 1000,
        render_mode: str | None = "rgb_array",
    ):
        if num_agents < 1 or num_agents > len(CAR_COLORS):
            raise ValueError(f"num_agents must be in 1..{len(CAR_COLORS)}, got {num_agents}")
        self.num_agents, self.compact_actions = num_agents, compact_actions
        self.random_direction, self.collision_penalty = random_direction, collision_penalty
        self.max_steps, self.render_mode = max_steps, render_mode
        n = num_agents
        self.observation_space = spaces.Box(0, 255, (n, VIEW, VIEW, 3), np.uint8)
        if compact_actions:
            self.action_space = spaces.Box(-1.0, 1.0, (n, 2), np.float32)
        else:
            low = np.tile(np.array([-1, 0, 0], np.float32), (n, 1))
            self.action_space = spaces.Box(low, np.ones((n, 3), np.float32), dtype=np.float32)
        self.world, self.cars, self.tiles = None, [], []
        self._surface = None

    # ------------------------------------------------------------------------------------------------
    # track and cars

    def _make_track(self) -> np.ndarray:
        """Centre-line points (M, 2), about TILE_LENGTH apart, in driving order."""
        rng = self.np_random
        amp, phase = rng.uniform(-0.12, 0.12, 3), rng.uniform(0, 2 * np.pi, 3)
        theta = np.linspace(0, 2 * np.pi, 4096, endpoint=False)
        r = TRACK_RADIUS * (1 + sum(a * np.sin(k * theta + p) for k, a, p in zip((2, 3, 4), amp, phase)))
        pts = np.stack([r * np.cos(theta), r * np.sin(theta)], 1)
        seg = np.linalg.norm(np.roll(pts, -1, 0) - pts, axis=1)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        m = int(arc[-1] // TILE_LENGTH)
        at = np.searchsorted(arc, np.arange(m) * arc[-1] / m)  # evenly spaced along the arc
        pts = np.roll(pts[at.clip(0, len(pts) - 1)], -rng.integers(m), 0)  # random start line
        if self.random_direction and rng.random() < 0.5:
            pts = pts[::-1].copy()
        return pts

    def _build(self) -> None:
        import Box2D
        from Box2D.b2 import fixtureDef, polygonShape
        from gymnasium.envs.box2d.car_dynamics import Car

        self._listener = _make_listener(self)  # held here: Box2D keeps only a borrowed reference
        self.world = Box2D.b2World((0, 0), contactListener=self._listener)
        centre = self._make_track()
        nxt = np.roll(centre, -1, 0)
        d = nxt - centre
        normal = np.stack([-d[:, 1], d[:, 0]], 1) / np.linalg.norm(d, axis=1, keepdims=True)
        # tile i spans centre[i] -> centre[i+1]; shared edges use the mean normal so tiles leave no gaps
        edge_n = (normal + np.roll(normal, 1, 0)) / 2
        left, right = centre + TRACK_HALF_WIDTH * edge_n, centre - TRACK_HALF_WIDTH * edge_n
        self.tiles = []
        for i in range(len(centre)):
            j = (i + 1) % len(centre)
            poly = np.array([left[i], right[i], right[j], left[j]])
            tile = _Tile(i, poly)
            body = self.world.CreateStaticBody(
                fixtures=fixtureDef(shape=polygonShape(vertices=[tuple(p) for p in poly]), isSensor=True)
            )
            body.userData = tile
            self.tiles.append(tile)
        self.tile_centres = (centre + nxt) / 2
        # starting grid: two abreast, rows 1.5 tiles apart, behind tile 0, all facing along the track
        self.cars = []
        for i in range(self.num_agents):
            k = -(1 + (i // 2) * 3) % len(centre)
            side = (0.5 if i % 2 == 0 else -0.5) * TRACK_HALF_WIDTH if self.num_agents > 1 else 0.0
            x, y = self.tile_centres[k] + side * normal[k]
            angle = math.atan2(-d[k, 0], d[k, 1])  # the car's forward axis is its local +y
            car = Car(self.world, angle, float(x), float(y))
            car.hull.userData = _Hull(i)
            for f in car.hull.fixtures:  # let car bodies collide with each other (not just the road)
                fd = f.filterData
                fd.maskBits = 0x0001 | 0x0020
                f.filterData = fd
            for w in car.wheels:
                w.car_index = i
            self.cars.append(car)

    def _destroy(self) -> None:
        if self.world is None:
            return
        # no callbacks while bodies go away: EndContact on a half-destroyed body crashes Box2D
        self.world.contactListener = None
        for car in self.cars:
            car.destroy()
        for body in list(self.world.bodies):
            self.world.DestroyBody(body)
        self.world, self.cars, self.tiles = None, [], []

    # contact callbacks (called by Box2D inside world.Step)
    def _visit(self, car: int, tile: _Tile) -> None:
        if self.done[car] or car in tile.visitors:
            return
        share = 1.0 - len(tile.visitors) / self.num_agents
        self._reward[car] += 1000.0 / len(self.tiles) * share
        tile.visitors.add(car)
        self.tiles_visited += len(tile.visitors) == 1

    def _collide(self, a: int, b: int) -> None:
        for c in (a, b):
            if not self.done[c]:
                self._reward[c] -= self.collision_penalty
        self.collisions += 1

    # ------------------------------------------------------------------------------------------------
    # gymnasium API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._destroy()
        self.done = np.zeros(self.num_agents, bool)
        self._reward = np.zeros(self.num_agents, np.float64)
        self.tiles_visited, self.collisions, self.t = 0, 0, 0
        self._build()
        return self._observe(), self._info()

    def _controls(self, action) -> np.ndarray:
        a = np.asarray(action, np.float32).reshape(self.action_space.shape)
        if self.compact_actions:
            steer, thr = a[:, 0].clip(-1, 1), a[:, 1].clip(-1, 1)
            return np.stack([steer, thr.clip(0, 1), (-thr).clip(0, 1)], 1)
        return np.stack([a[:, 0].clip(-1, 1), a[:, 1].clip(0, 1), a[:, 2].clip(0, 1)], 1)

    def step(self, action):
        if self.world is None:
            raise RuntimeError("call reset() before step()")
        ctrl = self._controls(action)
        for i, car in enumerate(self.cars):
            s, g, b = (0.0, 0.0, 1.0) if self.done[i] else ctrl[i]  # a finished car brakes to a stop
            car.steer(-float(s))
            car.gas(float(g))
            car.brake(float(b))
        self._reward[:] = 0.0
        for car in self.cars:
            car.step(1.0 / FPS)
        self.world.Step(1.0 / FPS, 6 * 30, 2 * 30)
        self.t += 1
        reward = self._reward - 0.1 * (~self.done)
        terminated = np.zeros(self.num_agents, bool)
        for i, car in enumerate(self.cars):
            if self.done[i]:
                continue
            x, y = car.hull.position
            if abs(x) > PLAYFIELD or abs(y) > PLAYFIELD:
                terminated[i] = True
                reward[i] = -100.0
        self.done |= terminated
        all_tiles = self.tiles_visited == len(self.tiles)
        if all_tiles:  # the race is over: every car still going finishes with it
            terminated |= ~self.done
            self.done[:] = True
        truncated = ~self.done & (self.t >= self.max_steps)
        return self._observe(), reward.astype(np.float32), terminated, truncated, self._info()

    def _info(self) -> dict:
        return {
            "done": self.done.copy(),
            "tiles_visited": self.tiles_visited,
            "num_tiles": len(self.tiles),
            "collisions": self.collisions,
        }

    # ------------------------------------------------------------------------------------------------
    # drawing: one pygame surface reused for every view

    def _polys(self):
        """(colour, world polygon) of every car part, every car."""
        for i, car in enumerate(self.cars):
            for body in car.drawlist:
                color = WHEEL_COLOR if body is not car.hull else CAR_COLORS[i]
                for f in body.fixtures:
                    yield color, [body.transform * v for v in f.shape.vertices]

    def _view(self, i: int) -> np.ndarray:
        import pygame

        if self._surface is None:
            self._surface = pygame.Surface((VIEW, VIEW))
        surf = self._surface
        hull = self.cars[i].hull
        cx, cy = hull.position
        ca, sa = math.cos(-hull.angle), math.sin(-hull.angle)
        ox, oy = VIEW / 2, VIEW * CAR_Y

        def to_px(pts) -> list[tuple[float, float]]:
            p = np.asarray(pts, np.float64) - (cx, cy)
            x, y = p[:, 0] * ca - p[:, 1] * sa, p[:, 0] * sa + p[:, 1] * ca
            return list(zip(ox + ZOOM * x, oy - ZOOM * y))

        surf.fill(GRASS)
        reach = VIEW / ZOOM  # anything farther than this from the car is off screen
        g0x, g0y = math.floor((cx - reach) / GRASS_CELL), math.floor((cy - reach) / GRASS_CELL)
        n = int(2 * reach / GRASS_CELL) + 2
        for gx in range(g0x, g0x + n):
            for gy in range(g0y, g0y + n):
                if (gx + gy) % 2 == 0:
                    x0, y0 = gx * GRASS_CELL, gy * GRASS_CELL
                    x1, y1 = x0 + GRASS_CELL, y0 + GRASS_CELL
                    pygame.draw.polygon(surf, GRASS_LIGHT, to_px([(x0, y0), (x1, y0), (x1, y1), (x0, y1)]))
        near = np.abs(self.tile_centres - (cx, cy)).max(1) < reach + TILE_LENGTH
        for k in np.flatnonzero(near):
            color = START if k == 0 else ROAD[k % 2]
            pygame.draw.polygon(surf, color, to_px(self.tiles[k].poly))
        for color, poly in self._polys():
            pygame.draw.polygon(surf, color, to_px(poly))
        return pygame.surfarray.array3d(surf).transpose(1, 0, 2)  # (H, W, 3)

    def _observe(self) -> np.ndarray:
        return np.stack([self._view(i) for i in range(self.num_agents)])

    def render(self) -> np.ndarray | None:
        """Whole-track view (400 x 400) with every car, for people (not for the agents)."""
        if self.render_mode != "rgb_array" or self.world is None:
            return None
        import pygame

        size, scale = 400, 400 / (2 * (TRACK_RADIUS * 1.5))
        surf = pygame.Surface((size, size))
        surf.fill(GRASS)

        def to_px(pts):
            p = np.asarray(pts, np.float64)
            return list(zip(size / 2 + scale * p[:, 0], size / 2 - scale * p[:, 1]))

        for k, tile in enumerate(self.tiles):
            pygame.draw.polygon(surf, START if k == 0 else ROAD[k % 2], to_px(tile.poly))
        for i, car in enumerate(self.cars):  # cars are tiny at this scale: a dot each
            x, y = to_px([tuple(car.hull.position)])[0]
            pygame.draw.circle(surf, CAR_COLORS[i], (x, y), 4)
        return pygame.surfarray.array3d(surf).transpose(1, 0, 2)

    def close(self) -> None:
        self._destroy()
