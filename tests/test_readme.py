"""The README's notebook snippet and its Layout map, checked against the code, so neither can drift.

The snippet (the first code block under "Using `core` from a notebook") is executed exactly as written,
on the embedded SmolLM2 and the real Gemma-3-4b config on the meta device; then the values its comments
promise are compared with independent computations.
"""

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def notebook_snippet() -> str:
    section = README.split("## Using `core` from a notebook", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.embedded
def test_the_notebook_snippet_runs_as_written_and_says_what_it_gets():
    namespace: dict = {}
    exec(compile(notebook_snippet(), "README.md", "exec"), namespace)  # as written, sys.path line included
    a, b, trace = namespace["a"], namespace["b"], namespace["trace"]
    assert namespace["count_parameters"](b) == 4300079472
    unique = {id(p): p.numel() for p in b.model.parameters()}
    assert sum(unique.values()) == 4300079472  # the count, independently: every tensor once
    table = namespace["tokenize"](a, "大家好")
    assert list(table.columns) == ["position", "token_id", "token", "text", "start", "end"]
    assert table["token_id"].tolist() == a.tokenizer("大家好")["input_ids"]
    assert trace.hidden_states.shape == (a.num_layers + 1, len(trace.tokens), a.hidden_size)
    assert trace.attentions.shape == (a.num_layers, a.num_heads, len(trace.tokens), len(trace.tokens))
    assert trace.attentions.dtype == np.float16


def test_the_layout_map_names_every_folder_and_module_of_core():
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"([\w/]+\.py|[\w]+/)", layout))
    core = ROOT / "core"
    for path in sorted(core.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        assert path.name in named or str(path.relative_to(core)) in named, f"README's Layout does not list {path}"
    for folder in sorted(p for p in core.iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert f"{folder.name}/" in named, f"README's Layout does not list core/{folder.name}/"
