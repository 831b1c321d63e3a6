"""Nearest-token search over a whole embedding table: time and extra memory per query.

Compared side by side in one run, on the embedded pair (fp32 tables) and on random
bf16 tables of the lecture models' shapes (Llama 3.2 3B 128,256 x 3,072; Gemma 3 4B
262,208 x 2,560):
- ours (`top_cosine_rows`: one matvec in the table's dtype + cached norms + exact rescoring)
  vs one bandwidth-bound pass over the table (the faster of a plain sum and a plain matvec);
- ours vs the naive way: normalise the whole table to fp32 on every query;
- ours vs the memory-hungry way: a normalised fp32 copy kept in memory (pre-built, query = one matvec);
- bf16 only: the alternative we did not pick, upcasting row chunks to fp32 for the pass;
- extra memory of one query (peak RSS above the start, sampled every ms), ours vs the naive copy.
Run: python -m bench.embeddings [--quick]   (quick: the embedded pair and the 128k table only)
"""

from __future__ import annotations

import gc
import threading
import time

import torch

from bench.common import Row, main, rss_mb, timed
from core.model.reading import compute_inverse_norms
from core.weights.embeddings import top_cosine_rows

K = 10


def peak_extra_mb(fn) -> float:
    """Peak resident memory above the level before `fn` runs, sampled every millisecond."""
    gc.collect()
    start, peak, done = rss_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], rss_mb()) - start


def one_pass(table: torch.Tensor, q: torch.Tensor) -> float:
    """Time of one bandwidth-bound pass: the fastest of a plain sum and two plain matvecs."""
    q_native = q.to(table.dtype)
    return min(timed(lambda: table.sum(), repeat=5), timed(lambda: torch.mv(table, q_native), repeat=5),
               timed(lambda: torch.nn.functional.linear(q_native[None], table), repeat=5))


def naive(table: torch.Tensor, q: torch.Tensor) -> list[int]:
    """Normalise the whole table per query: a full fp32 copy every time."""
    unit = table.to(torch.float32, copy=True)  # a real copy even for an fp32 table
    unit.div_(torch.linalg.vector_norm(unit, dim=1, keepdim=True).clamp_min(1e-30))
    return torch.topk(unit @ (q / q.norm()), K).indices.tolist()


def upcast_chunks(table: torch.Tensor, inverse: torch.Tensor, q: torch.Tensor, rows: int = 1024) -> list[int]:
    """The alternative for bf16: upcast each chunk of rows to fp32 for the matvec."""
    dots = torch.empty(table.shape[0])
    for s in range(0, table.shape[0], rows):
        torch.mv(table[s:s + rows].float(), q, out=dots[s:s + rows])
    return torch.topk(dots * inverse, K).indices.tolist()


def compare(case: str, table: torch.Tensor, quick: bool) -> list[Row]:
    torch.manual_seed(1)
    q = table[123].float() + 0.01 * torch.randn(table.shape[1]) * table[123].float().norm()  # a token, nudged
    inverse = compute_inverse_norms(table)
    # Memory first, before the timing runs leave freed pages in the allocator.
    copy_mb = table.shape[0] * table.shape[1] * 4 / 1e6
    ours_mb = peak_extra_mb(lambda: top_cosine_rows(table, inverse, q, K)) + inverse.numel() * 4 / 1e6
    memory = Row(f"extra memory: ours (+norms) vs naive (copy = {copy_mb:,.0f} MB)", case,
                 max(ours_mb, 0.01), peak_extra_mb(lambda: naive(table, q)), "MB", "O(vocab)")
    ours_ids, _ = top_cosine_rows(table, inverse, q, K)
    ours = timed(lambda: top_cosine_rows(table, inverse, q, K), repeat=3 if quick else 5)
    rows = [Row("nearest tokens vs one bandwidth pass", case, ours, one_pass(table, q), "s", "<= 2x")]
    naive_ids = naive(table, q)
    assert naive_ids == ours_ids, (case, naive_ids, ours_ids)  # same answer, or the timing means nothing
    rows.append(Row("nearest tokens vs normalise-per-query", case, ours,
                    timed(lambda: naive(table, q), repeat=2), "s", "< 1x"))
    unit = table.to(torch.float32, copy=True)  # a real copy even for an fp32 table
    unit.div_(torch.linalg.vector_norm(unit, dim=1, keepdim=True).clamp_min(1e-30))
    unit_q = q / q.norm()
    rows.append(Row("nearest tokens vs pre-normalised fp32 copy", case, ours,
                    timed(lambda: torch.topk(unit @ unit_q, K), repeat=3), "s", "~1x, no copy"))
    del unit
    if table.dtype == torch.bfloat16:
        rows.append(Row("bf16 matvec + rescoring vs fp32 upcast per chunk", case, ours,
                        timed(lambda: upcast_chunks(table, inverse, q), repeat=3), "s", "< 1x"))
    rows.append(Row("norms, once per model, vs one bandwidth pass", case,
                    timed(lambda: compute_inverse_norms(table), repeat=1), one_pass(table, q), "s", "one-off"))
    return rows + [memory]


def measure(quick: bool) -> list[Row]:
    from core import load_model
    from core.model.reading import embedding_table

    torch.manual_seed(0)
    rows = []
    for name in ("smollm2-135m", "gemma-3-270m"):
        table = embedding_table(load_model(name))
        rows += compare(f"{name} {table.dtype} {table.shape[0]:,} x {table.shape[1]:,}".replace("torch.", ""),
                        table, quick)
    shapes = [(128_256, 3_072)] + ([] if quick else [(262_208, 2_560)])
    for vocab, hidden in shapes:
        table = torch.randn(vocab, hidden, dtype=torch.bfloat16)
        rows += compare(f"random bf16 {vocab:,} x {hidden:,}", table, quick)
        del table
        gc.collect()
    return rows


if __name__ == "__main__":
    main(measure)
