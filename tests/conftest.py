"""Shared fixtures: composed configs and models loaded once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from metagen.config import Config, DeviceConfig, register_configs
from metagen.models import LanguageModel, load_model
from metagen.pipeline import to_config

CONF = Path(__file__).resolve().parent.parent / "conf"
register_configs()


def compose_config(overrides: list[str] | None = None) -> Config:
    """The typed config `python -m metagen <overrides>` would run with."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides or [])
    return to_config(cfg)


CPU = DeviceConfig(name="cpu", device="cpu")


@pytest.fixture(scope="session")
def models() -> dict[str, LanguageModel]:
    """Lazily loaded models by config name, shared by the whole session."""
    cache: dict[str, LanguageModel] = {}

    class Pool(dict):
        def __missing__(self, name: str) -> LanguageModel:
            cache[name] = load_model(compose_config([f"model={name}"]).model, CPU)
            self[name] = cache[name]
            return cache[name]

    return Pool()
