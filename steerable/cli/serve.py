"""`steerable-serve`: a trained run's dials in the browser (and as a JSON API), on this machine."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import hydra
import uvicorn
from omegaconf import DictConfig

from steerable.cli import common
from steerable.config.schema import ConfigError, ServeConfig

log = logging.getLogger("steerable")

TOKEN_ENV = "STEERABLE_SERVE_TOKEN"
LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def build_server(cfg: ServeConfig):
    from functools import partial

    from steerable.generation import settings_from
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
    defaults = settings_from(cfg.sampling, seed=cfg.seed)
    token = cfg.token or os.environ.get(TOKEN_ENV) or None
    return Server(policy, defaults, partial(inference_autocast, cfg.hardware), cfg.limits, token)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond this machine


def warn_if_reachable(host: str, port: int, token: str | None) -> None:
    """Beyond loopback the page runs the model for whoever reaches it: say so, and whether a token guards it."""
    if is_loopback(host):
        return
    guard = (
        "every API request must carry the bearer token (open the page as /#token=<token>)"
        if token
        else f"anyone who reaches it can run the model; set token=<secret> or {TOKEN_ENV} to require one"
    )
    log.warning("steerable-serve listens on %s:%s, beyond this machine: %s", host, port, guard)


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
    from steerable.serve.app import build_app

    cfg, _ = common.machine_hardware(common.validate(dict_cfg))
    common.set_threads(cfg.hardware.torch_threads)
    server = build_server(cfg)
    server.warm_up()
    sock = bound_socket(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    warn_if_reachable(cfg.host, port, server.token)
    print(f"steerable-serve: {server.policy.kind} run {cfg.run} at http://{host}:{port}", flush=True)
    config = uvicorn.Config(build_app(server), log_level="warning", timeout_graceful_shutdown=5)
    StoppingServer(config, server.worker.stop).run(sockets=[sock])


class StoppingServer(uvicorn.Server):
    """uvicorn's server, whose SIGTERM/SIGINT also ends the running generation at its next decode step and
    drops the queued ones, so the process stops within seconds instead of after the longest reply."""

    def __init__(self, config: uvicorn.Config, stop: Callable[[], None]) -> None:
        super().__init__(config)
        self.stop_generation = stop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stop_generation()
        super().handle_exit(sig, frame)


def main() -> None:
    common.setup_hydra()
    common.launch_on_run("serve", "steerable-serve run=outputs/quickstart/<timestamp>", _main)


if __name__ == "__main__":
    main()
