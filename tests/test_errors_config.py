"""Bad config values end in one clear message: unknown names (Hydra's own),
fields Hydra lets through, sampler ranges, devices this machine lacks."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    CONF,
    assert_clean_failure,
    cli,
    compose_config,
    compose_raw,
    fail_run,
)
from hydra.errors import ConfigCompositionException, MissingConfigException

from metagen.devices import DeviceError
from metagen.errors import UserError
from metagen.generate import check_sampler
from metagen.pipeline import to_config

# ------------------------------------------------- unknown names (Hydra's own)


@pytest.mark.parametrize(
    "group", ["model", "sampler", "prompts", "device", "experiment"]
)
def test_unknown_option_lists_the_available_ones(group):
    available = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    with pytest.raises(MissingConfigException) as caught:
        compose_raw([f"{group}=nope"])
    message = str(caught.value)
    assert f"Could not find '{group}/nope'" in message
    assert all(name in message for name in available), message


@pytest.mark.parametrize(
    "arguments,expected",
    [
        (["model=nope"], ["Could not find 'model/nope'", "tiny", "small"]),
        (["-m", "--cfg", "job"], ["Only one of --run, --multirun"]),
    ],
    ids=["unknown model", "-m with --cfg"],
)
def test_usage_error_on_the_command_line(arguments, expected, tmp_path):
    result = cli(tmp_path / "run", *arguments)
    assert_clean_failure(result, *expected)
    assert not (tmp_path / "run").exists()  # nothing written at all


@pytest.mark.parametrize(
    "override,match",
    [
        ("sampler.temprature=0.5", "Could not override 'sampler.temprature'"),
        ("sampler.top_k=abc", "sampler.top_k=abc"),
        ("seed=one", "seed=one"),
    ],
)
def test_misspelt_or_mistyped_override_is_hydras_error(override, match):
    with pytest.raises(ConfigCompositionException, match=match):
        compose_raw([override])


PLUS_CASES = [
    # Hydra's own hint for a typo is "use +sampler.temprature=..."; following it
    # must end in one line, not a traceback from the typed config.
    ("+sampler.temprature=0.5", r"sampler.temprature: Key .* check the spelling"),
    ("+seed2=3", "seed2: Key 'seed2' not in 'Config'"),
    ("prompts.prompts=['Costs ${price}']", r"prompts.prompts\[0\]: .*literal"),
]


@pytest.mark.parametrize("override,match", PLUS_CASES)
def test_bad_field_that_gets_past_hydra_is_a_user_error(override, match):
    with pytest.raises(UserError, match=match):
        to_config(compose_raw([override]))


# ------------------------------------------------------------ sampler values


SAMPLER_VALUES = [
    ("sampler.temperature=0", "temperature must be > 0"),
    ("sampler.temperature=-0.5", "temperature must be > 0"),
    ("sampler.top_p=0", r"top_p must be in \(0, 1\]"),
    ("sampler.top_p=1.5", r"top_p must be in \(0, 1\]"),
    ("sampler.top_k=-1", "top_k must be >= 0"),
    ("sampler.min_p=-0.1", r"min_p must be in \[0, 1\]"),
    ("sampler.min_p=1.5", r"min_p must be in \[0, 1\]"),
    ("sampler.typical_p=0", r"typical_p must be in \(0, 1\]"),
    ("sampler.epsilon_cutoff=1", r"epsilon_cutoff must be in \[0, 1\)"),
    ("sampler.eta_cutoff=-0.1", r"eta_cutoff must be in \[0, 1\)"),
    ("sampler.max_new_tokens=0", "max_new_tokens must be > 0"),
    ("sampler.max_new_tokens=-5", "max_new_tokens must be > 0"),
    ("sampler.num_samples=0", "num_samples must be > 0"),
    ("sampler.num_beams=0", "num_beams must be >= 1"),
    ("sampler.repetition_penalty=0", "repetition_penalty must be > 0"),
]


@pytest.mark.parametrize("override,match", SAMPLER_VALUES)
def test_sampler_value_out_of_range(override, match, tmp_path):
    fail_run([override], tmp_path, match)


def test_sampler_message_shows_the_value(tmp_path):
    # In a sweep over top_p=1.5,2 the logs must tell the two failed jobs apart.
    fail_run(["sampler.top_p=1.5"], tmp_path, r"sampler.top_p=1.5: top_p must be")


def test_prompt_longer_than_the_context(tmp_path):
    long_prompt = " ".join(["word"] * 300)  # tiny holds 256 tokens
    fail_run([f"prompts.prompts=['{long_prompt}']"], tmp_path, "shorten the prompt")


def test_zero_temperature_is_fine_without_sampling():
    check_sampler(compose_config(["sampler=greedy", "sampler.temperature=0"]).sampler)


# ------------------------------------------------------------------- device


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


DEVICE_VALUES = [
    ("device=cuda", "device.device=cuda: no CUDA GPU"),
    ("device.device=cuda:1", "device.device=cuda:1: no CUDA GPU"),
    ("device=mps", "device.device=mps: no Apple MPS"),
    ("device.device=gpu", "device.device='gpu' is not one of"),
    ("device.dtype=int8", "device.dtype='int8': not supported"),
    ("device.batch_size=0", "device.batch_size=0: must be a positive"),
    ("device.batch_size=-4", "device.batch_size=-4: must be a positive"),
    ("device.batch_size=big", "device.batch_size='big': must be a positive"),
    ("device.num_threads=0", "device.num_threads=0: must be a positive"),
]


@pytest.mark.parametrize("override,match", DEVICE_VALUES)
def test_device_that_cannot_be_used(override, match, tmp_path, no_gpu):
    error = fail_run([override], tmp_path, match)
    assert isinstance(error, DeviceError)


def test_gpu_index_beyond_the_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    fail_run(["device.device=cuda:3"], tmp_path, "no such GPU; this machine has 1")
