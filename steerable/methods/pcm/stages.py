"""PCM stages: `experts` (one LoRA expert per preference side, SFT on the data whose label is at that side's end),
`pcm` (the controller trained with REBEL on Bradley–Terry rewards against cached reference responses)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerBase

from steerable.backbone.adapters import (
    atomic_directory,
    load_named_adapters,
    reference_policy,
    save_model,
    wrap_lora,
)
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.budget import record_trained
from steerable.config.schema import ConfigError
from steerable.data.loaders import load_records, split_records
from steerable.data.prompts import prompt_sets
from steerable.data.records import Conversation, Messages, user_text
from steerable.data.tokenize import pad_rows, tokenize_messages
from steerable.generation import GenerationSettings, make_sampler
from steerable.generation.mixture import MixtureSampler
from steerable.methods.base import FINAL_MODEL_DIR, RunContext, sub_context
from steerable.methods.fitting import fit_module, write_diagnostics
from steerable.methods.pcm.config import PCMConfig
from steerable.methods.pcm.controller import (
    PreferenceController,
    aligned_log_alpha,
    mixture_log_likelihood,
    rebel_loss,
)
from steerable.methods.pcm.policy import (
    CONTROLLER_DIR,
    Mixture,
    build_controller,
    controller_prefix,
    controller_weights,
    load_experts,
)
from steerable.methods.pcm.preferences import (
    Dimension,
    active,
    combinations,
    describe,
    parse_dimensions,
    side_sign,
    sides,
)
from steerable.methods.sft_recipe import fit_sft
from steerable.pipeline import StageResults, StageSummary
from steerable.rewards.base import build_reward_source
from steerable.rewards.normalize import bradley_terry
from steerable.run_dir import write_text_atomic
from steerable.training.diagnostics import mixture_diagnostics
from steerable.training.lm_module import OptimSettings
from steerable.training.online import OnlineModule
from steerable.training.sampler import shuffled_loader

EXPERTS_DIR = "experts/final"
PREFERENCE_ROOM = 16  # prompt tokens kept free for the preference description

# --------------------------------------------------------------------------------------------- experts


def side_data(
    conversations: list[Conversation], dimension: str, high: bool, m: PCMConfig
) -> list[Conversation]:
    def keep(c: Conversation) -> bool:
        turn = c.last_assistant
        value = turn.attributes.get(dimension) if turn is not None else None
        if value is None:
            return False
        return value >= m.high_side_min if high else value <= m.low_side_max

    return [c for c in conversations if keep(c)]


def experts_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """One SFT'd LoRA expert per side, then all of them as named adapters of one policy in experts/final."""
    cfg, m = ctx.cfg, ctx.cfg.method
    if m.experts:
        return {"path": str(Path(m.experts) / EXPERTS_DIR), "reused": True}
    dims = parse_dimensions(m.dimensions)
    tokenizer = load_tokenizer(cfg.model)
    train, val = split_records(load_records(cfg.data), cfg.data)
    summaries = {}
    for d in dims:
        for side, high in ((d.low, False), (d.high, True)):
            records, held_out = side_data(train, d.name, high, m), side_data(val, d.name, high, m)
            if not records:
                raise ConfigError(
                    f"method.dimensions: no training record of data={cfg.data.name} has {d.name} at the "
                    f"{'high' if high else 'low'} end for side {side!r}"
                )
            sub = sub_context(ctx, f"experts/{side}", replace(m, lr=m.expert_lr), m.expert_steps)
            if (sub.run_dir / FINAL_MODEL_DIR).is_dir():
                continue
            sub._backbone = (
                wrap_lora(load_base_model(cfg.model, tokenizer), cfg.model.lora, side),
                tokenizer,
            )
            encode = lambda rs: tokenize_messages(  # noqa: E731
                tokenizer, [r.messages for r in rs], cfg.data, cfg.model.end_of_turn
            )
            summaries[side] = fit_sft(sub, encode(records), encode(held_out), metadata={"side": side})
    model = combined_experts(ctx.run_dir, dims, cfg.model, tokenizer)
    meta = {"method": "pcm", "sides": sides(dims), "dimensions": list(m.dimensions)}
    save_model(model, tokenizer, ctx.run_dir / EXPERTS_DIR, metadata=meta)
    return {"path": str(ctx.run_dir / EXPERTS_DIR), "experts": summaries}


def combined_experts(run_dir: Path, dims: list[Dimension], model_cfg, tokenizer) -> PeftModel:
    folders = {side: run_dir / "experts" / side / FINAL_MODEL_DIR / side for side in sides(dims)}
    return load_named_adapters(load_base_model(model_cfg, tokenizer), folders)


# ------------------------------------------------------------------------------------------ controller


def save_controller(controller: PreferenceController, folder: Path, info: dict) -> None:
    trainable = {n: p.detach().contiguous() for n, p in controller.named_parameters() if p.requires_grad}
    with atomic_directory(folder) as tmp:
        save_file(trainable, str(tmp / "controller.safetensors"))
        (tmp / "controller.json").write_text(json.dumps(info, indent=2))


