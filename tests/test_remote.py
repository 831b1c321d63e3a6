"""Remote models (issue 18, first step): remote= values, the NDIF key, nnsight's simulation, transport faults.

What is real here: nnsight 0.8.1's own client (its RemoteBackend: websocket, HTTP, result download,
torch.load) and its own local simulation of NDIF (`LocalSimulationBackend`: the request serialized
exactly as for NDIF, our modules hidden while it is deserialized). What is not: the live NDIF,
which these machines cannot reach. It is replaced by tests/fake_ndif.py, a server on 127.0.0.1
speaking NDIF's protocol, which runs no model and answers with canned results (saved with
torch.save, as NDIF does); and, in test_model_key_is_nnsights, by a stand-in for the hub's
canonical-id lookup (HfApi.model_info), the one step of nnsight's to_model_key that needs the network.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time

import numpy as np
import pytest
import torch

from core import count_parameters, load_model, logit_lens, parameter_table, run_trace, tokenize
from core.remote import connection
from core.remote.budget import LECTURE_TOKENS, LENS_PAGE_BUDGET, lens_page_bytes
from core.remote.connection import DEFAULT_HOST, ndif_status, resolve_key, resolve_target, target_mode
from core.remote.errors import (RemoteCancelled, RemoteError, RemoteJobFailed, RemoteKeyError, RemoteModelNotHosted,
                                RemoteOffline, RemoteResultTooLarge, RemoteTimeout)
from core.remote.lens import remote_lens_last
from core.remote.model import RemoteLoadedModel, RemoteModel, ndif_model_key, remote_model, repo_id_of_folder
from tests.fake_ndif import FakeNDIF
from tests.tiny import save_tiny

pytestmark = pytest.mark.embedded  # test_smollm_simulation_lens loads the embedded SmolLM2

KEY = "ndif-k3y-Zq81xTT5"  # distinctive: any message, repr or str that holds it is a leak
PROMPT = "the apple is green. what color is the apple?"
REPO = "org/tiny-llama"  # the hub id the fake NDIF "hosts"
SIMULATED = ("llama", "gemma3", "gpt2", "gemma3-vision", "opt", "falcon", "granite", "cohere")


@pytest.fixture
def jobs(monkeypatch) -> list:
    """Every job any remote model starts (one per request), counted on the class the app's models use."""
    started, new_job = [], RemoteModel.new_job

    def counting(self, *args, **kwargs):
        started.append(new_job(self, *args, **kwargs))
        return started[-1]

    monkeypatch.setattr(RemoteModel, "new_job", counting)
    return started


@pytest.fixture(autouse=True)
def no_ambient_key(monkeypatch, tmp_path):
    """No NDIF key or host from this machine: each test says where its key comes from."""
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.delenv("NDIF_HOST", raising=False)
    monkeypatch.setattr(connection, "SECRETS_FILE", tmp_path / "no-secrets.toml")


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_folders):
    root = tmp_path_factory.mktemp("remote")
    extra = {kind: save_tiny(kind, root / kind) for kind in SIMULATED if kind not in tiny_folders}
    return {**tiny_folders, **extra}


@pytest.fixture(scope="module")
def meta_llama(folders):
    """The tiny Llama's config and tokenizer on the meta device (what a remote model is built from)."""
    return load_model(str(folders["llama"]), weights=False)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def last_position(table):
    return table[table["position"] == table["position"].max()].reset_index(drop=True)


def texts(error: BaseException) -> list[str]:
    """Every text a user or a log could see of `error`: str, repr, details, and its whole chain."""
    out = []
    while error is not None:
        out += [str(error), repr(error), getattr(error, "details", "")]
        error = error.__cause__ or error.__context__
    return out


# ---------------------------------------------------------------- connection: remote=, host, key


def test_remote_values(monkeypatch):
    assert target_mode(False) is None and target_mode(None) is None
    assert target_mode(True) == "ndif" and target_mode("local") == "local"
    assert target_mode("https://ndif.example.org/") == "self-hosted"
    for junk in ("yes", "LOCAL", "ftp://ndif.example.org", "", 1, 0.5, "http://"):
        with pytest.raises(RemoteError, match="not understood|not an NDIF address"):
            resolve_target(junk, KEY)
    local = resolve_target("local")
    assert (local.mode, local.host, local.key, local.remote_value) == ("local", None, None, "local")
    own = resolve_target("https://ndif.example.org/", KEY)  # trailing slash dropped; a key is optional there
    assert (own.mode, own.host, own.key, own.remote_value) == ("self-hosted", "https://ndif.example.org", KEY,
                                                                 "https://ndif.example.org")
    assert resolve_target("http://127.0.0.1:9").key is None
    ndif = resolve_target(True, KEY)
    assert (ndif.mode, ndif.host, ndif.remote_value) == ("ndif", DEFAULT_HOST, True)
    monkeypatch.setenv("NDIF_HOST", "http://ndif.lab.internal:5001")
    assert resolve_target(True, KEY).host == "http://ndif.lab.internal:5001"
    monkeypatch.setenv("NDIF_HOST", "ndif.lab.internal")  # no scheme: refused with a message
    with pytest.raises(RemoteError, match="is not an NDIF address"):
        resolve_target(True, KEY)


