"""Collecting episodes into the store: random interaction first, later the agent's own policy.

Episode i of a collection with seed s resets the env with seed s * 1_000_003 + i and draws random actions
from a generator seeded with (s, i): the same seed gives the same data, and appending more episodes later
continues with new seeds instead of repeating old ones.

Data sources (`data.policy`, `minidreamer4 collect --policy`), or a mix of them, "driver:1,explore:1":
- random   uniform random actions, optionally held (`data.random_hold`) or resting (`data.random_rest`);
- explore  temporally correlated random actions: each dimension a smooth random process around an
           env-specific centre (CarRacing: gas mostly on, brake released), see explore_policy;
- driver   a scripted driver with held random steering perturbations (envs/driver.py) for CarRacing-v3
           and MultiCarRacing-v0 (one per car), the demonstrations: the only source that reads the env's
           internal state.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from .data import EpisodeStore
from .envs import MultiPixelEnv, PixelEnv, action_to_bins, bins_to_action

Policy = Callable[[np.ndarray], np.ndarray]  # float obs (C, H, W) -> action in [-1, 1]^A


def random_policy(
    env: PixelEnv, rng: np.random.Generator, hold: int = 1, rest: tuple[float, ...] = ()
) -> Policy:
    """Uniform random actions; discrete dimensions draw one of their bins uniformly. hold > 1 keeps each
    drawn action for a uniform 1..hold steps: independent draws every step average out, so the data shows
    little sustained motion, and a world model trained on it learns little of what an action does.
    rest[k] is the chance that dimension k is left at its lowest value (-1) instead (envs.RANDOM_REST)."""
    spec = env.action_spec
    bins = np.asarray(spec.bins, np.float32)
    state = {"left": 0, "a": None}
    rest_p = np.asarray(rest, np.float64) if rest else None

    def draw() -> np.ndarray:
        if spec.kind == "box":
            a = rng.uniform(-1, 1, spec.dims).astype(np.float32)
        else:
            a = bins_to_action(rng.integers(0, bins).astype(np.float32), bins).astype(np.float32)
        if rest_p is not None:  # drawn only when asked, so uniform streams stay as they were
            a[rng.random(spec.dims) < rest_p] = -1.0
        return a

    def act(_obs: np.ndarray) -> np.ndarray:
        if hold <= 1:
            return draw()
        if state["left"] == 0:
            state["a"], state["left"] = draw(), int(rng.integers(1, hold + 1))
        state["left"] -= 1
        return state["a"]

    return act


# (ours) centre and scale of each action dimension for the explore policy, in [-1, 1] action units;
# others: centre 0, scale 0.6. CarRacing: steering around straight, gas mostly on (env gas ~0.7),
# brake mostly released (env brake 0 three steps in four)
EXPLORE = {"CarRacing-v3": ((0.0, 0.4, -1.4), (0.7, 0.5, 0.6))}


def explore_policy(env: PixelEnv, rng: np.random.Generator, corr: float = 0.9) -> Policy:
    """Temporally correlated random actions: a_k = clip(centre_k + scale_k u_k, -1, 1) with u_k a unit-
    variance AR(1) process, u <- corr u + sqrt(1 - corr^2) eps. Steps 10 apart are still correlated e^-1:
    the car keeps turning one way long enough for the view to turn, where i.i.d. draws average out.
    Discrete dimensions take the nearest bin."""
    spec = env.action_spec
    centre, scale = EXPLORE.get(env.env_id, ((0.0,) * spec.dims, (0.6,) * spec.dims))
    centre, scale = np.asarray(centre, np.float32), np.asarray(scale, np.float32)
    state = {"u": rng.standard_normal(spec.dims)}

    def act(_obs: np.ndarray) -> np.ndarray:
        state["u"] = corr * state["u"] + np.sqrt(1 - corr**2) * rng.standard_normal(spec.dims)
        a = np.clip(centre + scale * state["u"], -1, 1).astype(np.float32)
        if spec.kind != "box":
            bins = np.asarray(spec.bins, np.float32)
            a = bins_to_action(action_to_bins(a, bins), bins).astype(np.float32)
        return a

    def reset() -> None:
        state["u"] = rng.standard_normal(spec.dims)

    act.reset = reset  # type: ignore[attr-defined]
    return act


SOURCES = ("random", "explore", "driver")


def parse_sources(spec: str) -> list[tuple[str, float]]:
    """'driver' or 'driver:1,explore:3' -> [(name, weight)], weights normalised to sum 1."""
    out = []
    for part in spec.split(","):
        name, _, w = part.strip().partition(":")
        if name not in SOURCES:
            raise ValueError(f"unknown data source {name!r} in {spec!r}; choose from {', '.join(SOURCES)}")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f"data source weights must be numbers: {spec!r}") from None
        if weight < 0:
            raise ValueError(f"data source weights must be >= 0: {spec!r}")
        out.append((name, weight))
    total = sum(w for _, w in out)
    if total <= 0:
        raise ValueError(f"data source weights sum to 0: {spec!r}")
    return [(n, w / total) for n, w in out]


def driver_settings(data) -> dict:
    """The driver's keyword arguments (envs/driver.py) from a DataConfig: one place for every caller."""
    return {"noise": data.driver_noise, "hold": data.driver_hold, "lock": data.driver_lock}