# ------------------------------------------------------------------------------------------- rewards


class BTRewards:
    """R(x, y, ξ) = mean over ξ's sides of σ(β·(s·r_d(x, y) − s·r_d(x, y_ref))) with y_ref one cached reference
    response per (prompt, preference): the preference-prompted base model, sampled once (spec §2.4)."""

    def __init__(self, rewards: dict, dims: list[Dimension], beta: float) -> None:
        self.sources = {d.name: build_reward_source(rewards[d.name]) for d in dims}
        self.dims, self.beta = dims, beta
        self.reference: dict[str, dict[str, float]] = {}

    def scores(self, prompts: list[str], texts: list[str]) -> dict[str, torch.Tensor]:
        return {name: source.score(prompts, texts)[:, 0] for name, source in self.sources.items()}

    def cache_references(self, model, tokenizer, items, settings: GenerationSettings) -> None:
        todo = [(p, pref) for p, pref in items if _key(p, pref) not in self.reference]
        if not todo:
            return
        with reference_policy(model):
            texts = [
                c.text
                for c in make_sampler(model, tokenizer).generate(
                    [prompted(p, pref) for p, pref in todo], settings
                )
            ]
        scores = self.scores([user_text(p) for p, _ in todo], texts)
        for k, (p, pref) in enumerate(todo):
            self.reference[_key(p, pref)] = {name: float(v[k]) for name, v in scores.items()}

    def side_terms(self, items, texts: list[str]) -> torch.Tensor:
        """[B, sides per preference] float64: each requested side's Bradley-Terry term against the cached
        reference reply. A low side prefers the lower score: σ(β·s·(r − r_ref)) with s = −1 on both scores."""
        scores = self.scores([user_text(p) for p, _ in items], texts)
        column = {d.name: i for i, d in enumerate(self.dims)}
        table = torch.stack([scores[d.name] for d in self.dims], 1).double()  # [B, D]
        chosen = [[side_sign(side, self.dims) for side in pref] for _, pref in items]
        # which column of `table` each side reads, and its direction
        index = torch.tensor([[column[name] for name, _ in row] for row in chosen])
        signs = torch.tensor([[sign for _, sign in row] for row in chosen], dtype=torch.float64)
        refs = [
            [self.reference[_key(p, pref)][name] for name, _ in row]
            for (p, pref), row in zip(items, chosen, strict=True)
        ]
        ours, theirs = table.gather(1, index), torch.tensor(refs, dtype=torch.float64)
        return bradley_terry(signs * ours, signs * theirs, self.beta)

    def terms(self, items, texts: list[str]) -> list[dict[str, float]]:
        """Per row, each requested side's term by side name (for the training diagnostics)."""
        table = self.side_terms(items, texts)
        return [
            dict(zip(pref, row.tolist(), strict=True)) for (_, pref), row in zip(items, table, strict=True)
        ]

    def __call__(self, items, texts: list[str]) -> torch.Tensor:
        """[B] float32: the mean of the requested sides' terms, rounded once at the end."""
        return self.side_terms(items, texts).mean(1).float()


def _key(prompt: list[dict], preference: tuple[str, ...]) -> str:
    return repr((prompt, preference))


def prompted(prompt: list[dict], preference: tuple[str, ...]) -> list[dict]:
    """Preference prompting: the description as the system message."""
    return [
        {"role": "system", "content": describe(preference)},
        *[x for x in prompt if x["role"] != "system"],
    ]


# ---------------------------------------------------------------------------------------- REBEL stage


