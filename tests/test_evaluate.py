"""Real-env evaluation with the agent playing several episodes side by side (imagine.evaluate_policy with a
list of envs): each batch row is its own episode, so the returns equal those of one episode at a time."""

import numpy as np
import torch

from minidreamer4.collect import collect
from minidreamer4.config import replace
from minidreamer4.data import EpisodeStore
from minidreamer4.envs import make_env_from_config
from minidreamer4.imagine import Actor, evaluate_policy
from minidreamer4.train import build_tokenizer
from minidreamer4.train_agent import build_agent


class _Uneven:
    """An env whose episodes end at seed-dependent steps (the batch must keep finished rows out)."""

    def __init__(self, env):
        self.env, self.left = env, 0

    @property
    def frame(self):
        return self.env.frame

    def reset(self, seed):
        self.left = 9 + seed % 5
        return self.env.reset(seed=seed)

    def step(self, act):
        obs, r, term, trunc, info = self.env.step(act)
        self.left -= 1
        return obs, r, term, trunc or self.left == 0, info


def _agent(tiny_cfg):
    # context_noise 0: the context is fed without noise, so acting is deterministic under the mean readout
    cfg = replace(tiny_cfg, **{"dynamics.context_noise": 0.0})
    env = make_env_from_config(cfg.env)
    obs = env.reset(seed=0)
    tok = build_tokenizer(cfg, obs.shape).eval()
    dyn, heads = build_agent(cfg, tok, env.action_spec.bins)
    with torch.no_grad():  # a policy whose expected action moves with the observation
        for p in heads.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return cfg, tok, dyn.eval(), heads.eval()


def test_batched_evaluation_equals_one_episode_at_a_time(tiny_cfg):
    cfg, tok, dyn, heads = _agent(tiny_cfg)
    envs = [_Uneven(make_env_from_config(cfg.env)) for _ in range(3)]
    actor = Actor(tok, dyn, heads, span=3, window=4, device=torch.device("cpu"), readout="mean")
    one = evaluate_policy(envs[0], actor, 5, seed=20)
    side = evaluate_policy(envs, actor, 5, seed=20)  # groups of 3 and 2 episodes
    assert len(set(one["returns"])) > 1  # the episodes differ
    assert side["returns"] == one["returns"]
    assert side["length_mean"] == one["length_mean"] == np.mean([9 + s % 5 for s in range(20, 25)])


def test_actor_batch_rows_are_independent_streams(tiny_cfg):
    cfg, tok, dyn, heads = _agent(tiny_cfg)
    env = make_env_from_config(cfg.env)
    streams = []
    for seed in (1, 2):
        obs, frames = env.reset(seed=seed), []
        for t in range(6):
            frames.append(obs)
            obs = env.step(np.full(len(env.action_spec.bins), 0.5 - 0.2 * t, np.float32))[0]
        streams.append(frames)
    alone = []
    for frames in streams:
        actor = Actor(tok, dyn, heads, span=3, window=4, device=torch.device("cpu"), readout="mean")
        alone.append(np.stack([actor(o) for o in frames]))
    actor = Actor(tok, dyn, heads, span=3, window=4, device=torch.device("cpu"), readout="mean")
    both = np.stack([actor(np.stack([streams[0][t], streams[1][t]])) for t in range(6)], 1)  # (2, 6, A)
    assert both.shape == (2, 6, len(env.action_spec.bins))
    assert np.abs(alone[0] - alone[1]).max() > 1e-4  # the two streams act differently
    np.testing.assert_allclose(both, np.stack(alone), atol=1e-5)


def test_batched_collection_stores_what_one_at_a_time_stores(tiny_cfg, tmp_path):
    cfg, tok, dyn, heads = _agent(tiny_cfg)
    envs = [make_env_from_config(cfg.env) for _ in range(2)]
    actor = Actor(tok, dyn, heads, span=3, window=4, device=torch.device("cpu"), readout="mean")
    one, side = EpisodeStore(tmp_path / "one"), EpisodeStore(tmp_path / "side")
    collect(envs[0], one, 3, actor, seed=5, progress=False, policy_name="agent-1")
    collect(envs[0], side, 3, actor, seed=5, progress=False, policy_name="agent-1", envs=envs)
    assert one.indices() == side.indices() == [0, 1, 2]
    for i in one.indices():
        (a, ma), (b, mb) = one.load(i), side.load(i)
        assert ma["seed"] == mb["seed"] and ma["policy"] == mb["policy"] == "agent-1"
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-5)
    assert not np.array_equal(one.load(0)[0]["obs"], one.load(1)[0]["obs"])  # seeds differ per episode
