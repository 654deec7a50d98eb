"""Shared fixtures: composed configs and models loaded once per test session."""

from __future__ import annotations

import pytest

from metagen.config import CONF_DIR, DeviceConfig
from metagen.models import LanguageModel, load_model
from metagen.pipeline import compose_config, compose_raw  # noqa: F401 (for tests)

CONF = CONF_DIR
CPU = DeviceConfig(name="cpu", device="cpu")


@pytest.fixture(scope="session")
def models() -> dict[str, LanguageModel]:
    """Lazily loaded models by config name, shared by the whole session."""

    class Pool(dict):
        def __missing__(self, name: str) -> LanguageModel:
            self[name] = load_model(compose_config([f"model={name}"]).model, CPU)
            return self[name]

    return Pool()
