"""The ways people use a trained world model: drive inside the dream (`play`), the dream as a gymnasium env
(DreamEnv, DreamVecEnv), and any pixel env (module:EnvId, rendered frames, the PettingZoo and single-car
forms of MultiCarRacing)."""

import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from minidreamer4.config import replace


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny DotTrack world model with finetuned agent heads (rewards and terminations for DreamEnv)."""
    from minidreamer4.config import preset
    from minidreamer4.pipeline import ensure_episodes
    from minidreamer4.train import train_dynamics, train_tokenizer
    from minidreamer4.train_agent import train_finetune

    cfg = preset("tiny")
    cfg.runs_dir = str(tmp_path_factory.mktemp("use") / "runs")
    cfg = replace(cfg, **{"tok_train.steps": 10, "dyn_train.steps": 10, "ft_train.steps": 5})
    ensure_episodes(cfg)
    train_tokenizer(cfg, progress=False)
    train_dynamics(cfg, progress=False)
    train_finetune(cfg, progress=False)
    return os.path.join(cfg.runs_dir, cfg.name)


def test_import_registers_the_builtin_envs():
    code = "import gymnasium as g, minidreamer4; g.make('DotTrack-v0').reset(seed=0); print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_dream_env_passes_check_env_and_is_deterministic(tiny_run):
    from gymnasium.utils.env_checker import check_env

    import minidreamer4

    env = gym.make("minidreamer4/Dream-v0", run=tiny_run, context=3, max_steps=6).unwrapped
    check_env(env)
    assert env.observation_space.shape == (16, 16, 3) and env.action_space.shape == (2,)
    runs = []
    for _ in range(2):  # the same seed and actions: the same dream, rewards included
        obs, info = env.reset(seed=3)
        out = [obs]
        for _ in range(6):
            obs, r, term, trunc, _ = env.step(np.array([1.0, -0.5], np.float32))
            out += [obs, np.float32(r)]
        runs.append(out)
        assert trunc and isinstance(r, float)
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
    obs, info = env.reset(seed=0, options={"episode": 0, "start": 5})
    assert info == {"episode": 0, "start": 5}
    # the batched form: N dreams in one call
    venv = minidreamer4.DreamVecEnv(tiny_run, num_envs=3, context=3)
    o = venv.reset(seed=0)
    assert o.shape == (3, 16, 16, 3) and o.dtype == torch.uint8
    o, r, term, trunc, _ = venv.step(torch.zeros(3, 2))
    assert o.shape == (3, 16, 16, 3) and r.shape == term.shape == trunc.shape == (3,)


def world_model_copy(run, dst):
    """A new run folder holding `run`'s episodes, config, tokenizer and dynamics checkpoints (no agent)."""
    import shutil

    (dst / "checkpoints").mkdir(parents=True)
    for f in ("tokenizer.pt", "dynamics.pt"):
        shutil.copy(os.path.join(run, "checkpoints", f), dst / "checkpoints" / f)
    shutil.copytree(os.path.join(run, "episodes"), dst / "episodes")
    shutil.copy(os.path.join(run, "config.json"), dst / "config.json")
    return dst


def test_frame_reward_input_runs_through_finetune_imagination_and_the_dream_env(tiny_run, tmp_path):
    """agent.reward_input = "frame" end to end: finetune trains the frame head, imagination and the dream
    env read their rewards from it (a head blind to the action)."""

    from minidreamer4.run import load_run_config
    from minidreamer4.train_agent import load_agent, train_finetune, train_imagination

    dst = world_model_copy(tiny_run, tmp_path / "frame")
    cfg = replace(load_run_config(dst), **{"agent.reward_input": "frame", "rl_train.steps": 2})
    (dst / "config.json").write_text(json.dumps(__import__("dataclasses").asdict(cfg)))
    train_finetune(cfg, progress=False)
    train_imagination(cfg, progress=False)
    _, _, heads = load_agent(cfg, "cpu", "rl")
    assert heads.frame_reward is not None
    metrics = [json.loads(x) for x in open(dst / "metrics.jsonl")]
    assert any("frame_reward_loss" in m for m in metrics)
    import minidreamer4

    venv = minidreamer4.DreamVecEnv(str(dst), num_envs=2, context=3)
    venv.reset(seed=0)
    _, r, _, _, _ = venv.step(torch.zeros(2, 2))
    assert r.shape == (2,) and torch.isfinite(r).all()
    with pytest.raises(ValueError, match="reward_input"):
        load_agent(replace(cfg, **{"agent.reward_input": "pixels"}), "cpu")


