"""The one encoding rule (latents.py): the latents of the same frames are equal along every path that
makes them: training (LatentCache, batched or one episode at a time), dreams and benchmarks
(dream.held_out_batch), imagination starts (LatentCache on a segment sampler) and acting (imagine.Actor)."""

import numpy as np
import torch

from minidreamer4.config import replace
from minidreamer4.data import EpisodeStore, SegmentSampler
from minidreamer4.dream import held_out_batch
from minidreamer4.imagine import Actor
from minidreamer4.latents import LatentCache, encode_episodes, encode_stream
from minidreamer4.pipeline import ensure_episodes
from minidreamer4.run import episodes_dir
from minidreamer4.train import build_tokenizer
from minidreamer4.train_agent import build_agent


def _setup(tiny_cfg):
    # two time layers in the encoder, so a frame's latent depends on frames beyond its own window too:
    # only a true stream reproduces it, a recomputed window does not
    cfg = replace(tiny_cfg, **{"tokenizer.enc_layers": 4, "tokenizer.time_every": 2})
    ensure_episodes(cfg)
    store = EpisodeStore(episodes_dir(cfg))
    tok = build_tokenizer(cfg, store.reference()["obs_shape"]).eval()
    tok.train_seq_len = 3  # a span shorter than the episodes (41 frames)
    return cfg, store, tok


def _stream_one_by_one(tok, obs: np.ndarray) -> torch.Tensor:
    cache = tok.new_cache()
    x = torch.from_numpy(obs).float() / 255.0
    with torch.no_grad():
        return torch.cat([tok.encode(x[None, t : t + 1], cache=cache, window=2)[0] for t in range(len(x))])


def test_latents_are_equal_along_every_path(tiny_cfg):
    cfg, store, tok = _setup(tiny_cfg)
    dev = torch.device("cpu")
    eps = [store.load(i)[0]["obs"] for i in store.indices()]
    eps[1] = eps[1][:25]  # different lengths: the batched stream pads the shorter one
    ref = [_stream_one_by_one(tok, e) for e in eps]

    # training: several episodes streamed side by side, and one at a time
    batched = encode_episodes(tok, eps, dev, batch=3)
    single = [encode_episodes(tok, [e], dev)[0] for e in eps]
    for r, b, s in zip(ref, batched, single):
        torch.testing.assert_close(b, r, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(s, r, atol=1e-5, rtol=1e-4)
    # a sampler's segments, cut from the middle of episodes, carry their episode's stream
    sampler = SegmentSampler(store, 5, 6, "all", seed=0)
    raw = sampler.sample(index=True)
    b = LatentCache(tok, False, dev).batch(sampler, raw)
    full = {k: _stream_one_by_one(tok, sampler.episodes[k]["obs"]) for k in set(raw["ep"].tolist())}
    for i, (k, s) in enumerate(zip(raw["ep"], raw["start"])):
        torch.testing.assert_close(b["z"][i], full[k][s : s + 5], atol=1e-5, rtol=1e-4)
    assert raw["start"].max() > 3  # at least one segment starts past the first window
    # a segment encoded on its own from its first frame would differ: the rule is not a no-op here
    k, s = int(raw["ep"][raw["start"].argmax()]), int(raw["start"].max())
    alone = encode_stream(tok, torch.from_numpy(sampler.episodes[k]["obs"][s : s + 5])[None])[0]
    assert (alone - full[k][s : s + 5]).abs().max() > 1e-3

    # dreams and benchmarks: held-out segments
    batch, raw_h, held = held_out_batch(cfg, tok, dev, 3, 6, seed=1)
    for i, (k, s) in enumerate(zip(raw_h["ep"], raw_h["start"])):
        want = _stream_one_by_one(tok, held.episodes[k]["obs"])[s : s + 6]
        torch.testing.assert_close(batch["z"][i], want, atol=1e-5, rtol=1e-4)
        assert torch.equal(batch["obs"][i], torch.from_numpy(held.episodes[k]["obs"][s : s + 6]))

    # acting: the actor streams the env's frames; record the latents it hands the dynamics model
    dyn, heads = build_agent(cfg, tok, tuple(store.reference()["action_spec"]["bins"]))
    dyn.eval()
    seen = []
    add_context = dyn.add_context
    dyn.add_context = lambda z, *a, **k: (seen.append(z), add_context(z, *a, **k))[1]
    actor = Actor(tok, dyn, heads, span=3, window=4, device=dev)
    for t in range(12):
        actor(eps[0][t].astype(np.float32) / 255.0)
    torch.testing.assert_close(torch.cat(seen, 1)[0], ref[0][:12], atol=1e-5, rtol=1e-4)
