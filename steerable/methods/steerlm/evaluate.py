"""The steerability evaluation of a SteerLM run: as the run's `eval` stage (which also writes the run's report)
and as `steerable-eval eval=steerability` on a finished run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steerable.backbone import load_backbone
from steerable.config.schema import ConfigError, DataConfig, EvalConfig
from steerable.data.demo import HELDOUT_TEMPLATES, TOPICS, demo_prompts
from steerable.data.loaders import load_records, split_records
from steerable.data.prompts import fitting_prompts
from steerable.generation import Engine
from steerable.methods.base import FINAL_MODEL_DIR, RunContext, run_config, run_model_config
from steerable.methods.reward_models.evaluate import attribute_table
from steerable.methods.steerlm.annotator import Annotator
from steerable.methods.steerlm.attributes import AttributeSchema
from steerable.methods.steerlm.config import SteerEvalSettings, SteerLMConfig
from steerable.methods.steerlm.data import as_conversation
from steerable.methods.steerlm.dials import (
    Steering,
    SweepSettings,
    apm_scorers,
    evaluate_steering,
    reward_scorers,
)
from steerable.methods.steerlm.io import attribute_model_dir
from steerable.methods.steerlm.policy import load_schema
from steerable.pipeline import StageResults, named_artifacts
from steerable.policies.plain import load_run_model
from steerable.policies.runs import run_rewards
from steerable.report import Report
from steerable.rewards.base import build_reward_source
from steerable.rewards.scoring_model import scorer_dir
from steerable.run_dir import contained

DEMO_HELDOUT_PROMPTS = len(HELDOUT_TEMPLATES) * len(TOPICS)


def sweep_settings(schema: AttributeSchema, settings: SteerEvalSettings, seed: int) -> SweepSettings:
    attributes = list(settings.attributes) or list(schema.names)
    unknown = [a for a in attributes if a not in schema.names]
    if unknown:
        raise ConfigError(f"eval attributes {unknown} are not in the model's schema {list(schema.names)}")
    values = [int(v) for v in settings.values] or schema.values
    outside = [v for v in values if v not in schema.values]
    if outside:
        raise ConfigError(f"eval values {outside} are outside the model's range {schema.value_range}")
    return SweepSettings(attributes, values, settings.sampling, settings.batch_size, seed)


def held_out_prompts(data: DataConfig, tokenizer, max_length: int, settings: SteerEvalSettings) -> list:
    """Prompts no training example contains: the demo's held-out question templates, else the val split."""
    if data.format == "demo":
        records: list = demo_prompts(min(settings.num_prompts, DEMO_HELDOUT_PROMPTS))
    else:
        records = [as_conversation(r) for r in split_records(load_records(data), data)[1]]
    budget = max_length - settings.sampling.max_new_tokens
    prompts = fitting_prompts(records, tokenizer, budget, settings.num_prompts)
    if not prompts:
        raise ConfigError(f"no held-out prompt of data={data.name} fits in {budget} tokens")
    return prompts


def scorers_for(
    schema: AttributeSchema, apm: str | None, rewards: dict[str, Any], annotator_args: dict
) -> dict:
    scorers: dict[str, dict] = {}
    if apm:
        annotator = Annotator(
            apm, [n for n in schema.names if n in _apm_names(apm)], schema.value_range, **annotator_args
        )
        scorers = apm_scorers(annotator, schema.names)
    sources = {name: build_reward_source(spec) for name, spec in rewards.items()}
    for attribute, by in reward_scorers(sources, schema.names).items():
        scorers.setdefault(attribute, {}).update(by)
    if not scorers:
        raise ConfigError(
            "nothing can measure the attributes: no attribute model in the run and no reward named like an "
            f"attribute of {list(schema.names)} (e.g. reward=[verbosity])"
        )
    return scorers


def _apm_names(apm: str) -> list[str]:

    return json.loads((scorer_dir(apm) / "steerable.json").read_text())["names"]


# ------------------------------------------------------------------------------------------ the eval stage


def headline(result: dict) -> dict:
    """The numbers a sweep or a reader wants first: Spearman per attribute and scorer."""
    return {
        f"spearman/{attribute}/{scorer}": r["spearman"]
        for attribute, by in result["dials"].items()
        for scorer, r in by.items()
    }


def stage_sections(report: Report, ctx: RunContext, done: StageResults, schema: AttributeSchema) -> None:
    cfg = ctx.cfg
    report.section("Setup").key_values(
        {
            "run folder": ctx.run_dir,
            "model": cfg.model.name,
            "data": cfg.data.name,
            "labels": cfg.method.labels,
            "attributes (label order)": ", ".join(schema.names),
            "value range": f"{schema.value_range[0]}..{schema.value_range[1]}",
            "label format": f"`{schema.prefix(schema.resolve({}))!r}` before the reply (no loss on it)",
            "hardware": f"{cfg.hardware.name} ({cfg.hardware.precision.value})",
            "stages run": ", ".join(
                n for n in ("apm", "annotate", "acsft", "baseline", "bootstrap", "steerlm2") if n in done
            ),
        }
    )
    labelling_sections(report, done)
    training_sections(report, done)


