"""Remote models: running a model on NDIF (or a self-hosted NDIF) through nnsight, from core.

Why a package of its own: it is the only part of core that imports nnsight (lazily), so a machine
without a remote model never pays for it. It knows where a request goes and with which key
(`connection`), turns every fault of nnsight's client into one plain message (`errors`), wraps a
model that core.loading.load_model(remote=...) loaded (on the meta device, or with its weights for
nnsight's local simulation) for nnsight (`model`), runs a page as one NDIF job with a stop, a
deadline and a byte budget (`jobs`), reduces inside the trace with the analyses' own torch-only
code shipped with the request (core.running.lens_reduce for the lens; `reduce`, `lens`), and says how many bytes a page brings back from its config alone
(`budget`).

Import the submodules directly (e.g. `from core.remote.model import remote_model`): this file
imports nothing heavy.
"""