class PCMModule(OnlineModule):
    """One step: sample two responses per (prompt, preference) from the current mixture, reward them against the
    cached reference, then `epochs` REBEL updates of the controller on the cached expert log-probs."""

    def __init__(self, parts: Mixture, rewards: BTRewards, m: PCMConfig, optim, sampler):
        super().__init__(parts.controller, optim, sampler=sampler, batch_size=m.batch_size)
        self.automatic_optimization = False
        self.updates_per_round = m.epochs  # REBEL updates on each round's samples
        self.hold_frozen("experts", parts.experts)
        self.history: list[dict[str, float]] = []  # this rank's metrics per round, for the diagnostics report
        self.tokenizer, self.mixer, self.dims = parts.tokenizer, parts.mixer, parts.dims
        self.rewards, self.m = rewards, m
        self.generation = GenerationSettings(
            max_new_tokens=m.max_new_tokens,
            do_sample=True,
            temperature=m.temperature,
            top_p=m.top_p,
            batch_size=16,
        )

    def training_step(self, items: list, batch_idx: int) -> None:
        pairs = [
            item for item in items for _ in range(2)
        ]  # rows 2i and 2i+1 answer the same (prompt, preference)
        self.rewards.cache_references(self.experts, self.tokenizer, pairs, self.generation)
        weights = controller_weights(self.model, self.tokenizer, pairs, self.dims, self.device)
        samples = MixtureSampler(self.mixer, self.tokenizer).generate(
            [p for p, _ in pairs], self.generation, weights
        )
        terms = self.rewards.terms(pairs, [s.text for s in samples])
        reward = torch.tensor([sum(t.values()) / len(t) for t in terms], device=self.device)
        ids, mask, response, experts_lp, masks = self._batch(pairs, samples)
        with torch.no_grad():
            sampled_alpha = aligned_log_alpha(self.model(ids, mask, masks))
            old = mixture_log_likelihood(sampled_alpha, experts_lp, response)
        diagnostics = mixture_diagnostics(self.mixer.names, masks, sampled_alpha, response, terms)
        optimizer = self.optimizers()
        for _ in range(self.m.epochs):
            log_alpha = aligned_log_alpha(self.model(ids, mask, masks))
            loss = rebel_loss(
                mixture_log_likelihood(log_alpha, experts_lp, response), old, reward, self.m.eta
            )
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            record_trained(mask.sum())
        self.lr_schedulers().step()
        metrics = {"train/loss": float(loss.detach()), "train/reward": float(reward.mean()), **diagnostics}
        self.history.append(metrics)
        self.log_dict(metrics, batch_size=len(items), sync_dist=True)

    def _batch(self, pairs, samples):
        rows, starts = [], []
        for (prompt, pref), s in zip(pairs, samples, strict=True):
            prefix = controller_prefix(self.tokenizer, prompt, pref)
            starts.append(len(prefix))
            rows.append(prefix + s.token_ids)
        ids, mask = pad_rows(rows, self.tokenizer.pad_token_id)
        response = torch.zeros_like(mask)
        experts_lp = torch.zeros(*ids.shape, len(self.mixer.names))
        for k, (start, s) in enumerate(zip(starts, samples, strict=True)):
            response[k, start : start + len(s.token_ids)] = 1
            experts_lp[k, start : start + len(s.token_ids)] = s.expert_logprobs
        masks = torch.stack([active(pref, self.dims) for _, pref in pairs])
        return (
            ids.to(self.device),
            mask.to(self.device),
            response.to(self.device),
            experts_lp.to(self.device),
            masks.to(self.device),
        )


def pcm_prompts(ctx: RunContext, tokenizer: PreTrainedTokenizerBase) -> tuple[list[Messages], list[Messages]]:
    """Training and held-out prompts with room for the reply and the preference line (no fallback)."""
    cfg = ctx.cfg
    return prompt_sets(cfg.data, tokenizer, cfg.data.max_length - cfg.method.max_new_tokens - PREFERENCE_ROOM)


DIAGNOSTICS = (
    "Per round: alpha_<side> is the controller's mean mixing weight on that side's expert over the reply tokens "
    "of the rows whose preference names it (uniform between the named experts at the start); reward_<side> is "
    "that side's Bradley-Terry term against the cached reference reply (0.5 = no better than the reference)."
)


def pcm_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    cfg, m = ctx.cfg, ctx.cfg.method
    dims = parse_dimensions(m.dimensions)
    missing = [d.name for d in dims if d.name not in cfg.reward]
    if missing:
        raise ConfigError(f"method.dimensions {missing} need reward sources of the same name: reward=[...]")
    experts, tokenizer, mixer = load_experts(Path(done.require("experts")["path"]), cfg.model)
    train_prompts, _ = pcm_prompts(ctx, tokenizer)
    items = [
        (p, pref) for p in train_prompts for pref in combinations(dims)
    ]  # ξ uniform over all combinations
    controller = build_controller(m, cfg.model, tokenizer, len(sides(dims)), cfg.seed)
    sampler, loader = shuffled_loader(items, m.batch_size, seed=cfg.seed)
    optim = OptimSettings(m.lr, m.weight_decay, m.warmup_steps, m.scheduler, cfg.trainer.max_steps)
    parts = Mixture(experts, tokenizer, mixer, controller, dims)
    module = PCMModule(parts, BTRewards(cfg.reward, dims, m.bt_beta), m, optim, sampler)
    fit = fit_module(ctx, module, loader, None)
    info = {"num_experts": len(sides(dims)), "seed": cfg.seed, "kind": m.controller, "sides": sides(dims)}
    if fit.is_global_zero:
        save_controller(controller, ctx.run_dir / CONTROLLER_DIR, info)
        write_diagnostics(
            module.history, ctx.run_dir, f"{cfg.task_name}: PCM controller training", DIAGNOSTICS
        )
        references = json.dumps(module.rewards.reference)
        write_text_atomic(ctx.run_dir / CONTROLLER_DIR / "references.json", references)
    return {
        **fit.summary(),
        "steps": fit.steps // m.epochs,
        "optimizer_updates": fit.steps,
        "controller": str(ctx.run_dir / CONTROLLER_DIR),
        "items": len(items),
    }
