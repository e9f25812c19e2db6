"""PCM stages: `experts` (one LoRA expert per preference side, SFT on the data whose label is at that side's end),
`pcm` (the controller trained with REBEL on Bradley–Terry rewards against cached reference responses)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from steerable.backbone.adapters import atomic_directory, reference_policy, save_model, wrap_lora
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.backbone.mixing import AdapterMixer
from steerable.config.schema import ConfigError
from steerable.data.loaders import load_records, split_records
from steerable.data.records import Conversation
from steerable.generation import GenerationSettings, HFSampler
from steerable.generation.mixture import MixtureSampler
from steerable.methods.base import FINAL_MODEL_DIR, RunContext, sub_context
from steerable.methods.fitting import fit_module
from steerable.methods.pcm.config import PCMConfig
from steerable.methods.pcm.controller import (
    PreferenceController,
    aligned_log_alpha,
    mixture_log_likelihood,
    rebel_loss,
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
from steerable.methods.sft.stages import fit_sft, fitting_prompts, tokenize_messages
from steerable.rewards.base import build_reward_source
from steerable.run_dir import write_text_atomic
from steerable.training.lm_module import CausalLMModule, OptimSettings
from steerable.training.policy_gradient import user_text
from steerable.training.sampler import ResumableSampler, as_list, make_loader

EXPERTS_DIR = "experts/final"
CONTROLLER_DIR = "controller"

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


def experts_stage(ctx: RunContext, done) -> dict:
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
            encode = lambda rs, s=sub: tokenize_messages(s, tokenizer, [r.messages for r in rs])  # noqa: E731
            summaries[side] = fit_sft(sub, encode(records), encode(held_out), metadata={"side": side})
    model = combined_experts(ctx.run_dir, dims, cfg.model, tokenizer)
    meta = {"method": "pcm", "sides": sides(dims), "dimensions": list(m.dimensions)}
    save_model(model, tokenizer, ctx.run_dir / EXPERTS_DIR, metadata=meta)
    return {"path": str(ctx.run_dir / EXPERTS_DIR), "experts": summaries}


def combined_experts(run_dir: Path, dims: list[Dimension], model_cfg, tokenizer) -> PeftModel:
    names = sides(dims)
    folder = lambda side: str(run_dir / "experts" / side / FINAL_MODEL_DIR / side)  # noqa: E731
    model = PeftModel.from_pretrained(
        load_base_model(model_cfg, tokenizer), folder(names[0]), adapter_name=names[0]
    )
    for side in names[1:]:
        model.load_adapter(folder(side), adapter_name=side)
    return model


def load_experts(path: Path, model_cfg) -> tuple[PeftModel, Any, AdapterMixer]:
    meta = json.loads((Path(path) / "steerable.json").read_text())
    tokenizer = load_tokenizer(model_cfg)
    first, *rest = meta["sides"]
    model = PeftModel.from_pretrained(
        load_base_model(model_cfg, tokenizer), str(Path(path) / first), adapter_name=first
    )
    for side in rest:
        model.load_adapter(str(Path(path) / side), adapter_name=side)
    model.eval()
    return model, tokenizer, AdapterMixer(model, meta["sides"])


# ------------------------------------------------------------------------------------------ controller


def build_controller(m: PCMConfig, model_cfg, tokenizer, num_experts: int, seed: int) -> PreferenceController:
    """`small`: a random-init 2-layer Llama on the experts' tokenizer (positions align); `base`: base + LoRA."""
    if m.controller == "base":
        backbone = wrap_lora(load_base_model(model_cfg, tokenizer), model_cfg.lora)
    else:
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=m.controller_hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=2 * m.controller_hidden,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = LlamaForCausalLM(config)
    return PreferenceController(backbone, num_experts)


def save_controller(controller: PreferenceController, folder: Path, info: dict) -> None:
    trainable = {n: p.detach().contiguous() for n, p in controller.named_parameters() if p.requires_grad}
    with atomic_directory(folder) as tmp:
        save_file(trainable, str(tmp / "controller.safetensors"))
        (tmp / "controller.json").write_text(json.dumps(info, indent=2))


def load_controller(folder: Path, m: PCMConfig, model_cfg, tokenizer) -> PreferenceController:
    info = json.loads((Path(folder) / "controller.json").read_text())
    controller = build_controller(m, model_cfg, tokenizer, info["num_experts"], info["seed"])
    controller.load_state_dict(load_file(str(Path(folder) / "controller.safetensors")), strict=False)
    return controller.eval()


def controller_prefix(tokenizer, prompt: list[dict], preference: tuple[str, ...]) -> list[int]:
    messages = [
        {"role": "system", "content": describe(preference)},
        *[x for x in prompt if x["role"] != "system"],
    ]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def controller_weights(controller, tokenizer, items, dims, device="cpu"):
    """A MixtureSampler weight function: the controller on [description; prompt; tokens so far], masked to the
    preference's experts; `items[i]` = (prompt, preference) of prompt index i."""
    masks = torch.stack([active(pref, dims) for _, pref in items])
    prefixes = [controller_prefix(tokenizer, prompt, pref) for prompt, pref in items]

    def weights(indices: list[int], generated: torch.Tensor) -> torch.Tensor:
        rows = [prefixes[i] + generated[k].tolist() for k, i in enumerate(indices)]
        ids, mask = _right_pad(rows, tokenizer.pad_token_id)
        with torch.no_grad():
            log_alpha = controller(ids.to(device), mask.to(device), masks[indices].to(device))
        last = mask.sum(1) - 1
        return log_alpha[torch.arange(len(rows)), last].exp()

    return weights


