"""Causal questions: where in the model an answer lives, which input tokens drove it, and what each
attention and MLP sub-block writes into the residual stream.

- patching.py: activation patching, exact and by attribution (Meng et al. 2022; Heimersheim & Nanda 2024;
  Nanda 2023; Syed et al. 2023).
- attribution.py: one score per input token, by occlusion and by gradient × input (Shrikumar et al. 2017).
- blocks.py: the residual stream taken apart into what each block adds, with each part's direct effect on
  the answer's logit; and the demonstration that attention reads the other tokens while the MLP does not.
- inputs.py: the prompts, answer tokens and forward passes they share.
- cause_reduce.py, block_reduce.py: what the analyses edit and reduce, torch only, so a remote model
  (core.remote.cause, core.remote.cause_blocks) runs the same arithmetic as one job where it runs.
"""
