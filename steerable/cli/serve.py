"""`steerable-serve`: a trained run's dials in the browser (and as a JSON API), on this machine."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import hydra
from omegaconf import DictConfig

from steerable.cli import common
from steerable.config.schema import ConfigError, ServeConfig

log = logging.getLogger("steerable")


def build_server(cfg: ServeConfig):
    from functools import partial

    from steerable.generation import GenerationSettings
    from steerable.hardware import inference_autocast
    from steerable.methods.registry import load_policy
    from steerable.serve.app import Server

    try:
        policy = load_policy(Path(cfg.run))
    except FileNotFoundError as err:
        raise ConfigError(f"run={cfg.run}: {err}") from None
    policy.generation = cfg.generation
    if cfg.hardware.accelerator == "gpu":
        policy.to("cuda")
    defaults = GenerationSettings(
        max_new_tokens=cfg.max_new_tokens,
        do_sample=cfg.do_sample,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.seed,
    )
    return Server(policy, defaults, partial(inference_autocast, cfg.hardware))


def bound_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before uvicorn starts so port=0 can print the port it got."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}; choose another port=") from None
    return sock


@hydra.main(config_path=common.CONF_DIR, config_name="serve", version_base="1.3")
@common.report_user_errors
def _main(dict_cfg: DictConfig) -> None:
    import uvicorn

    from steerable.serve.app import build_app

    cfg, _ = common.machine_hardware(common.validate(dict_cfg))
    common.set_threads(cfg.hardware.torch_threads)
    server = build_server(cfg)
    sock = bound_socket(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    print(f"steerable-serve: {server.policy.kind} run {cfg.run} at http://{host}:{port}", flush=True)
    uvicorn.Server(uvicorn.Config(build_app(server), log_level="warning")).run(sockets=[sock])


def main() -> None:
    common.setup_hydra()
    common.launch_on_run("serve", "steerable-serve run=outputs/quickstart/<timestamp>", _main)


if __name__ == "__main__":
    main()