def test_key_sources(monkeypatch, tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'HF_TOKEN = "hf_x"\nNDIF_API_KEY = "{KEY}-from-file"\n')
    assert resolve_key(secrets_path=secrets) == f"{KEY}-from-file"
    monkeypatch.setenv("NDIF_API_KEY", f"{KEY}-from-env")
    assert resolve_key(secrets_path=secrets) == f"{KEY}-from-env"  # the variable wins over the file
    assert resolve_key(KEY, secrets_path=secrets) == KEY  # and the argument (the sidebar) over both
    monkeypatch.delenv("NDIF_API_KEY")
    monkeypatch.setattr(connection, "SECRETS_FILE", secrets)  # the default file, as the dashboard reads it
    assert resolve_target(True).key == f"{KEY}-from-file"
    monkeypatch.setenv("NDIF_API_KEY", f"{KEY}-from-env")  # a typed URL never gets the ambient key
    assert resolve_target("http://ndif.example.org").key is None
    assert resolve_target("http://ndif.example.org", KEY).key == KEY
    monkeypatch.delenv("NDIF_API_KEY")
    secrets.write_text("NDIF_API_KEY = [unclosed")  # unreadable file: no key, and nothing of it echoed
    with pytest.raises(RemoteKeyError) as caught:
        resolve_target(True)
    message = str(caught.value)
    assert message.startswith("No NDIF API key: set NDIF_API_KEY") and "https://login.ndif.us" in message
    assert "unclosed" not in message
    with pytest.raises(RemoteKeyError, match="No NDIF API key"):  # before anything is read or downloaded
        load_model("/no/such/folder", remote=True)


def test_key_never_shown(meta_llama, monkeypatch):
    """The key is absent from every repr/str/description, and from faults whose server text echoes it."""
    monkeypatch.setenv("NDIF_API_KEY", KEY)
    target = resolve_target(True)
    assert target.key == KEY
    remote = remote_model(meta_llama, True, repo_id=REPO)
    shown = [repr(target), str(target), target.describe(), repr(remote), str(remote), repr(remote.remote),
             str(remote.remote), remote.remote.describe(), repr(remote.remote.new_job("x"))]
    assert all(KEY not in text for text in shown), shown
    with FakeNDIF(keys=("another-key",), hosted=(REPO,), max_requests=4, lifetime=20) as server:
        rejected = remote_model(meta_llama, server.url, key=KEY, repo_id=REPO)
        with pytest.raises(RemoteKeyError) as caught:
            remote_lens_last(rejected, PROMPT)
    assert ("POST", "/request") in server.seen  # the server did get the key, and echoed it in its 401
    assert all(KEY not in text for text in texts(caught.value)), texts(caught.value)
    assert "***" in caught.value.details
    withcredentials = resolve_target(f"https://user:{KEY}@ndif.example.org", KEY)
    assert KEY not in repr(withcredentials) and KEY not in withcredentials.describe()


def test_model_key_is_nnsights(meta_llama, monkeypatch):
    """ndif_model_key == nnsight's own to_model_key(), with only the hub's canonical-id lookup stood in."""
    from nnsight import TransformersModel
    from nnsight.modeling import huggingface

    asked = []

    class Info:
        def __init__(self, repo_id, **_):
            asked.append(repo_id)
            self.id = repo_id

    monkeypatch.setattr("huggingface_hub.HfApi.model_info", lambda self, repo_id, **kw: Info(repo_id))
    monkeypatch.setattr(huggingface, "_ID_CACHE", {})
    for repo_id, revision in (("meta-llama/Llama-3.1-405B", None), ("google/gemma-3-4b-it", "main")):
        nn = TransformersModel(meta_llama.model, tokenizer=meta_llama.tokenizer, task="text-generation",
                              device="meta")
        nn.repo_id, nn.revision = repo_id, revision  # what TransformersModel("<repo id>") sets
        assert nn.to_model_key() == ndif_model_key(repo_id, revision)
    assert asked == ["meta-llama/Llama-3.1-405B", "google/gemma-3-4b-it"]


# ---------------------------------------------------------------- nnsight's local simulation = core's lens


