"""Contextual similarity and the word-vector demo of a remote model: every sentence in ONE job.

What is captured: hidden_states[l] for l = 0..L of each sentence, read as lens.py reads them (the
input of block l for l < L, the final norm's output for l = L, the last block's output where there
is no final norm), in float32 as core.running.trace keeps them. Each sentence is one trace of one
nnsight session (so no padding changes a number); the reduction runs after the traces, still in
the session, where the model runs, with the local path's own code (core.running.context_reduce,
shipped by value). What comes back:
- similarity: cosines (S, S, L+1) and baselines (L+1,) and (S, S, L+1), tens of kB;
- word vectors: for each word, its vector in each sentence that holds it, (L+1, S_w, H) float32:
  41,617,125 bytes for Llama-3.1-405B on the hidden-states page's defaults; the similarity page
  at 8 sentences 67,489 bytes (tests/test_remote_context.py);
- the hidden-states page (core.running.hidden_page): its prompt's vector lengths (L+1, T) and the
  picked token's vectors (L+1, H) with the demo's word vectors, in the same session: 49,946,717
  bytes for Llama-3.1-405B on the lecture's 12-token prompt (tests/test_remote_pages.py).

Which tokens are the word, and which are BOS, is decided here from the local tokenizer
(core.running.context), so only token ids and positions are sent.
"""

from __future__ import annotations

import torch

import core.remote.reduce as reduce
import core.running.context_reduce as shared
from core.remote.jobs import result_bytes, shipping
from core.remote.lens import lens_envoys
from core.remote.model import RemoteLoadedModel
from core.remote.reduce import first

def vector_bytes(num_layers: int, hidden: int, counts: list[int]) -> int:
    """torch.save bytes of the word vectors a job brings back: one (L+1, S_w, H) float32 tensor per word."""
    return result_bytes({"context": [torch.zeros(num_layers + 1, count, hidden) for count in counts]})


def context_job(lm: RemoteLoadedModel, ids: list[list[int]], label: str, *, words: list[list[int]] | None = None,
                tokens: list[list[int]] | None = None, center: bool = False,
                vectors: list[list[tuple[int, list[int]]]] | None = None,
                prompt: tuple[list[int], int | None] | None = None):
    """Run every sentence (token ids `ids`, S lists) where `lm` runs, as one job; reduce there.

    Similarity (words, tokens given): words[s] are the word's positions in sentence s, tokens[s] the
    positions its baselines average over; returns context_reduce.similarity_reduce's dict (NumPy).
    Word vectors (vectors given): vectors[w] lists (sentence, positions) of word w; returns a list of
    (L+1, S_w, H) float32 arrays. The hidden-states page (prompt = (token ids, picked position or None)):
    its prompt is traced first in the same session, reduced by context_reduce.prompt_reduce, and the
    call returns (that dict in NumPy, the word vectors or None); `ids` may then be empty.
    Raises RemoteError with a plain message.
    """
    nnsight = shipping(reduce, shared)
    rm = lm.remote
    layers, norm, _, _ = lens_envoys(rm)
    count, nn = len(layers), rm.nn
    job = rm.new_job(f"{label}, {len(ids)} sentences")
    runs = ([prompt[0]] if prompt is not None else []) + list(ids)  # the prompt's trace first

    def work():
        with nn.session(backend=rm.backend(job)):
            kept, found = [], []  # per sentence: (word vector, baseline tokens); per sentence: its states
            for sentence in runs:
                with nn.trace(torch.tensor([sentence])):  # (1, T)
                    states = [layers[layer].input for layer in range(count)]  # hidden_states[l], (1, T, H) each
                    states.append(norm.output if norm is not None else first(layers[count - 1].output))
                    stacked = torch.stack(states)[:, 0].float()  # (L+1, T, H)
                    found.append(stacked)
            if prompt is not None:
                shown = shared.prompt_reduce(found.pop(0), prompt[1])  # norms (L+1, T), column (L+1, H)
                result = nnsight.save((shown, [torch.stack([shared.word_mean(found[s], p) for s, p in word], dim=1)
                                               for word in vectors or []]))
            elif vectors is None:
                for s, stacked in enumerate(found):
                    kept.append((shared.word_mean(stacked, words[s]), stacked[:, tokens[s]]))
                result = nnsight.save(shared.similarity_reduce(torch.stack([w for w, _ in kept]),
                                                               [t for _, t in kept], center))
            else:
                result = nnsight.save([torch.stack([shared.word_mean(found[s], p) for s, p in word], dim=1)
                                       for word in vectors])  # each (L+1, S_w, H)
        return rm.measured(job, result, "context")

    values = rm.run(job, work)
    if prompt is not None:
        shown, stacks = values
        return ({name: value.cpu().numpy() for name, value in shown.items()},
                [value.cpu().numpy() for value in stacks] if vectors is not None else None)
    if vectors is None:
        return {name: value.cpu().numpy() for name, value in values.items()}
    return [value.cpu().numpy() for value in values]


def similarity_bytes(lm, sentences: int, tokens: int) -> int:
    """Bytes a similarity job brings back for `sentences` sentences of `tokens` tokens: similarity_reduce
    run on meta tensors of the captured shapes (lm may be on the meta device), measured on zeros."""
    states = torch.empty(lm.num_layers + 1, int(tokens), lm.parts.layout.hidden_size, device="meta")  # (L+1, T, H)
    reduced = shared.similarity_reduce(torch.stack([shared.word_mean(states, [1])] * sentences),
                                       [states] * sentences, True)
    return result_bytes({"context": {name: torch.zeros(v.shape, dtype=v.dtype) for name, v in reduced.items()}})


def hidden_page_bytes(num_layers: int, hidden: int, tokens: int, counts: list[int]) -> int:
    """Bytes the hidden-states page's job brings back: the prompt's lengths (L+1, T) and the picked token's
    column (L+1, H), and one (L+1, S_w, H) vector stack per demo word (counts: S_w), float32."""
    shown = {"norms": torch.zeros(num_layers + 1, tokens), "column": torch.zeros(num_layers + 1, hidden)}
    return result_bytes({"context": (shown, [torch.zeros(num_layers + 1, count, hidden) for count in counts])})
