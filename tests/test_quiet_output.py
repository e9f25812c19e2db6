"""A piped run of every CLI prints no warning that does not come from steerable, and no progress bar: one
interpreter runs steerable-train, -generate, -eval, -export and -serve (app built, not served) one after another,
its stdout and stderr going to pipes as in a log file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PYTHON_WARNING = re.compile(r"^(?P<path>\S+\.py):\d+: (?:\w+Warning: )?")  # warnings.showwarning's first line
LOG_RECORD = re.compile(r"^\[[^\]]+\]\[(?P<logger>[^\]]+)\]\[(?P<level>WARNING|ERROR|CRITICAL)\]")
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm: "Loading weights:  50%|█████     | 1/2"


def foreign_noise(output: str) -> list[str]:
    """Lines of `output` that are a library's warning or progress bar, not ours."""
    steerable_dir = str(REPO / "steerable")
    noise = []
    for line in output.splitlines():
        warning, record = PYTHON_WARNING.match(line), LOG_RECORD.match(line)
        foreign_warning = warning is not None and not warning.group("path").startswith(steerable_dir)
        foreign_record = record is not None and not record.group("logger").startswith("steerable")
        if foreign_warning or foreign_record or "warnings.warn(" in line or PROGRESS_BAR.search(line):
            noise.append(line)
    return noise


def test_the_detector_flags_library_noise_and_keeps_ours() -> None:
    ours = (
        "[2026-12-06 07:06:37,493][steerable.data.tokenize][WARNING] length policy truncate (max_length=384)\n"
        f"{REPO}/steerable/hardware.py:80: UserWarning: bf16-mixed on a CPU without native bf16 is slow\n"
        "[2026-12-06 07:06:37,522][lightning.pytorch.utilities.rank_zero][INFO] Using bfloat16 AMP\n"
    )
    theirs = [
        "/venv/lib/python3.11/site-packages/transformers/modeling_utils.py:3314: FutureWarning: "
        "`is_gradient_checkpointing` is deprecated",
        "  warnings.warn(",
        "[2026-12-06 07:06:37,522][lightning.pytorch.utilities.rank_zero][WARNING] Checkpoint directory exists",
        "Loading weights:  50%|█████     | 1/2 [00:00<00:00, 10.00it/s]",
    ]
    assert foreign_noise(ours) == []
    assert foreign_noise("\n".join(theirs)) == theirs


SCRIPT = """
import sys
from pathlib import Path
from unittest import mock
from steerable.cli import eval as eval_cli, export, generate, serve, train

def run(module, program, *args):
    sys.argv = [program, *args]
    with mock.patch("uvicorn.Server.run", lambda server, sockets=None: [s.close() for s in sockets or []]):
        try:
            module.main()
        except SystemExit as stop:
            assert not stop.code, f"{program} exited {stop.code}"

out, steerlm = sys.argv[1], sys.argv[2]
run(generate, "steerable-generate", "model=tiny", "prompt=Any tips?", "sampling.max_new_tokens=4")  # before any training
run(train, "steerable-train", "method=sft", "model=tiny", "data=demo", "debug=fast", f"output_root={out}")
run(generate, "steerable-generate", f"run={steerlm}", "prompt=Any tips?", "sampling.max_new_tokens=4")
run(train, "steerable-train", "method=superhf", "model=tiny", "reward=[verbosity]", "method.reward=verbosity",
    "debug=fast", f"output_root={out}")  # an online method: manual optimization, no validation loader
(sft,) = Path(out, "sft").iterdir()  # the steerlm fixture is only read; this run gets the eval and export
run(eval_cli, "steerable-eval", f"run={sft}", "eval=generations", "reward=[verbosity]", "debug=fast")
run(export, "steerable-export", f"run={sft}", f"out={out}/exported", "merged=true")
run(serve, "steerable-serve", f"run={steerlm}", "port=0")
"""


def test_piped_clis_print_no_library_warnings(steerlm_run, tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    env.pop("PYTHONWARNINGS", None)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), str(steerlm_run)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "steerable-serve:" in output and "exported" in output  # every CLI ran
    assert foreign_noise(output) == [], output[-3000:]