@pytest.mark.parametrize("kind", SIMULATED)
def test_simulation_lens_matches_local(folders, kind):
    """load_model(remote="local") + the lens inside nnsight's simulated NDIF request = core's own logit lens.

    The last position only (Home's test request); the whole grid, the trajectories and Mamba:
    tests/test_remote_lens.py.
    """
    local = load_model(str(folders[kind]), device="cpu")
    expected = last_position(logit_lens(local, PROMPT, k=5))  # before nnsight ever sees a module
    before = run_trace(local, PROMPT)
    lm = load_model(str(folders[kind]), device="cpu", remote="local")
    assert isinstance(lm, RemoteLoadedModel) and lm.has_weights and lm.remote.target.is_simulation
    assert lm.remote.nn._module is lm.model  # nnsight wraps the loaded module itself
    got = remote_lens_last(lm, PROMPT, k=5)
    assert list(got.columns) == list(expected.columns)
    assert (got[["layer", "position", "rank", "token", "token_id"]] == expected[
        ["layer", "position", "rank", "token", "token_id"]]).all().all()
    assert np.abs(got["prob"].to_numpy() - expected["prob"].to_numpy()).max() <= 1e-5
    assert lm.remote.last.outcome == "completed"
    assert lm.remote.last.bytes_received == lens_page_bytes(lm.config, k=5, last_only=True)  # meta = measured
    after = run_trace(lm, PROMPT)  # the wrapped module still runs core's own path, bit for bit
    assert np.array_equal(before.hidden_states, after.hidden_states)
    assert np.array_equal(before.last_logits, after.last_logits)


def test_smollm_simulation_lens(smollm):
    """The embedded SmolLM2 (30 layers): same numbers through the simulation, on the same module."""
    started = time.perf_counter()
    expected = last_position(logit_lens(smollm, PROMPT, k=10))
    local_seconds = time.perf_counter() - started
    lm = remote_model(smollm, "local")
    assert lm.model is smollm.model and lm.lock is smollm.lock and lm.remote.nn._module is smollm.model
    started = time.perf_counter()
    got = remote_lens_last(lm, PROMPT, k=10)
    remote_seconds = time.perf_counter() - started
    assert (got["token_id"].to_numpy() == expected["token_id"].to_numpy()).all()
    difference = np.abs(got["prob"].to_numpy() - expected["prob"].to_numpy()).max()
    assert difference <= 1e-5
    assert len(got) == 31 * 10 and lm.remote.last.bytes_received == lens_page_bytes(smollm.config, k=10, last_only=True)
    print(f"SmolLM2 lens at the last position: local {local_seconds:.3f} s, simulated NDIF {remote_seconds:.3f} s, "
          f"max |dp| {difference:.2e}, {lm.remote.last.bytes_received} bytes back")


def test_lens_page_bytes_405b():
    """The lens page for Llama-3.1-405B (config written by hand: 126 layers, hidden 16,384, vocab 128,256)."""
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=128_256, hidden_size=16_384, intermediate_size=53_248, num_hidden_layers=126,
                         num_attention_heads=128, num_key_value_heads=8, max_position_embeddings=131_072,
                         tie_word_embeddings=False)
    size = lens_page_bytes(config, tokens=LECTURE_TOKENS, k=10)
    entries = 126 + 1
    raw = entries * LECTURE_TOKENS * 10 * (8 + 4) + entries * (8 + 4)  # int64 ids + fp32 probs; the trajectory
    assert raw <= size <= raw + 4096  # what torch.save adds is a few hundred bytes per tensor
    assert size <= LENS_PAGE_BUDGET
    print(f"Llama-3.1-405B lens page, {LECTURE_TOKENS} tokens, top 10: {size:,} bytes "
          f"(last position only: {lens_page_bytes(config, k=10, last_only=True):,})")


# ---------------------------------------------------------------- a remote model on the meta device


