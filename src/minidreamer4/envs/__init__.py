"""Environment registry. Ids resolve lazily: an env's own dependency (Box2D for CarRacing) is imported only
when that env is made."""

from __future__ import annotations

from .adapter import (
    ActionSpec,
    MultiPixelEnv,
    PixelEnv,
    action_to_bins,
    bins_to_action,
    from_env_action,
    to_env_action,
)

# The project's own envs, by id -> "module:factory". Gymnasium ids with image observations also work.
BUILTIN = {
    "DotTrack-v0": "minidreamer4.envs.dottrack:DotTrackEnv",
    "MultiCarRacing-v0": "minidreamer4.envs.multi_car_racing:MultiCarRacingEnv",
}
MULTI_AGENT = {"MultiCarRacing-v0"}  # observations (n, H, W, C): wrapped in MultiPixelEnv
RECOMMENDED = ["CarRacing-v3", "DotTrack-v0", "MultiCarRacing-v0"]

# (ours) how often the exploring random policy leaves each action dimension at its lowest value. CarRacing's
# uniform random actions brake half of the time, so the car barely moves and a world model trained on them
# sees little of what steering and gas do; with the brake released 9 steps in 10 the frames change 5.7x more
# (mean |frame(t+4) - frame(t)| 6.97 vs 1.23 on 0-255, 6 episodes, `benchmarks/bench_collect.py`). The
# random baseline that agents are scored against stays uniform.
RANDOM_REST = {"CarRacing-v3": (0.0, 0.0, 0.9)}

# the first collection's data source per env for `data.policy auto` (collect.py): CarRacing learns from
# its scripted driver's demonstrations (with random held perturbations), as the paper learns from recorded
# play: with random actions the dream followed 0.7% of what the actions do at horizon 8, with the driver's
# episodes 14-32% (docs/experiments.md). MultiCarRacing too (one driver per car): its cloned policy scored
# +169.37 per car against -57.17 for random actions (run mcr_drv); on random data BC scored -57.55.
# Other envs explore at random
DATA_SOURCE = {"CarRacing-v3": "driver", "MultiCarRacing-v0": "driver"}


def data_source(env_id: str, setting: str = "auto") -> str:
    return DATA_SOURCE.get(env_id, "random") if setting == "auto" else setting


# how the policy's per-dimension categoricals become the env's action in evaluation, per env, for
# `agent.eval_readout auto` (imagine.READOUTS); "mode" elsewhere. CarRacing's behaviour-cloned driver
# scored -93.42 +- 0.51 with each dimension's top bin and +267.60 +- 133.00 with the expected bin value
# (run cpu_d0, 10 seeds): the driver's steering and gas spread over neighbouring bins, and the top bin of
# each alone does not drive; on DotTrack the top bin scored best (docs/experiments.md). MultiCarRacing
# likewise: its cloned drivers scored +482.35 per car with the expected value and -68.97 with the top bin,
# its imagination-trained policy +389.61 and +6.62 (run mcr_s21, 5 races)
EVAL_READOUT = {"CarRacing-v3": "mean", "MultiCarRacing-v0": "mean"}


def eval_readout(env_id: str, setting: str = "auto") -> str:
    return EVAL_READOUT.get(env_id, "mode") if setting == "auto" else setting


# env steps taken with a no-op action after every reset and never observed, per env (`env.skip_start`
# -1). CarRacing-v3 zooms its camera in over the first 50 frames (1 s): frames no policy acts on later.
# Skipping them (`--env.skip_start 50`) left the dream's action figures as they were (run d_drvPs against
# d_drvP: shuffle ratio h8 1.35 vs 1.35, turn check 75% vs 78%; docs/experiments.md), so none by default.
SKIP_START: dict[str, int] = {}

# two action sequences that should move the view apart, for the turn check of dream.action_effect: full
# left and full right steering with the gas on (in [-1, 1] per dimension: brake -1 = released); other
# envs: the first action dimension at -1 and at +1, the others at 0
TURN_ACTIONS = {"CarRacing-v3": ((-1.0, 1.0, -1.0), (1.0, 1.0, -1.0))}


# the share of a frame's rows, from the top, that show the world. CarRacing-v3 draws a dashboard in its
# bottom 12 of 96 rows (speed, ABS, steering and gyroscope bars): the steering bar is the action itself,
# so a dream can match the env there by drawing the action token, without moving the view. The action
# figures of dream.action_effect are also reported on the view alone (`*_view`)
VIEW_ROWS = {"CarRacing-v3": 84 / 96}


def view_rows(env_id: str, height: int) -> int:
    """How many rows from the top of a (.., height, width) frame show the world (all but a dashboard)."""
    return int(round(height * VIEW_ROWS.get(env_id, 1.0)))


