"""Benchmarks (`python -m bench`). See bench/common.py for the plumbing and README "Benchmarks" for figures.

OpenMP threads sleep instead of spinning while they wait (OMP_WAIT_POLICY=PASSIVE, unless the
caller set it): this package runs on a shared 2-core machine, where libgomp's default
spin-waiting made a 2-thread forward pass of the Llama-3.2-3B shape 3-4x slower than a
1-thread one at load average 12 (every waiting thread burns the core another process needs).
bench/real_shapes.py measures the default against this setting side by side. It must be set
before torch loads libgomp, hence here: this file runs before any bench module imports torch.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
