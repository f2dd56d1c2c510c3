import numpy as np
import pytest

from minidreamer4.collect import collect
from minidreamer4.data import EpisodeError, EpisodeStore, SegmentSampler, load_episode, save_episode
from minidreamer4.envs import make_env


def _synthetic(T=12, A=2, shape=(1, 4, 4)):
    obs = np.zeros((T + 1, *shape), np.uint8) + np.arange(T + 1, dtype=np.uint8)[:, None, None, None]
    act = np.repeat(np.arange(T, dtype=np.float32)[:, None], A, 1)
    term = np.zeros(T, bool)
    term[-1] = True
    return {
        "obs": obs,
        "act": act,
        "rew": np.arange(T, dtype=np.float32) * 10,
        "term": term,
        "trunc": np.zeros(T, bool),
    }


META = {"env_id": "Synth", "obs_shape": [1, 4, 4], "action_spec": {"kind": "box", "bins": [5, 5]}}


def test_collect_store_sample_round_trip(tmp_path):
    env = make_env("DotTrack-v0", size=16, max_steps=30)
    store = EpisodeStore(tmp_path / "eps")
    stats = collect(env, store, 3, "random", seed=0, progress=False)
    assert len(store) == 3 and stats["steps"] > 0
    arrays, meta = store.load(1)
    assert arrays["obs"].dtype == np.uint8 and arrays["obs"].shape[1:] == (3, 16, 16)
    assert len(arrays["obs"]) == len(arrays["act"]) + 1 == meta["length"] + 1
    assert meta["env_id"] == "DotTrack-v0" and meta["action_spec"]["bins"] == [11, 11]
    s = SegmentSampler(store, seq_len=4, batch=5, split="all", seed=0)
    b = s.sample()
    assert b["obs"].shape == (5, 4, 3, 16, 16) and b["obs"].dtype == np.uint8
    assert b["act"].shape == (5, 4, 2) and b["has_act"].shape == b["rew"].shape == b["term"].shape == (5, 4)


def test_sampler_alignment(tmp_path):
    store = EpisodeStore(tmp_path)
    store.add(_synthetic(), META)
    s = SegmentSampler(store, seq_len=5, batch=64, split="all", seed=1)
    b = s.sample()
    frame = b["obs"][:, :, 0, 0, 0].astype(np.float32)  # frame index
    # the action stored with frame t is the one that LED to it: a_{t-1}, and none for frame 0
    assert np.array_equal(b["has_act"], frame > 0)
    assert np.allclose(b["act"][..., 0][b["has_act"]], frame[b["has_act"]] - 1)
    assert np.allclose(b["rew"][b["has_act"]], (frame[b["has_act"]] - 1) * 10)
    assert np.array_equal(b["term"], frame == 12)
    assert frame.min() == 0 and frame.max() == 12  # every frame reachable (uniform over steps)


def test_splits_and_new_episodes_are_picked_up(tmp_path):
    store = EpisodeStore(tmp_path)
    for _ in range(4):
        store.add(_synthetic(), META)
    train = SegmentSampler(store, 4, 2, split="train", holdout_every=2, refresh_s=0)
    ev = SegmentSampler(store, 4, 2, split="eval", holdout_every=2, refresh_s=0)
    assert sorted(train.episodes) == [1, 3] and sorted(ev.episodes) == [0, 2]
    store.add(_synthetic(), META)
    store.add(_synthetic(), META)
    train.sample()
    assert sorted(train.episodes) == [1, 3, 5]


def test_memory_cap_drops_oldest(tmp_path):
    store = EpisodeStore(tmp_path)
    for _ in range(5):
        store.add(_synthetic(T=100, shape=(3, 32, 32)), {**META, "obs_shape": [3, 32, 32]})
    one = sum(a.nbytes for a in load_episode(store.path(0))[0].values())
    s = SegmentSampler(store, 4, 2, split="all", memory_gb=2.5 * one / 2**30)
    assert sorted(s.episodes) == [3, 4]


def test_truncated_file_is_named(tmp_path):
    store = EpisodeStore(tmp_path)
    path = store.add(_synthetic(), META)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EpisodeError, match=str(path.name)):
        SegmentSampler(store, 4, 2, split="all")


def test_corrupted_file_is_named(tmp_path):
    store = EpisodeStore(tmp_path)
    store.add(_synthetic(), META)
    path = store.add(_synthetic(), META)
    data = bytearray(path.read_bytes())
    for i in range(60, 120):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(EpisodeError, match=path.name):
        store.load(1)


