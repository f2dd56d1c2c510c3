"""`minidreamer4 play --run DIR`: drive inside the dream with the keyboard.

A window (pygame) shows the dream, upscaled; the arrow keys and space are mapped onto the env's action spec
(CarRacing: left / right steer, up gas, down or space brake; DotTrack: the arrows push the car; other Box
envs: left / right move the first action dimension, up / down the second, space sets the third; discrete
envs: number keys pick the choice). It starts from a held-out real context (`--episode`, `--start`),
dreams with K sampling steps and the KV cache (dream_env.DreamVecEnv), and `r` starts again. With
`--side-by-side` the real env runs beside the dream from the same state with the same keys, so a person
sees where the world model goes wrong.

`--record OUT.gif` (or .mp4, with imageio-ffmpeg) writes the session, and OUT.npz the dreamed frames with
their actions, dreamed rewards and terminations as an episode file in the store's format.
`--keys "right*8,up*4,none*4"` plays a scripted key sequence without a window (keys joined with '+', e.g.
'up+left*3'); with `--window` too, it is drawn in a window (SDL's dummy driver in tests).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from .envs.adapter import ActionSpec, bins_to_action, from_env_action

KEYS = ("left", "right", "up", "down", "space")
# key -> (action dimension, value in [-1, 1]) for Box envs; CarRacing's dimensions: steer, gas, brake
KEYMAPS = {
    "CarRacing-v3": {
        "left": (0, -1.0),
        "right": (0, 1.0),
        "up": (1, 1.0),
        "down": (2, 1.0),
        "space": (2, 1.0),
    },  # noqa: E501
    "DotTrack-v0": {"left": (0, -1.0), "right": (0, 1.0), "up": (1, 1.0), "down": (1, -1.0)},
}


def keymap(env_id: str, spec: ActionSpec) -> dict[str, tuple[int, float]]:
    if env_id in KEYMAPS:
        return KEYMAPS[env_id]
    m = {"left": (0, -1.0), "right": (0, 1.0)}
    if spec.dims > 1:
        m |= {"up": (1, 1.0), "down": (1, -1.0)}
    if spec.dims > 2:
        m["space"] = (2, 1.0)
    return m


def rest_action(spec: ActionSpec) -> np.ndarray:
    """What no key does: the env's no-op (Box: zeros clipped into the box, e.g. CarRacing's no steering,
    no gas, no brake; discrete: the first choice), in [-1, 1]."""
    if spec.kind == "box":
        return from_env_action(np.zeros(spec.dims).clip(spec.low, spec.high), spec)
    return bins_to_action(np.zeros(spec.dims, np.float32), np.asarray(spec.bins, np.float32))


def keys_to_action(pressed: set[str], env_id: str, spec: ActionSpec) -> np.ndarray:
    """Pressed keys ('left', 'up', '3', ...) -> an action in [-1, 1]^dims."""
    a = rest_action(spec).astype(np.float32)
    if spec.kind == "box":
        for k, (dim, val) in keymap(env_id, spec).items():
            if k in pressed and dim < spec.dims:
                a[dim] = val
        return a
    digits = sorted(int(k) for k in pressed if k.isdigit())
    if digits:  # discrete: the number picks the choice of the first dimension
        n = spec.bins[0]
        a[0] = bins_to_action(np.float32(min(digits[-1], n - 1)), np.float32(n))
    return a


def parse_keys(script: str) -> list[set[str]]:
    """'right*8,up+left*2,none' -> one set of pressed keys per step."""
    steps = []
    for part in script.split(","):
        part = part.strip()
        if not part:
            continue
        keys, _, n = part.partition("*")
        pressed = set() if keys == "none" else set(keys.split("+"))
        bad = [k for k in pressed if k not in KEYS and not k.isdigit()]
        if bad:
            raise ValueError(f"unknown keys {bad} in {script!r}: use {', '.join(KEYS)}, digits or none")
        steps += [pressed] * (int(n) if n else 1)
    return steps


def key_help(env_id: str, spec: ActionSpec) -> str:
    if spec.kind != "box":
        return f"keys 0-{min(9, spec.bins[0] - 1)} pick the action, r reset, esc quit"
    names = {"left": "<-", "right": "->", "up": "up", "down": "down", "space": "space"}
    parts = [f"{names[k]} {'+' if v > 0 else '-'}a{d}" for k, (d, v) in keymap(env_id, spec).items()]
    if env_id == "CarRacing-v3":
        parts = ["<- -> steer", "up gas", "down/space brake"]
    return ", ".join(parts) + ", r reset, esc quit"


class _Real:
    """The real env beside the dream: rebuilt at the context's state from its episode's seed and actions."""

    def __init__(self, cfg, store, raw, context: int):
        from .envs import make_env_from_config

        self.env = make_env_from_config(cfg.env)
        k, s = int(raw["ep"][0]), int(raw["start"][0])
        arrays, meta = store.load(k)
        if not self.env.replay(meta["seed"], arrays["act"][: s + context - 1]):
            raise RuntimeError(f"replaying episode {k} ended early")
        self.frame = arrays["obs"][s + context - 1].transpose(1, 2, 0)
        self.done = False

    def step(self, a: np.ndarray) -> np.ndarray:
        if not self.done:
            _, _, term, trunc, _ = self.env.step(a)
            self.done = term or trunc
            self.frame = self.env.frame.transpose(1, 2, 0)
        return self.frame


def play(
    run: str,
    keys: str | None = None,
    window: bool | None = None,
    episode: int | None = None,
    start: int | None = None,
    context: int = 8,
    steps: int | None = None,
    side_by_side: bool = False,
    record: str | None = None,
    scale: int = 6,
    fps: float = 15.0,
    max_steps: int = 10_000,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Plays a dream (module docstring). Returns {'steps', 'fps' (dream steps per second of wall time,
    display included), 'return' (dreamed), 'gif'/'episode' when recording}."""
    from .data import save_episode
    from .dream_env import DreamVecEnv
    from .media import save_gif, upscale

    script = parse_keys(keys) if keys is not None else None
    window = script is None if window is None else window
    dreams = DreamVecEnv(run, 1, context, max_steps, steps, device)
    spec, env_id = dreams.spec, dreams.cfg.env.id
    seed_now = seed

    def reset():
        obs = dreams.reset(seed_now, episode, start)
        real = _Real(dreams.cfg, dreams.sampler.store, dreams.context_raw, context) if side_by_side else None
        return obs[0].cpu().numpy(), real

    frame, real = reset()
    screen = font = None
    if window:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame

        pygame.display.init()  # not pygame.init(): no audio
        pygame.font.init()
        H, W = frame.shape[:2]
        panes = 2 if side_by_side else 1
        screen = pygame.display.set_mode((W * scale * panes + 8 * (panes - 1), H * scale + 40))
        pygame.display.set_caption(f"minidreamer4 play: {run}")
        font = pygame.font.Font(None, 20)
        clock = pygame.time.Clock()
    frames, dreamed, acts, rews, terms = [], [], [], [], []
    t0, n, total, shown_fps, quit_ = time.perf_counter(), 0, 0.0, 0.0, False
    help_line = key_help(env_id, spec)
    while not quit_ and n < max_steps and (script is None or n < len(script)):
        pressed: set[str] = set()
        if window:
            import pygame

            for ev in pygame.event.get():
                if ev.type == pygame.QUIT or (ev.type == pygame.KEYDOWN and ev.key == pygame.K_ESCAPE):
                    quit_ = True
                elif ev.type == pygame.KEYDOWN and ev.key == pygame.K_r:
                    seed_now += 1
                    frame, real = reset()
            if script is None:
                k = pygame.key.get_pressed()
                names = {"left": pygame.K_LEFT, "right": pygame.K_RIGHT, "up": pygame.K_UP}
                names |= {"down": pygame.K_DOWN, "space": pygame.K_SPACE}
                pressed = {name for name, code in names.items() if k[code]}
                pressed |= {str(d) for d in range(10) if k[pygame.K_0 + d]}
        if script is not None:
            pressed = script[n]
        a = keys_to_action(pressed, env_id, spec)
        obs, r, term, trunc, _ = dreams.step(a[None])
        frame = obs[0].cpu().numpy()
        dreamed.append(frame)
        view = [frame]
        if real is not None:
            view.append(real.step(a))
        n += 1
        total += float(r[0])
        acts.append(a)
        rews.append(float(r[0]))
        terms.append(bool(term[0]))
        shown_fps = n / (time.perf_counter() - t0)
        if real is not None:  # a white line between the dream and the real env
            view[1] = np.pad(view[1], ((0, 0), (2, 0), (0, 0)), constant_values=255)
        pane = np.concatenate(view, axis=1)
        frames.append(pane)
        if window:
            import pygame

            img = upscale(pane, scale)
            surf = pygame.surfarray.make_surface(img.transpose(1, 0, 2))
            screen.fill((0, 0, 0))
            screen.blit(surf, (0, 0))
            label = "dream | real env" if real is not None else "dream"
            text = f"{label}   step {dreams.t}   {shown_fps:.1f} fps   reward {total:+.2f}"
            screen.blit(font.render(text, True, (255, 255, 255)), (4, img.shape[0] + 4))
            screen.blit(font.render(help_line, True, (200, 200, 200)), (4, img.shape[0] + 22))
            pygame.display.flip()
            if script is None:
                clock.tick(fps)
    if window:
        import pygame

        pygame.quit()
    out = {"steps": n, "fps": round(shown_fps, 2), "return": round(total, 3)}
    if record:
        path = Path(record)
        video = upscale(np.stack(frames), max(1, 256 // frames[0].shape[0]))
        if path.suffix.lower() == ".mp4":
            try:
                import imageio.v2 as imageio

                imageio.mimsave(path, list(video), fps=int(fps))
            except Exception as e:  # imageio needs the ffmpeg plugin for mp4
                msg = f"writing {path} needs imageio-ffmpeg (pip install imageio-ffmpeg): {e}"
                raise RuntimeError(msg) from e
        else:
            save_gif(path, video, fps=int(fps))
        obs0 = dreams.context_raw["obs"][0, -1]  # the last real context frame starts the episode
        episode_arrays = {
            "obs": np.concatenate([obs0[None], np.stack(dreamed).transpose(0, 3, 1, 2)]),
            "act": np.stack(acts),
            "rew": np.array(rews, np.float32),
            "term": np.array(terms),
            "trunc": np.zeros(len(acts), bool),
        }
        meta = {
            "env_id": env_id,
            "obs_shape": list(dreams.obs_shape),
            "action_spec": spec.to_dict(),
            "policy": "play",
            "dream_of": str(run),
            "context_episode": int(dreams.context_raw["ep"][0]),
            "context_start": int(dreams.context_raw["start"][0]),
            "return": total,
        }
        save_episode(path.with_suffix(".npz"), episode_arrays, meta)
        out |= {"video": str(path), "episode": str(path.with_suffix(".npz"))}
        path.with_suffix(".json").write_text(json.dumps(out))
    return out
