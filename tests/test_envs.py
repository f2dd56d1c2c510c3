import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from minidreamer4.envs import PixelEnv, from_env_action, make_env, to_env_action
from minidreamer4.envs.adapter import action_spec_of


@pytest.mark.parametrize("size", [16, 32, 64])
def test_dottrack_shapes_and_ranges(size):
    env = make_env("DotTrack-v0", size=size, max_steps=10)
    obs = env.reset(seed=0)
    assert obs.shape == (3, size, size) and obs.dtype == np.float32
    assert 0.0 <= obs.min() and obs.max() <= 1.0
    assert env.frame.dtype == np.uint8 and env.frame.shape == (3, size, size)
    assert np.allclose(env.frame / 255.0, obs)
    steps, term, trunc = 0, False, False
    while not (term or trunc):
        obs, r, term, trunc, _ = env.step(np.zeros(2, np.float32))
        steps += 1
    assert trunc and not term and steps == 10  # time limit in agent steps


def test_carracing_resized_and_action_repeat():
    env = make_env("CarRacing-v3", size=64, action_repeat=2, max_steps=3)
    obs = env.reset(seed=0)
    assert obs.shape == (3, 64, 64)
    assert env.action_spec.kind == "box" and env.action_spec.dims == 3
    steps = 0
    while True:
        _, r, term, trunc, _ = env.step(np.array([0.0, 1.0, -1.0], np.float32))
        steps += 1
        if term or trunc:
            break
    assert steps == 3 and env.env.unwrapped.t > 0.05  # 3 agent steps = 6 env steps at 50 fps
    env.close()


def test_box_action_round_trip():
    spec = action_spec_of(spaces.Box(np.array([-1, 0, 0]), np.array([1, 1, 1]), dtype=np.float32), 11)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.uniform(-1, 1, 3).astype(np.float32)
        x = to_env_action(a, spec)
        assert 0 <= x[1] <= 1 and 0 <= x[2] <= 1
        assert np.allclose(from_env_action(x, spec), a, atol=1e-6)
    assert np.allclose(to_env_action(np.array([-1, -1, 1]), spec), [-1, 0, 1])


@pytest.mark.parametrize(
    "space, n",
    [
        (spaces.Discrete(5, start=2), [5]),
        (spaces.MultiDiscrete([3, 4]), [3, 4]),
        (spaces.MultiBinary(3), [2, 2, 2]),
    ],
)
def test_discrete_action_round_trip(space, n):
    spec = action_spec_of(space, 11)
    assert list(spec.bins) == n
    for _ in range(20):
        x = space.sample()
        a = from_env_action(x, spec)
        assert a.min() >= -1 and a.max() <= 1
        assert np.array_equal(np.asarray(to_env_action(a, spec)), np.asarray(x))
    if isinstance(space, spaces.Discrete):  # bin centres: -1, -0.5, 0, 0.5, 1 -> 2..6
        assert [to_env_action(np.array([v]), spec) for v in (-1, -0.5, 0, 0.5, 1)] == [2, 3, 4, 5, 6]


def test_unknown_env_lists_known():
    with pytest.raises(ValueError, match="DotTrack-v0"):
        make_env("NoSuchEnv-v9")


def test_non_image_observation_is_a_clear_error():
    with pytest.raises(ValueError, match="not an image"):
        PixelEnv(gym.make("CartPole-v1"), "CartPole-v1")


def test_dottrack_reward_depends_on_action():
    def ret(direction):
        env = make_env("DotTrack-v0", size=16, max_steps=15)
        env.reset(seed=3)
        total = 0.0
        for _ in range(15):
            x, y = env.env.pos
            tangent = direction * np.array([-y, x]) / np.hypot(x, y)  # counter-clockwise for +1
            total += env.step(tangent.astype(np.float32))[1]
        return total

    assert ret(+1) > 0.2 > -0.2 > ret(-1)


def test_dottrack_fixed_track_by_default_random_on_request():
    from minidreamer4.envs.dottrack import DotTrackEnv

    def background(env, seed):
        env.reset(seed=seed)
        return env._bg.copy(), env.pos.copy()

    fixed = DotTrackEnv(size=32)
    (bg0, p0), (bg1, p1) = background(fixed, 0), background(fixed, 1)
    assert np.array_equal(bg0, bg1) and not np.allclose(p0, p1)  # same road, another start point
    rand = DotTrackEnv(size=32, random_track=True)
    assert not np.array_equal(background(rand, 0)[0], background(rand, 1)[0])
    obs = fixed.render()
    car = (obs[..., 0] > 200) & (obs[..., 1] < 60)
    assert car.sum() >= 20  # the car covers enough pixels for a reconstruction loss to notice it


def test_dottrack_wall_stops_the_car_without_ending_the_episode():
    """Driving into the wall must not pay: it stops the car off the road (-0.1 a step) and the episode goes
    on to the time limit (a wall that ended the episode at -1 beat random, and an agent learned just that)."""
    from minidreamer4.envs.dottrack import DotTrackEnv

    env = DotTrackEnv(size=32, max_steps=60)
    env.reset(seed=0)
    rewards, ends = [], []
    for _ in range(60):
        _, r, term, trunc, _ = env.step(np.array([1.0, 0.0]))
        rewards.append(r)
        ends.append((term, trunc))
    assert env.pos[0] == 1.0 and abs(env.pos[1]) < 1.0  # pinned against the right wall
    assert not any(t for t, _ in ends) and ends[-1][1] and not any(tr for _, tr in ends[:-1])
    assert rewards[-20:] == [-0.1] * 20  # off the road at the wall, every step


def test_dottrack_road_follower_laps_counter_clockwise_and_batches():
    env = make_env("DotTrack-v0", size=32, max_steps=100, action_repeat=2)
    env.reset(seed=3)
    dot = env.env
    total = sum(env.step(dot.road_follower())[1] for _ in range(100))
    assert total > 20  # about 2.9 laps at 10 per lap; random actions score about -11
    pos = np.array([[0.6, 0.0], [0.0, -0.6], [-0.3, 0.4]])
    batched = dot.road_follower(pos)  # (3, 2), each row what the single-position call gives
    assert batched.shape == (3, 2)
    for p, a in zip(pos, batched):
        np.testing.assert_allclose(dot.road_follower(p), a)