def test_mismatched_episode_is_an_error(tmp_path):
    store = EpisodeStore(tmp_path)
    store.add(_synthetic(), META)
    with pytest.raises(EpisodeError, match="obs_shape"):
        store.add(_synthetic(shape=(3, 4, 4)), {**META, "obs_shape": [3, 4, 4]})
    # a file written behind the store's back with other metadata is caught on load
    save_episode(store.path(1), _synthetic(shape=(3, 4, 4)), {**META, "obs_shape": [3, 4, 4]})
    with pytest.raises(EpisodeError, match="ep-000001"):
        store.load(1)
    bad = _synthetic()
    bad["act"] = bad["act"][:-1]
    with pytest.raises(EpisodeError, match="expected T\\+1"):
        store.add(bad, META)


def test_atomic_write_leaves_no_partial_episode(tmp_path):
    store = EpisodeStore(tmp_path)
    store.add(_synthetic(), META)
    (tmp_path / ".ep-000001.npz.123.tmp").write_bytes(b"half an episode")  # what a crash mid-write leaves
    assert store.indices() == [0]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and "123" not in p.name]


def test_same_seed_same_data(tmp_path):
    def run(seed, folder):
        env = make_env("DotTrack-v0", size=16, max_steps=20)
        store = EpisodeStore(tmp_path / folder)
        collect(env, store, 2, "random", seed=seed, progress=False)
        return [store.load(i)[0] for i in range(2)]

    a, b, c = run(7, "a"), run(7, "b"), run(8, "c")
    for ea, eb in zip(a, b):
        for k in ea:
            assert np.array_equal(ea[k], eb[k]), k
    assert not np.array_equal(a[0]["act"], c[0]["act"])


def test_random_policy_hold():
    from minidreamer4.collect import random_policy

    env = make_env("DotTrack-v0", size=16, max_steps=20)
    obs = env.reset(seed=0)

    def runs(hold):
        pol = random_policy(env, np.random.default_rng(0), hold)
        acts = [pol(obs) for _ in range(200)]
        lengths, n = [], 1
        for a, b in zip(acts, acts[1:]):
            if np.array_equal(a, b):
                n += 1
            else:
                lengths.append(n)
                n = 1
        return lengths

    assert set(runs(1)) == {1}  # a new action every step
    held = runs(4)
    assert max(held) <= 4 and min(held) >= 1 and np.mean(held) > 2  # each action kept for 1..4 steps


def test_random_rest_leaves_dimensions_at_their_lowest_value():
    from minidreamer4.collect import random_policy
    from minidreamer4.envs import random_rest

    assert random_rest("CarRacing-v3", 3, "auto") == (0.0, 0.0, 0.9)
    assert random_rest("DotTrack-v0", 2, "auto") == ()
    assert random_rest("CarRacing-v3", 3, "0") == ()
    assert random_rest("X", 2, "0.5") == (0.5, 0.5)
    for bad in ("0.1,0.2", "1.5", "gas"):
        with pytest.raises(ValueError, match="random_rest"):
            random_rest("X", 3, bad)
    env = make_env("DotTrack-v0", size=16, max_steps=20)
    obs = env.reset(seed=0)
    uni = np.stack([random_policy(env, np.random.default_rng(0))(obs) for _ in range(1)])
    pol = random_policy(env, np.random.default_rng(0), rest=(0.0, 0.8))
    acts = np.stack([pol(obs) for _ in range(2000)])
    low = (acts == -1.0).mean(0)
    assert low[0] < 0.02 and 0.75 < low[1] < 0.85  # 0.8 at rest (+ uniform draws that land there, rare)
    assert acts[:, 1][acts[:, 1] > -1].std() > 0.4  # the other draws stay uniform
    # without rest the stream is the plain uniform one (collections made before stay reproducible)
    assert np.array_equal(uni[0], random_policy(env, np.random.default_rng(0), rest=())(obs))


def test_bc_mask_leaves_out_the_agents_own_episodes(tmp_path):
    """The sampler remembers each episode's source; with agent.bc_own = False only the segments of
    episodes the agent did not collect are cloned (train_agent.with_bc_mask)."""
    from minidreamer4.train_agent import with_bc_mask

    store = EpisodeStore(tmp_path)
    for policy in ("driver", "agent-1", "random", "agent-2", "agent"):
        store.add(_synthetic(), {**META, "policy": policy})
    s = SegmentSampler(store, seq_len=4, batch=64, split="all", seed=0)
    assert s.sources == {0: "driver", 1: "agent-1", 2: "random", 3: "agent-2", 4: "agent"}
    raw = s.sample(index=True)
    assert "bc" not in with_bc_mask(s, raw, own=True)
    bc = with_bc_mask(s, raw, own=False)["bc"]
    assert bc.shape == (64,) and bc.dtype == bool
    assert np.array_equal(bc, np.isin(raw["ep"], [0, 2])) and 0 < bc.sum() < 64
