"""Bad prompt files end in one clear message naming the file; good formats load."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from conftest import (
    FAST,
    HOSTILE,
    assert_clean_failure,
    cli,
    fail_run,
    table_files,
)

from metagen.config import PromptsConfig
from metagen.errors import UserError
from metagen.prompts import load_prompts

# ------------------------------------------------------------- prompt files


def load_file(path: Path) -> tuple[str, list[str]]:
    return load_prompts(PromptsConfig(name="file", file=str(path)))


BAD_PROMPT_FILES = [
    ("missing", "gone.yaml", None, "no such file"),
    ("directory", "adir", "DIR", "is a directory"),
    ("not yaml", "p.yaml", b"- a\n b: [\n", "not valid YAML"),
    ("python tag", "p.yaml", b"!!python/object/apply:os.system ['touch PWNED']\n",
     "not valid YAML"),
    ("no prompts key", "p.yaml", b"name: mine\nprompt:\n  - hi\n",
     r"got a mapping with keys \['name', 'prompt'\]"),
    ("_target_ mapping", "p.yaml", b"_target_: os.system\ncommand: touch PWNED\n",
     "got a mapping with keys"),
    ("one string", "p.yaml", b"just a line of text\n", "single string"),
    ("empty file", "p.yaml", b"", "empty file"),
    ("empty list", "p.yaml", b"[]\n", "the prompt list is empty"),
    ("empty prompts key", "p.yaml", b"prompts: []\n", "the prompt list is empty"),
    ("blank prompt", "p.yaml", b"- fine\n- '   '\n", "prompt 2 of 2 is .*whitespace"),
    ("empty prompt", "p.yaml", b"- fine\n- ''\n", "prompt 2 of 2 is empty"),
    ("number", "p.yaml", b"- fine\n- 42\n", "prompt 2 of 2 is an int, not a string"),
    ("null", "p.yaml", b"- fine\n-\n", r"prompt 2 of 2 is empty \(null\)"),
    ("unquoted colon", "p.yaml", b"- Question: what is love\n",
     "prompt 1 of 1 is a mapping.*quote"),
    ("_target_ item", "p.yaml", b"- _target_: os.system\n  command: touch PWNED\n",
     "prompt 1 of 1 is a mapping"),
    ("latin-1", "p.yaml", b"- caf\xe9 au lait\n", r"not valid UTF-8 \(byte 5\)"),
    ("latin-1 txt", "p.txt", b"caf\xe9\n", "not valid UTF-8"),
    ("blank txt", "p.txt", b"\n   \n", "the prompt list is empty"),
    ("bad json line", "p.jsonl", b'{"prompt": "a"}\n{oops\n', "line 2 is not JSON"),
    ("no prompt field", "p.jsonl", b'{"text": "a"}\n', 'line 1 has no "prompt"'),
    ("json number", "p.jsonl", b'{"prompt": 3}\n', "is an int, not a string"),
    ("json _target_", "p.jsonl",
     b'{"prompt": {"_target_": "os.system", "command": "touch PWNED"}}\n',
     "is a mapping"),
]  # fmt: skip


@pytest.mark.parametrize(
    "name,filename,content,match",
    BAD_PROMPT_FILES,
    ids=[c[0] for c in BAD_PROMPT_FILES],
)
def test_bad_prompt_file(name, filename, content, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a `touch PWNED` would land
    path = tmp_path / filename
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match) as caught:
        load_file(path)
    assert f"prompts.file {path}" in str(caught.value)  # names the file
    assert "\n" not in str(caught.value)  # one line
    assert not (tmp_path / "PWNED").exists()  # data, never executed


GOOD_PROMPT_FILES = [
    ("list.yaml", b"- One\n- Two\n"),
    ("mapping.yml", b"name: mine\nprompts:\n  - One\n  - Two\n"),
    ("lines.txt", b"One\n\nTwo\n"),
    ("windows.TXT", b"\xef\xbb\xbfOne\r\nTwo\r\n"),  # BOM, CRLF, upper-case suffix
    ("records.jsonl", b'{"prompt": "One"}\n\n{"prompt": "Two", "id": 7}\n'),
    ("bom.yaml", b"\xef\xbb\xbf- One\n- Two\n"),
]


@pytest.mark.parametrize("filename,content", GOOD_PROMPT_FILES)
def test_prompt_file_formats(filename, content, tmp_path):
    path = tmp_path / filename
    path.write_bytes(content)
    assert load_file(path) == (path.stem, ["One", "Two"])


def test_quoted_colon_and_markup_stay_text(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(["Question: what is ${oc.env:HOME}?", *HOSTILE]))
    assert load_file(path)[1] == ["Question: what is ${oc.env:HOME}?", *HOSTILE]


def test_duplicate_prompts_are_a_warning(tmp_path, caplog):
    path = tmp_path / "p.txt"
    path.write_text("One\nTwo\nOne\n")
    with caplog.at_level(logging.WARNING, logger="metagen.prompts"):
        assert load_file(path)[1] == ["One", "Two", "One"]
    assert "appear more than once" in caplog.text and "'One'" in caplog.text


def test_empty_inline_prompt_list(tmp_path):
    fail_run(["prompts.prompts=[]"], tmp_path, "prompts 'quick': the prompt list is")


def test_missing_prompt_file_on_the_command_line(tmp_path):
    result = cli(tmp_path / "run", *FAST, f"prompts.file={tmp_path}/nope.yaml")
    assert_clean_failure(result, f"prompts.file {tmp_path}/nope.yaml: no such file")
    assert result.stdout.count("[ERROR]") == 1  # one message, from metagen.jobs
    assert table_files(tmp_path) == []
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and "no such file" in status["error"]
