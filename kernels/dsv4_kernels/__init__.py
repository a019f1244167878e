"""DeepSeek-V4 hybrid-attention kernels (Triton) beside plain PyTorch references.

One folder per op; each `__init__.py` documents the public function (every tensor as
`name: [dims], dtype`, −1 = invalid index) and each README.md the math:

- `dsv4_kernels.compressor.compress` — KV compressor, ratio 4 (overlapping, 8 tokens per entry)
  and ratio 128; bf16 or fp8_ds_mla (584 B) output.
- `dsv4_kernels.hca.hca_attention` — HCA attention (ratio 128), decode and prefill.
- `dsv4_kernels.indexer.index_topk` — lightning indexer on FP8 keys with a fused top-k.
- `dsv4_kernels.csa.csa_attention` — CSA attention over top-k entries + the 128-token window.
- `dsv4_kernels.sparse_mla.sparse_mla_attention` — the shared attention kernel.
- `dsv4_kernels.kv_format` — cache byte layouts and their PyTorch (de)quantisation.

Every public function takes `impl`: "reference" (plain PyTorch, any device, CPU included),
"triton" (the kernel; CUDA, or the CPU interpreter with TRITON_INTERPRET=1) or "auto" (Triton
on CUDA, else the reference). Importing this package imports neither torch nor triton; the
reference path never imports triton.
"""
