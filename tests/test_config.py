"""Every config file composes and validates against its schema."""

from __future__ import annotations

import pytest
from conftest import CONF, compose_config

from metagen.config import Config

GROUPS = {
    group: sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    for group in ("model", "sampler", "prompts", "device")
}


def test_default_config_matches_the_design():
    cfg = compose_config()
    assert isinstance(cfg, Config)
    assert cfg.model.name == "small"
    assert [s.name for s in cfg.scorers.values()] == ["small", "medium"]
    assert cfg.sampler.name == "temperature" and cfg.sampler.temperature == 0.8
    assert cfg.sampler.top_k == 0 and cfg.sampler.top_p == 1.0
    assert cfg.sampler.max_new_tokens == 35
    assert len(cfg.prompts.prompts) == 15
    assert cfg.prompts.prompts[0] == "The scientific method involves"
    assert cfg.prompts.prompts[-1] == "The universe contains"
    assert cfg.seed == 0 and cfg.device.device == "auto"


@pytest.mark.parametrize(
    "group,option", [(g, o) for g, opts in GROUPS.items() for o in opts]
)
def test_every_option_composes(group, option):
    cfg = compose_config([f"{group}={option}"])
    node = getattr(cfg, group)
    assert node.name == option


@pytest.mark.parametrize("option", GROUPS["model"])
def test_every_model_can_score_and_keeps_its_name(option):
    cfg = compose_config([f"+model@scorers.extra={option}"])
    assert cfg.scorers["extra"].name == option
    assert cfg.scorers["extra"].trust_remote_code is False  # never on by default


def test_scorer_can_be_dropped():
    cfg = compose_config(["~model@scorers.medium"])
    assert list(cfg.scorers) == ["small"]


def test_quick_prompts_are_the_first_three():
    assert (
        compose_config(["prompts=quick"]).prompts.prompts
        == compose_config().prompts.prompts[:3]
    )


def test_sampler_menu_is_complete():
    assert set(GROUPS["sampler"]) >= {
        "greedy",
        "beam",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "typical",
        "epsilon",
        "eta",
    }