def test_meta_build_reads_no_weights(folders, tmp_path):
    real = load_model(str(folders["llama"]), device="cpu")
    folder = tmp_path / "models--org--tiny-llama" / "snapshots" / "0123abc"  # laid out as in the HF cache
    shutil.copytree(folders["llama"], folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")  # would fail if it were read
    lm = load_model(str(folder), remote=f"http://127.0.0.1:{closed_port()}")
    assert isinstance(lm, RemoteLoadedModel) and not lm.has_weights and lm.device == "meta"
    assert {p.device.type for p in lm.model.parameters()} == {"meta"}
    assert lm.remote.repo_id == "org/tiny-llama" == repo_id_of_folder(folder)
    assert lm.remote.model_key == ndif_model_key("org/tiny-llama")
    assert count_parameters(lm) == count_parameters(real)
    ours, theirs = parameter_table(lm), parameter_table(real)
    assert ours[["name", "shape", "numel"]].equals(theirs[["name", "shape", "numel"]])
    assert tokenize(lm, PROMPT).equals(tokenize(real, PROMPT))
    (folder / "model.safetensors").unlink()  # no weights at all: the same
    assert count_parameters(load_model(str(folder), remote="http://127.0.0.1:9", ndif_repo_id=REPO)) == \
        count_parameters(real)
    with pytest.raises(RemoteError, match="named by their Hugging Face id"):
        load_model(str(folders["llama"]), remote="http://127.0.0.1:9")  # a plain folder has no hub id
    with pytest.raises(RemoteError, match="needs the weights"):
        remote_model(load_model(str(folders["llama"]), weights=False), "local")


# ---------------------------------------------------------------- transport faults, through nnsight's real client


def test_transport_faults(meta_llama):
    """Each fault of a remote job, as nnsight's client receives it from the fake NDIF, is one plain error."""
    url = f"http://127.0.0.1:{closed_port()}"
    states, why = ndif_status(resolve_target(url))  # Home: "unknown", and why
    assert states is None and why == f"{url}/status could not be reached from here (ConnectError)"
    assert ndif_status(resolve_target("local")) == (None, "nnsight's local simulation runs on this machine: there "
                                                           "is no NDIF server to ask")
    with pytest.raises(RemoteOffline) as caught:
        remote_lens_last(remote_model(meta_llama, url, key=KEY, repo_id=REPO), PROMPT)
    assert str(caught.value).startswith(f"Offline: could not reach NDIF at {url}")

    canned = {"lens": {"ids": torch.arange(20).reshape(4, 5), "probs": torch.linspace(0.9, 0.1, 20).reshape(4, 5)}}
    jobs = ["complete", "fail", "time-limit", "big", "bomb", "queued", "queued", "complete"]
    with FakeNDIF(jobs, result=canned, hosted=(REPO,), keys=(KEY,), max_requests=40, lifetime=40) as server:
        assert ndif_status(resolve_target(server.url)) == ({REPO: "RUNNING"}, None)
        lm = remote_model(meta_llama, server.url, key=KEY, repo_id=REPO)
        table = remote_lens_last(lm, PROMPT, k=5)  # a round trip: the canned result, decoded
        assert table["token_id"].tolist() == canned["lens"]["ids"].ravel().tolist()
        assert np.allclose(table["prob"], canned["lens"]["probs"].ravel().numpy())
        assert server.model_keys == [ndif_model_key(REPO)]
        assert lm.remote.last.outcome == "completed" and lm.remote.last.bytes_received > 0
        assert lm.remote.last.queue_seconds is not None

        with pytest.raises(RemoteModelNotHosted, match="does not run org/absent"):
            remote_lens_last(remote_model(meta_llama, server.url, key=KEY, repo_id="org/absent"), PROMPT)
        with pytest.raises(RemoteJobFailed, match="failed on the server: IndexError: index 126"):
            remote_lens_last(lm, PROMPT)
        with pytest.raises(RemoteTimeout, match="went past its time limit"):
            remote_lens_last(lm, PROMPT)
        with pytest.raises(RemoteResultTooLarge, match="over this page's budget of 1.0 MiB"):
            remote_lens_last(lm, PROMPT, budget=2**20)  # the fake sends 3 MiB: refused from its Content-Length
        assert lm.remote.last.bytes_received == 0 and lm.remote.last.outcome == "failed"  # nothing was read
        with pytest.raises(RemoteResultTooLarge, match="over this page's budget of 1.0 MiB"):
            remote_lens_last(lm, PROMPT, budget=2**20)  # 3 MiB of zeros, a few hundred bytes compressed
        assert 0 < lm.remote.last.bytes_received < 2**16  # refused after decompressing at most the budget
        with pytest.raises(RemoteTimeout, match="no result after"):
            remote_lens_last(lm, PROMPT, time_limit=0.5)  # queued for ever: the client's deadline ends it
        server.queued.clear()
        stopper = threading.Thread(target=lambda: server.queued.wait(10) and lm.remote.cancel_all())
        stopper.start()
        with pytest.raises(RemoteCancelled, match="nothing was kept"):
            remote_lens_last(lm, PROMPT)
        stopper.join()
        assert server.closed_while_queued.wait(5)
        assert lm.remote.last.outcome == "cancelled"
        again = remote_lens_last(lm, PROMPT, k=5)  # the next request on the same model works
        assert again["token_id"].tolist() == table["token_id"].tolist()
    assert len(server.seen) <= server.max_requests
