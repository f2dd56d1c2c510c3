"""The default job, stage by stage. Each stage resumes from its own checkpoint, so running the same command
again continues where it stopped.
In this repository's words, with the equations and departures: docs/method.md section 5."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from . import distributed as dist
from .collect import collect, driver_settings
from .config import RunConfig
from .data import EpisodeStore
from .envs import data_source, eval_readout, make_env_from_config, random_rest
from .run import episodes_dir, pick_device, prepare_run_dir


def start(cfg: RunConfig) -> Path:
    """Joins torchrun's process group (a no-op alone) before anything that only rank 0 may do, so that the
    barriers below hold, then creates the run folder."""
    dist.init(pick_device(cfg.device))
    return prepare_run_dir(cfg)


def ensure_episodes(cfg: RunConfig) -> EpisodeStore:
    """Stage 1: episodes of data.policy (random interaction by default), collected only up to
    data.collect_episodes (under torchrun by rank 0 alone, while the others wait)."""
    store = EpisodeStore(episodes_dir(cfg))
    missing = cfg.data.collect_episodes - len(store)
    if missing > 0 and dist.is_main():
        env = make_env_from_config(cfg.env)
        per_run = getattr(env, "num_agents", 1)  # a multi-agent race stores one episode per agent
        rest = random_rest(cfg.env.id, env.action_spec.dims, cfg.data.random_rest)
        n = -(-missing // per_run)
        d = cfg.data
        source = data_source(cfg.env.id, d.policy)
        stats = collect(
            env, store, n, source, seed=cfg.seed, hold=d.random_hold, rest=rest, driver=driver_settings(d)
        )
        env.close()
        print("collect:", json.dumps(stats), flush=True)
    dist.barrier()
    return store


def demo(cfg: RunConfig) -> dict:
    """What exists of the full loop, end to end: collect -> tokenizer -> dynamics -> dream. Re-running the
    same command resumes: collected episodes and finished stages are kept."""
    from .dream import dream_command
    from .train import train_dynamics, train_tokenizer

    t0 = time.time()
    d = start(cfg)
    store = ensure_episodes(cfg)
    print(f"demo: run folder {d}; episode store {store.root}: {json.dumps(store.stats())}", flush=True)
    train_tokenizer(cfg)
    train_dynamics(cfg)
    dream = dream_command(
        str(d),
        context=8,
        horizon=16,
        episodes=4,
        actions="real",
        steps=None,
        seed=cfg.seed,
        device=cfg.device,
    )
    tok_eval = last_row(d, "tokenizer/eval")
    summary = {
        "run": str(d),
        "minutes": round((time.time() - t0) / 60, 1),
        "episodes": len(store),
        "tokenizer_heldout_psnr": round(tok_eval["psnr"], 2),
        **{k: v for k, v in dream.items() if k.endswith(("h1", "h4", "h16"))},
        "recon_gif": str(d / "media" / "tokenizer_recon.gif"),
        "dream_gif": dream["gif"],
    }
    print("\ndemo summary")
    for k, v in summary.items():
        print(f"  {k:<28} {v}")
    (d / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def last_row(run: Path, stage: str) -> dict:
    rows = [json.loads(x) for x in open(run / "metrics.jsonl")]
    return [r for r in rows if r["stage"] == stage][-1]


# ----------------------------------------------------------------------------------------------------
# the full loop (METHOD.md 4): collect -> tokenizer -> dynamics -> [finetune -> imagination RL -> evaluate
# -> collect with the policy] x iterations. Each stage resumes; loop.json records finished iterations.


class _Timer:
    """Wall time per stage, accumulated across resumed runs in timings.json: `with timer("stage"): ...`."""

    def __init__(self, path: Path):
        self.path = path
        self.t = json.loads(path.read_text()) if path.exists() else {}
        self.name = ""

    def __call__(self, name: str) -> _Timer:
        self.name = name
        return self

    def __enter__(self) -> None:
        self.t0 = time.time()

    def __exit__(self, *exc) -> None:
        self.t[self.name] = self.t.get(self.name, 0.0) + time.time() - self.t0
        if dist.is_main():
            self.path.write_text(json.dumps(self.t, indent=2))


def record_episode(env, policy, seed: int, max_frames: int = 300, with_actions: bool = False):
    """Frames (T, H, W, 3) uint8 of one episode of `policy`, for a GIF. In a multi-agent env `policy` is
    one policy per agent and the frames show every agent's view side by side."""
    import numpy as np

    if isinstance(policy, list):
        from .collect import run_multi_episode

        eps = run_multi_episode(env, policy, seed)
        T = min(max_frames, max(len(ep["obs"]) for ep in eps))
        views = [np.concatenate([ep["obs"], ep["obs"][-1:].repeat(T, 0)])[:T] for ep in eps]
        return np.concatenate(views, axis=-1).transpose(0, 2, 3, 1)
    obs = env.reset(seed=seed)
    if hasattr(policy, "reset"):
        policy.reset()
    frames, acts, done = [env.frame], [], False
    while not done and len(frames) < max_frames:
        acts.append(policy(obs))
        obs, _, term, trunc, _ = env.step(acts[-1])
        frames.append(env.frame)
        done = term or trunc
    return (
        (np.stack(frames).transpose(0, 2, 3, 1), np.stack(acts))
        if with_actions
        else np.stack(frames).transpose(0, 2, 3, 1)
    )


