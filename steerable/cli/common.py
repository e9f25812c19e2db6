"""Shared start-up of the Hydra apps: config location, resolvers, schema registration, validation."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from steerable.config.sampling import check_sampling, moved_key_hint
from steerable.config.schema import ConfigError
from steerable.console import quiet_libraries
from steerable.errors import EXIT_USER_ERROR, UserError
from steerable.run_dir import eval_home, resolve_run_dir

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
log = logging.getLogger(__name__)


def register_configs() -> None:
    """The top-level schemas, one `method_schema_<name>` per method spec (conf/method/<name>.yaml extends it) and
    one `reward_schema_<kind>` per typed reward spec (conf/reward/*.yaml extend them)."""
    from hydra.core.config_store import ConfigStore

    from steerable.config.benchmark import BenchmarkConfig
    from steerable.config.reward import REWARD_SCHEMAS
    from steerable.config.schema import EvalConfig, ExportConfig, GenerateConfig, ServeConfig, TrainConfig
    from steerable.methods.registry import specs

    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="benchmark_schema", node=BenchmarkConfig)
    store.store(name="generate_schema", node=GenerateConfig)
    store.store(name="eval_schema", node=EvalConfig)
    store.store(name="export_schema", node=ExportConfig)
    store.store(name="serve_schema", node=ServeConfig)
    for name, spec in specs().items():
        store.store(name=f"method_schema_{name}", node=spec.config)
    for kind, schema in REWARD_SCHEMAS.items():
        store.store(name=f"reward_schema_{kind}", node=schema)


def setup_hydra() -> None:
    """Register schemas and the run-folder resolver, and quiet library noise; safe to call more than once."""
    quiet_libraries()
    register_configs()
    if not OmegaConf.has_resolver("steerable_run_dir"):
        OmegaConf.register_new_resolver("steerable_run_dir", resolve_run_dir, use_cache=True)
    if not OmegaConf.has_resolver("steerable_eval_home"):
        OmegaConf.register_new_resolver("steerable_eval_home", eval_home)


def validate(cfg: DictConfig) -> Any:
    """Turn the composed config into dataclass objects, running every cross-field check before any work (each
    `sampling` block's too); a training config also gets its method's own rules (MethodSpec.check) and its full
    stage list."""
    from steerable.config.schema import TrainConfig
    from steerable.methods.registry import check_train_config

    try:
        checked = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ConfigError):
            raise ConfigError(str(cause)) from None
        raise ConfigError(str(err)) from None
    check_sampling(checked)
    return check_train_config(checked) if isinstance(checked, TrainConfig) else checked


def machine_hardware(cfg: Any) -> tuple[Any, Any]:
    """`cfg` with its hardware resolved for this machine (auto precision/accelerator), and the choice
    (a PrecisionChoice), which is logged."""
    from dataclasses import replace

    from steerable.hardware import resolve_hardware

    hardware, choice = resolve_hardware(cfg.hardware)
    log.info("precision %s (hardware.precision=%s): %s", choice.precision, choice.requested, choice.reason)
    return replace(cfg, hardware=hardware), choice


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def argument(argv: list[str], key: str) -> str | None:
    """The last `key=value` (or `+key=` / `++key=`) on the command line, or None."""
    given = [a.split("=", 1)[1] for a in argv if "=" in a and a.split("=", 1)[0].lstrip("+") == key]
    return given[-1] if given else None


def check_run_argument(argv: list[str], required: bool, example: str) -> None:
    """`run=<folder>` on the command line, checked before Hydra starts: its output folder lives inside the
    run folder, so a missing or wrong one would fail inside Hydra with a traceback, or create the folder."""
    run = argument(argv, "run")
    if run is None:
        if required:
            fail(f"run=<run folder> is required, e.g. {example}")
        return
    listed = run.startswith("[") and run.endswith("]")  # run=[a,b]: a list of runs (eval=leaderboard)
    for folder in [f.strip() for f in run[1:-1].split(",")] if listed else [run]:
        if folder not in ("", "null") and not Path(folder).is_dir():
            fail(f"run={folder} does not exist (a run folder such as outputs/<task>/<timestamp>)")


def launch_on_run(config_name: str, example: str, app: Callable[[], Any]) -> None:
    """Start a Hydra app that works on a run folder (`run=` required): both checks first, then `app`."""
    check_run_argument(sys.argv[1:], required=True, example=example)
    check_composition(config_name, sys.argv[1:])
    app()


def check_resume_argument(argv: list[str]) -> None:
    """`resume=<folder>` must be a run folder; checked before Hydra resolves the run folder from it."""
    resume = argument(argv, "resume")
    if resume in (None, "", "null", "None", "auto"):
        return
    if not (Path(resume) / ".hydra").is_dir():
        kind = "does not exist" if not Path(resume).exists() else "is not a run folder (no .hydra/ inside)"
        fail(f"resume={resume} {kind}; use resume=auto or resume=<run folder>")


def check_composition(config_name: str, argv: list[str]) -> None:
    """Compose and validate the command line's config once before Hydra runs, so a misspelt key, a wrong type,
    an unknown option or a broken rule is one line naming the key (Hydra's own report spans several lines) and
    no run folder is made. Flags (-m, --help, --cfg) and hydra.* overrides go to Hydra as they are."""
    if any(a.startswith("-") or a.lstrip("+~").startswith("hydra") for a in argv):
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            composed = compose(config_name=config_name, overrides=argv)
        checked = validate(composed)  # cross-field and method rules too, before Hydra makes a run folder
        if config_name == "train":
            from steerable.cli.preflight import check_train_paths

            check_train_paths(checked)  # the files and folders it names
    except (HydraException, OmegaConfBaseException, UserError) as err:
        message = one_line(err)
        hint = moved_key_hint(message)
        fail(f"{hint}; {message}" if hint else message)
    finally:
        GlobalHydra.instance().clear()


def one_line(err: BaseException) -> str:
    """Hydra/OmegaConf's message on one line: what is wrong and the full key."""
    lines: list[str] = []
    while err is not None:
        lines += [line.strip() for line in str(err).splitlines()]
        err = err.__cause__ or err.__context__
    noise = ("object_type", "provider=", "Config search path", "$VALUE")
    kept = [
        line for line in dict.fromkeys(lines) if line and not line.startswith(noise) and "$VALUE" not in line
    ]
    text = "; ".join(kept)
    return text.replace(":; ", ": ").replace("; ", ", ") if "Available options" in text else text


def report_user_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """A Hydra task whose user errors end the program with one line on stderr and exit status 2 instead of
    a traceback (HYDRA_FULL_ERROR=1 keeps the traceback); bugs still raise."""

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except UserError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            fail(one_line(err))

    return wrapper


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
