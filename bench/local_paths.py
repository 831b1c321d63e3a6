"""The local path before and after it shared its code with the remote one (issue 18), side by side in one run.

Issue 18 asks that no local analysis get slower for sharing its capture and reduction with the remote
path (the `*_reduce.py` modules). This times each page's local call on the embedded SmolLM2 in two
child processes per round, one importing this checkout's `core` and one importing `core` as it was at
BASE (a git worktree of that commit, made here and removed after), alternating so both see the same
load. Each child loads the model once (not timed), warms every call, then reports the best of `repeat`
runs per call. Same machine, same process layout, same inputs; the results' equality is checked by the
tests, not here.

BASE is the commit before this session's shared modules (maps_reduce, patch_reduce, steer_reduce,
cause_reduce, block_reduce, neighbour_reduce's PCA); the lens's own sharing is measured by
bench/lens_shared.py.

    python -m bench.local_paths [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import Row, main

ROOT = Path(__file__).resolve().parents[1]
BASE = "6eaf1c7"

CHILD = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from bench.common import timed
from core import load_model, run_trace
from core.running.maps import PRESETS, hidden_state_maps, parse_items
from core.intervene.patchscopes import IDENTITY_PROMPT, patchscope
from core.intervene.steering import PRESETS as STEER, directions_from_traces, layer_sweep
from core.weights.embeddings import arithmetic, nearest_tokens, project_words, parse_word_groups
from core.cause.patching import activation_patching
from core.cause.attribution import token_attribution
from core.cause.blocks import block_contributions, block_token_effects
from core.cause.reads import what_blocks_read

lm = load_model("smollm2-135m", device="cpu")
items = parse_items(next(iter(PRESETS.values())))
traces = [run_trace(lm, item.sentence) for item in items]
s = STEER["Positive vs negative sentiment"]
directions = directions_from_traces([run_trace(lm, p) for p in s["positive"]], [run_trace(lm, p) for p in s["negative"]])
words = parse_word_groups("Fruits: apple, banana, orange, grape, peach, lemon\nTech: Apple, Google, Microsoft, Amazon, Samsung, Intel")
PROMPT = "The capital of France is"
calls = {
    "hidden_state_maps (12 sentences, traces given)": lambda: hidden_state_maps(traces, items),
    "patchscope (6 layers, 5 tokens)": lambda: patchscope(lm, "Diana, Princess of Wales", -1, IDENTITY_PROMPT,
                                                          layers=range(0, 30, 5), max_new_tokens=5),
    "layer_sweep (3 prompts, every layer)": lambda: layer_sweep(lm, directions, s["held_out"], 4.0,
                                                                s["positive_words"], s["negative_words"]),
    "nearest_tokens (k 20)": lambda: nearest_tokens(lm, "apple", k=20),
    "arithmetic (king - man + woman)": lambda: arithmetic(lm, "king", "man", "woman", expected="queen"),
    "project_words (12 words)": lambda: project_words(lm, words),
    "activation_patching (exact, resid)": lambda: activation_patching(lm, PROMPT, "The capital of Italy is",
                                                                      answer=" Paris", foil=" Rome"),
    "activation_patching (attribution, resid)": lambda: activation_patching(
        lm, PROMPT, "The capital of Italy is", answer=" Paris", foil=" Rome", method="attribution"),
    "token_attribution (occlusion)": lambda: token_attribution(lm, PROMPT),
    "token_attribution (gradient x input)": lambda: token_attribution(lm, PROMPT, method="grad_x_input"),
    "block_contributions": lambda: block_contributions(lm, PROMPT),
    "block_token_effects (k 10)": lambda: block_token_effects(lm, PROMPT, k=10),
    "what_blocks_read": lambda: what_blocks_read(lm, "The apple is green. What color is the apple?",
                                                 "The apple is red. What color is the apple?"),
}
repeat = int(sys.argv[2])
out = {}
for name, call in calls.items():
    call()  # warm
    out[name] = timed(call, repeat)
print("RESULT " + json.dumps(out))
'''


def _child(root: Path, repeat: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), str(repeat)], capture_output=True, text=True,
                          cwd=root)
    if done.returncode:
        raise RuntimeError(f"the timing child for {root} failed:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def measure(quick: bool) -> list[Row]:
    repeat, rounds = (2, 1) if quick else (3, 2)
    with tempfile.TemporaryDirectory() as folder:
        old = Path(folder) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), BASE], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            now, before = {}, {}
            for _ in range(rounds):  # alternate, so both see the same load
                for into, root in ((now, ROOT), (before, old)):
                    for name, seconds in _child(root, repeat).items():
                        into[name] = min(seconds, into.get(name, float("inf")))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    return [Row(f"{name}: local path now vs at {BASE}", "smollm2-135m, CPU", now[name], before[name], "s", "<= 1.1x")
            for name in now]


if __name__ == "__main__":
    main(measure)