def test_play_headless_records_a_gif_and_an_episode(tiny_run, tmp_path):
    from minidreamer4.data import load_episode
    from minidreamer4.envs.adapter import ActionSpec
    from minidreamer4.play import keys_to_action, parse_keys

    car = ActionSpec("box", (11, 11, 11), (-1.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert np.allclose(keys_to_action({"left", "up"}, "CarRacing-v3", car), [-1, 1, -1])  # gas, no brake
    assert np.allclose(keys_to_action(set(), "CarRacing-v3", car), [0, -1, -1])  # nothing pressed: no-op
    assert np.allclose(keys_to_action({"space"}, "CarRacing-v3", car), [0, -1, 1])  # brake
    assert keys_to_action({"3"}, "x", ActionSpec("discrete", (6,), start=(0,)))[0] == pytest.approx(0.2)
    assert parse_keys("right*2,up+left,none") == [{"right"}, {"right"}, {"up", "left"}, set()]
    with pytest.raises(ValueError, match="unknown keys"):
        parse_keys("jump*2")
    out = tmp_path / "play.gif"
    r = subprocess.run(
        [sys.executable, "-m", "minidreamer4", "play", "--run", tiny_run, "--keys", "right*4,up*2,none*2",
         "--context", "3", "--side-by-side", "--record", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["steps"] == 8 and out.exists() and res["fps"] > 0
    ep, meta = load_episode(out.with_suffix(".npz"))
    assert ep["obs"].shape == (9, 3, 16, 16) and ep["act"].shape == (8, 2) and meta["policy"] == "play"
    assert np.allclose(ep["act"][:4], [1.0, 0.0]) and np.allclose(ep["act"][4:6], [0.0, 1.0])


def test_play_window_with_the_dummy_driver(tiny_run, monkeypatch):
    from minidreamer4.play import play

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    res = play(tiny_run, keys="left*3,space*2", window=True, context=3)
    assert res["steps"] == 5


def test_rendered_frames_for_non_image_envs_and_module_ids():
    from minidreamer4.envs import make_env

    env = make_env("CartPole-v1", size=32, max_steps=5)  # observations are 4 numbers: frames are rendered
    obs = env.reset(seed=0)
    assert obs.shape == (3, 32, 32) and env.action_spec.kind == "discrete"
    first = env.frame.copy()
    for _ in range(5):
        obs, r, term, trunc, _ = env.step(np.array([1.0]))
    assert not np.array_equal(first, env.frame)  # the cart moved
    env = make_env("minidreamer4.envs.dottrack:DotTrack-v0", size=16, max_steps=3)  # module:EnvId
    assert env.reset(seed=0).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="module:EnvId"):
        make_env("NoSuchEnv-v9")
    with pytest.raises(RuntimeError, match="cannot import"):
        make_env("no_such_module:Foo-v0")
    with pytest.raises(ValueError, match="env.pixels"):
        make_env("CartPole-v1", pixels="maybe")


def test_an_env_without_images_or_rendering_says_what_to_do():
    from gymnasium import spaces

    from minidreamer4.envs import make_env

    class Blind(gym.Env):
        observation_space = spaces.Box(-1, 1, (3,))
        action_space = spaces.Discrete(2)
        metadata = {"render_modes": []}

        def __init__(self, render_mode=None):
            if render_mode is not None:
                raise gym.error.Error(f"unsupported render mode {render_mode}")

    gym.register("BlindTest-v0", entry_point=Blind)
    with pytest.raises(RuntimeError, match="not images.*render"):
        make_env("BlindTest-v0")


def test_multi_car_racing_as_pettingzoo_and_single_car_gymnasium():
    pytest.importorskip("pettingzoo")
    from gymnasium.utils.env_checker import check_env
    from pettingzoo.test import parallel_api_test

    from minidreamer4.envs.multi_car_pettingzoo import parallel_env

    parallel_api_test(parallel_env(2, max_steps=40), num_cycles=60)
    env = parallel_env(3, max_steps=5)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"car_0", "car_1", "car_2"} and obs["car_1"].shape == (96, 96, 3)
    check_env(gym.make("MultiCarRacing-single-v0", max_steps=20).unwrapped)


def _dream_env_first_step(tiny_run, dst, over: dict):
    """A copy of tiny_run whose saved config carries `over`; the dream env on it, reset and stepped once:
    (the env, its first dreamed frames)."""
    import shutil

    import minidreamer4
    from minidreamer4.run import load_run_config

    shutil.copytree(tiny_run, dst)
    cfg = replace(load_run_config(dst), **over)
    (dst / "config.json").write_text(json.dumps(__import__("dataclasses").asdict(cfg)))
    venv = minidreamer4.DreamVecEnv(str(dst), num_envs=2, context=3)
    venv.reset(seed=0)
    return venv, venv.step(torch.ones(2, 2))[0]


def test_the_dream_env_dreams_with_the_agent_guidance_not_the_dynamics_one(tiny_run, tmp_path):
    """agent.imagine_guidance sets the action guidance of the dreams agents are trained in (the dream env and
    imagination RL), whatever dynamics.action_guidance shows people: two runs that differ only in the
    latter dream the same."""
    from minidreamer4.run import load_run_config
    from minidreamer4.train_agent import dreaming_config

    frames = []
    for w in (1.0, 3.0):
        over = {"dynamics.action_guidance": w, "agent.imagine_guidance": 1.0}
        venv, first = _dream_env_first_step(tiny_run, tmp_path / f"w{w:g}", over)
        assert load_run_config(tmp_path / f"w{w:g}").dynamics.action_guidance == w
        assert dreaming_config(load_run_config(tmp_path / f"w{w:g}")).dynamics.action_guidance == 1.0
        assert venv.dyn.cfg.action_guidance == 1.0
        frames.append(first)
    assert torch.equal(frames[0], frames[1])


def test_the_dream_env_samples_with_the_agent_steps_when_set(tiny_run, tmp_path):
    """agent.imagine_steps sets the sampling steps K of the dreams agents are trained in: two runs that
    differ only in dynamics.sample_steps dream the same with it set; unset (0), the dynamics' own K."""
    from minidreamer4.run import load_run_config
    from minidreamer4.train_agent import dreaming_config

    frames = []
    for k in (1, 4):
        over = {"dynamics.sample_steps": k, "agent.imagine_steps": 2}
        venv, first = _dream_env_first_step(tiny_run, tmp_path / f"k{k}", over)
        cfg = replace(load_run_config(tmp_path / f"k{k}"), **{"agent.imagine_steps": 0})
        assert dreaming_config(cfg).dynamics.sample_steps == k
        assert venv.dyn.cfg.sample_steps == 2
        frames.append(first)
    assert torch.equal(frames[0], frames[1])


def test_bench_dream_reward_branches_the_same_state_for_both_policies(tiny_run):
    """benchmarks/bench_dream_reward.py on the tiny DotTrack run (no imagination checkpoint: the RL policy is
    the BC one): both branches start from the replayed state with the same noise, so the env, the head on
    the real frames and the head in the dream pay both policies the same."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, os.path.join(root, "benchmarks", "bench_dream_reward.py"), "--run", tiny_run]
    cmd += ["--seeds", "1", "--starts", "4,8", "--horizon", "3"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["states"] == 2 and out["horizon"] == 3
    assert (
        out["env_rl_minus_bc"] == 0
        and out["head_real_rl_minus_bc"] == 0
        and out["head_dream_rl_minus_bc"] == 0
    )
    assert np.isfinite(out["bc_head_dream"]) and out["imagine_guidance"] == 1.0


def test_bench_dream_reward_reads_the_real_frames_through_the_acting_window(tiny_run):
    """head_on_real feeds the real frames through the sliding window as the actor does: the reward of the
    last frame does not change when a frame older than the window changes, but does when one inside it
    does (one causal pass over all frames would let every frame see them all)."""
    import importlib.util

    from minidreamer4.run import load_run_config
    from minidreamer4.train_agent import load_agent

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "benchmarks", "bench_dream_reward.py")
    spec = importlib.util.spec_from_file_location("bdr", path)
    bdr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bdr)
    _tok, dyn, heads = load_agent(load_run_config(tiny_run), "cpu", "bc")
    W, T = 3, 8  # (1, T, N_l, d_b) frames, window 3
    g = torch.Generator().manual_seed(0)
    tc = _tok.cfg
    z = torch.rand(1, T, tc.latents, tc.bottleneck, generator=g) * 2 - 1  # in the tanh range
    A = len(dyn.action_bins)
    act = torch.rand(1, T, A, generator=g) * 2 - 1

    def last(zz):
        torch.manual_seed(1)  # the same context noise in every call
        return bdr.head_on_real(dyn, heads, zz, act, W, W)[-1].item()

    old, new_in = z.clone(), z.clone()
    old[:, 0] = -old[:, 0]  # frame 0: far outside the last frame's window
    new_in[:, T - 2] = -new_in[:, T - 2]  # inside it
    assert last(old) == pytest.approx(last(z), abs=1e-6)
    assert last(new_in) != pytest.approx(last(z), abs=1e-6)


def test_bench_dream_reward_offset_acts_on_the_env_and_the_dream(tiny_run):
    """bench_dream_reward.py --vs offset:D=X: the second branch is BC with X added to action dimension D;
    from the same state and noise the env and the dream then see other actions (the pair differs), while
    an offset of 0 leaves the two branches equal."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, os.path.join(root, "benchmarks", "bench_dream_reward.py"), "--run", tiny_run]
    cmd += ["--seeds", "1", "--starts", "4", "--horizon", "3"]
    outs = {}
    for x in ("0.0", "1.0"):
        r = subprocess.run(cmd + ["--vs", f"offset:0={x}"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        outs[x] = json.loads(r.stdout.strip().splitlines()[-1])
        assert outs[x]["vs"] == f"offset:0={x}"
    assert outs["0.0"]["env_rl_minus_bc"] == 0 and outs["0.0"]["head_dream_rl_minus_bc"] == 0
    assert outs["1.0"]["env_rl_minus_bc"] != 0 and outs["1.0"]["head_dream_rl_minus_bc"] != 0
    # the gain built up step by step: H entries, all 0 for the equal branches, summing to the totals' gap
    for k in ("env", "head_real", "head_dream"):
        assert outs["0.0"][f"{k}_rl_minus_bc_cumulative"] == [0.0, 0.0, 0.0]
        gain = outs["1.0"][f"{k}_rl_minus_bc_cumulative"]
        assert len(gain) == 3 and gain[-1] == pytest.approx(outs["1.0"][f"{k}_rl_minus_bc"], abs=2e-3)


def test_rl_from_clone_restarts_each_iteration_and_still_resumes(tiny_run, tmp_path, capsys):
    """agent.rl_from_clone: a later loop iteration's RL starts from its own clone (the earlier
    iteration's heads kept aside), while re-running the same iteration resumes it; without the flag the
    later iteration resumes the earlier policy."""

    from minidreamer4.run import load_checkpoint, load_run_config
    from minidreamer4.train_agent import train_finetune, train_imagination

    for flag in (True, False):
        dst = world_model_copy(tiny_run, tmp_path / f"clone_{flag}")
        over = {"agent.rl_from_clone": flag, "rl_train.steps": 2, "ft_train.steps": 2}
        cfg = replace(load_run_config(dst), **over)
        train_finetune(cfg, progress=False)
        train_imagination(cfg, scale=1, progress=False)
        capsys.readouterr()
        train_imagination(cfg, scale=2, progress=False)
        out = capsys.readouterr().out
        ck = load_checkpoint(dst / "checkpoints" / "imagination.pt")
        assert ck["step"] == 4 and ck["scale"] == 2
        kept = dst / "checkpoints" / "imagination_it1.pt"
        if flag:  # iteration 2 trained its full budget from the clone; iteration 1's heads kept aside
            assert "resuming" not in out and load_checkpoint(kept)["step"] == 2
            train_imagination(cfg, scale=2, progress=False)  # the same iteration again: it resumes
            assert "imagination: resuming from step 4" in capsys.readouterr().out
        else:
            assert "imagination: resuming from step 2" in out and not kept.exists()


def test_finetune_without_the_agents_own_episodes_clones_nothing_of_them(tiny_run, tmp_path):
    """agent.bc_own = False through the finetune stage: on a store whose episodes all came from the agent
    the BC loss is zero on every logged batch (training and held out) while the reward head learns."""
    from minidreamer4.data import EpisodeStore, load_episode, save_episode
    from minidreamer4.run import load_run_config
    from minidreamer4.train_agent import train_finetune

    dst = world_model_copy(tiny_run, tmp_path / "own")
    store = EpisodeStore(dst / "episodes")
    for i in store.indices():  # relabel every episode as the loop's own
        arrays, meta = load_episode(store.path(i))
        save_episode(store.path(i), arrays, {**meta, "policy": f"agent-{1 + i % 2}"})
    over = {"agent.bc_own": False, "ft_train.steps": 3, "ft_train.log_every": 1, "ft_train.eval_every": 1}
    train_finetune(replace(load_run_config(dst), **over), progress=False)
    rows = [json.loads(x) for x in open(dst / "metrics.jsonl")]
    ft = [r for r in rows if r["stage"] in ("finetune/train", "finetune/eval")]
    assert {r["stage"] for r in ft} == {"finetune/train", "finetune/eval"}
    assert all(r["bc_loss"] == 0.0 and r["reward_loss"] > 0.0 for r in ft)


def test_bench_action_effect_on_the_tiny_run(tiny_run):
    """benchmarks/bench_action_effect.py on the tiny DotTrack run reports every figure, and the env replay
    rebuilds the stored frames exactly (the env's action effect is measured on the real states)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, os.path.join(root, "benchmarks", "bench_action_effect.py"), "--run", tiny_run]
    cmd += ["--contexts", "4", "--context", "3", "--horizon", "4", "--turn-steps", "3"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["horizons"] == [1, 4] and out["replay_max_abs_diff"] == 0
    keys = (
        "latent_ratio",
        "pixel_ratio",
        "pixel_err_repeat_last",
        "env_effect",
        "reproduced",
        "motion_kept",
        "motion_agree",
    )
    for key in keys:
        assert set(out[key]) == {"h1", "h4"} and all(np.isfinite(v) for v in out[key].values()), key
    assert 0.0 <= out["turn_right_way"] <= 1.0 and len(out["turn_right_way_per_step"]) == 3
    assert not any(k.endswith("_view") for k in out)  # DotTrack has no dashboard
    assert out["latent_err_mean_h1"] > 0 and out["latent_err_copy_h1"] > 0


def test_motion_figures_tell_a_frozen_dream_from_a_moving_one():
    """dream._motion_figures: a dream that shows the real (reconstructed) frames keeps all of their
    step-to-step motion, one that repeats the last context frame keeps none, one that moves half as far
    each step keeps a quarter (squared error)."""
    from minidreamer4.dream import _motion_figures

    g = torch.Generator().manual_seed(0)
    recon = torch.rand(3, 5, 3, 8, 8, generator=g)  # (B, 1 + H, C, h, w): last context frame + 4 real
    same = _motion_figures(recon[:, 1:], recon)
    assert torch.allclose(same["motion_kept"], torch.ones(4))
    assert torch.allclose(same["motion_real"], (recon[:, 1:] - recon[:, :-1]).pow(2).mean((0, 2, 3, 4)))
    frozen = _motion_figures(recon[:, :1].expand(-1, 4, -1, -1, -1), recon)
    assert torch.all(frozen["motion_dream"] == 0) and torch.all(frozen["motion_kept"] == 0)
    half = recon.clone()  # each dreamed frame goes half the way from the dream's last frame to the real one
    prev = recon[:, 0]
    for t in range(4):
        half[:, t + 1] = prev + 0.5 * (recon[:, t + 1] - prev)
        prev = half[:, t + 1]
    kept = _motion_figures(half[:, 1:], recon, "_view")["motion_kept_view"]
    assert kept[0].item() == pytest.approx(0.25, rel=1e-5)
    # the agreement: 1 for the real steps and for the half steps' first (same direction), 0 frozen, and
    # noise raises the motion kept far above 1 but not the agreement
    assert torch.allclose(same["motion_agree"], torch.ones(4), atol=1e-5)
    assert torch.all(frozen["motion_agree"] == 0)
    assert _motion_figures(half[:, 1:], recon)["motion_agree"][0].item() == pytest.approx(1.0, abs=1e-5)
    noisy = _motion_figures(recon[:, 1:] + 3 * torch.randn(3, 4, 3, 8, 8, generator=g), recon)
    assert torch.all(noisy["motion_kept"] > 5) and torch.all(noisy["motion_agree"] < 0.5)


def test_action_effect_view_leaves_out_the_dashboard(tiny_run, monkeypatch):
    """On an env with a dashboard (envs.VIEW_ROWS) the pixel figures come again on the rows above it: the
    same numbers as the whole frame's computed by hand on the cropped frames."""
    from minidreamer4 import envs
    from minidreamer4.dream import action_effect, held_out_batch, turn_figures
    from minidreamer4.run import load_run_config
    from minidreamer4.train import load_dynamics, load_tokenizer

    assert envs.view_rows("CarRacing-v3", 64) == 56 and envs.view_rows("DotTrack-v0", 16) == 16
    cfg = load_run_config(tiny_run)
    dev = torch.device("cpu")
    tok, dyn = load_tokenizer(cfg, dev), load_dynamics(cfg, dev)
    monkeypatch.setitem(envs.VIEW_ROWS, cfg.env.id, 0.5)
    out = action_effect(cfg, tok, dyn, dev, contexts=4, context=3, horizon=4, turn_steps=3)
    for key in ("pixel_err_view", "pixel_ratio_view", "reproduced_view", "turn_right_way_view"):
        assert key in out, key
    # the repeat-last error on the top half, by hand
    batch, _, _ = held_out_batch(cfg, tok, dev, 4, 7, 0)
    x = batch["obs"][..., : cfg.env.size // 2, :].float() / 255.0
    want = (x[:, 2:3] - x[:, 3:4]).pow(2).mean().item()
    assert abs(out["pixel_err_repeat_last_view"]["h1"] - want) < 1e-6
    # the turn check's rule by hand: the same way and big enough; the other way; the right way but tiny
    xd = torch.randn(5, 2, 3, 4, 4)
    assert turn_figures(xd, xd)["turn_right_way"] == 1.0
    assert turn_figures(-xd, xd)["turn_right_way"] == 0.0
    small = turn_figures(0.05 * xd, xd, "_view")
    assert small["turn_right_way_view"] == 0.0 and small["turn_cosine_view"] > 0.99


def test_frame_reward_head_fitted_in_dreams_learns_them_is_kept_and_resumes(tiny_run, tmp_path, capsys):
    """agent.dream_reward_batches: before imagination RL the frame reward head is fitted on dreams of the
    store's action sequences; its held-out loss on dreams falls, imagination's checkpoint keeps the fitted
    head (load_agent 'rl' reads it, 'bc' the finetuned one), and a resumed stage does not fit again."""
    from minidreamer4.run import load_run_config
    from minidreamer4.train_agent import load_agent, train_finetune, train_imagination

    dst = world_model_copy(tiny_run, tmp_path / "fit")
    over = {"agent.reward_input": "frame", "ft_train.steps": 3, "rl_train.steps": 2}
    over |= {"agent.dream_reward_batches": 3, "agent.dream_reward_steps": 60}
    cfg = replace(load_run_config(dst), **over)
    train_finetune(cfg, progress=False)
    capsys.readouterr()
    train_imagination(cfg, progress=False)
    assert "fitted in dreams" in capsys.readouterr().out
    fit = [json.loads(x) for x in open(dst / "metrics.jsonl") if "dream_reward_loss_after" in x]
    assert len(fit) == 1 and fit[0]["dream_reward_loss_after"] < fit[0]["dream_reward_loss_before"]
    rl = load_agent(cfg, "cpu", "rl")[2].frame_reward.state_dict()
    bc = load_agent(cfg, "cpu", "bc")[2].frame_reward.state_dict()
    assert any(not torch.equal(rl[k], bc[k]) for k in rl)
    train_imagination(replace(cfg, **{"rl_train.steps": 3}), progress=False)  # resumes: no second fit
    out = capsys.readouterr().out
    assert "resuming from step 2" in out and "fitted in dreams" not in out
    again = load_agent(cfg, "cpu", "rl")[2].frame_reward.state_dict()
    assert again.keys() == rl.keys() and all(torch.equal(again[k], rl[k]) for k in rl)
    from minidreamer4.agent import AgentHeads
    from minidreamer4.train_agent import fit_reward_in_dreams

    with pytest.raises(ValueError, match="reward_input frame"):  # the agent-token head: nothing to fit
        fit_reward_in_dreams(None, AgentHeads(8, (3,), mtp=1), None, None, cfg.agent, 3, 1e-3)


def test_without_the_fit_the_frame_reward_head_is_the_latest_finetunes(tiny_run, tmp_path):
    """agent.dream_reward_batches 0: a later iteration's RL that resumes the earlier policy (rl_from_clone
    off) reads the reward from the new finetune's frame head, not from the one saved with that policy."""
    from minidreamer4.run import load_run_config
    from minidreamer4.train_agent import load_agent, train_finetune, train_imagination

    dst = world_model_copy(tiny_run, tmp_path / "nofit")
    over = {"agent.reward_input": "frame", "agent.rl_from_clone": False}
    over |= {"ft_train.steps": 2, "rl_train.steps": 2}
    cfg = replace(load_run_config(dst), **over)
    train_finetune(cfg, progress=False)
    train_imagination(cfg, scale=1, progress=False)
    first = {k: v.clone() for k, v in load_agent(cfg, "cpu", "bc")[2].frame_reward.state_dict().items()}
    train_finetune(cfg, scale=2, progress=False)  # the second iteration's finetune moves the frame head
    train_imagination(cfg, scale=2, progress=False)
    rl = load_agent(cfg, "cpu", "rl")[2].frame_reward.state_dict()
    bc = load_agent(cfg, "cpu", "bc")[2].frame_reward.state_dict()
    assert any(not torch.equal(first[k], bc[k]) for k in bc)
    assert all(torch.equal(rl[k], bc[k]) for k in bc)
