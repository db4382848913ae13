"""Save and load a trained network with the config that made it (`train` -> `export`).

The checkpoint holds the state dict, the architecture config (to rebuild the same module
tree) and the build config as JSON (so `export` re-derives the very same splits). Loaded
with `weights_only=True`: a checkpoint is data, never code.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from models.architectures import rebuild
from models.build import BuildConfig
from models.multiexit import ArchConfig, MultiExitNet

FORMAT = "exitserve-checkpoint-1"


def save_checkpoint(model: MultiExitNet, config: BuildConfig, path: Path) -> Path:
    """Write the trained `model` and its `config` to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "arch": json.dumps(asdict(model.config)),
        "build": config.to_json(),
        "state_dict": model.state_dict(),
    }
    torch.save(payload, path)
    return path


def load_checkpoint(path: Path) -> tuple[MultiExitNet, BuildConfig]:
    """Rebuild the network, load its weights, and return it with its build config."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an exitserve checkpoint")
    raw = json.loads(payload["arch"])
    arch = ArchConfig(
        arch=raw["arch"],
        input_shape=tuple(raw["input_shape"]),
        num_classes=raw["num_classes"],
        cuts=tuple(raw["cuts"]),
        options=raw["options"],
        unit_macs=tuple(raw["unit_macs"]),
    )
    model = rebuild(arch)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), BuildConfig.from_json(payload["build"])
