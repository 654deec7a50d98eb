"""Prompt sets: inline in the config, or from a .yaml, .txt or .jsonl file.

Prompt files are data: YAML is read with `safe_load` (no Python tags) and nothing in
them is ever instantiated, whatever keys (`_target_`) they hold.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import yaml

from metagen.config import PromptsConfig
from metagen.errors import UserError

log = logging.getLogger(__name__)

FORMATS = (
    "a YAML list of strings, a YAML mapping with a 'prompts:' list, "
    'a .txt file (one prompt a line) or a .jsonl file ({"prompt": ...} a line)'
)


def load_prompts(cfg: PromptsConfig) -> tuple[str, list[str]]:
    """The prompt set's name and its prompts, validated."""
    if cfg.file:
        path = Path(cfg.file).expanduser()
        return path.stem, check_prompts(read_prompt_file(path), f"prompts.file {path}")
    return cfg.name, check_prompts(list(cfg.prompts), f"prompts '{cfg.name}'")


def read_prompt_file(path: Path) -> list:
    """The raw items of a prompt file; check_prompts validates them."""
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [line for line in text.splitlines() if line.strip()]
    if suffix == ".jsonl":
        return _read_jsonl(path, text)
    return _read_yaml(path, text)


def _read_text(path: Path) -> str:
    where = f"prompts.file {path}"
    if path.is_dir():
        raise UserError(f"{where}: is a directory; give the path of a prompt file")
    if not path.is_file():
        raise UserError(
            f"{where}: no such file; check the path (a relative path starts "
            f"from the directory metagen runs in: {Path.cwd()})"
        )
    try:
        # utf-8-sig: a byte-order mark (Windows editors) must not join the 1st prompt.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{where}: not valid UTF-8 (byte {err.start}); save the file as UTF-8"
        ) from None
    except OSError as err:
        raise UserError(f"{where}: cannot be read ({err.strerror})") from None


def _read_yaml(path: Path, text: str) -> list:
    where = f"prompts.file {path}"
    try:
        data = yaml.safe_load(text)  # safe: Python tags are an error, never run
    except yaml.YAMLError as err:
        raise UserError(
            f"{where}: not valid YAML ({_one_line(err)}); fix the syntax, or use "
            "a .txt file with one prompt a line"
        ) from None
    if isinstance(data, dict) and "prompts" in data:
        data = data["prompts"]
    if isinstance(data, list):
        return data
    if data is None:
        got = "an empty file"
    elif isinstance(data, dict):
        got = f"a mapping with keys {sorted(map(str, data))}"
    elif isinstance(data, str):
        got = "a single string (for one prompt a line, name the file .txt)"
    else:
        got = f"a {type(data).__name__}"
    raise UserError(f"{where}: expected {FORMATS}; got {got}")


def _read_jsonl(path: Path, text: str) -> list:
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(
                f"prompts.file {path}: line {number} is not JSON ({err.msg}); "
                'write one {"prompt": "..."} object a line'
            ) from None
        if not isinstance(record, dict) or "prompt" not in record:
            raise UserError(
                f'prompts.file {path}: line {number} has no "prompt" field; '
                'write one {"prompt": "..."} object a line'
            )
        prompts.append(record["prompt"])
    return prompts


def check_prompts(prompts: list, where: str) -> list[str]:
    """Every prompt a non-blank string; duplicates kept, with a warning."""
    if not prompts:
        raise UserError(f"{where}: the prompt list is empty; give at least one prompt")
    for number, prompt in enumerate(prompts, start=1):
        which = f"prompt {number} of {len(prompts)}"
        if not isinstance(prompt, str):
            raise UserError(
                f"{where}: {which} is {_kind(prompt)}, not a string: "
                f"{_preview(prompt)}; write it as a quoted string (in YAML, quote "
                "any prompt that contains ': ' or starts with [ { & * ! | > % @)"
            )
        if not prompt.strip():
            raise UserError(
                f"{where}: {which} is empty or only whitespace; remove it or "
                "write the prompt"
            )
    repeated = sorted(p for p, n in Counter(prompts).items() if n > 1)
    if repeated:
        shown = ", ".join(_preview(p) for p in repeated[:5])
        more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        log.warning(
            "%s: %d prompt(s) appear more than once (kept, each generated and "
            "scored separately): %s%s",
            where,
            len(repeated),
            shown,
            more,
        )
    return list(prompts)


def _kind(value: object) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    name = type(value).__name__
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _preview(value: object, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