def turn_actions(env_id: str, dims: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if env_id in TURN_ACTIONS:
        return TURN_ACTIONS[env_id]
    rest = (0.0,) * (dims - 1)
    return (-1.0, *rest), (1.0, *rest)


def skip_start(env_id: str, setting: int = -1) -> int:
    """env.skip_start: -1 -> the env's own (SKIP_START), else the number given."""
    return SKIP_START.get(env_id, 0) if setting < 0 else setting


def random_rest(env_id: str, dims: int, setting: str = "auto") -> tuple[float, ...]:
    """The random policy's per-dimension rest probabilities for `data.random_rest` (see RANDOM_REST):
    "auto" -> the env's own or none; "0" -> none; "p" -> p for every dimension; "p0,p1,.." -> one each."""
    if setting == "auto":
        return RANDOM_REST.get(env_id, ())
    if not setting.strip():
        return ()
    try:
        vals = tuple(float(v) for v in setting.split(","))
    except ValueError:
        msg = f"data.random_rest must be 'auto' or comma-separated numbers, not {setting!r}"
        raise ValueError(msg) from None
    if len(vals) == 1:
        vals = vals * dims
    if len(vals) != dims or not all(0.0 <= v <= 1.0 for v in vals):
        msg = f"data.random_rest {setting!r}: one probability in [0, 1], or {dims} (one per dimension)"
        raise ValueError(msg)
    return vals if any(vals) else ()


def _register() -> None:
    """Our envs are also gymnasium ids: gymnasium.make("MultiCarRacing-v0", num_agents=4) works after
    `import minidreamer4`. The env checker is off: per-agent reward arrays are by design."""
    import gymnasium as gym

    for env_id, target in BUILTIN.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=target, disable_env_checker=True)
    if "MultiCarRacing-single-v0" not in gym.registry:  # one car, a plain gymnasium.Env
        gym.register(
            "MultiCarRacing-single-v0", entry_point="minidreamer4.envs.multi_car_pettingzoo:SingleCarRacing"
        )
    # a trained world model as an env: gymnasium.make("minidreamer4/Dream-v0", run="runs/cpu")
    if "minidreamer4/Dream-v0" not in gym.registry:
        gym.register("minidreamer4/Dream-v0", entry_point="minidreamer4.dream_env:DreamEnv")


_register()


def known_env_ids() -> list[str]:
    return sorted(set(RECOMMENDED) | set(BUILTIN))


def _load(target: str):
    import importlib

    mod, name = target.split(":")
    return getattr(importlib.import_module(mod), name)


def _gym_make(env_id: str, pixels: str):
    """gymnasium.make for any registered id, `module:EnvId` (the module is imported first, as gymnasium
    does) and ALE ids (`ALE/Pong-v5`, once `pip install "minidreamer4[atari]"`). An env whose observations
    are not images is seen through its rendered frames (pixels 'render', or 'auto' with a note)."""
    import importlib

    import gymnasium as gym

    from .adapter import is_image_space

    module, _, name = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        elif name.startswith("ALE/"):
            importlib.import_module("ale_py")
    except ImportError as e:
        hint = ' (pip install "minidreamer4[atari]")' if "ale" in (module or name).lower() else ""
        raise RuntimeError(f"{env_id}: cannot import {e.name or module}{hint}") from e
    if name not in gym.registry:
        raise ValueError(
            f"unknown env id {env_id!r}. Known: {', '.join(known_env_ids())}, any registered gymnasium "
            "id, or module:EnvId (the module registers it when imported)"
        )
    kwargs = {"continuous": True} if name.startswith("CarRacing") else {}
    try:
        env = gym.make(name, **kwargs)
        if pixels == "obs" or (pixels == "auto" and is_image_space(env.observation_space)):
            return env
        if pixels == "auto":
            print(
                f"{env_id}: observations {env.observation_space} are not images; using its rendered "
                "frames (--env.pixels render)",
                flush=True,
            )
        env.close()
        env = gym.make(name, render_mode="rgb_array", **kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise RuntimeError(f"{env_id} needs a dependency that is not installed: {e}") from e
    except gym.error.Error as e:  # no rgb_array render mode, for example
        raise RuntimeError(
            f"{env_id}: its observations are not images and it cannot render frames "
            f"(render_mode='rgb_array'): {e}. minidreamer4 learns from pixels: give the env an "
            "rgb_array render mode or image observations"
        ) from e
    if "rgb_array" not in env.metadata.get("render_modes", []):
        raise RuntimeError(
            f"{env_id}: its observations are not images and it has no rgb_array render mode "
            f"(render modes: {env.metadata.get('render_modes', [])}). minidreamer4 learns from pixels."
        )
    return gym.wrappers.AddRenderObservation(env, render_only=True)


def make_env(
    env_id: str,
    size: int = 64,
    action_repeat: int = 1,
    max_steps: int = 1000,
    action_bins: int = 11,
    agents: int = 2,
    skip: int = -1,
    pixels: str = "auto",
) -> PixelEnv:
    """Makes the env `env_id` wrapped in PixelEnv (MultiPixelEnv for multi-agent envs, with `agents`
    agents). pixels: 'obs' (the observations are images), 'render' (use the rendered frames) or 'auto'
    (rendered frames when the observations are not images). Unknown ids get an error listing the known
    ones."""
    if pixels not in ("auto", "obs", "render"):
        raise ValueError(f"env.pixels must be auto, obs or render, not {pixels!r}")
    if env_id in MULTI_AGENT:
        env = _load(BUILTIN[env_id])(num_agents=agents, max_steps=max_steps * action_repeat)
        return MultiPixelEnv(env, env_id, size, action_repeat, max_steps, action_bins)
    if env_id in BUILTIN:
        env = _load(BUILTIN[env_id])(size=size, max_steps=max_steps * action_repeat)
    else:
        env = _gym_make(env_id, pixels)
    return PixelEnv(
        env,
        env_id,
        size=size,
        action_repeat=action_repeat,
        max_steps=max_steps,
        action_bins=action_bins,
        skip_start=skip_start(env_id, skip),
    )


def make_env_from_config(cfg) -> PixelEnv:
    """Makes the env of an EnvConfig."""
    return make_env(
        cfg.id,
        cfg.size,
        cfg.action_repeat,
        cfg.max_steps,
        cfg.action_bins,
        cfg.agents,
        cfg.skip_start,
        cfg.pixels,
    )


__all__ = [
    "ActionSpec",
    "MultiPixelEnv",
    "PixelEnv",
    "action_to_bins",
    "bins_to_action",
    "from_env_action",
    "to_env_action",
    "known_env_ids",
    "make_env",
    "make_env_from_config",
    "data_source",
    "eval_readout",
    "random_rest",
    "skip_start",
    "turn_actions",
    "view_rows",
]
