"""Triton kernels of nrnm_fast, installed as ``nrnm_fast.kernels``.

- ``block_attention``: the memory update's attention (N memory queries over a block), forward and backward.
- ``block_attention_ref``: the same function in plain PyTorch, the kernels' test reference.
- ``aot``: ahead-of-time compilation for sm_80 / sm_90 without a GPU, with a resource report.
"""