def source_policy(
    name: str,
    env: PixelEnv,
    rng: np.random.Generator,
    hold: int = 1,
    rest: tuple[float, ...] = (),
    driver: dict | None = None,
) -> Policy:
    """One of SOURCES as a policy for env; driver: the driver's keyword arguments (noise, hold)."""
    if name == "random":
        return random_policy(env, rng, hold, rest)
    if name == "explore":
        return explore_policy(env, rng)
    from .envs.driver import CarRacingDriver

    return CarRacingDriver(env, rng, **(driver or {}))


def run_episode(env: PixelEnv, policy: Policy, seed: int) -> dict[str, np.ndarray]:
    """One episode, until termination or truncation. Returns the store's arrays (see data.py)."""
    obs = env.reset(seed=seed)
    if hasattr(policy, "reset"):  # policies with memory (the agent's rolling context) start afresh
        policy.reset()
    frames, acts, rews, terms, truncs = [env.frame], [], [], [], []
    while True:
        a = np.asarray(policy(obs), np.float32)
        obs, r, term, trunc, _ = env.step(a)
        frames.append(env.frame)
        acts.append(a)
        rews.append(r)
        terms.append(term)
        truncs.append(trunc)
        if term or trunc:
            break
    return {
        "obs": np.stack(frames),
        "act": np.stack(acts),
        "rew": np.array(rews, np.float32),
        "term": np.array(terms),
        "trunc": np.array(truncs),
    }


def run_episodes(envs: list[PixelEnv], policy: Policy, seeds: list[int]) -> list[dict[str, np.ndarray]]:
    """One episode in each env from its seed, side by side, for a policy that acts on a batch: observations
    (B, C, H, W) -> actions (B, A) (imagine.Actor, whose batch rows are independent streams). An env whose
    episode ended is not stepped again; its last observation fills its row until every episode has ended.
    Returns run_episode's arrays for each env, equal to running them one at a time."""
    obs = [e.reset(seed=s) for e, s in zip(envs, seeds)]
    if hasattr(policy, "reset"):
        policy.reset()
    eps = [{"obs": [e.frame], "act": [], "rew": [], "term": [], "trunc": []} for e in envs]
    done = [False] * len(envs)
    while not all(done):
        acts = np.asarray(policy(np.stack(obs)), np.float32)  # (B, A)
        for i, e in enumerate(envs):
            if done[i]:
                continue
            obs[i], r, term, trunc, _ = e.step(acts[i])
            for k, v in zip(("obs", "act", "rew", "term", "trunc"), (e.frame, acts[i], r, term, trunc)):
                eps[i][k].append(v)
            done[i] = term or trunc
    return [
        {k: np.stack(v).astype(np.float32) if k == "rew" else np.stack(v) for k, v in ep.items()}
        for ep in eps
    ]


def run_multi_episode(env: MultiPixelEnv, policies: list[Policy], seed: int) -> list[dict[str, np.ndarray]]:
    """One episode of a multi-agent env, agent i driven by policies[i]. Returns one episode per agent in the
    store's format: agent i's stream from the reset up to the step it was done."""
    obs = env.reset(seed=seed)
    for p in policies:
        if hasattr(p, "reset"):
            p.reset()
    n = env.num_agents
    eps = [{"obs": [env.frame[i]], "act": [], "rew": [], "term": [], "trunc": []} for i in range(n)]
    done = np.zeros(n, bool)
    while not done.all():
        acts = np.zeros((n, env.action_spec.dims), np.float32)
        for i in np.flatnonzero(~done):
            acts[i] = policies[i](obs[i])
        obs, r, term, trunc, _ = env.step(acts)
        for i in np.flatnonzero(~done):
            ep = eps[i]
            ep["obs"].append(env.frame[i])
            ep["act"].append(acts[i])
            ep["rew"].append(r[i])
            ep["term"].append(term[i])
            ep["trunc"].append(trunc[i])
        done |= term | trunc
    return [
        {
            "obs": np.stack(ep["obs"]),
            "act": np.stack(ep["act"]),
            "rew": np.array(ep["rew"], np.float32),
            "term": np.array(ep["term"], bool),
            "trunc": np.array(ep["trunc"], bool),
        }
        for ep in eps
    ]


