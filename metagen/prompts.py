"""Prompt sets: inline in the config, or from a .yaml, .txt or .jsonl file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from metagen.config import PromptsConfig
from metagen.errors import UserError

log = logging.getLogger(__name__)


def load_prompts(cfg: PromptsConfig) -> tuple[str, list[str]]:
    """The prompt set's name and its prompts, validated."""
    if cfg.file:
        path = Path(cfg.file).expanduser()
        return path.stem, check_prompts(read_prompt_file(path), f"prompts.file {path}")
    return cfg.name, check_prompts(list(cfg.prompts), f"prompts '{cfg.name}'")


def read_prompt_file(path: Path) -> list:
    if not path.is_file():
        raise UserError(f"prompts.file {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"prompts.file {path}: not valid UTF-8 (byte {err.start}); "
            "save the file as UTF-8"
        ) from None
    if path.suffix == ".txt":
        return [line for line in text.splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        return _read_jsonl(path, text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(
            f"prompts.file {path}: not valid YAML ({_one_line(err)})"
        ) from None
    if isinstance(data, dict) and "prompts" in data:
        data = data["prompts"]
    if not isinstance(data, list):
        raise UserError(
            f"prompts.file {path}: expected a list of strings or a mapping with a "
            f"'prompts:' list, got {type(data).__name__}"
        )
    return data


def _read_jsonl(path: Path, text: str) -> list:
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(
                f"prompts.file {path}: line {number} is not JSON ({err.msg})"
            ) from None
        if not isinstance(record, dict) or "prompt" not in record:
            raise UserError(f'prompts.file {path}: line {number} has no "prompt" field')
        prompts.append(record["prompt"])
    return prompts


def check_prompts(prompts: list, where: str) -> list[str]:
    if not prompts:
        raise UserError(f"{where}: the prompt list is empty; give at least one prompt")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise UserError(
                f"{where}: prompt {index} is a {type(prompt).__name__}, not a string "
                "(quote it in YAML)"
            )
        if not prompt.strip():
            raise UserError(f"{where}: prompt {index} is empty or only whitespace")
    duplicates = {p for p in prompts if prompts.count(p) > 1}
    if duplicates:
        log.warning("%s: duplicate prompts (kept): %s", where, sorted(duplicates))
    return list(prompts)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
