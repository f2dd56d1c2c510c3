"""The command line: `minidreamer4 <command> [--preset NAME] [--section.field VALUE ...]`.

Every command takes the same config flags (see `minidreamer4 <command> --help`); the resolved config is
printed at start and saved in the run folder.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import config as C


def _print_config(cfg: C.RunConfig) -> None:
    print("config:", json.dumps(C.to_dict(cfg), separators=(",", ":")), flush=True)


def cmd_envs(args: argparse.Namespace) -> None:
    from .envs import known_env_ids

    print("\n".join(known_env_ids()))


def cmd_collect(args: argparse.Namespace) -> None:
    from .collect import collect, driver_settings
    from .data import EpisodeStore
    from .envs import data_source, make_env_from_config, random_rest
    from .run import episodes_dir

    cfg = C.config_from_args(args)
    _print_config(cfg)
    out = args.out or str(episodes_dir(cfg))
    env = make_env_from_config(cfg.env)
    rest = random_rest(cfg.env.id, env.action_spec.dims, cfg.data.random_rest)
    policy = data_source(cfg.env.id, args.policy or cfg.data.policy)
    d = cfg.data
    stats = collect(  # multi-agent: races
        env,
        EpisodeStore(out),
        args.episodes,
        policy,
        seed=cfg.seed,
        hold=d.random_hold,
        rest=rest,
        driver=driver_settings(d),
    )
    env.close()
    print(json.dumps({"out": out, **stats}))


def cmd_train_tokenizer(args: argparse.Namespace) -> None:
    from .pipeline import ensure_episodes
    from .train import train_tokenizer

    cfg = C.config_from_args(args)
    _print_config(cfg)
    ensure_episodes(cfg)
    train_tokenizer(cfg)


def cmd_train_dynamics(args: argparse.Namespace) -> None:
    from .train import train_dynamics

    cfg = C.config_from_args(args)
    _print_config(cfg)
    train_dynamics(cfg)


def cmd_dream(args: argparse.Namespace) -> None:
    from .dream import dream_command

    s = dream_command(
        args.run, args.context, args.horizon, args.episodes, args.actions, args.steps, args.seed, args.device
    )
    print(json.dumps(s))


def cmd_play(args: argparse.Namespace) -> None:
    from .play import play

    out = play(
        args.run,
        keys=args.keys,
        window=True if args.window else None,
        episode=args.episode,
        start=args.start,
        context=args.context,
        steps=args.steps,
        side_by_side=args.side_by_side,
        record=args.record,
        scale=args.scale,
        fps=args.fps,
        seed=args.seed,
        device=args.device,
    )
    print(json.dumps(out))


def cmd_train(args: argparse.Namespace) -> None:
    from .pipeline import train_loop

    cfg = C.config_from_args(args)
    _print_config(cfg)
    train_loop(cfg)


def cmd_eval(args: argparse.Namespace) -> None:
    from .envs import eval_readout, make_env_from_config
    from .imagine import actors_for, evaluate_policy
    from .latents import tok_span
    from .run import load_run_config, pick_device
    from .train_agent import load_agent

    cfg = load_run_config(args.run)
    device = pick_device(args.device)
    tok, dyn, heads = load_agent(cfg, device, args.policy)
    env = make_env_from_config(cfg.env)
    readout = eval_readout(cfg.env.id, args.readout or cfg.agent.eval_readout)
    actor = actors_for(env, tok, dyn, heads, tok_span(tok), cfg.dynamics.context, device, readout)
    n = 1 if getattr(env, "num_agents", 0) else min(cfg.agent.eval_envs, args.episodes)
    envs = [env] + [make_env_from_config(cfg.env) for _ in range(n - 1)]  # episodes side by side
    ev = evaluate_policy(envs, actor, args.episodes)
    for e in envs:
        e.close()
    print(json.dumps({"run": str(args.run), "policy": args.policy, "readout": readout, **ev}))


def cmd_demo(args: argparse.Namespace) -> None:
    from .pipeline import demo

    cfg = C.config_from_args(args)
    _print_config(cfg)
    demo(cfg)


def cmd_bench(args: argparse.Namespace) -> None:
    from .bench import format_table, run_bench
    from .run import pick_device, use_bf16

    cfg = C.config_from_args(args)
    if cfg.threads > 0:
        torch_threads(cfg.threads)
    device = pick_device(cfg.device)
    res = run_bench(cfg, device, use_bf16(cfg.bf16, device), steps=args.repeat, compile_models=cfg.compile)
    res = {"bench": "minidreamer4", "preset": args.preset, **res}
    print(format_table(res))
    print(json.dumps(res))


def torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minidreamer4", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("envs", help="list the known environment ids")
    s.set_defaults(fn=cmd_envs)

    s = sub.add_parser("collect", help="collect episodes into an episode store")
    s.add_argument(
        "--episodes", type=int, default=10, help="episodes (multi-agent envs: races, one episode per agent)"
    )
    s.add_argument(
        "--policy",
        default="",
        help="random | explore | driver (the scripted driver of CarRacing-v3 and MultiCarRacing-v0) or a "
        "mix, 'driver:1,explore:1' (default: data.policy)",
    )
    s.add_argument("--out", default="", help="episode store folder (default: <run folder>/episodes)")
    C.add_config_flags(s)
    s.set_defaults(fn=cmd_collect)

    s = sub.add_parser("train-tokenizer", help="train the causal video tokenizer on the episode store")
    C.add_config_flags(s)
    s.set_defaults(fn=cmd_train_tokenizer)

    s = sub.add_parser("train-dynamics", help="train the dynamics model on the frozen tokenizer's latents")
    C.add_config_flags(s)
    s.set_defaults(fn=cmd_train_dynamics)

    s = sub.add_parser("dream", help="dream from held-out real contexts; GIF/PNG of real | dreamed | error")
    s.add_argument("--run", required=True, help="run folder, e.g. runs/cpu")
    s.add_argument("--context", type=int, default=8, help="real frames fed before dreaming")
    s.add_argument("--horizon", type=int, default=16, help="frames to dream")
    s.add_argument("--episodes", type=int, default=4, help="held-out sequences to dream")
    s.add_argument("--actions", default="real", help="real | random | scripted constant, e.g. '0,1,0'")
    s.add_argument("--steps", type=int, default=None, help="sampling steps K (default: the model's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.set_defaults(fn=cmd_dream)

    s = sub.add_parser("play", help="drive inside the dream with the keyboard (or a scripted key sequence)")
    s.add_argument("--run", required=True, help="run folder with tokenizer and dynamics checkpoints")
    s.add_argument("--keys", default=None, help="scripted keys, e.g. 'right*8,up+left*4,none*4' (no window)")
    s.add_argument("--window", action="store_true", help="with --keys: draw the window anyway")
    s.add_argument("--episode", type=int, default=None, help="held-out episode to start from")
    s.add_argument("--start", type=int, default=None, help="first context frame in that episode")
    s.add_argument("--context", type=int, default=8, help="real frames before the dream starts")
    s.add_argument("--steps", type=int, default=None, help="sampling steps K (default: the model's)")
    s.add_argument("--side-by-side", action="store_true", help="the real env beside the dream, same keys")
    s.add_argument("--record", default=None, help="write OUT.gif / OUT.mp4, and OUT.npz (an episode file)")
    s.add_argument("--scale", type=int, default=6, help="window upscaling")
    s.add_argument("--fps", type=float, default=15.0, help="frame rate cap of the window")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")
    s.set_defaults(fn=cmd_play)

    s = sub.add_parser("train", help="the full loop: collect, tokenizer, dynamics, finetune, imagination RL")
    C.add_config_flags(s)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("eval", help="score a trained agent in the real environment")
    s.add_argument("--run", required=True)
    s.add_argument("--episodes", type=int, default=10)
    s.add_argument("--policy", default="rl", choices=["rl", "bc"])
    s.add_argument(
        "--readout",
        choices=["mode", "mean", "sample", "median"],
        default=None,
        help="each dimension's most likely bin, its expected value, a sample or its median bin "
        "(default: agent.eval_readout)",
    )
    s.add_argument("--device", default="auto")
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("bench", help="training / imagination / dream / acting speed and FLOP utilisation")
    s.add_argument("--repeat", type=int, default=10, help="timed steps per figure (median), after warm-up")
    C.add_config_flags(s)
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser("demo", help="the default job: everything that exists, end to end")
    C.add_config_flags(s)
    s.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, RuntimeError) as e:  # user errors: one clear line, no traceback
        if getattr(args, "debug", False):
            raise
        print(f"minidreamer4 {args.command}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