def episode_meta(env: PixelEnv, seed: int, policy: str, extra: dict | None = None) -> dict:
    return {
        "env_id": env.env_id,
        "obs_shape": list(env.obs_shape),
        "action_spec": env.action_spec.to_dict(),
        "action_repeat": env.action_repeat,
        "max_steps": env.max_steps,
        "skip_start": env.skip_start,
        "seed": seed,
        "policy": policy,
        **(extra or {}),
    }


def collect(
    env: PixelEnv,
    store: EpisodeStore,
    episodes: int,
    policy: str | Policy | list[Policy] = "random",
    seed: int = 0,
    progress: bool = True,
    policy_name: str | None = None,
    hold: int = 1,
    rest: tuple[float, ...] = (),
    driver: dict | None = None,
    envs: list[PixelEnv] | None = None,
) -> dict:
    """Runs `episodes` episodes and appends each to the store as soon as it ends. Returns summary stats.
    `policy`: a data source or a mix of them (module docstring: each episode draws its source by the
    weights), or a policy (one per agent in a multi-agent env). In a multi-agent env every agent's
    stream is its own episode in the store (`agent` in its metadata); `hold` and `rest` are the random
    policy's (see random_policy), `driver` the driver's keyword arguments. `envs`: instances of the env
    (the first is `env`) in which a policy that acts on a batch (imagine.Actor) plays its episodes side by
    side (run_episodes); each group's episodes are stored in order when the group ends."""
    multi = isinstance(env, MultiPixelEnv)
    sources = parse_sources(policy) if isinstance(policy, str) else None
    side = envs if envs and sources is None and not multi and getattr(policy, "batched", False) else [env]
    returns, steps, t0 = [], 0, time.perf_counter()
    bar = tqdm(
        total=episodes, desc=f"collect {env.env_id}", unit="ep", disable=not progress, dynamic_ncols=True
    )
    e = 0
    while e < episodes:
        idx = store.indices()
        i = idx[-1] + 1 if idx else 0  # the index store.add will give this (first) episode
        ep_seed = seed * 1_000_003 + i
        name = policy_name or "agent"
        if sources is not None:  # one source for the whole episode (a single source draws nothing)
            pick = np.random.default_rng([seed, i, 7]).choice(len(sources), p=[w for _, w in sources])
            name = sources[int(pick)][0] if len(sources) > 1 else sources[0][0]
        if multi:
            n = env.num_agents
            if sources is not None:  # one policy per car, each with its own random stream
                rngs = [np.random.default_rng([seed, i, k]) for k in range(n)]
                kw = [{**(driver or {}), "car": k} if name == "driver" else driver for k in range(n)]
                pols = [source_policy(name, env, r, hold, rest, kw[k]) for k, r in enumerate(rngs)]
            else:
                pols = policy
            eps = run_multi_episode(env, pols, ep_seed)
            metas = [{"agent": k, "num_agents": n, "race": e} for k in range(n)]
            seeds = [ep_seed] * n
        elif len(side) > 1:  # the store's next indices i, i + 1, ... give the seeds, as one at a time
            seeds = [ep_seed + j for j in range(min(len(side), episodes - e))]
            eps, metas = run_episodes(side[: len(seeds)], policy, seeds), [{}] * len(seeds)
        else:
            rng = np.random.default_rng([seed, i])
            pol = source_policy(name, env, rng, hold, rest, driver) if sources is not None else policy
            eps, metas, seeds = [run_episode(env, pol, ep_seed)], [{}], [ep_seed]
        for ep, extra, s in zip(eps, metas, seeds):
            ret = float(ep["rew"].sum())
            if name == "random" and rest:
                extra = {**extra, "random_rest": list(rest)}
            store.add(ep, episode_meta(env, s, name, {"return": ret, **extra}))
            returns.append(ret)
            steps += len(ep["act"])
        done = 1 if multi else len(eps)
        e += done
        bar.update(done)
        bar.set_postfix(steps_per_s=f"{steps / (time.perf_counter() - t0):.0f}", ret=f"{returns[-1]:.1f}")
    bar.close()
    dt = time.perf_counter() - t0
    return {
        "episodes": len(returns),
        **({"races": episodes} if multi else {}),
        "steps": steps,
        "seconds": dt,
        "steps_per_s": steps / max(dt, 1e-9),
        "mean_return": float(np.mean(returns)) if returns else float("nan"),
        "std_return": float(np.std(returns)) if returns else float("nan"),
    }
