"""The causal analyses (core/cause/) against computations written here with plain transformers.

- Exact invariants on the embedded pair and the tiny model of every covered family: patching the residual
  at layer 0 at the single differing position gives 1; every position before the difference gives 0 at
  every layer and site; the blocks' logit effects sum to the model's own logit (before soft-capping).
- Cells of every site equal this test's own hooks, on each family's own module paths (written out below,
  not taken from core/model/parts.py).
- Occlusion and gradient × input equal this test's own loop over `inputs_embeds` and autograd.
- Attribution patching tracks exact patching on the presets (r printed and bounded).
- Hooks exist only while the model's lock is held and are gone afterwards, even after an error; a plain
  trace afterwards is bit-identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core import (activation_patching, block_contributions, block_token_effects, load_model, patching_agreement,
                  run_trace, token_attribution, what_blocks_read)
from core.model.errors import UnsupportedArchitecture
from tests.tiny import ARCHITECTURES, UNREADABLE, save_tiny

# The tiny BPE has few whole words: " apple" and " you" are single tokens, so this pair differs in one.
TINY_CLEAN, TINY_CORRUPTED = "nice to meet you, how are you?", "nice to meet apple, how are you?"
TINY_ANSWER, TINY_FOIL = "?", "."
FRANCE = ("The capital of France is", "The capital of Italy is", " Paris", " Rome")
APPLE = ("the apple is green. what color is the apple?", "the apple is red. what color is the apple?", " green", " red")
CHINESE = ("法国的首都是", "日本的首都是", "巴黎", "东京")

# Each family's own path to its blocks' attention and MLP writes: (layers, attention write, MLP write).
OWN_WRITES = {
    "llama": ("model.layers", "self_attn", "mlp"),
    "gemma3": ("model.layers", "post_attention_layernorm", "post_feedforward_layernorm"),
    "gpt2": ("transformer.h", "attn", "mlp"),
    "falcon": ("transformer.h", "self_attention", "mlp"),
    "gptj": ("transformer.h", "attn", "mlp"),
}


_GRIDS: dict = {}


def grid_of(lm, preset, site="resid", method="exact"):
    """Exact grids are shared by the invariant test and the attribution test (each costs seconds)."""
    key = (id(lm), preset, site, method)
    if key not in _GRIDS:
        clean, corrupted, answer, foil = preset
        _GRIDS[key] = activation_patching(lm, clean, corrupted, answer=answer, foil=foil, site=site, method=method)
    return _GRIDS[key]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("cause")
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = load_model(str(save_tiny(kind, root / kind)), device="cpu")
        return cache[kind]

    return get


def _module(model, path: str):
    for name in path.split("."):
        model = model[int(name)] if name.isdigit() else getattr(model, name)
    return model


def _logits(model, ids) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].double()


def _ids(lm, text):
    return lm.tokenizer(text)["input_ids"]


def _first(lm, text):
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"][0]


def _own_score(lm, clean, corrupted, answer_id, foil_id, module, position, patch_output: bool) -> float:
    """One cell by hand: capture the clean value with our own hook, put it into the corrupted run."""
    model = lm.model
    metric = lambda logits: float(logits[answer_id] - logits[foil_id])  # noqa: E731
    kept = {}

    def unpack(value):
        return value[0] if isinstance(value, tuple) else value

    def capture(mod, args, kwargs, output=None):
        kept["value"] = unpack(output if patch_output else (args[0] if args else kwargs["hidden_states"])).clone()

    def put_output(mod, args, output):
        value = unpack(output).clone()
        value[:, position] = kept["value"][:, position]
        return (value, *output[1:]) if isinstance(output, tuple) else value

    def put_input(mod, args, kwargs):
        if args:
            value = args[0].clone()
            value[:, position] = kept["value"][:, position]
            return (value, *args[1:]), kwargs
        value = kwargs["hidden_states"].clone()
        value[:, position] = kept["value"][:, position]
        return args, {**kwargs, "hidden_states": value}

    if patch_output:
        handle = module.register_forward_hook(lambda m, a, o: capture(m, a, None, o))
    else:
        handle = module.register_forward_pre_hook(lambda m, a, k: capture(m, a, k), with_kwargs=True)
    m_clean = metric(_logits(model, clean))
    handle.remove()
    handle = (module.register_forward_hook(put_output) if patch_output
              else module.register_forward_pre_hook(put_input, with_kwargs=True))
    m_patched = metric(_logits(model, corrupted))
    handle.remove()
    m_corrupted = metric(_logits(model, corrupted))
    return (m_patched - m_corrupted) / (m_clean - m_corrupted)


# ---------------------------------------------------------------- exact invariants, every family


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_patching_invariants_every_family(family, kind):
    lm = family(kind)
    grids = {site: activation_patching(lm, TINY_CLEAN, TINY_CORRUPTED, answer=TINY_ANSWER, foil=TINY_FOIL, site=site)
             for site in ("resid", "attn", "mlp")}
    differing = grids["resid"].attrs["differing_positions"]
    assert len(differing) == 1, "the tiny pair must differ in exactly one token"
    (d,) = differing
    resid = grids["resid"]
    assert resid[(resid.layer == 0) & (resid.position == d)]["score"].item() == 1.0
    for site, grid in grids.items():
        assert len(grid) == lm.num_layers * len(_ids(lm, TINY_CLEAN))
        assert (grid[grid.position < d]["score"] == 0.0).all(), site


@pytest.mark.parametrize("name,fixture", [("smollm", "smollm"), ("gemma", "gemma270m")])
def test_patching_invariants_embedded(request, name, fixture):
    lm = request.getfixturevalue(fixture)
    for preset in (FRANCE, APPLE):
        clean, corrupted, answer, foil = preset
        resid = grid_of(lm, preset)
        (d,) = resid.attrs["differing_positions"]
        assert resid[(resid.layer == 0) & (resid.position == d)]["score"].item() == 1.0
        assert (resid[resid.position < d]["score"] == 0.0).all()
        for site in ("attn", "mlp"):
            grid = grid_of(lm, preset, site)
            assert (grid[grid.position < d]["score"] == 0.0).all()
        # m_clean and m_corrupted are the model's own logit differences
        clean_logits, corrupted_logits = _logits(lm.model, _ids(lm, clean)), _logits(lm.model, _ids(lm, corrupted))
        a, f = _first(lm, answer), _first(lm, foil)
        assert resid.attrs["m_clean"] == pytest.approx(float(clean_logits[a] - clean_logits[f]), abs=1e-4)
        assert resid.attrs["m_corrupted"] == pytest.approx(float(corrupted_logits[a] - corrupted_logits[f]), abs=1e-4)


# ---------------------------------------------------------------- cells against our own hooks


@pytest.mark.parametrize("kind", list(OWN_WRITES))
def test_cells_equal_own_hooks(family, kind):
    lm = family(kind)
    layers_path, attn_name, mlp_name = OWN_WRITES[kind]
    layers = _module(lm.model, layers_path)
    clean, corrupted = _ids(lm, TINY_CLEAN), _ids(lm, TINY_CORRUPTED)
    a, f = _first(lm, TINY_ANSWER), _first(lm, TINY_FOIL)
    for site, module_of, output in (("resid", lambda l: layers[l], False),
                                    ("attn", lambda l: getattr(layers[l], attn_name), True),
                                    ("mlp", lambda l: getattr(layers[l], mlp_name), True)):
        grid = activation_patching(lm, TINY_CLEAN, TINY_CORRUPTED, answer=TINY_ANSWER, foil=TINY_FOIL, site=site)
        for layer, position in ((0, 4), (1, 5), (lm.num_layers - 1, len(clean) - 1)):
            own = _own_score(lm, clean, corrupted, a, f, module_of(layer), position, output)
            ours = grid[(grid.layer == layer) & (grid.position == position)]["score"].item()
            assert ours == pytest.approx(own, abs=1e-4), (site, layer, position)


def test_embedded_cells_equal_own_hooks(smollm, gemma270m):
    for lm, (attn_name, mlp_name) in ((smollm, ("self_attn", "mlp")),
                                      (gemma270m, ("post_attention_layernorm", "post_feedforward_layernorm"))):
        clean, corrupted, answer, foil = FRANCE
        layers = lm.model.model.layers
        ids_clean, ids_corrupted = _ids(lm, clean), _ids(lm, corrupted)
        a, f = _first(lm, answer), _first(lm, foil)
        for site, name in (("resid", None), ("attn", attn_name), ("mlp", mlp_name)):
            grid = grid_of(lm, FRANCE, site)
            layer, position = lm.num_layers // 2, len(ids_clean) - 2
            module = layers[layer] if name is None else getattr(layers[layer], name)
            own = _own_score(lm, ids_clean, ids_corrupted, a, f, module, position, name is not None)
            ours = grid[(grid.layer == layer) & (grid.position == position)]["score"].item()
            assert ours == pytest.approx(own, abs=2e-4), (lm.name, site)


# ---------------------------------------------------------------- attribution patching tracks exact


def test_attribution_patching_tracks_exact(smollm, gemma270m, capsys):
    report = []
    for lm in (smollm, gemma270m):
        for preset in (FRANCE, APPLE, CHINESE):
            clean = preset[0]
            for site in ("resid", "attn", "mlp"):
                exact, approx = grid_of(lm, preset, site), grid_of(lm, preset, site, "attribution")
                assert approx.attrs["m_clean"] == pytest.approx(exact.attrs["m_clean"], abs=1e-3)
                r = patching_agreement(exact, approx)
                report.append(f"{lm.name} {clean[:12]!r} {site}: r = {r:.3f}")
                # Before the first difference both are exactly 0 (no difference to patch in).
                first = exact.attrs["differing_positions"][0]
                assert (approx[approx.position < first]["score"] == 0.0).all()
                assert r > 0.5, report[-1]
    with capsys.disabled():
        print("\n" + "\n".join(report))


# ---------------------------------------------------------------- which input tokens mattered


@pytest.mark.parametrize("kind", ["llama", "gemma3", "smollm", "gemma270m"])
def test_occlusion_and_gradient_equal_own_loop(request, family, kind):
    lm = request.getfixturevalue(kind) if kind in ("smollm", "gemma270m") else family(kind)
    prompt = "the apple is green. what color is the apple?"
    ids = torch.tensor([_ids(lm, prompt)])
    embed = lm.model.get_input_embeddings()  # Gemma's scales by sqrt(hidden) itself: = hidden_states[0]
    with torch.inference_mode():
        base = embed(ids)
        logprobs = torch.log_softmax(lm.model(inputs_embeds=base).logits[0, -1].double(), -1)
    target = int(logprobs.argmax())
    occlusion = token_attribution(lm, prompt)
    assert occlusion.attrs["target_id"] == target
    own = []
    for position in range(ids.shape[1]):
        zeroed = base.clone()
        zeroed[0, position] = 0
        with torch.inference_mode():
            own.append(float(logprobs[target] - torch.log_softmax(
                lm.model(inputs_embeds=zeroed).logits[0, -1].double(), -1)[target]))
    np.testing.assert_allclose(occlusion["score"], own, atol=2e-4)
    leaf = base.detach().clone().requires_grad_(True)
    logprob = torch.log_softmax(lm.model(inputs_embeds=leaf).logits[0, -1].double(), -1)[target]
    (grad,) = torch.autograd.grad(logprob, leaf)
    gradient = token_attribution(lm, prompt, method="grad_x_input")
    np.testing.assert_allclose(gradient["score"], (grad * leaf.detach()).sum(-1)[0].numpy(), atol=2e-4)
    # Every token's characters, as the tokenizer reports them
    spans = lm.tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    assert list(zip(occlusion["start"], occlusion["end"])) == [tuple(s) for s in spans]


# ---------------------------------------------------------------- what each block writes


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_block_effects_sum_to_the_logit(family, kind):
    lm = family(kind)
    prompt = "the apple is green. what color is the apple?"
    if lm.parts.layout.post_norm:  # OPT-350m's layout: the stream is renormalised after every block
        with pytest.raises(UnsupportedArchitecture, match="post-norm"):
            block_contributions(lm, prompt)
        return
    table = block_contributions(lm, prompt)
    logits = _logits(lm.model, _ids(lm, prompt))
    target = table.attrs["target_id"]
    assert target == int(logits.argmax())
    total = table["logit_effect"].sum()
    cap = getattr(lm.model.config.get_text_config(), "final_logit_softcapping", None)
    capped = np.tanh(total / cap) * cap if cap else total
    assert capped == pytest.approx(float(logits[target]), abs=1e-4)
    last = len(_ids(lm, prompt)) - 1
    assert table[table.position != last]["logit_effect"].isna().all()
    assert set(table.block) >= {"embed", "attn", "mlp"}
    # norm: the size of what each block adds, checked for the embedding against hidden_states[0]
    trace = run_trace(lm, prompt)
    embed = table[table.block == "embed"].sort_values("position")["norm"].to_numpy()
    np.testing.assert_allclose(embed, np.linalg.norm(trace.hidden_states[0], axis=-1), rtol=1e-5)


def test_block_effects_embedded_and_token_effects(smollm, gemma270m):
    for lm in (smollm, gemma270m):
        prompt = FRANCE[0]
        table = block_contributions(lm, prompt, target=" Paris")
        logits = _logits(lm.model, _ids(lm, prompt))
        paris = _first(lm, " Paris")
        cap = lm.text_config.final_logit_softcapping if hasattr(lm.text_config, "final_logit_softcapping") else None
        total = table["logit_effect"].sum()
        assert (np.tanh(total / cap) * cap if cap else total) == pytest.approx(float(logits[paris]), abs=2e-3)
        effects = block_token_effects(lm, prompt, k=5)
        top = effects[(effects.direction == "promotes") & (effects["rank"] == 1)]
        assert len(top) == 2 * lm.num_layers + 1
        # The top token of a block, taken as the target, gets that same effect from block_contributions.
        row = top.iloc[len(top) // 2]
        again = block_contributions(lm, prompt, target=lm.tokenizer.decode([row.token_id]))
        if again.attrs["target_id"] == row.token_id:
            mine = again[(again.layer == row.layer) & (again.block == row.block) & again.logit_effect.notna()]
            assert mine["logit_effect"].item() == pytest.approx(row.logit_effect, rel=1e-3, abs=1e-3)
        assert (effects.groupby(["layer", "block", "direction"]).size() == 5).all()


def test_mlp_reads_only_its_own_token(family, smollm):
    for lm in (smollm, family("llama"), family("gptj"), family("falcon")):
        table = what_blocks_read(lm, "the apple is green. what color is the apple?",
                                 "the apple is red. what color is the apple?")
        mlp, attn = table[table.block == "mlp"], table[table.block == "attn"]
        assert (mlp["held_output_change"] == 0.0).all()  # per token: same input, same output, exactly
        assert (attn["held_output_change"] > 0).any()  # it reads the changed word at another position
        assert (mlp["output_change"] > 0).any()  # without holding, the change reaches the MLP through attention
        assert attn[attn.layer == 0]["input_change"].item() == 0.0  # the last token itself is the same


# ---------------------------------------------------------------- the shared model stays clean


def _hooks(model) -> list[str]:
    return [name for name, m in model.named_modules() for _ in (*m._forward_hooks, *m._forward_pre_hooks)]


def test_hooks_only_under_the_lock_and_removed(family):
    lm = family("llama")
    before = run_trace(lm, TINY_CLEAN)
    # transformers 5 keeps hooks of its own once a forward asked for hidden states / attentions
    theirs = _hooks(lm.model)
    seen = []
    probe = lm.parts.layers[1].register_forward_hook(lambda *_: seen.append(lm.lock.locked()))
    calls = [
        lambda: activation_patching(lm, TINY_CLEAN, TINY_CORRUPTED, answer=TINY_ANSWER, foil=TINY_FOIL, site="mlp"),
        lambda: activation_patching(lm, TINY_CLEAN, TINY_CORRUPTED, answer=TINY_ANSWER, foil=TINY_FOIL,
                                    method="attribution"),
        lambda: token_attribution(lm, TINY_CLEAN), lambda: token_attribution(lm, TINY_CLEAN, method="grad_x_input"),
        lambda: block_contributions(lm, TINY_CLEAN), lambda: block_token_effects(lm, TINY_CLEAN),
        lambda: what_blocks_read(lm, TINY_CLEAN, TINY_CORRUPTED),
    ]
    try:
        for call in calls:
            call()
    finally:
        probe.remove()
    assert seen and all(seen)  # every forward pass ran with the lock held
    assert _hooks(lm.model) == theirs and not lm.lock.locked()
    after = run_trace(lm, TINY_CLEAN)
    assert np.array_equal(before.hidden_states, after.hidden_states)
    assert np.array_equal(before.last_logits, after.last_logits)

    def fail(*_):
        raise RuntimeError("stopped inside a forward pass")

    probe = lm.parts.layers[2].register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="stopped inside"):
            activation_patching(lm, TINY_CLEAN, TINY_CORRUPTED, answer=TINY_ANSWER, foil=TINY_FOIL, site="attn")
    finally:
        probe.remove()
    assert _hooks(lm.model) == theirs and not lm.lock.locked()
    assert np.array_equal(run_trace(lm, TINY_CLEAN).last_logits, before.last_logits)


# ---------------------------------------------------------------- bad input


def test_bad_input_messages(family, smollm):
    lm = smollm
    with pytest.raises(ValueError, match="empty"):
        activation_patching(lm, "  ", FRANCE[1])
    with pytest.raises(ValueError, match="empty"):
        token_attribution(lm, "")
    with pytest.raises(ValueError, match="same token"):
        activation_patching(lm, *FRANCE[:2], answer=" Paris", foil=" Paris")
    with pytest.raises(ValueError, match="5 tokens and the corrupted prompt 8"):
        activation_patching(lm, FRANCE[0], "The capital of Burkina Faso is")
    with pytest.raises(ValueError, match="5 tokens and the changed prompt 8"):
        what_blocks_read(lm, FRANCE[0], "The capital of Burkina Faso is")
    long_target = token_attribution(lm, FRANCE[0], target=" Paris city")
    assert long_target.attrs["target"] == " Paris"
    assert "is 2 tokens" in long_target.attrs["notes"][0] and "' Paris'" in long_target.attrs["notes"][0]
    with pytest.raises(ValueError, match="Unknown site"):
        activation_patching(lm, *FRANCE[:2], site="heads")
    # A difference that cannot reach the last token: every layer of the tiny Mistral attends to 4 tokens, so
    # 3 layers see 12 back, and the metric is the same in both runs.
    mistral = family("mistral")
    far = "the apple is green. what color is the apple? how are you? nice to meet you"
    with pytest.raises(ValueError, match="both the clean and the corrupted run"):
        activation_patching(mistral, far, far.replace("apple", "you", 1), answer=TINY_ANSWER, foil=TINY_FOIL)


def test_state_space_model_keeps_the_residual_site(family):
    lm = family(UNREADABLE[0])
    grid = activation_patching(lm, TINY_CLEAN, TINY_CORRUPTED, answer=TINY_ANSWER, foil=TINY_FOIL)
    (d,) = grid.attrs["differing_positions"]
    assert grid[(grid.layer == 0) & (grid.position == d)]["score"].item() == 1.0
    with pytest.raises(UnsupportedArchitecture, match="no separate attention and MLP"):
        activation_patching(lm, TINY_CLEAN, TINY_CORRUPTED, answer=TINY_ANSWER, foil=TINY_FOIL, site="attn")
    with pytest.raises(UnsupportedArchitecture):
        block_contributions(lm, TINY_CLEAN)
