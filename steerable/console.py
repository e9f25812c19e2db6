"""What reaches the console from the libraries: no deprecation warnings the user cannot act on, no progress
bars in log files. Shared by every CLI (and the training loop) so that a piped run prints only our lines."""

from __future__ import annotations

import os
import sys
import warnings

# Library warnings a user cannot act on (deprecations inside transformers/torch/peft, Lightning's advice for
# automatic optimization); our own warnings, and the libraries' other warnings, stay.
IGNORED_WARNINGS = (
    ".*isinstance\\(treespec, LeafSpec\\).*",
    ".*Experiment logs directory .* exists and is not empty.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    ".*torch.distributed.nn.functional.all_gather is deprecated.*",
    "Using ModelCheckpoint with manual optimization.*",
    "You defined a `validation_step` but have no `val_dataloader`.*",  # online loops validate in their stages
)
LIBRARIES = (
    "transformers",
    "lightning",
    "torch",
    "peft",
    "hydra",
    "huggingface_hub",
    "datasets",
    "accelerate",
)


def quiet_libraries() -> None:
    """No deprecation warnings from libraries, and no library progress bars ("Loading weights") when stderr
    is a file or a pipe, for every CLI."""
    for module in LIBRARIES:
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
    for message in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when huggingface_hub is imported
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        if "huggingface_hub" in sys.modules:  # already imported: the variable was read before we set it
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        if "transformers" in sys.modules:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
