"""minidreamer4: a compact, fast PyTorch implementation of Dreamer 4 (Hafner, Yan, Lillicrap 2025).

`import minidreamer4` registers the built-in envs with gymnasium (gymnasium.make("DotTrack-v0"),
gymnasium.make("MultiCarRacing-v0")). `minidreamer4.DreamEnv(run_dir)` is a trained world model as a
gymnasium env (dream_env.py).
"""

from . import envs as envs  # registers DotTrack-v0 and MultiCarRacing-v0 with gymnasium

__version__ = "0.1.0"


def __getattr__(name: str):  # torch and the models load only when a dream env is asked for
    if name in ("DreamEnv", "DreamVecEnv"):
        from . import dream_env

        return getattr(dream_env, name)
    raise AttributeError(f"module 'minidreamer4' has no attribute {name!r}")