@torch.no_grad()
def agent_beside_dream(env, actor, tok, dyn, span: int, seed: int, context: int = 8, max_frames: int = 160):
    """Frames (T, H, 2W, 3) uint8: the agent driving in the real env (left) beside the world model's dream
    of the same episode (right): the first `context` real frames, then the agent's own actions dreamed open
    loop (K sampling steps, KV cache). Where the two drift apart, the agent trained on a dream that was not
    the env. Observations and frames are the same size here (the env's `frame` is what the agent sees)."""
    import numpy as np

    from .latents import encode_stream
    from .media import to_uint8_hwc

    # (T+1, H, W, 3) frames, (T, A) actions
    obs_frames, acts = record_episode(env, actor, seed, max_frames, with_actions=True)
    dev = next(dyn.parameters()).device
    C = min(context, len(acts))
    real = torch.from_numpy(obs_frames).permute(0, 3, 1, 2)[None].to(dev)  # (1, T+1, C, H, W) uint8
    z = encode_stream(tok, real[:, :C], span)
    act = torch.from_numpy(acts).float()[None].to(dev)  # act[t] leads from frame t to frame t+1
    prev = torch.cat([torch.zeros_like(act[:, :1]), act[:, : C - 1]], 1)  # the action that led to each frame
    has = torch.arange(C, device=dev)[None] > 0
    fut = act[:, C - 1 :]
    dz = dyn.dream(z, prev, has, fut)
    dreamed = tok.decode_long(torch.cat([z, dz], 1), span).clamp(0, 1)[0]
    dream = np.concatenate([obs_frames[:C], to_uint8_hwc(dreamed[C:])])[: len(obs_frames)]
    return np.concatenate([obs_frames, dream], axis=2)


def other_readouts(mode: str, n: int) -> list[str]:
    """The readouts the final RL policy is scored with besides `mode` (agent.eval_other_readouts)."""
    if not 0 <= n <= 2:
        raise ValueError(f"agent.eval_other_readouts must be 0, 1 or 2, not {n}")
    return [r for r in ("mode", "mean", "sample") if r != mode][:n]


