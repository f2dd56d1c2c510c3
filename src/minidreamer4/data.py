"""The on-disk episode store and the segment sampler.

One `.npz` file per episode, `ep-000042.npz`, holding
    obs   uint8   (T+1, C, H, W)  observations o_0 .. o_T
    act   float32 (T, A)          a_i taken at o_i, in [-1, 1]
    rew   float32 (T,)            r_i received for a_i
    term  bool    (T,)            the step into o_{i+1} terminated the episode
    trunc bool    (T,)            ... or was cut by a time limit
    meta  json string             env id, obs shape, action spec, seed, policy, ...
Files are written to a temporary name and renamed, so a crash never leaves a half episode that looks whole.
Loading validates every file and raises EpisodeError naming the file and the fault; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
_NAME = re.compile(r"^ep-(\d{6,})\.npz$")
_DTYPES = {"obs": np.uint8, "act": np.float32, "rew": np.float32, "term": np.bool_, "trunc": np.bool_}


class EpisodeError(RuntimeError):
    """A stored episode file is unreadable or inconsistent. The message names the file."""


def save_episode(path: str | Path, episode: dict[str, np.ndarray], meta: dict) -> None:
    """Writes one episode atomically (temporary file in the same folder, then os.replace)."""
    path = Path(path)
    arrays = {k: np.ascontiguousarray(episode[k], dtype=_DTYPES[k]) for k in _DTYPES}
    _check_arrays(arrays, str(path))
    meta = {**meta, "format": FORMAT_VERSION, "length": int(len(arrays["act"]))}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_arrays(a: dict[str, np.ndarray], name: str) -> None:
    obs, act = a["obs"], a["act"]
    if obs.ndim != 4:
        raise EpisodeError(f"{name}: obs must be (T+1, C, H, W), got shape {obs.shape}")
    t = len(act)
    if act.ndim != 2:
        raise EpisodeError(f"{name}: act must be (T, A), got shape {act.shape}")
    if len(obs) != t + 1:
        raise EpisodeError(f"{name}: obs has {len(obs)} frames but act has {t} steps (expected T+1 frames)")
    for k in ("rew", "term", "trunc"):
        if a[k].shape != (t,):
            raise EpisodeError(f"{name}: {k} must have shape ({t},), got {a[k].shape}")


def load_episode(path: str | Path, expect: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Reads and validates one episode. `expect` (obs_shape, action_spec, ...) must match the metadata."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in (*_DTYPES, "meta") if k not in z.files]
            if missing:
                raise EpisodeError(f"{path}: missing arrays {missing}")
            arrays = {k: z[k] for k in _DTYPES}  # reading each array checks its CRC
            meta = json.loads(str(z["meta"]))
    except EpisodeError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, UnicodeDecodeError) as e:
        raise EpisodeError(f"{path}: not a readable episode file (truncated or corrupted?): {e}") from e
    for k, dt in _DTYPES.items():
        if arrays[k].dtype != dt:
            raise EpisodeError(f"{path}: {k} has dtype {arrays[k].dtype}, expected {np.dtype(dt)}")
    _check_arrays(arrays, str(path))
    if meta.get("length") != len(arrays["act"]):
        raise EpisodeError(
            f"{path}: metadata says length {meta.get('length')}, arrays hold {len(arrays['act'])}"
        )
    if tuple(meta.get("obs_shape", ())) != arrays["obs"].shape[1:]:
        raise EpisodeError(
            f"{path}: metadata obs_shape {meta.get('obs_shape')} != stored {arrays['obs'].shape[1:]}"
        )
    for k, v in (expect or {}).items():
        if _norm(meta.get(k)) != _norm(v):
            raise EpisodeError(f"{path}: {k} is {meta.get(k)!r}, but the store holds {v!r}")
    return arrays, meta


def _norm(x):  # json round trips turn tuples into lists
    return json.loads(json.dumps(x))


class EpisodeStore:
    """A folder of episode files. All episodes must share env id, obs shape and action spec."""

    KEYS = ("env_id", "obs_shape", "action_spec")

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def indices(self) -> list[int]:
        return sorted(int(m.group(1)) for n in os.listdir(self.root) if (m := _NAME.match(n)))

    def path(self, index: int) -> Path:
        return self.root / f"ep-{index:06d}.npz"

    def __len__(self) -> int:
        return len(self.indices())

    def reference(self) -> dict | None:
        """The (env_id, obs_shape, action_spec) every episode must share: those of the first one."""
        idx = self.indices()
        return None if not idx else {k: load_episode(self.path(idx[0]))[1][k] for k in self.KEYS}

    def add(self, episode: dict[str, np.ndarray], meta: dict) -> Path:
        ref = self.reference()
        if ref is not None:
            for k in self.KEYS:
                if _norm(meta[k]) != _norm(ref[k]):
                    raise EpisodeError(
                        f"{self.root}: new episode has {k}={meta[k]!r}, store holds {ref[k]!r}"
                    )
        idx = self.indices()
        index = (idx[-1] + 1) if idx else 0
        path = self.path(index)
        save_episode(path, episode, {**meta, "index": index})
        return path

    def load(self, index: int) -> tuple[dict[str, np.ndarray], dict]:
        return load_episode(self.path(index), self.reference())

    def stats(self) -> dict:
        lengths, returns = [], []
        for i in self.indices():
            m = load_episode(self.path(i))[1]
            lengths.append(m["length"])
            returns.append(m.get("return", float("nan")))
        return {
            "episodes": len(lengths),
            "steps": int(sum(lengths)),
            "mean_return": float(np.mean(returns)) if returns else float("nan"),
        }


def is_heldout(index: int, holdout_every: int) -> bool:
    """Episode index % holdout_every == 0 is held out (never trained on); holdout_every <= 0 holds none."""
    return holdout_every > 0 and index % holdout_every == 0


class SegmentSampler:
    """Draws (B, T) training segments uniformly over all steps of the store's episodes of one split.

    A segment never crosses an episode boundary. Frame t of a segment comes with the action that LED to it
    (`act[:, t]` = a_{t-1}; `has_act` is False on an episode's first frame), the reward received on arriving
    (`rew`), and whether arriving there ended the episode (`term`). Observations stay uint8 until the model
    converts them. Episodes are held in RAM up to `memory_gb` (the oldest dropped beyond it); new files are
    picked up every `refresh_s` seconds, so episodes appended while training join the pool.
    """

    def __init__(
        self,
        store: EpisodeStore,
        seq_len: int,
        batch: int,
        split: str = "train",
        holdout_every: int = 10,
        memory_gb: float = 4.0,
        seed: int = 0,
        refresh_s: float = 10.0,
    ):
        if split not in ("train", "eval", "all"):
            raise ValueError(f"split must be train, eval or all, got {split!r}")
        self.store, self.seq_len, self.batch, self.split = store, seq_len, batch, split
        self.holdout_every, self.memory_bytes = holdout_every, int(memory_gb * 2**30)
        self.rng = np.random.default_rng(seed)
        self.refresh_s, self._last_refresh = refresh_s, -1e9
        self.episodes: dict[int, dict[str, np.ndarray]] = {}  # index -> arrays, insertion = age order
        self.sources: dict[int, str] = {}  # index -> the policy that collected it (its metadata's "policy")
        self._ref: dict | None = None
        self._seen: set[int] = set()  # indices already considered (loaded, or of the other split)
        self.refresh(force=True)

    def _wanted(self, index: int) -> bool:
        if self.split == "all":
            return True
        return is_heldout(index, self.holdout_every) == (self.split == "eval")

    def refresh(self, force: bool = False) -> int:
        """Loads episodes that appeared since the last call. Returns how many were added."""
        if not force and time.monotonic() - self._last_refresh < self.refresh_s:
            return 0
        self._last_refresh = time.monotonic()
        added = 0
        for i in self.store.indices():
            if i in self._seen or not self._wanted(i):
                continue
            self._seen.add(i)
            if self._ref is None:
                self._ref = self.store.reference()
            arrays, meta = load_episode(self.store.path(i), self._ref)
            self.episodes[i] = arrays
            self.sources[i] = str(meta.get("policy", ""))
            added += 1
        while len(self.episodes) > 1 and self.nbytes() > self.memory_bytes:
            del self.episodes[next(iter(self.episodes))]  # drop the oldest
        return added

    def nbytes(self) -> int:
        return sum(a.nbytes for ep in self.episodes.values() for a in ep.values())

    def num_frames(self) -> int:
        return sum(len(ep["obs"]) for ep in self.episodes.values())

    def sample(self, index: bool = False) -> dict[str, np.ndarray]:
        """A batch of segments; with index, also each segment's episode index `ep` (B,) and first step
        `start` (B,) (a latent cache looks the frames up by them)."""
        self.refresh()
        T = self.seq_len
        keys = [k for k, ep in self.episodes.items() if len(ep["obs"]) >= T]
        if not keys:
            raise RuntimeError(
                f"no {self.split} episode in {self.store.root} has {T} frames or more "
                f"({len(self.episodes)} episodes loaded): collect more data or lower data.seq_len"
            )
        starts = np.array([len(self.episodes[k]["obs"]) - T + 1 for k in keys], np.float64)
        which = self.rng.choice(len(keys), size=self.batch, p=starts / starts.sum())  # uniform over steps
        out = {k: [] for k in ("obs", "act", "has_act", "rew", "term")}
        where = []
        for j in which:
            ep = self.episodes[keys[j]]
            s = int(self.rng.integers(0, len(ep["obs"]) - T + 1))
            where.append((keys[j], s))
            out["obs"].append(ep["obs"][s : s + T])
            # transitions INTO frames s..s+T-1 are steps s-1..s+T-2; step -1 does not exist
            prev = np.arange(s - 1, s + T - 1)
            ok = prev >= 0
            p = prev.clip(0)
            out["act"].append(np.where(ok[:, None], ep["act"][p], 0.0).astype(np.float32))
            out["has_act"].append(ok)
            out["rew"].append(np.where(ok, ep["rew"][p], 0.0).astype(np.float32))
            out["term"].append(ok & ep["term"][p])
        batch = {k: np.stack(v) for k, v in out.items()}
        if index:
            batch["ep"], batch["start"] = (np.array(c, np.int64) for c in zip(*where))
        return batch

    def __iter__(self):
        while True:
            yield self.sample()
