"""Where the data comes from: the scripted CarRacing driver, correlated exploration, mixes of sources,
the zoom-in frames skipped at reset, and replaying a stored episode from its seed (the env branches of
the action-effect benchmark)."""

import numpy as np
import pytest

from minidreamer4.collect import collect, explore_policy, parse_sources, random_policy, run_episode
from minidreamer4.data import EpisodeStore
from minidreamer4.envs import make_env
from minidreamer4.envs.driver import CarRacingDriver


def test_driver_return_is_far_above_random_on_a_fixed_seed():
    """A test of the data source, not of an agent: 150 agent steps (300 frames) on seed 10,000."""
    env = make_env("CarRacing-v3", size=64, action_repeat=2, max_steps=150)
    drv = run_episode(env, CarRacingDriver(env, np.random.default_rng(0)), seed=10_000)
    rnd = run_episode(env, random_policy(env, np.random.default_rng(0)), seed=10_000)
    assert drv["rew"].sum() > rnd["rew"].sum() + 100, (drv["rew"].sum(), rnd["rew"].sum())
    a = drv["act"]
    assert a.min() >= -1 and a.max() <= 1 and a[:, 0].std() > 0.05  # it steers
    with pytest.raises(ValueError, match="CarRacing"):
        CarRacingDriver(make_env("DotTrack-v0"), np.random.default_rng(0))


def test_driver_lock_holds_full_lock_perturbations():
    """data.driver_lock: the share of perturbations that hold full-lock steering (-1 or +1)."""
    env = make_env("CarRacing-v3", size=32, action_repeat=2, max_steps=40)
    drv = CarRacingDriver(env, np.random.default_rng(0), noise=1.0, hold=1, lock=1.0)
    steer = run_episode(env, drv, seed=0)["act"][:, 0]
    assert np.all(np.abs(steer) == 1.0), steer  # every step perturbed, each at full lock
    drv = CarRacingDriver(env, np.random.default_rng(0), noise=1.0, hold=1, lock=0.0)
    steer = run_episode(env, drv, seed=0)["act"][:, 0]
    assert np.mean(np.abs(steer) == 1.0) < 0.2, steer  # uniform draws almost never reach full lock


def test_driver_drives_every_car_of_multi_car_racing(tmp_path):
    """One driver per car (collect's 'driver' source in MultiCarRacing-v0): each car far above random."""
    from minidreamer4.data import EpisodeStore

    env = make_env("MultiCarRacing-v0", size=32, action_repeat=2, max_steps=150, agents=2)
    collect(env, EpisodeStore(tmp_path / "d"), 1, "driver", seed=0, progress=False)
    rnd = collect(env, EpisodeStore(tmp_path / "r"), 1, "random", seed=0, progress=False)
    store = EpisodeStore(tmp_path / "d")
    rets = [store.load(i)[1]["return"] for i in store.indices()]
    assert len(rets) == 2 and min(rets) > rnd["mean_return"] + 50, (rets, rnd["mean_return"])
    with pytest.raises(ValueError, match="car in range"):
        CarRacingDriver(env, np.random.default_rng(0), car=2)


def test_explore_is_correlated_in_time_and_centred_per_env():
    env = make_env("CarRacing-v3", size=64, max_steps=10)
    pol = explore_policy(env, np.random.default_rng(0))
    a = np.stack([pol(None) for _ in range(4000)])
    steer = a[:, 0]
    assert np.corrcoef(steer[:-1], steer[1:])[0, 1] > 0.8  # i.i.d. draws would give ~0
    assert a[:, 1].mean() > 0.2 and (a[:, 2] == -1).mean() > 0.6  # gas mostly on, brake mostly released
    dot = make_env("DotTrack-v0", size=16)
    b = np.stack([explore_policy(dot, np.random.default_rng(1))(None) for _ in range(10)])
    assert b.shape == (10, 2) and np.abs(b).max() <= 1


def test_sources_mix_by_weight_and_are_recorded(tmp_path):
    assert parse_sources("driver:1,explore:3") == [("driver", 0.25), ("explore", 0.75)]
    for bad in ("walk", "random:x", "random:-1", "random:0"):
        with pytest.raises(ValueError):
            parse_sources(bad)
    env = make_env("DotTrack-v0", size=16, max_steps=5)
    store = EpisodeStore(tmp_path / "s")
    collect(env, store, 40, "random:1,explore:1", seed=0, progress=False)
    names = [store.load(i)[1]["policy"] for i in store.indices()]
    assert set(names) == {"random", "explore"} and 10 < names.count("random") < 30
    with pytest.raises(ValueError, match="CarRacing"):  # the driver reads CarRacing's state only
        collect(env, store, 1, "driver", progress=False)


def test_skip_start_hides_the_zoom_and_replay_rebuilds_the_state():
    plain = make_env("CarRacing-v3", size=64, action_repeat=2, max_steps=40)
    skip = make_env("CarRacing-v3", size=64, action_repeat=2, max_steps=40, skip=50)
    assert skip.skip_start == 50 and plain.skip_start == 0
    plain.reset(seed=3)
    skip.reset(seed=3)
    assert not np.array_equal(plain.frame, skip.frame)  # the first frame is past the zoom-in
    ep = run_episode(skip, explore_policy(skip, np.random.default_rng(0)), seed=3)
    assert len(ep["act"]) == 40  # the skipped steps do not count against the time limit
    # replaying the first 25 actions from the seed, then stepping the 26th, gives the stored frame 26
    assert skip.replay(3, ep["act"][:25])
    skip.step(ep["act"][25])
    assert np.array_equal(skip.frame, ep["obs"][26])


def test_eval_readout_auto_is_per_env():
    # CarRacing's cloned driver drives with the expected bin value (+267.60) and not with the top bin
    # (-93.42); DotTrack's agents scored best with the top bin (docs/experiments.md)
    from minidreamer4.config import preset
    from minidreamer4.envs import eval_readout

    assert preset("cpu").agent.eval_readout == "auto"
    assert eval_readout("CarRacing-v3") == "mean" and eval_readout("DotTrack-v0") == "mode"
    assert eval_readout("MultiCarRacing-v0") == "mean"  # the same cars (run mcr_s21: +482.35 vs -68.97)
    assert eval_readout("CarRacing-v3", "sample") == "sample"  # an explicit setting wins