def train_loop(cfg: RunConfig, progress: bool = True) -> dict:
    import numpy as np

    from .collect import parse_sources, random_policy, source_policy
    from .imagine import READOUTS, actors_for, evaluate_policy
    from .latents import tok_span
    from .media import save_gif, upscale
    from .report import write_report
    from .run import Logger
    from .train import train_dynamics, train_tokenizer
    from .train_agent import load_agent, train_finetune, train_imagination

    # the loop scores the trained policies in one readout (agent.eval_readout) and, at the end, RL in up to
    # two others of imagine.READOUTS (mode, mean, sample; each costs an evaluation). Checked before training
    mode = eval_readout(cfg.env.id, cfg.agent.eval_readout)
    if mode not in READOUTS:
        raise ValueError(f"agent.eval_readout must be one of {READOUTS}, not {mode!r}")
    others = other_readouts(mode, cfg.agent.eval_other_readouts)
    t0 = time.time()
    d = start(cfg)
    timer = _Timer(d / "timings.json")
    with timer("collect_random"):
        store = ensure_episodes(cfg)
    with timer("tokenizer"):
        train_tokenizer(cfg, progress)
    with timer("dynamics"):
        train_dynamics(cfg, progress)
    loop_path = d / "loop.json"
    loop = json.loads(loop_path.read_text()) if loop_path.exists() else {"iteration": 0, "evals": []}
    device = pick_device(cfg.device)
    env = make_env_from_config(cfg.env)
    a = cfg.agent

    n_agents = getattr(env, "num_agents", 0)  # multi-agent envs: one shared policy drives every agent

    def bar(label: str) -> str | None:  # a progress bar's label, or None for no bar
        return label if progress else None

    def actor(policy: str, readout: str = "sample", seed: int = 0):
        tok, dyn, heads = load_agent(cfg, device, policy)
        return actors_for(env, tok, dyn, heads, tok_span(tok), cfg.dynamics.context, device, readout, seed)

    # the agent plays its evaluation episodes side by side in agent.eval_envs instances of the env (made
    # on first use); other policies, and multi-agent envs, play one episode at a time in the first
    eval_envs = [env]

    def envs_for_eval() -> list:
        while not n_agents and len(eval_envs) < min(a.eval_envs, a.eval_episodes):
            eval_envs.append(make_env_from_config(cfg.env))
        return eval_envs

    def random_policies(seed: int):
        rngs = [np.random.default_rng([seed, k]) for k in range(max(n_agents, 1))]
        pols = [random_policy(env, r) for r in rngs]
        return pols if n_agents else pols[0]

    def collect_with(it: int) -> None:  # iteration it's RL policy adds its episodes to the store
        with timer("collect_agent"):
            collect(
                env,
                store,
                a.collect_episodes,
                actor("rl", seed=100 + it),
                seed=cfg.seed + 1000 * (it + 1),
                progress=progress,
                policy_name=f"agent-{it + 1}",
                envs=envs_for_eval(),
            )

    for it in range(loop["iteration"], a.iterations):
        # a run resumed with more iterations than it had: the last one's policy collects now (below, the
        # loop collects only when another iteration follows)
        if it > 0 and loop.get("collected", it) < it and dist.is_main():
            collect_with(it - 1)
            loop = {**loop, "collected": it}
            loop_path.write_text(json.dumps(loop, indent=2))
        dist.barrier()
        with timer("finetune"):
            train_finetune(cfg, scale=it + 1, progress=progress)
        with timer("imagination"):
            train_imagination(cfg, scale=it + 1, progress=progress)
        if not dist.is_main():  # rank 0 evaluates and collects alone; the others wait for the new data
            dist.barrier()
            loop = {**loop, "iteration": it + 1}
            continue
        last = it + 1 == a.iterations
        ev, clone = {}, {}
        if last or a.eval_every_iteration:
            with timer("eval"):
                ev = evaluate_policy(
                    envs_for_eval(), actor("rl", mode, seed=it), a.eval_episodes, desc=bar("eval")
                )
                # the clone this iteration's RL started from (see AgentConfig.eval_clone), on the same seeds
                clone = (
                    evaluate_policy(envs_for_eval(), actor("bc", mode), a.eval_episodes, desc=bar("eval BC"))
                    if a.eval_clone
                    else {}
                )
            steps = store.stats()["steps"]
            logger = Logger(d, cfg, cfg.wandb)
            logger.log(
                "loop/eval",
                it + 1,
                {"return_mean": ev["return_mean"], "return_std": ev["return_std"], "env_steps": steps}
                | ({"clone_return_mean": clone["return_mean"]} if clone else {}),
            )
            logger.close()
            print(
                f"loop iteration {it + 1}/{a.iterations}: real-env return "
                f"({mode}) {ev['return_mean']:.2f} "
                f"+- {ev['return_std']:.2f} ({a.eval_episodes} episodes), {steps} env steps stored"
                + (f"; per agent {ev['return_per_agent']}" if "return_per_agent" in ev else "")
                + (f"; its clone {clone['return_mean']:.2f} +- {clone['return_std']:.2f}" if clone else ""),
                flush=True,
            )
        # (ours) the policy collects only when another iteration will train on its episodes: the last
        # iteration's collection (5 episodes, ~1 min of make demo on CarRacing) was never read
        if not last:
            collect_with(it)
        clones = loop.get("clones", []) + ([{"iteration": it + 1, **clone}] if clone else [])
        evals = loop["evals"] + ([{"iteration": it + 1, **ev}] if ev else [])
        loop = {"iteration": it + 1, "evals": evals, "clones": clones, "collected": it + (not last)}
        loop_path.write_text(json.dumps(loop, indent=2))
        dist.barrier()
    if not dist.is_main():
        env.close()
        return {}

    # final comparison on the same fixed seeds: random, behaviour-cloned, and imagination-trained policies
    # (the last two in `mode`), and the trained policy in the other readouts
    with timer("eval"):
        clones = loop.get("clones", [])
        last_clone = clones[-1] if clones and clones[-1]["iteration"] == a.iterations else None
        evals = {
            "random": evaluate_policy(env, random_policies(0), a.eval_episodes, desc=bar("eval random")),
            # the last iteration's clone, scored by the loop already when agent.eval_clone is on
            "behaviour cloning": {k: v for k, v in last_clone.items() if k != "iteration"}
            if last_clone
            else evaluate_policy(envs_for_eval(), actor("bc", mode), a.eval_episodes, desc=bar("eval BC")),
            "imagination RL": loop["evals"][-1] if loop["evals"] else {},
        }
        sources = [name for name, w in parse_sources(data_source(cfg.env.id, cfg.data.policy)) if w > 0]
        if "driver" in sources:  # the demonstrator, as it collected (noise, hold); one per car
            rngs = [
                np.random.default_rng([cfg.seed, 2, *([k] if n_agents else [])])
                for k in range(max(n_agents, 1))
            ]
            drivers = [
                source_policy("driver", env, r, driver={**driver_settings(cfg.data), "car": k})
                for k, r in enumerate(rngs)
            ]
            driver = drivers if n_agents else drivers[0]
            evals["driver"] = evaluate_policy(env, driver, a.eval_episodes, desc=bar("eval driver"))
        for other in others if loop["evals"] else []:
            evals[f"imagination RL {other}"] = evaluate_policy(
                envs_for_eval(),
                actor("rl", other, seed=a.iterations),
                a.eval_episodes,
                desc=bar(f"eval RL {other}"),
            )
        frames = record_episode(env, actor("rl", mode), seed=10_000)
        if not n_agents:  # single-agent envs: the agent beside the dream of its own actions
            tok, dyn, heads = load_agent(cfg, device, "rl")
            beside = agent_beside_dream(
                env,
                actors_for(env, tok, dyn, heads, tok_span(tok), cfg.dynamics.context, device, mode),
                tok,
                dyn,
                tok_span(tok),
                seed=10_000,
                context=min(8, cfg.dynamics.context),
            )
            save_gif(
                d / "media" / "agent_vs_dream.gif", upscale(beside, max(1, 128 // beside.shape[1])), fps=15
            )
    save_gif(d / "media" / "agent_episode.gif", upscale(frames, max(1, 128 // frames.shape[1])), fps=15)
    for e in eval_envs:  # env itself is the first
        e.close()
    evals = {k: v for k, v in evals.items() if v}
    summary = {
        "run": str(d),
        "minutes": round((time.time() - t0) / 60, 1),
        "episodes": len(store),
        "env_steps": store.stats()["steps"],
        "eval_mode": mode,
        **{f"return_{k.replace(' ', '_')}": round(v["return_mean"], 2) for k, v in evals.items()},
        **{f"return_std_{k.replace(' ', '_')}": round(v["return_std"], 2) for k, v in evals.items()},
        **{
            f"return_per_agent_{k.replace(' ', '_')}": v["return_per_agent"]
            for k, v in evals.items()
            if "return_per_agent" in v
        },
    }
    report = write_report(d, summary, evals, timer.t, loop)
    (d / "summary.json").write_text(json.dumps(summary, indent=2))
    # every episode's return per policy: the seeds are the same for all, so policies compare episode by
    # episode (one track's difficulty moves every policy's return alike)
    (d / "evals.json").write_text(json.dumps(evals, indent=2))
    print("\nsummary")
    for k, v in summary.items():
        print(f"  {k:<32} {v}")
    print(f"  {'report':<32} {report}")
    return summary