def labelling_sections(report: Report, done: StageResults) -> None:
    """How well the attribute model predicts held-out labels and agrees with the data's own."""
    apm = done.get("apm", {})
    if apm.get("heldout"):
        origin = (
            f"reused from {apm['path']}" if apm.get("reused") else f"trained here, {apm.get('steps')} steps"
        )
        report.section("Attribute model (held-out)", f"{origin}; baseline = predict the training mean.")
        attribute_table(report, apm["heldout"])

    annotate = done.get("annotate", {})
    agreement = annotate.get("train", {}).get("agreement_with_data_labels", {})
    if agreement:
        report.section("Annotation", "APM labels against the data's own labels on the training split.")
        report.table(
            ["attribute", "n", "exact match", "mean |APM - data|"],
            [[n, a["n"], a["exact"], a["mean_abs_diff"]] for n, a in agreement.items()],
        )


def training_sections(report: Report, done: StageResults) -> None:
    """The fine-tuning stages: held-out loss, bootstrapping and the SteerLM 2.0 iterations."""
    rows = [
        [
            name,
            s.get("steps"),
            s.get("train_examples"),
            s.get("val_loss_before"),
            s.get("val_loss"),
            s.get("fit_seconds"),
        ]
        for name, s in ((n, done.get(n)) for n in ("acsft", "baseline", "bootstrap"))
        if s
    ]
    if rows:
        report.section("Fine-tuning", "Held-out loss counts reply tokens only (labels are masked).")
        report.table(["stage", "steps", "examples", "held-out loss before", "after", "seconds"], rows)
    boot = done.get("bootstrap")
    if boot:
        report.section("Bootstrapping").key_values(
            {
                k: boot.get(k)
                for k in (
                    "high_quality_combinations",
                    "samples",
                    "empty_samples_dropped",
                    "relabel_equals_request",
                )
            }
        )
    steer2 = done.get("steerlm2")
    if steer2:
        report.section(
            "SteerLM 2.0",
            "Importance-weighted KL fit to P(a|x,y)·P(y|x). distance = Σ w' log(w'/b') at the last step "
            "(0 when the policy matches the target weights); effective sample fraction 1 = uniform weights.",
        )
        report.table(
            ["iteration", "groups", "steps", "distance", "effective sample fraction", "seconds"],
            [
                [
                    i,
                    r.get("groups"),
                    r.get("steps"),
                    r.get("distance"),
                    r.get("effective_sample_fraction"),
                    r.get("fit_seconds"),
                ]
                for i, r in enumerate(steer2["iterations"], start=1)
            ],
        )


# ------------------------------------------------------------------------------------- steerable-eval kind


def eval_steerability(cfg: EvalConfig, out_dir: Path, report: Report) -> dict[str, Any]:
    run = Path(cfg.run)
    schema = load_schema(run / FINAL_MODEL_DIR)
    method: SteerLMConfig = run_config(run, "method", SteerLMConfig)
    trained_data: DataConfig = run_config(run, "data", DataConfig)
    settings = SteerEvalSettings(
        attributes=list(method.eval.attributes),
        values=list(method.eval.values),
        num_prompts=cfg.eval.num_prompts,
        sampling=cfg.eval.sampling,
        batch_size=cfg.eval.batch_size,
    )
    model, tokenizer = load_run_model(run)
    data = trained_data if cfg.eval.split == "run" else cfg.data
    named = named_artifacts(method)
    stages = StageResults.finished(run, ["apm", "baseline"], named)
    apm = (
        str(stages.artifact("apm"))
        if "apm" in stages
        else method.apm and str(attribute_model_dir(method.apm))
    )
    apm = str(contained(run, apm, named, "method.apm")) if apm else None
    baseline_dir = stages.artifact("baseline") if "baseline" in stages else None
    baseline = load_backbone(run_model_config(run), adapter_dir=Path(baseline_dir)) if baseline_dir else None
    rewards = run_rewards(run, cfg.reward)
    steering = Steering(
        schema,
        held_out_prompts(data, tokenizer, trained_data.max_length, settings),
        sweep_settings(schema, settings, cfg.seed),
        scorers_for(schema, apm, rewards, {"batch_size": cfg.eval.batch_size}),
        engine=Engine(run_model_config(run).end_of_turn, cfg.generation),
    )
    return evaluate_steering((model, tokenizer), steering, out_dir, report, baseline=baseline)
