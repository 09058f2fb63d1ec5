"""A project's model file with the test-time params its evaluate stage used.

A model file stores the `eval` params (test views, mirror images) of its training. `dvc exp run
-S model.eval...` re-evaluates without retraining, so the params that evaluate used are then
params.yaml's, not the file's: predict and export take those, so that they give exactly
metrics/<name>/predictions.csv. A model file is a project's own when it is PROJECT/models/<name>.pt
beside PROJECT/params.yaml; any other keeps the params it was trained with.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from pipeline.core import params
from pipeline.learning import checkpoint
from pipeline.learning.checkpoint import Checkpoint


def params_file(model: Path) -> Path | None:
    """PROJECT/params.yaml for PROJECT/models/<name>.pt, else None."""
    model = Path(model).resolve()
    found = model.parent.parent / params.PARAMS_FILE
    return found if model.parent.name == "models" and found.is_file() else None


def load(model: Path, section: str) -> tuple[Checkpoint, str | None]:
    """The checkpoint at `model`, its config's `eval` part as the project's params.yaml has it
    (checked as that section is), and that file's name (None for a model outside a project)."""
    ckpt = checkpoint.load(model, section)
    found = params_file(model)
    if found is None:
        return ckpt, None
    evaluation = params.load(section, path=found)[section].eval
    config = dataclasses.replace(ckpt.config, eval=evaluation)
    return dataclasses.replace(ckpt, config=config), os.path.relpath(found)
