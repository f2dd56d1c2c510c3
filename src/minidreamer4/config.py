"""Typed configuration: one dataclass per module, nested in one RunConfig, with named presets.

Every field is reachable from the command line as `--section.field value` (for example
`--tokenizer.dim 128 --tok_train.lr 3e-4`); `--preset` picks the starting values. The resolved config is
printed at start, saved as `config.json` in the run folder and inside every checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EnvConfig:
    # any id from `minidreamer4 envs`, a gymnasium id, module:EnvId (imports the module first) or an ALE id
    id: str = "CarRacing-v3"
    pixels: str = "auto"  # obs: observations are images; render: rendered frames; auto: render if not images
    size: int = 64  # observations are resized to (size, size); CarRacing's native size is 96
    action_repeat: int = 2  # each agent action is applied this many env steps, rewards summed
    max_steps: int = 500  # episode time limit, in agent steps (after action repeat)
    action_bins: int = 11  # bins per continuous action dimension (discrete spaces use their own sizes)
    agents: int = 2  # cars in MultiCarRacing-v0 (multi-agent envs only; one shared world model and policy)
    skip_start: int = -1  # env steps after reset taken with a no-op and not observed; -1: envs.SKIP_START


@dataclass
class DataConfig:
    dir: str = ""  # episode store; empty = <run folder>/episodes
    seq_len: int = 8  # frames per training segment
    batch: int = 8  # segments per batch
    memory_gb: float = 4.0  # episodes kept in RAM by the sampler; the oldest are dropped beyond this
    holdout_every: int = 10  # episode index % holdout_every == 0 is held out for evaluation
    collect_episodes: int = 20  # episodes of data.policy to collect when the store is empty
    # the first collection's source: random | explore | driver (CarRacing) or a mix, "driver:1,explore:1"
    # (collect.py); "auto": the env's own (envs.DATA_SOURCE: CarRacing's driver, else random). The loop's
    # later collections use the agent's own policy
    policy: str = "auto"
    # the driver's chance per step to start a held random perturbation, held 1..driver_hold steps
    # (envs/driver.py). Measured on CarRacing (docs/experiments.md): 0.05 / 4 with the gas never
    # perturbed: the dream turned the right way in 28% of the turn checks; 0.1 / 8: 78%
    driver_noise: float = 0.1
    driver_hold: int = 8
    # the share of the driver's perturbations that hold full-lock steering instead of a uniform one. Measured
    # (docs/experiments.md, session 19, run d_agL): 0.5 left the turn check where it was (59% at w = 4,
    # inside 47-78% over 3 seeds at 0) and reproduced 48.7% of the env's action effect (41.6-45.8% at 0)
    driver_lock: float = 0.0
    random_hold: int = 1  # the random policy keeps each action 1..random_hold steps (1: new each step)
    # (ours) per action dimension, the chance that the exploring random policy leaves it at its lowest value
    # (comma-separated, or one value for all); "auto": the env's own (envs.RANDOM_REST), "0": uniform
    random_rest: str = "auto"


@dataclass
class TokenizerConfig:
    patch: int = 8  # patch size p; image size must be divisible by it
    dim: int = 192  # width D
    heads: int = 4
    kv_heads: int = 2  # grouped-query attention: kv_heads divides heads
    enc_layers: int = 4
    dec_layers: int = 4
    time_every: int = 4  # every time_every-th layer attends over time (block-causal), the rest over space
    latents: int = 16  # N_l latent tokens per frame
    bottleneck: int = 32  # d_b values per latent (tanh bottleneck)
    mask_max: float = 0.9  # MAE: per image p_mask ~ U(0, mask_max)
    perceptual_weight: float = 0.2  # weight of the SSIM term (METHOD.md section 1)
    rms_decay: float = 0.99  # running RMS estimate used to normalise each loss term


@dataclass
class DynamicsConfig:
    dim: int = 256
    heads: int = 4
    kv_heads: int = 2
    layers: int = 8
    time_every: int = 4  # one time layer every time_every layers (METHOD.md 2)
    spatial_tokens: int = 16  # N_z; must divide tokenizer latents x bottleneck
    registers: int = 4  # S_r
    k_max: int = 64  # finest step 1 / k_max (ours)
    # (ours) fraction of frames trained with the plain x-loss at d = 1/k_max; the others draw k ~ U{1..k_max}
    # as METHOD.md says. With 0 (every frame draws k), 6 of 7 frames regress on targets that the untrained
    # network makes itself: on CarRacing the finest-step x-error stayed at E[z^2] after 500 steps; with 0.75
    # it fell 9x in 100 steps (see the README).
    flow_frac: float = 0.75
    # (ours) > 0: bootstrap frames come by rows instead (this fraction of the rows draws k ~ U{1..k_max}
    # for every frame, the others are at the finest step), and only those rows pay for the teacher passes
    # (two forward passes: 40% of a step on the CPU when every row needs them). Off: at 0.25 the cpu preset's
    # 9-minute stage took 19-38% more steps and its one-step mean came closer to the next latent on 3 seeds
    # of 3 (0.0393 / 0.0415 / 0.0296 against 0.0458 / 0.0451 / 0.0302; copying 0.0303 / 0.0218 / 0.0186),
    # but the turn check fell on all three (84 / 91 / 88% against 97 / 97 / 91%) and the shuffle ratio h8
    # rose on two (2.03 / 1.64 / 1.74 against 1.88 / 1.31 / 2.00; docs/experiments.md session 39)
    boot_rows: float = 0.0
    # loss weight w(tau) = ramp tau + (1 - ramp); METHOD.md's ramp is 0.9 (ramp 0: every frame the same). A
    # 4-minute A/B on DotTrack measured no difference in how much the model uses the actions (README). On
    # CarRacing the ramp gives the frames at tau ~ 0, which must come from the context alone, a tenth of the
    # weight; flat (0) left the cpu preset's one-step mean as far from the next latent (0.0456 vs 0.0458
    # after 9 minutes, copying 0.0303; docs/experiments.md session 39): that weight is not what holds it back
    ramp: float = 0.9
    # (ours) the action lookup table starts ordinal: each dimension's bins on a line (dynamics.ordinal_init).
    # DotTrack, 4 minutes: one-step dreamed vs real car displacement slope 0.036 with random rows, 0.294
    ordinal_actions: bool = True
    # (ours) how the action enters: "token" (METHOD.md: its own tokens, read by the spatial tokens through
    # the space layers' attention) or "spatial" (the same tokens, and their sum added to each spatial token
    # of the frame as well, so every latent group sees the action from the first layer on). Issue 17's
    # lever "how the action enters the model"; measured in docs/experiments.md (session 28)
    action_into: str = "token"
    sample_steps: int = 4  # K when dreaming
    # (ours) action guidance, in the manner of classifier-free guidance: in training each frame of a
    # sequence row hides the action that led to it with probability action_dropout (the "no action"
    # embedding), so the model also learns what comes next without it; when dreaming, each denoising step
    # then reads z1_hat = u + w (c - u) with c the prediction with the frame's action, u without it and
    # w = action_guidance (1: one plain pass, no extra cost; > 1 costs a second pass per step). The
    # dreams of CarRacing turned the right way but by a quarter of the env's turn (turn_dream_lr_mse
    # 0.005 vs 0.021, runs/d_sf): w > 1 scales what the action changes (docs/experiments.md)
    action_dropout: float = 0.0
    action_guidance: float = 1.0
    single_frame_frac: float = 0.3  # rows of a batch cut into single frames (learn first frames)
    # (ours) whether single-frame rows keep the action that led to their frame (without the frame before
    # it the action says nothing about it); False feeds them as first frames (the "no action" embedding)
    single_frame_action: bool = True
    # (ours) rows whose frames before a random cut are fed at the dreaming context level (see dynamics.py)
    context_frac: float = 0.0
    # (ours) self-forcing rows: in this fraction of the sequence rows the frames between the first quarter
    # of the row and a random cut are replaced by the model's own dream of them (no gradient; from the
    # real first quarter under the row's real actions, plain (w = 1) in dream_context_steps steps, as
    # imagination dreams) and fed as dreaming feeds its context; only the real frames from the cut on
    # carry the loss. The dream otherwise only ever learns to continue real pasts, and in imagination it
    # slows down as its own frames fill the context (dream.action_effect's motion_kept, session 36).
    # Off: measured at 0.1 and 0.25 on runs/s37 (2 seeds each, docs/experiments.md session 37), 0.25
    # raises the dream's motion at h8 (0.96-1.43 vs 0.53-0.69 kept) but it points nowhere (motion_agree
    # h1 ~0.04 vs ~0.31), the pixel error rises at every horizon and the turn check falls to 75-78%
    dream_context_frac: float = 0.0
    dream_context_steps: int = 2
    # (ours) the network predicts a frame's change from the frame before it: x-prediction z1_hat =
    # f(...) + z_{t-1} (the previous frame's clean latent; 0 for a first frame), in training, in the
    # bootstrap teacher and in every dream. With the zero-initialised head a new model dreams "repeat the
    # last frame". Why: the cpu preset's 9-minute stage ended with a one-step dream (K = 1, its own
    # estimate of the mean) 1.8x as far from the real next latent as copying the last one (runs/s37,
    # session 38), and its steps agree with the env's by a cosine of ~0.3. Off: with it the model learned
    # to copy and little else (runs/s38/dyn_pd_s0: one-step error 0.0319 against copying's 0.0303, but
    # the dream keeps 2% of the env's motion, its latents drift to 2.7x copying's error at h16, and the
    # guided shuffle ratio h8 fell to 0.40)
    predict_delta: bool = False
    context: int = 16  # frames of context kept when dreaming (sliding window, KV cache)
    context_noise: float = 0.1  # context frames re-noised as (1 - noise) z + noise eps
    long_len: int = 32  # every long_every-th batch is this long (longer than the context)
    long_every: int = 8


@dataclass
class AgentConfig:
    tokens: int = 1  # agent tokens per frame
    tasks: int = 1  # size of the task embedding table
    mtp: int = 8  # multi-token prediction: heads for distances 0..mtp (L in METHOD.md 3)
    hidden: int = 256  # width of each head's MLP
    sees_action: bool = True  # (ours) agent tokens start from their frame's action embedding (dynamics.py)
    # (ours) what imagination and the dream env read the reward from: "agent" (METHOD.md: the reward head
    # on the agent token, which also reads the action token of its frame) or "frame" (a head on the latents
    # of the frame arrived at and the one before, blind to the action: agent.AgentHeads)
    reward_input: str = "agent"
    # (ours) what the value head reads: "agent" (METHOD.md: the agent token's output, which starts from the
    # embedding of the action that led to the frame) or "frame" (the frame's latents and their change, as
    # the frame reward head, blind to the action but through the dream). The lambda return of a_t reads the
    # value at frame t+1: a value on the agent token can rank a_t by what its fits learned of the token.
    # Measured on `make demo`'s RL value (run s44/demo_s0, benchmarks/bench_heads_action.py --head value):
    # half of what an action changes in it came through the token (2.44 against 2.42 through the dreamed
    # frame; value spread 15.27). But RL retrained from that run's clone (+360.07) with "frame" scored RL -
    # BC -8.4 / -106.2 against -55.0 / -21.1 with "agent" (two draws each; the loop's own: -49.5), so the
    # token's share is not what makes RL fall there (docs/experiments.md, session 44): "agent" stays
    value_input: str = "agent"
    horizon: int = 15  # imagined steps per rollout
    # (ours) the action guidance (DynamicsConfig.action_guidance) of the dreams the agent is trained in:
    # imagination RL and the dream env. Dreams shown to people (dream, play, the benchmarks) keep the
    # dynamics' own. Guidance scales what an action changes, and a policy trained on the scaled dreams
    # climbs the scale: see the cpu preset
    imagine_guidance: float = 1.0
    # (ours) the sampling steps K of those dreams (0: the dynamics' own dynamics.sample_steps). Fewer steps
    # make each imagined frame cheaper, so the same minutes buy more RL steps; see the cpu preset
    imagine_steps: int = 0
    # imagined rollouts per RL step (ours: METHOD.md gives no number). 64 rather than 16: on 2 CPU cores an
    # imagined frame costs 1.3x less at 64 (533 vs 409 frames/s), and PMPO's sign-of-advantage updates are
    # less noisy; on DotTrack (dot_s3's agent, beta 0.1) greedy return +13.06 with 64 against +1.37 with 16
    rollouts: int = 64
    context: int = 8  # real frames that start each rollout
    gamma: float = 0.997
    lam: float = 0.95
    # PMPO weight of the positive set. 0.7 instead of METHOD.md's 0.5, RL retrained from a +360.07 clone
    # (run s44/demo_s0): RL - BC -49.7 / -34.4 against -55.0 / -21.1 with 0.5; entropy still rose (session 44)
    alpha: float = 0.5
    beta: float = 0.3  # PMPO weight of the KL to the prior
    # (ours) weight of a penalty on the squared shift of the expected action averaged over a rollout's
    # states, against the prior's (imagine.rl_losses). The KL holds each state near the clone; this holds
    # the policy's average action, a bias the dream misprices: from the same 12 real states it paid the
    # clone steering 0.3 to the left +3.27 more over 15 steps where the env paid 3.64 less, and RL moved
    # the clone's mean steering in the env from +0.26 to +0.05 (docs/experiments.md, session 34). On that
    # run's last RL stage retrained: RL - BC -123.8 / -212.6 / -135.0 / -144.6 without (four draws),
    # -23.7 / -144.1 at 10, -0.5 / -162.4 / -110.6 / -21.0 at 30 (mean -73.6 against -154.0), and -7.5 on
    # average with the advantages shuffled (session 35): the penalty halves the fall the dream's advantages
    # cause, RL does not pass its clone. Off: the loop's first RL iteration gained most by moving a weak
    # clone's average action (session 33: a right bias and braking taken out), which this would hold back
    mean_action_weight: float = 0.0
    # (ours) in finetuning the world model keeps learning from the growing store at the full rate (the
    # dynamics loss, METHOD.md 4's "repeat as data grows"), while the gradient the agent losses (BC,
    # reward, continuation) send into the transformer is scaled by ft_agent_grad_scale: at full strength
    # they collapsed the agent outputs to a constant within ~20 steps (spread 0.84 -> 0.01). Before, the
    # whole transformer trained at 0.1x the rate (ft_transformer_lr_scale 0.1, grad scale 1.0), which also
    # slowed the world model's own learning on the policy's new episodes to a tenth.
    ft_transformer_lr_scale: float = 1.0  # finetune lr of the transformer relative to the heads
    ft_agent_grad_scale: float = 0.1
    # (ours) before imagination RL, the frame reward head (reward_input "frame") is fitted on the world
    # model's own dreams: the dreams of dream_reward_batches x rollouts real segments of the store, from
    # their first `context` frames under their own next `horizon` actions, each dreamed frame labelled with
    # the reward the env paid on arriving at the real one (and the real frames kept in the loss). The head
    # learned the reward on real latents, and the dream pays it differently by seed: it fades (0.75 per
    # step at step 1, 0.04 at step 15 where the real frames earn 0.72), underpays or overpays
    # (docs/experiments.md, session 32). Fitted with 8, the dream's 15-step reward came within 1.24 / 5.88
    # / 0.03 of the env's (before 2.33 / 7.36 / 2.38), but the loop's last RL stage retrained with it scored
    # +332.38 / +248.11 / +276.92 against +370.05 / +242.33 / +384.63 without (session 33). 0: off
    dream_reward_batches: int = 0
    dream_reward_steps: int = 200  # head updates (a batch of 256 dreamed + 256 real frame pairs each)
    value_warmup: int = 20  # (ours) imagination steps that train the value alone before the policy moves
    value_updates: int = 32  # (ours) value-head updates per imagined rollout
    value_lr_scale: float = 10.0  # (ours) value head's lr relative to the policy's in imagination training
    adv_gate: float = 0.1  # (ours) the policy moves only when the share of A >= 0 is in [gate, 1 - gate]
    policy_updates: int = 4  # (ours) PMPO updates per rollout, on advantages fixed before the first
    head_updates: int = 16  # (ours) head updates per finetune batch (the first also moves the transformer)
    eval_episodes: int = 10  # real-env evaluation episodes (fixed seeds)
    # (ours) env instances the agent plays its evaluation and collection episodes in side by side, one
    # batched forward per step for all of them (imagine.evaluate_policy, collect.run_episodes). One at a
    # time, acting cost ~19 ms of model per step beside ~13 ms of CarRacing: the evaluations were 19.5 of
    # make demo's 54 minutes (run demo_fc1, session 26)
    eval_envs: int = 10
    # (ours) how the policy's per-dimension categoricals become the action in real-env evaluation: "mode"
    # (each dimension's most likely bin), "mean" (the expected bin value), "sample" or "median" (each
    # dimension's median bin); the loop scores the trained policy in two of the first three too. With a
    # prior cloned from random actions the KL keeps the policy wide and its samples hide what it learned:
    # on DotTrack one agent scored +13.06 with the mode and +0.58 sampled (docs/experiments.md). "auto": the
    # env's own (envs.EVAL_READOUT: "mean" on CarRacing-v3, where the cloned driver scored +267.60 with it
    # and -93.42 with the mode), else "mode"
    eval_readout: str = "auto"
    # at the end, how many of the other readouts (in the order mode, mean, sample) the final RL policy is
    # also scored with, one evaluation each: 0 to 2
    eval_other_readouts: int = 2
    collect_episodes: int = 5  # episodes the policy adds to the store each loop iteration
    iterations: int = 2  # loop iterations: dynamics -> finetune -> RL -> eval -> collect
    # (ours) the loop also scores each iteration's clone (the finetuned policy RL starts from and is held to)
    # beside its RL policy, on the same fixed seeds, so that "RL above its clone" is read per iteration. The
    # long preset's third clone scored -30.33 while RL from it scored +488.30, and the loop had not scored
    # the earlier clones (run long_s0). One more evaluation per iteration but the last, whose clone the
    # final table scores anyway (~1.7 min on CarRacing)
    eval_clone: bool = True
    # (ours) whether the loop scores every iteration's RL policy and clone in the real env, or only the last
    # iteration's (the final table's). The earlier ones are diagnostics no stage reads: on CarRacing they
    # cost ~4 of make demo's minutes (20 episodes; session 40's evaluations took 10.7-12.9 minutes in all)
    eval_every_iteration: bool = True
    # (ours) each loop iteration's imagination RL starts from that iteration's clone (the finetuned policy,
    # also its prior) instead of resuming the last iteration's policy and value heads, which were trained on
    # agent-token features the new finetune has since moved. The loop's second RL iteration scored below
    # its first on all three seeds of `make demo`; RL restarted from each seed's last clone for the same 5
    # minutes scored +288.67 / +322.76 / +413.48 against the loop's +330.20 / +60.87 / +346.48 (clones
    # +303.36 / +268.88 / +403.46; docs/experiments.md, session 20). Off until the loop itself is measured
    # with it: seed 0 fell by 41.5, just past the ~40 that evaluation noise moves one policy
    rl_from_clone: bool = False
    # (ours) whether finetuning clones the actions of the agent's own episodes too (the loop adds
    # agent.collect_episodes of them per iteration), or only those of the store's other sources (the
    # driver's demonstrations, exploration). The reward and continuation heads and the world model learn
    # from every episode either way. The long preset's clone got worse with each iteration (+343 -> +286
    # -> +227 on long_s1, -30 on long_s0's third) while the store gained the RL policy's sampled episodes,
    # whose steering drifted (long_s0's agent-2 mean steer +0.45 against the driver's -0.05). Measured in
    # the cpu preset (off there, see _cpu)
    bc_own: bool = True


@dataclass
class TrainConfig:
    steps: int = 2000  # optimizer steps for this stage
    minutes: float = 0.0  # if > 0, the stage also stops after this many minutes of training
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    batch: int = 0  # segments per batch for this stage; 0 = data.batch
    seq_len: int = 0  # frames per segment for this stage; 0 = data.seq_len
    log_every: int = 25
    eval_every: int = 250
    ckpt_every: int = 250
    # a step whose loss or gradient norm is not finite is skipped (no update) and counted (skipped_steps);
    # after this many in a row the stage stops with an error and its last checkpoint stays as it was
    max_bad_steps: int = 10


@dataclass
class RunConfig:
    name: str = "default"
    runs_dir: str = "runs"  # run folder = <runs_dir>/<name>
    seed: int = 0
    device: str = "auto"  # auto = cuda > mps > cpu
    bf16: str = "auto"  # autocast to bfloat16: auto (on where measured to help), on, off
    threads: int = 0  # torch CPU threads; 0 = torch's default
    compile: bool = False  # torch.compile the training step's model (see `minidreamer4 bench --compile`)
    wandb: bool = False  # also log to Weights & Biases (offline without network)
    env: EnvConfig = field(default_factory=EnvConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tok_train: TrainConfig = field(default_factory=TrainConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    dyn_train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=3000, lr=5e-4))
    agent: AgentConfig = field(default_factory=AgentConfig)
    ft_train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1000, lr=3e-4))
    rl_train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=500, lr=3e-4, warmup=10))


def _tiny() -> RunConfig:
    c = RunConfig(name="tiny")
    c.env = EnvConfig(id="DotTrack-v0", size=16, action_repeat=1, max_steps=40, action_bins=5)
    c.data = DataConfig(seq_len=4, batch=4, memory_gb=0.5, holdout_every=4, collect_episodes=4)
    c.tokenizer = TokenizerConfig(
        patch=4,
        dim=32,
        heads=2,
        kv_heads=1,
        enc_layers=2,
        dec_layers=2,
        time_every=2,
        latents=4,
        bottleneck=8,
    )
    c.tok_train = TrainConfig(steps=30, lr=2e-3, warmup=5, log_every=10, eval_every=15, ckpt_every=15)
    c.dynamics = DynamicsConfig(
        dim=32,
        heads=2,
        kv_heads=1,
        layers=2,
        time_every=2,
        spatial_tokens=4,
        registers=1,
        k_max=8,
        context=4,
        long_len=6,
        long_every=3,
    )
    c.dyn_train = TrainConfig(steps=30, lr=2e-3, warmup=5, log_every=10, eval_every=15, ckpt_every=15)
    c.agent = AgentConfig(
        mtp=2,
        hidden=32,
        horizon=4,
        rollouts=4,
        context=3,
        eval_episodes=2,
        collect_episodes=2,
        iterations=2,
        value_warmup=5,
    )
    c.ft_train = TrainConfig(steps=20, lr=2e-3, warmup=5, log_every=10, eval_every=10, ckpt_every=10)
    c.rl_train = TrainConfig(steps=20, lr=2e-3, warmup=5, log_every=10, eval_every=10, ckpt_every=10)
    return c


def _cpu() -> RunConfig:
    c = RunConfig(name="cpu")
    # minute budgets keep the default job (`make demo`: the whole loop on CarRacing-v3, one iteration) within
    # 45 minutes on a 2-core CPU: collect 20 driver episodes, tokenizer 7, dynamics 12, finetune 4 and
    # imagination 5, plus real-env evaluation (measured, session 45, CarRacing at 63-65 steps/s: 39.5 / 39.1 /
    # 39.4 min in all, evaluation 6.9-7.3 of them; docs/experiments.md). The steps are an upper bound.
    # tokenizer: more, shorter segments: consecutive frames are alike, so more distinct frames per step
    c.tok_train = TrainConfig(
        steps=100_000, minutes=7.0, lr=3e-4, warmup=100, eval_every=250, batch=16, seq_len=4
    )
    # (ours) no MAE masking in minute-long CPU runs: masking (METHOD.md: p ~ U(0, 0.9), kept in the other
    # presets) slows what a few minutes can learn. Measured in 10 minutes on CarRacing: held-out PSNR 32.1
    # dB without vs 30.15 with; on DotTrack in 2 minutes the masked tokenizer left the small car out
    c.tokenizer.mask_max = 0.0
    # (ours) 16x16 patches (16 tokens per 64x64 frame), not 8x8 (64): in the same 7 minutes 2.4x the steps
    # (1,013 / 1,042 / 1,023 vs 426 / 429 / 464) and held-out PSNR 28.1 / 27.9 / 27.6 dB vs 25.9 / 25.4 /
    # 25.9 over 3 seeds, each pair on one store of 20 driver episodes. The dynamics stage on top (9 min)
    # follows the actions better on every seed: shuffle ratio h8 1.89 / 1.69 / 2.00 vs 2.20 / 1.23 / 1.34,
    # share of the env's action effect reproduced at h8 60 / 80 / 67% vs 55 / 37 / 61%, turn check 81 /
    # 100 / 94% vs 53 / 56 / 69% (view alone 47 / 69 / 75% vs 44 / 44 / 53%), pixel error h8 0.0086 /
    # 0.0070 / 0.0051 vs 0.0093 / 0.0089 / 0.0066 (benchmarks/bench_action_effect.py; runs a17/pP_sS,
    # docs/experiments.md sessions 29-31)
    c.tokenizer.patch = 16
    # (ours) 12 minutes, not 9: the minutes of the loop's first iteration (below), given to the dream
    c.dyn_train = TrainConfig(steps=100_000, minutes=12.0, lr=5e-4, warmup=100, eval_every=250)
    # (ours) no single-frame rows (METHOD.md: 30%, kept in the other presets): each costs as much as a
    # sequence row and teaches no dynamics, and every dream here starts from real frames. In the 9-minute
    # stage the model then learns more of what follows what (3 training seeds, each paired on one store
    # and tokenizer; docs/experiments.md session 39): one-step mean 0.0385 / 0.0344 / 0.0290 against 0.0458 /
    # 0.0451 / 0.0302 (copying the last latent 0.0303 / 0.0218 / 0.0186), imagination's dream agrees with
    # the env's step at h1 by 0.40 / 0.54 / 0.45 against 0.29 / 0.32 / 0.27; w = 4: shuffle ratio h8 2.05 /
    # 2.37 / 2.37 against 1.88 / 1.31 / 2.00, reproduced 67 / 82 / 69% against 62 / 67 / 70%, turn check 100
    # / 94 / 100% against 97 / 97 / 91% (view alone 78 / 81 / 75% against 59 / 59 / 69%), pixel error h8
    # 0.0087 / 0.0060 / 0.0045 against 0.0091 / 0.0076 / 0.0055: issue 17's four targets on all three seeds
    # The finetune's kept-on dynamics loss reads it too. `make demo` with it (session 40, 3 seeds): RL - BC
    # paired +35 / -28 / +139 (old default: -117 / +156 / +33); the first iteration's clones weaker (why:
    # not yet measured)
    c.dynamics.single_frame_frac = 0.0
    # the agent stages log every step or two: an RL step takes ~8 s here (35-37 in make demo's 5 minutes),
    # so the default log_every 25 left their curves in report.md with few points (logging draws no random
    # numbers)
    c.ft_train = TrainConfig(steps=100_000, minutes=4.0, lr=3e-4, warmup=50, eval_every=100, log_every=2)
    c.rl_train = TrainConfig(steps=100_000, minutes=5.0, lr=3e-4, warmup=10, eval_every=100, log_every=1)
    # (ours) one loop iteration, not two, with the second iteration's finetune (4 min) and RL (5 min)
    # budgets. The first iteration (RL 2.5 min, 5 episodes collected by its policy, ~3.3 min in all) fed only
    # the second finetune's kept-on dynamics loss (the clone copies the driver: agent.bc_own). Its minutes
    # went to the dynamics stage: 12 minutes with two iterations took 43.5-46.2 min (session 43, RL - BC
    # +1.3 / +126.7 / +22.7); with one, `make demo` took 39.5 / 39.1 / 39.4 min, RL scored +351.15 / +339.83
    # / +360.26 (mean +350.41, std 8.36) on seeds 0 / 1 / 2 and RL - BC paired +62.4 / +108.4 / -50.6 (runs
    # s45/one_sS). Two iterations at 9 minutes, eight runs: RL +269.03 (std 58.04), RL - BC +15.0 (std
    # 78.38); docs/experiments.md session 45
    c.agent.iterations = 1
    # (ours) on CarRacing 2.5 minutes of RL were 16-17 steps (64 rollouts at ~115 imagined frames/s), fewer
    # than the default 20-step value warm-up: the policy never moved. 5 minutes are 35-37 (session 45)
    c.agent.value_warmup = 5
    # (ours) the final RL policy scored in eval_readout ("mean" on CarRacing) alone: the two other readouts'
    # evaluations took 2.3 + 2.5 of make demo's 48.1 minutes (run s31/demo_s0, session 31). On the last
    # four CarRacing runs (s27_s0/1/2, s31/demo_s0) the mode scored below the mean on all four (-93.42 /
    # +2.62 / -9.00 / -93.42 against +360.30 / +254.91 / +69.46 / +285.05), sampling on three (+115.23 /
    # +16.96 / +81.32 / +47.82). `--agent.eval_other_readouts 2` scores them again
    c.agent.eval_other_readouts = 0
    # (ours) and only the last iteration scored (agent.eval_every_iteration): the first iteration's two
    # evaluations fed nothing, and with them make demo took 47.3 / 46.4 / 44.8 minutes (session 40, where
    # CarRacing stepped at 51-56 steps/s). `--agent.eval_every_iteration true` scores them again
    c.agent.eval_every_iteration = False
    # (ours) action guidance (DynamicsConfig.action_guidance): 3 training seeds of this preset's dynamics
    # stage on the driver's data, dreamed plainly and with w = 4: shuffle ratio h8 1.28 / 1.33 / 1.28 ->
    # 2.30 / 1.93 / 1.78, share of the env's action effect reproduced at h8 10.5% / 13.8% / 12.4% -> 44.2% /
    # 41.6% / 45.8%, and the pixel error against the real frames lower on every seed (docs/experiments.md,
    # session 18). A second pass per denoising step: dreaming and imagination cost ~1.8x per frame
    c.dynamics.action_dropout, c.dynamics.action_guidance = 0.2, 4.0
    # (ours) the agent is trained in plain dreams (agent.imagine_guidance 1), not the guided ones the
    # dreams above are shown with. On CarRacing (run ft_ag: the driver's clone, +238.09 +- 113.33 with the
    # mean readout) imagination RL in w = 4 dreams fell to -11.30 +- 6.69, in w = 1 dreams it held at
    # +241.51 +- 57.65 (run rl_w1f, docs/experiments.md session 19). Why, measured from 18 real states
    # (benchmarks/bench_dream_reward.py): over a rollout's 15 steps the RL policy earned less than BC in
    # the env (8.25 vs 12.99) and by the reward head on the real frames (3.71 vs 7.46), but more in its
    # dreams at w = 4 (18.84 vs 15.60) and w = 2 (15.16 vs 14.27); at w = 1 about as much (9.57 vs 10.17,
    # and 10.29 vs 9.85 in a second pass). Guidance exaggerates what gas and steering do, and RL climbed
    # the exaggeration
    c.agent.imagine_guidance = 1.0
    # (ours) and sampled in K = 2 steps, not the dynamics' 4 (agent.imagine_steps): the same 5 minutes of
    # the loop's last RL stage buy 35 / 42 / 43 RL steps instead of 21 / 25 / 23. Retrained from the three
    # final clones of session 31's `make demo` (runs s31/demo_sS -> s32/k2_sS), RL scored +370.05 / +242.33
    # / +384.63 against the loop's own K = 4 RL +285.05 / +282.00 / +253.47 (BC +338.61 / +243.87 /
    # +193.54: RL - BC +31.4 / -1.5 / +191.1 against -53.6 / +38.1 / +59.9). One policy's score moves by
    # ~40-50 between retrainings (seed 2 retrained at K = 4: +304.14), so this is a lean, not a proof. Per
    # dreamed step the reward the head reads fades less over the 15 steps at K = 2 on one seed of three.
    # Fresh `make demo` runs at K = 2, seeds 0 / 1 / 2 (runs s32/demo_s0, s33/demo_s1, s33/demo_s2): 41.5 /
    # 43.2 / 41.7 min, final RL +298.98 / +369.04 / +223.39 (mean +297.14; K = 4, session 31: +273.51),
    # iteration 1's RL +261.90 / +303.81 / +363.85 (K = 4: -34.44 / -41.73 / +279.71), RL - BC paired
    # -117.3 / +155.8 / +32.9 (docs/experiments.md, sessions 32-33). K = 1 (session 46, RL retrained from the
    # clones of runs s45/one_sS): RL - BC +60.1 / +119.4 / -89.8 against +92.5 / +135.2 / -24.0 at K = 2,
    # lower on every seed with 51-56 RL steps against 45-47, though its dream faded less on one seed of 3
    c.agent.imagine_steps = 2
    # (ours) with a reward head that reads the frames, not the action token (agent.reward_input "frame"):
    # that is the head of the run above. With the agent-token head (it reads the action token 8x more
    # than the dreamed frame, session 16) plain dreams did not help: imagination RL scored -81.97 +- 1.58
    # after the loop's first iteration (run cpu_g0, docs/experiments.md session 19)
    c.agent.reward_input = "frame"
    # (ours) and small policy steps near the clone: METHOD.md's lr 3e-4 (rl_train above) and KL weight
    # 0.3, gamma 0.99 / lambda 0.95. With the dottrack preset's fast settings, imagination RL took the
    # driver's clone from +243.23 +- 56.83 to -86.85 +- 1.01 in the loop's first iteration (run cpu_f0);
    # with these, retrained on that finetune, +250.41 +- 66.51 (run rl_c; on ft_ag's, +226.90 against BC
    # +238.09). Over three training seeds of `make demo` they held it on two and not on the third (RL -
    # BC +26.8 / -208.0 / -57.0, docs/experiments.md session 20); no setting has improved on the clone yet
    c.agent.gamma, c.agent.lam, c.agent.beta = 0.99, 0.95, 0.3
    # (ours) but a KL weight of 1.0, not 0.3: RL retrained for one iteration's 2.5 minutes from seed 2's
    # first clone (+324.46) fell to +122.58 with 0.3 (KL 0.17 after 5 policy steps, imagined reward 0.55 ->
    # 0.75 per step) and scored +339.51 / +331.10 with 1.0 / 3.0 (KL 0.02 / 0.005); from seed 1's second
    # clone (+310.35) +338.61 with 0.3, +271.26 with 3.0 and +274.77 with 1.0 for 5 minutes (evaluation
    # noise moves one policy by ~40; docs/experiments.md, session 27). It holds RL near the clone; the
    # world model of `make demo` does not yet show RL a way above it
    c.agent.beta = 1.0
    # (ours) the second iteration's finetune clones the driver's episodes, not the first RL policy's
    # (AgentConfig.bc_own). With them the loop's second clone fell from +368.72 to +236.86 and from +420.17
    # to -22.80 (runs demo_fc1 / demo_fc2); refinetuned on the same 25 episodes and world models, cloning
    # the driver's alone scored +310.35 / +147.11 against +274.18 / +54.06 cloning all (paired +36.2 / +93.0;
    # docs/experiments.md, session 26). Without demonstrations (data.policy random or explore) the store has
    # no other actions worth cloning: pass --agent.bc_own true there. One-iteration loops (the dottrack
    # preset) finetune before the agent has collected anything, so this does not touch them
    c.agent.bc_own = False
    # (ours) every RL iteration starts from its own clone, as in the long preset (AgentConfig.rl_from_clone;
    # session 20: RL restarted from each seed's last clone scored +341.64 mean against the loop's +245.85)
    c.agent.rl_from_clone = True
    return c


def _long() -> RunConfig:
    """The cpu preset for users who can wait: the whole loop on CarRacing-v3 in about two hours on 2 cores
    (measured 111.9 / 114.4 minutes, runs long_s0 / long_s1: imagination RL +488.30 / +317.06 over 10
    fixed seeds, BC -30.33 / +227.22; docs/experiments.md sessions 21, 22; resumable). Twice the
    episodes, a longer tokenizer (the ceiling of the dreams), three loop iterations so the world model sees
    the policy's own episodes twice. Of the first two, the tokenizer is the one measured to matter: on one
    store of 40 driver episodes and `make demo`'s 9-minute dynamics, the 20-minute tokenizer raised the
    shuffle ratio h8 from 1.51 to 1.66 and the turn check from 56% to 91% (view alone 50% -> 59%), while
    40 episodes instead of 20 with the 7-minute tokenizer left the view at chance (runs e40 / e40L,
    docs/experiments.md session 22). The dynamics stage is 30 minutes, not more: from 9 to 27 minutes
    (742 -> 2,000 steps, runs d_drvP / d_drvP_30) its action figures did not rise (shuffle ratio h8 1.35 ->
    1.30, turn check 78% -> 72%) and its pixel error fell a little (0.00940 -> 0.00919)."""
    c = _cpu()
    c.name = "long"
    c.data.collect_episodes = 40
    # its figures were measured with 8x8 patches; the cpu preset's 16x16 is not measured at this budget
    c.tokenizer.patch = 8
    c.tok_train.minutes, c.dyn_train.minutes = 20.0, 30.0
    # and with METHOD.md's 30% single-frame rows; the cpu preset's 0 is not measured at this budget
    c.dynamics.single_frame_frac = 0.3
    c.ft_train.minutes, c.rl_train.minutes = 4.0, 5.0  # per iteration; iteration i trains up to i x these
    c.agent.iterations = 3
    # the dynamics' own K = 4 in imagination, as its seeds were measured; the cpu preset's K = 2 is not
    # measured here
    c.agent.imagine_steps = 0
    # the KL weight its three seeds were measured with (RL above BC on each); the cpu preset's 1.0 holds
    # RL at a clone its weaker world model cannot improve on, and is not measured here
    c.agent.beta = 0.3
    # (ours) three iterations: each RL iteration starts from its own clone (AgentConfig.rl_from_clone). In
    # `make demo` the resumed second RL iteration fell below the first on all three seeds; restarted from
    # the last clone it scored +341.64 mean over the seeds against the loop's +245.85 (session 20)
    c.agent.rl_from_clone = True
    return c


def _dottrack() -> RunConfig:
    """The whole loop on DotTrack-v0 in about 10 minutes on 2 cores: where agent changes are measured first
    (docs/experiments.md). The cpu preset with 32x32 frames, 100-step episodes, a 0.76M-parameter dynamics
    model, one loop iteration."""
    c = _cpu()
    c.name = "dottrack"
    c.env = EnvConfig(id="DotTrack-v0", size=32, action_repeat=2, max_steps=100)
    # 8x8 patches as measured: 16x16 would leave a 32x32 frame 4 tokens, and the dot smaller than a patch
    c.tokenizer.patch = 8
    # METHOD.md's 30% single-frame rows, as its results were measured (the cpu preset's 0: CarRacing only)
    c.dynamics.single_frame_frac = 0.3
    c.data.collect_episodes = 200
    c.tok_train.minutes, c.dyn_train.minutes, c.ft_train.minutes, c.rl_train.minutes = 2.0, 4.0, 1.5, 2.0
    c.dynamics.dim, c.dynamics.layers, c.dynamics.time_every, c.dynamics.ramp = 128, 4, 2, 0.0
    # DotTrack's dreams follow its actions without guidance (its measured results are without it)
    c.dynamics.action_dropout, c.dynamics.action_guidance = 0.0, 1.0
    c.dyn_train.lr = 1e-3
    c.agent.iterations = 1
    # (ours) imagination RL in minutes, not days: METHOD.md's gamma 0.997 / lambda 0.95, KL weight 0.3 and
    # lr 3e-4 left the policy at its prior after 2 minutes on DotTrack (KL 0.04); the prior is cloned from
    # random actions, so staying near it means acting at random. With these and the agent-token reward
    # head, three seeds scored far above random and BC (README, Results)
    c.rl_train.lr = 3e-3
    c.agent.gamma, c.agent.lam, c.agent.beta = 0.9, 0.8, 0.1
    c.agent.reward_input = "agent"
    c.agent.imagine_steps = 0  # its measured results dream with the dynamics' own K
    return c


def _gpu() -> RunConfig:
    c = RunConfig(name="gpu")
    c.env = EnvConfig(size=96, action_repeat=2, max_steps=500)
    c.data = DataConfig(seq_len=16, batch=32, memory_gb=32.0, collect_episodes=100)
    c.tokenizer = TokenizerConfig(
        patch=8, dim=512, heads=8, kv_heads=4, enc_layers=8, dec_layers=8, latents=32, bottleneck=32
    )
    c.tok_train = TrainConfig(steps=50_000, lr=3e-4, warmup=1000, eval_every=2000, ckpt_every=2000)
    c.dynamics = DynamicsConfig(
        dim=768, heads=12, kv_heads=4, layers=16, spatial_tokens=32, registers=8, context=64, long_len=96
    )
    c.dyn_train = TrainConfig(steps=100_000, lr=3e-4, warmup=2000, eval_every=5000, ckpt_every=2000)
    return c


PRESETS = {"tiny": _tiny, "cpu": _cpu, "long": _long, "dottrack": _dottrack, "gpu": _gpu}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


# ----------------------------------------------------------------------------------------------------
# dict <-> dataclass, and `--section.field` command-line flags


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


# fields renamed since, as (class, old key) -> (new key, value map): configs saved before still load
RENAMED = {("AgentConfig", "eval_greedy"): ("eval_readout", lambda v: "mode" if v else "sample")}


def from_dict(cls: type, d: dict) -> Any:
    """Builds a (nested) dataclass from a dict; unknown keys are an error, missing keys keep defaults."""
    kwargs = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for old, v in list(d.items()):
        if (cls.__name__, old) in RENAMED:
            new, conv = RENAMED[(cls.__name__, old)]
            d = {**{k: x for k, x in d.items() if k != old}, new: conv(v)}
    for k, v in d.items():
        if k not in fields:
            raise ValueError(f"unknown config key {cls.__name__}.{k}")
        ftype = _field_type(cls, k)
        kwargs[k] = from_dict(ftype, v) if dataclasses.is_dataclass(ftype) else v
    return cls(**kwargs)


def _field_type(cls: type, name: str) -> Any:
    import typing

    return typing.get_type_hints(cls)[name]


def _walk(cfg: Any, prefix: str = ""):
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            yield from _walk(v, key + ".")
        else:
            yield key, f, v


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {s!r}")


ALIASES = {"env.id": ["--env"]}  # short forms of the most used flags


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Adds `--preset` and one `--section.field` flag per leaf of RunConfig (defaults: the preset)."""
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="starting values")
    base = RunConfig()
    group = parser.add_argument_group("config (overrides on top of the preset)")
    for key, _f, v in _walk(base):
        typ = _parse_bool if isinstance(v, bool) else type(v)
        group.add_argument(
            f"--{key}",
            *ALIASES.get(key, []),
            dest=key,
            type=typ,
            default=None,
            nargs="?" if isinstance(v, bool) else None,
            const=True if isinstance(v, bool) else None,
            metavar=type(v).__name__.upper(),
        )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    cfg = preset(args.preset)
    for key, _f, _v in _walk(cfg):
        val = getattr(args, key, None)
        if val is not None:
            set_key(cfg, key, val)
    return cfg


def set_key(cfg: Any, dotted: str, value: Any) -> None:
    *path, leaf = dotted.split(".")
    obj = cfg
    for p in path:
        obj = getattr(obj, p)
    if not hasattr(obj, leaf):
        raise ValueError(f"unknown config key {dotted}")
    setattr(obj, leaf, value)


def replace(cfg: RunConfig, **dotted: Any) -> RunConfig:
    """A copy of cfg with dotted keys replaced: replace(cfg, **{"tokenizer.dim": 64})."""
    c = copy.deepcopy(cfg)
    for k, v in dotted.items():
        set_key(c, k, v)
    return c


def dumps(cfg: RunConfig) -> str:
    return json.dumps(to_dict(cfg), indent=2)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['section.field=value', ...] -> {'section.field': value}, each value cast to its field's type (the
    benchmarks' --set flags)."""
    types = {key: type(v) for key, _f, v in _walk(RunConfig())}
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in types:
            raise ValueError(f"--set wants section.field=value with a known field, got {item!r}")
        out[key] = _parse_bool(raw) if types[key] is bool else types[key](raw)
    return out
