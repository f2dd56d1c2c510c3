"""MultiCarRacing-v0: spaces, determinism, tile rewards, per-car termination, collisions, per-car episodes."""

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("Box2D")

import minidreamer4.envs  # noqa: F401  (registers MultiCarRacing-v0)
from minidreamer4.collect import collect
from minidreamer4.data import EpisodeStore
from minidreamer4.envs import MultiPixelEnv, make_env
from minidreamer4.envs.multi_car_racing import PLAYFIELD, MultiCarRacingEnv


@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("compact", [False, True])
def test_spaces_and_shapes(n, compact):
    env = gym.make("MultiCarRacing-v0", num_agents=n, compact_actions=compact)
    assert env.observation_space.shape == (n, 96, 96, 3)
    assert env.action_space.shape == (n, 2 if compact else 3)
    obs, info = env.reset(seed=0)
    assert obs.shape == (n, 96, 96, 3) and obs.dtype == np.uint8
    obs, r, term, trunc, info = env.step(env.action_space.sample())
    assert obs.shape == (n, 96, 96, 3)
    assert r.shape == term.shape == trunc.shape == (n,) and term.dtype == bool
    assert env.render().shape == (400, 400, 3)
    env.close()


def test_same_seed_same_track_and_observations():
    a, b = MultiCarRacingEnv(num_agents=2), MultiCarRacingEnv(num_agents=2)
    oa, _ = a.reset(seed=7)
    ob, _ = b.reset(seed=7)
    assert np.array_equal(oa, ob)
    assert np.array_equal(a.tile_centres, b.tile_centres)
    act = np.array([[0.3, 0.8, 0.0], [-0.2, 0.5, 0.0]], np.float32)
    for _ in range(20):
        oa, ra, *_ = a.step(act)
        ob, rb, *_ = b.step(act)
    assert np.array_equal(oa, ob) and np.array_equal(ra, rb)
    c = MultiCarRacingEnv(num_agents=2)
    oc, _ = c.reset(seed=8)
    assert not np.array_equal(a.tile_centres[:10], c.tile_centres[:10])


def test_gas_earns_tile_rewards_and_later_cars_get_less():
    env = MultiCarRacingEnv(num_agents=2)
    env.reset(seed=1)
    total = np.zeros(2)
    for _ in range(60):  # both on gas, straight: the start is straight enough for 60 frames
        _, r, term, *_ = env.step(np.array([[0, 1, 0], [0, 1, 0]], np.float32))
        total += r
    assert not term.any()
    assert total[0] > 10, total  # well above the -0.1 per frame it pays
    share = 1000 / len(env.tiles)
    visited_by_both = [t for t in env.tiles if len(t.visitors) == 2]
    assert visited_by_both, "the two cars should have crossed some of the same tiles"
    # a tile's second visitor gets half the first one's share (2 cars): the reward accounting adds up
    first = sum(share for t in env.tiles if t.visitors)
    second = sum(share / 2 for t in visited_by_both)
    assert np.isclose(total.sum(), first + second - 0.1 * 2 * 60, atol=1e-3)


def test_car_leaving_playfield_is_done_while_others_go_on():
    env = MultiCarRacingEnv(num_agents=3)
    env.reset(seed=2)
    env.cars[1].hull.position = (PLAYFIELD + 20.0, 0.0)
    _, r, term, trunc, info = env.step(np.zeros((3, 3), np.float32))
    assert term.tolist() == [False, True, False] and r[1] == -100.0
    _, r, term, trunc, info = env.step(np.zeros((3, 3), np.float32))
    assert not term.any() and r[1] == 0.0 and r[0] == pytest.approx(-0.1)
    assert info["done"].tolist() == [False, True, False]


def test_time_limit_truncates_every_car_still_going():
    env = MultiCarRacingEnv(num_agents=2, max_steps=5)
    env.reset(seed=0)
    for _ in range(5):
        _, _, term, trunc, _ = env.step(np.zeros((2, 3), np.float32))
    assert trunc.all() and not term.any()


def test_collisions_cost_the_penalty():
    env = MultiCarRacingEnv(num_agents=2, collision_penalty=5.0)
    env.reset(seed=0)
    env.cars[1].hull.position = tuple(env.cars[0].hull.position + (1.0, 0.0))
    _, r, *_ = env.step(np.zeros((2, 3), np.float32))
    assert env.collisions >= 1 and (r <= -5.0).all(), r


def test_adapter_and_collect_store_one_episode_per_car(tmp_path):
    env = make_env("MultiCarRacing-v0", size=32, action_repeat=2, max_steps=12, agents=2)
    assert isinstance(env, MultiPixelEnv) and env.num_agents == 2
    obs = env.reset(seed=0)
    assert obs.shape == (2, 3, 32, 32) and env.frame.shape == (2, 3, 32, 32)
    store = EpisodeStore(tmp_path / "eps")
    stats = collect(env, store, 2, "random", seed=0, progress=False)
    assert stats["episodes"] == 4 and len(store) == 4
    metas = [store.load(i)[1] for i in store.indices()]
    assert sorted((m["race"], m["agent"]) for m in metas) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    ep, _ = store.load(store.indices()[1])
    assert ep["obs"].shape == (13, 3, 32, 32) and ep["act"].shape == (12, 3)
    assert ep["trunc"][-1] and not ep["term"].any()


def test_train_loop_on_multi_car_racing(tmp_path):
    """One shared world model and policy drive every car; the evaluation reports each car's return."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "minidreamer4", "train", "--preset", "tiny", "--env", "MultiCarRacing-v0"]
    cmd += ["--env.agents", "2", "--runs_dir", str(tmp_path), "--name", "mcr"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "mcr"
    summary = json.loads((run / "summary.json").read_text())
    for policy in ("random", "behaviour_cloning", "imagination_RL"):
        assert len(summary[f"return_per_agent_{policy}"]) == 2
    metas = [json.loads(str(np.load(p)["meta"])) for p in sorted((run / "episodes").glob("ep-*.npz"))]
    assert {m["agent"] for m in metas} == {0, 1}
    assert (run / "media" / "agent_episode.gif").exists()