def _right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    return ids, mask


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
                for c in HFSampler(model, tokenizer).generate(
                    [prompted(p, pref) for p, pref in todo], settings
                )
            ]
        scores = self.scores([user_text(p) for p, _ in todo], texts)
        for k, (p, pref) in enumerate(todo):
            self.reference[_key(p, pref)] = {name: float(v[k]) for name, v in scores.items()}

    def __call__(self, items, texts: list[str]) -> torch.Tensor:
        scores = self.scores([user_text(p) for p, _ in items], texts)
        out = []
        for k, (p, pref) in enumerate(items):
            ref = self.reference[_key(p, pref)]
            terms = []
            for side in pref:
                name, sign = side_sign(side, self.dims)
                terms.append(1 / (1 + math.exp(-self.beta * sign * (float(scores[name][k]) - ref[name]))))
            out.append(sum(terms) / len(terms))
        return torch.tensor(out)


def _key(prompt: list[dict], preference: tuple[str, ...]) -> str:
    return repr((prompt, preference))


def prompted(prompt: list[dict], preference: tuple[str, ...]) -> list[dict]:
    """Preference prompting: the description as the system message."""
    return [
        {"role": "system", "content": describe(preference)},
        *[x for x in prompt if x["role"] != "system"],
    ]


# ---------------------------------------------------------------------------------------- REBEL stage


class PCMModule(CausalLMModule):
    """One step: sample two responses per (prompt, preference) from the current mixture, reward them against the
    cached reference, then `epochs` REBEL updates of the controller on the cached expert log-probs."""

    def __init__(
        self, controller, experts, tokenizer, mixer, dims, rewards: BTRewards, m: PCMConfig, optim, sampler
    ):
        super().__init__(controller, optim, sampler=sampler, batch_size=m.batch_size)
        self.automatic_optimization = False
        self._experts = [experts]  # frozen, not a submodule: never trained, never checkpointed
        self.tokenizer, self.mixer, self.dims, self.rewards, self.m = tokenizer, mixer, dims, rewards, m
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
        self.rewards.cache_references(self._experts[0], self.tokenizer, pairs, self.generation)
        weights = controller_weights(self.model, self.tokenizer, pairs, self.dims, self.device)
        samples = MixtureSampler(self.mixer, self.tokenizer).generate(
            [p for p, _ in pairs], self.generation, weights
        )
        reward = self.rewards(pairs, [s.text for s in samples]).to(self.device)
        ids, mask, response, experts_lp, masks = self._batch(pairs, samples)
        with torch.no_grad():
            old = mixture_log_likelihood(
                aligned_log_alpha(self.model(ids, mask, masks)), experts_lp, response
            )
        optimizer = self.optimizers()
        for _ in range(self.m.epochs):
            log_alpha = aligned_log_alpha(self.model(ids, mask, masks))
            loss = rebel_loss(
                mixture_log_likelihood(log_alpha, experts_lp, response), old, reward, self.m.eta
            )
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        self.lr_schedulers().step()
        self.log_dict(
            {"train/loss": float(loss.detach()), "train/reward": float(reward.mean())},
            batch_size=len(items),
            sync_dist=True,
        )

    def _batch(self, pairs, samples):
        rows, starts = [], []
        for (prompt, pref), s in zip(pairs, samples, strict=True):
            prefix = controller_prefix(self.tokenizer, prompt, pref)
            starts.append(len(prefix))
            rows.append(prefix + s.token_ids)
        ids, mask = _right_pad(rows, self.tokenizer.pad_token_id)
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

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Sampling dominates; no token throughput is logged."""


def pcm_prompts(ctx: RunContext, tokenizer) -> tuple[list, list]:
    cfg, m = ctx.cfg, ctx.cfg.method
    train, val = split_records(load_records(cfg.data), cfg.data)
    budget = cfg.data.max_length - m.max_new_tokens - 16  # room for the preference line
    return fitting_prompts(train, tokenizer, budget, len(train)), fitting_prompts(
        val, tokenizer, budget, len(val)
    )


def rounds_context(ctx: RunContext, epochs: int) -> RunContext:
    """trainer.max_steps and the checkpoint interval count sampling rounds, but Lightning counts every
    optimizer update as a step, and REBEL makes `epochs` of them per round."""
    t = ctx.cfg.trainer
    trainer = replace(
        t, max_steps=t.max_steps * epochs, checkpoint_every_n_steps=t.checkpoint_every_n_steps * epochs
    )
    return replace(ctx, cfg=replace(ctx.cfg, trainer=trainer))


def pcm_stage(ctx: RunContext, done) -> dict:
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
    sampler = ResumableSampler(len(items), seed=cfg.seed)
    loader = make_loader(
        items, m.batch_size, as_list, sampler=sampler, seed=cfg.seed, drop_last=len(items) >= m.batch_size
    )
    optim = OptimSettings(m.lr, m.weight_decay, m.warmup_steps, m.scheduler, cfg.trainer.max_steps)
    module = PCMModule(
        controller, experts, tokenizer, mixer, dims, BTRewards(cfg.reward, dims, m.bt_beta), m, optim, sampler
    )
    fit = fit_module(
        rounds_context(ctx, m.epochs), module, loader, None, trainer_overrides={"gradient_clip_val": None}
    )
    info = {"num_experts": len(sides(dims)), "seed": cfg.seed, "kind": m.controller, "sides": sides(dims)}
    if fit.is_global_zero:
        save_controller(controller, ctx.run_dir / CONTROLLER_DIR, info)
        references = json.dumps(module.rewards.reference)
        write_text_atomic(ctx.run_dir / CONTROLLER_DIR / "references.json", references)
    return {
        **fit.summary(),
        "steps": fit.steps // m.epochs,
        "optimizer_updates": fit.steps,
        "controller": str(ctx.run_dir / CONTROLLER_DIR),
        "items": len(items),
    }
