"""A trained run as a standard Hugging Face folder: merged weights (plain transformers, vLLM) or the PEFT
adapter with its base model's hub id, plus a model card saying how to set the controls in a plain prompt."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from peft import PeftModel

from steerable.backbone.adapters import ADAPTER_ONLY
from steerable.backbone.loading import base_hub_id
from steerable.config.schema import ConfigError
from steerable.policies.base import SteerablePolicy, flatten
from steerable.policies.export_target import check_export_target, export_directory
from steerable.policies.runs import saved_config

EXAMPLE = [{"role": "user", "content": "Any tips for running?"}]


def export_policy(
    policy: SteerablePolicy,
    run_dir: Path,
    out: Path,
    merged: bool,
    controls: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the folder atomically: nothing at `out` until the weights, tokenizer and card are all there, and
    only where export_target allows (a new or empty folder, or an earlier export with `overwrite`).

    Controls written into the prompt (SteerLM, CLP's prompt variant) stay dials of the export and the card says
    how to set them; controls that choose the weights (CLP, Rewarded Soups) are fixed here: the export is the
    policy at that one setting (`controls`, else the defaults)."""
    check_export_target(out, run_dir, overwrite)
    values = _export_values(policy, controls or {})
    adapter = not merged and isinstance(policy.model, PeftModel)
    network = policy.adapter_for(values) if adapter else policy.network_for(values)
    hub_id = base_hub_id(policy.model_cfg) if policy.model_cfg is not None else None
    with export_directory(out, run_dir, overwrite) as tmp:
        network.save_pretrained(tmp, safe_serialization=True, **(ADAPTER_ONLY if adapter else {}))
        if adapter:
            set_adapter_base(tmp, hub_id)
        policy.tokenizer.save_pretrained(tmp)
        weights = "adapter" if adapter else "merged"
        (tmp / "README.md").write_text(model_card(policy, run_dir, weights, hub_id, values))
    return out


def _export_values(policy: SteerablePolicy, controls: Mapping[str, Any]) -> dict[str, Any]:
    if controls and not policy.controls_in_weights:
        raise ConfigError(
            f"{', '.join(flatten(controls))}: a {policy.kind} policy takes its controls in the prompt, so "
            "the export keeps them as dials (its README.md says how to set them); leave them out"
        )
    return policy.resolve(controls)


def set_adapter_base(folder: Path, hub_id: str | None) -> None:
    """PEFT records the local path the base was loaded from; a user elsewhere needs its hub id."""
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = hub_id
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))


def model_card(
    policy: SteerablePolicy, run_dir: Path, weights: str, hub_id: str | None, values: dict[str, Any]
) -> str:
    saved = OmegaConf.to_container(saved_config(run_dir), resolve=True)
    example = policy.plain_prompt(EXAMPLE, values)
    lines = [
        f"# {policy.kind} policy from {Path(run_dir).name}",
        "",
        f"Trained with the steerable framework (method `{policy.kind}`); exported by `steerable-export`.",
        "",
        "| | |",
        "|---|---|",
        f"| method | {policy.kind} |",
        f"| base model | {hub_id or 'not on the Hugging Face Hub (local or random-weight base)'} |",
        f"| weights | {'LoRA merged into the base (plain transformers / vLLM)' if weights == 'merged' else 'PEFT adapter'} |",
        f"| data | {_get(saved, 'data.name')} ({_get(saved, 'data.path') or 'bundled'}) |",
        f"| training budget | {_budget(saved)} |",
        "",
        *_controls_section(policy, values, example),
        *_loading_section(weights, hub_id, example),
        *_evaluation_section(run_dir),
    ]
    return "\n".join(lines) + "\n"


def _get(tree: dict, dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def _budget(saved: dict) -> str:
    steps = _get(saved, "trainer.max_steps")
    batch = _get(saved, "method.batch_size")
    lr = _get(saved, "method.lr")
    return f"{steps} steps, batch {batch}, lr {lr}, seed {_get(saved, 'seed')}"


def _controls_section(policy: SteerablePolicy, values: dict[str, Any], example: str | None) -> list[str]:
    """`values`: the fixed setting where the controls choose the weights, else the defaults (prompt-side dials)."""
    controls = policy.controls()
    if not controls:
        return ["## Controls", "", "None: prompt it as the chat model it is.", ""]
    if policy.controls_in_weights:
        fixed = policy.describe(values)
        return [
            "## Controls",
            "",
            f"Fixed in these weights: {fixed}. The run is steerable over every weighting, but the setting "
            "chooses the parameters, so one export is one point; export again with another "
            "`weights=[...]` (one value per objective, summing to 1) for another.",
            "",
        ]
    rows = [f"| `{c.name}` | {c.allowed} | {values[c.name]} | {c.doc} |" for c in controls]
    lines = ["## Controls", "", "| control | allowed | default | meaning |", "|---|---|---|---|", *rows, ""]
    if example is not None:
        lines += [
            "Set them in a plain prompt by feeding the model this exact text (here with the defaults,",
            f"{policy.describe(values)}), then generating; change the numbers to turn the dials:",
            "",
            "```",
            example,
            "```",
            "",
        ]
    return lines


def _loading_section(weights: str, hub_id: str | None, example: str | None) -> list[str]:
    """Loading, and generating from the exact prompt text (as a Python literal: trailing newlines matter)."""
    imports = ["from transformers import AutoModelForCausalLM, AutoTokenizer"]
    if weights == "merged":
        load = ["model = AutoModelForCausalLM.from_pretrained('<this folder>')"]
    else:
        imports.append("from peft import PeftModel")
        load = [
            f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained('{hub_id}'), '<this folder>')"
        ]
    load.append("tokenizer = AutoTokenizer.from_pretrained('<this folder>')")
    generate = []
    if example is not None:
        generate = [
            f"prompt = {example!r}",
            "ids = tokenizer(prompt, add_special_tokens=False, return_tensors='pt').input_ids",
            "reply = model.generate(ids, max_new_tokens=128, do_sample=False)[0, ids.shape[1]:]",
            "print(tokenizer.decode(reply, skip_special_tokens=True))",
        ]
    return ["## Loading", "", "```python", *imports, *load, *generate, "```", ""]


def _evaluation_section(run_dir: Path) -> list[str]:
    """The tables of the run's report.md (figures left out: their files stay in the run folder)."""
    report = Path(run_dir) / "report.md"
    if not report.is_file():
        return ["## Evaluation", "", "The run has no report.md.", ""]
    kept = [line for line in report.read_text().splitlines() if not line.startswith("![")]
    return [
        "## Evaluation (the run's report.md)",
        "",
        *[line.replace("# ", "### ", 1) if line.startswith("#") else line for line in kept],
        "",
    ]
