"""Warp-specialised sparse MLA attention for Hopper (Gluon), same contract as the Triton kernel.

One CTA per (64-head block, KV split, query token); three partitions of one warpgroup each:

- producer (the default partition): keeps RAW_STAGES - 1 tiles of BLOCK_N raw fp8_ds_mla
  rows in flight with cp.async (NoPE bytes, scales and RoPE of each entry), dequantises each
  tile (e4m3 * 2**(ue8m0 - 127), RoPE as is) into eight [BLOCK_N, 64] bf16 chunks of a ring of
  STAGES shared-memory stages, and signals `ready[stage]`. Entry ids are loaded two tiles
  ahead and page ids one tile ahead, so their latency never stalls the loop; the first tiles'
  loads are software-pipelined the same way.
- two consumers (workers), each owning half of the 512 output dims. The leader loads the
  query [64, 512] bf16 into shared memory (all of it in flight at once, while the producer
  fetches the first tiles), computes S = Q K^T [64, BLOCK_N] with wgmma (Q and K from shared
  memory), runs the online softmax (base 2) in registers, publishes P (bf16) and the rescale
  factors through shared memory, and accumulates O[:, :256] += P K[:, :256] (P from
  registers); the follower accumulates O[:, 256:] += P K[:, 256:] with P read by wgmma from
  shared memory. Each arrives on `empty[stage]` once its MMAs have read the stage.

So the gather and dequantisation of later tiles overlap the tensor-core work of the current
one, and the float32 output accumulator (64 x 512) is split over two warpgroups (128 registers
per thread) that get 224 registers each via setmaxnreg -- what the Triton kernel, with one
program doing gather, dequantisation and both MMAs in turn, cannot express (see the H200
report, kernels/benchmarks/reports/2026-11-29-h200.md). Measured alternatives (both consumers
computing S; S split by dims and summed through shared memory; the leader role alternating by
tile) were slower.

Grid, arguments, token list ([window | compressed list]), split-KV partials and sink are
those of `triton_attention._sparse_mla_chunked_kernel`; `sparse_mla_triton` launches this
kernel in its place where `unsupported_reason` and `cache_alignment_reason` are None (see
`warp_specialized` there).
"""

from __future__ import annotations

from typing import Any

import torch

from dsv4_kernels.triton_fp8 import INTERPRET

try:  # Gluon ships with Triton >= 3.5; without it the Triton kernel is used.
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        async_copy,
        fence_async_shared,
        mbarrier,
        warpgroup_mma,
        warpgroup_mma_wait,
    )

    HAVE_GLUON = True
except ImportError:  # pragma: no cover - depends on the installed Triton
    HAVE_GLUON = False

BLOCK_H = 64
"""Heads per CTA: one wgmma M tile (64 rows per warpgroup)."""
BLOCK_N = 32
"""Entries per tile. With BLOCK_N = 64 the query (64 KiB) and two bf16 stages (64 KiB each)
would leave no room for raw stages in 227 KiB."""
SMEM_LIMIT = 232448
"""Shared memory one CTA may use on sm_90 (227 KiB; CUDA C++ Programming Guide, compute
capability 9.0 table)."""
MAX_REGS = 168
"""Registers per thread at launch: 65,536 per SM over 12 warps (384 threads), rounded down
to a multiple of 8; setmaxnreg then moves them between the partitions."""
SELECTED_OPTIONS: dict[str, int] = {"stages": 3, "raw_stages": 3}
"""`launch_options` for selected (CSA) lists when the caller gives none: H200, 2026-11-30,
CUDA graphs, best of 3 interleaved, against the defaults (stages 2, raw_stages 4): CSA B=128
s=1 54.4 vs 55.4 us, B=64 s=1 37.3 vs 38.4, B=128 s=2 101.7 vs 103.0. Dense (HCA) lists keep
the defaults (L=1M 244.0 vs 242.4 us with these). Both kinds get `FOLLOWER_CHUNKS` (fifteenth
session: re-measured with it, the same ring depths are best for each kind)."""
FOLLOWER_CHUNKS = 6
"""NoPE chunks (of 7) the follower consumer dequantises, with the RoPE chunk, when the bf16
ring has 2 or more stages. Nsight Compute (H200, HCA B=64 L=1M) showed the follower waiting
for P 70 % of the time and the leader waiting for `ready`; moving the dequantisation of the
next tile into the follower's wait, `attention_ab.py`, best of 3 interleaved, µs (0 / 3 / 5 / 6
/ 7 chunks): HCA L=1M 224.6 / 223.8 / 217.7 / 215.9 / 220.4 (7: 2 / 4 stages), L=128K 46.9 /
46.2 / 46.3 / 45.5 / 46.2; CSA (3 / 3 stages) B=128 53.2 / - / 50.9 / 50.1 / 49.9, B=64
36.0 / - / 35.6 / 35.0 / 35.1, B=128 s=2 99.4 / - / 93.0 / 92.5 / 93.1."""


def shared_bytes(stages: int, raw_stages: int) -> int:
    """Shared memory of one CTA in bytes: buffers and barriers (8 B each), a lower bound.

    The compiler pads buffers (the default launch allocates 215,648 B against 215,152 here).

    Query 64 x 512 bf16; per bf16 stage 8 chunks of BLOCK_N x 64 bf16; per raw stage BLOCK_N
    x (448 NoPE bytes + 8 scale bytes + 64 bf16 RoPE); the leader -> follower exchange (P in
    bf16, rescale factors, final m and l; two of each but the last).
    """
    kv = stages * 8 * BLOCK_N * 64 * 2
    raw = raw_stages * BLOCK_N * (7 * 64 + 8 + 64 * 2)
    exchange = 2 * BLOCK_H * BLOCK_N * 2 + 2 * BLOCK_H * 4 + 2 * BLOCK_H * 4
    barriers = 8 * (2 * stages + 2 * raw_stages + 1 + 4 + 1)
    return BLOCK_H * 512 * 2 + kv + raw + exchange + barriers


def unsupported_reason(  # noqa: PLR0911  (one return per reason)
    device: torch.device, n_heads: int, window: int
) -> str | None:
    """Why the warp-specialised kernel cannot run here, or None when it can.

    It needs Gluon, a compiled (not interpreted) NVIDIA sm_90 GPU (wgmma and setmaxnreg are
    Hopper instructions; Blackwell has neither in this form), H a multiple of `BLOCK_H` and a
    window that is a multiple of `BLOCK_N`.
    """
    if not HAVE_GLUON:
        return "Triton has no Gluon (triton.experimental.gluon)"
    if INTERPRET:
        return "TRITON_INTERPRET=1 (Gluon kernels do not run in the interpreter)"
    if device.type != "cuda" or torch.version.hip is not None:
        return f"device {device} is not an NVIDIA GPU"
    major, minor = torch.cuda.get_device_capability(device)
    if major != 9:
        return f"device {device} has compute capability {major}.{minor}; the kernel needs 9.x"
    if n_heads % BLOCK_H:
        return f"H={n_heads} is not a multiple of {BLOCK_H}"
    if window % BLOCK_N:
        return f"window={window} is not a multiple of {BLOCK_N}"
    return None


RECORD_ALIGN = 16
"""Bytes per cp.async of the producer (`NOPE_L`: 16 e4m3 bytes per thread): every 576-byte
record must start 16-byte aligned. PTX ISA, `cp.async`: the source address must be aligned to
the copy size; Triton's lowering refuses copies under 4 bytes ("cp.async does not support
transfers smaller than 4 bytes")."""


def cache_alignment_reason(swa_cache: torch.Tensor, comp_cache: torch.Tensor) -> str | None:
    """Why the caches' records are not all 16-byte aligned for this kernel, or None.

    `kv_format.check_paged_cache` accepts any even start and page stride (rows of
    page * 584 bytes, a slice of a larger allocation); the records of page g then start at
    data_ptr + g * page_stride + i * 576, 16-byte aligned only when data_ptr and the page
    stride are multiples of 16 (a one-page cache: data_ptr only). vLLM's blocks are.

    Args:
        swa_cache: [pages, row bytes] uint8 paged cache (`check_paged_cache` passed).
        comp_cache: the same, for the compressed entries.
    """
    for name, cache in (("swa_cache", swa_cache), ("comp_cache", comp_cache)):
        if cache.data_ptr() % RECORD_ALIGN:
            return f"{name} starts at an address that is not a multiple of {RECORD_ALIGN} bytes"
        if cache.shape[0] > 1 and cache.stride(0) % RECORD_ALIGN:
            return f"{name} page stride {cache.stride(0)} bytes is not a multiple of {RECORD_ALIGN}"
    return None


if HAVE_GLUON:

    @gluon.jit
    def _tile_range(
        pos_ptr,
        t,
        split,
        n_comp_list,
        RATIO: gl.constexpr,
        WINDOW: gl.constexpr,
        BLOCK_N: gl.constexpr,
        DENSE: gl.constexpr,
        N_SPLIT: gl.constexpr,
    ):
        """(p, n_c, n_list, t0, t1) of query token t and KV split `split`.

        p: position; n_c: complete compressed entries; n_list: list length; [t0, t1): the
        tiles of [window | compressed list] the split walks (as `_sparse_mla_chunked_kernel`).
        """
        p = gl.load(pos_ptr + t)
        n_c = (p + 1) // RATIO
        if DENSE:  # noqa: SIM108  (gluon.jit: constexpr branch)
            n_list = n_c
        else:
            n_list = n_comp_list
        n_tiles = WINDOW // BLOCK_N + (n_list + BLOCK_N - 1) // BLOCK_N
        per = (n_tiles + N_SPLIT - 1) // N_SPLIT
        t0 = split * per
        t1 = gl.minimum(t0 + per, n_tiles)
        return p, n_c, n_list, t0, t1

    @gluon.jit
    def _tile_valid(
        ti,
        t1,
        offs_n,
        p,
        n_c,
        n_list,
        t64,
        idx_ptr,
        idx_stride,
        WT: gl.constexpr,
        WINDOW: gl.constexpr,
        BLOCK_N: gl.constexpr,
        DENSE: gl.constexpr,
    ):
        """(entry or token ids, valid) of tile `ti` of the list [window | compressed].

        No entry of a tile at or past t1 (the split's end) is valid.
        """
        if ti < WT:
            tok = p - WINDOW + 1 + ti * BLOCK_N + offs_n
            valid = tok >= 0
            e = gl.maximum(tok, 0)
        else:
            j = (ti - WT) * BLOCK_N + offs_n
            if DENSE:
                valid = j < n_c
                e = gl.where(valid, j, 0)
            else:
                e = gl.load(idx_ptr + t64 * idx_stride + j, mask=j < n_list, other=-1)
                valid = (e >= 0) & (e < n_c)
                e = gl.where(valid, e, 0)
        return e, valid & (ti < t1)

    @gluon.jit
    def _tile_pages(
        ti,
        e,
        valid,
        seq,
        swa_bt,
        swa_bt_stride,
        comp_bt,
        comp_bt_stride,
        WT: gl.constexpr,
        SWA_PAGE: gl.constexpr,
        COMP_PAGE: gl.constexpr,
    ):
        """Page ids of tile `ti`'s entries (window tiles: the SWA block table)."""
        if ti < WT:
            pg = gl.load(swa_bt + seq * swa_bt_stride + e // SWA_PAGE, mask=valid, other=0)
        else:
            pg = gl.load(comp_bt + seq * comp_bt_stride + e // COMP_PAGE, mask=valid, other=0)
        return pg

    @gluon.jit
    def _issue_tile(
        ti,
        e,
        valid,
        pg,
        rs,
        nope_smem,
        sc_smem,
        rope_smem,
        raw_ready,
        swa_u8,
        swa_bf16,
        comp_u8,
        comp_bf16,
        WT: gl.constexpr,
        SWA_PAGE: gl.constexpr,
        COMP_PAGE: gl.constexpr,
        SWA_STRIDE: gl.constexpr,
        COMP_STRIDE: gl.constexpr,
        NOPE_L: gl.constexpr,
    ):
        """cp.async the raw rows of tile `ti` into raw stage `rs`; raw_ready[rs] completes."""
        # vLLM's block layout: a page's 576-byte records, then its 8-byte scale records.
        if ti < WT:
            base = pg.to(gl.int64) * SWA_STRIDE
            rec = base + (e % SWA_PAGE) * 576
            srec = base + SWA_PAGE * 576 + (e % SWA_PAGE) * 8
            u8 = swa_u8
            b16 = swa_bf16
        else:
            base = pg.to(gl.int64) * COMP_STRIDE
            rec = base + (e % COMP_PAGE) * 576
            srec = base + COMP_PAGE * 576 + (e % COMP_PAGE) * 8
            u8 = comp_u8
            b16 = comp_bf16
        cols = gl.arange(0, 64, layout=gl.SliceLayout(0, NOPE_L))
        row = u8 + rec
        for c in gl.static_range(7):
            async_copy.async_copy_global_to_shared(
                nope_smem[c].index(rs), row[:, None] + c * 64 + cols[None, :], mask=valid[:, None]
            )
        # Scales and RoPE use the NoPE copy layout too, so `slot` needs no layout conversion
        # (a conversion goes through shared memory with a barrier); the [BLOCK_N, 8] scale tile
        # is replicated over the column threads, which copy the same 8 bytes.
        cs = gl.arange(0, 8, layout=gl.SliceLayout(0, NOPE_L))
        async_copy.async_copy_global_to_shared(
            sc_smem.index(rs), (u8 + srec)[:, None] + cs[None, :], mask=valid[:, None]
        )
        async_copy.async_copy_global_to_shared(
            rope_smem.index(rs),
            (b16 + rec // 2 + 224)[:, None] + cols[None, :],
            mask=valid[:, None],
        )
        async_copy.mbarrier_arrive(raw_ready.index(rs), increment_count=False)

    @gluon.jit
    def _dequantise(
        kv_smem,
        nope_smem,
        sc_smem,
        rope_smem,
        rs,
        stage,
        C0: gl.constexpr,
        C1: gl.constexpr,
        ROPE: gl.constexpr,
        NOPE_L: gl.constexpr,
    ):
        """Dequantise NoPE chunks C0 .. C1-1 of raw stage `rs` into bf16 stage `stage`.

        Each chunk is e4m3 x 2^(UE8M0 - 127); with ROPE also the bf16 RoPE chunk (chunk 7).
        Shared-memory reads and stores only: the caller waits for the raw stage and the bf16
        stage, fences and arrives.
        """
        csc = gl.arange(0, 8, layout=gl.SliceLayout(0, NOPE_L))
        sc_all = sc_smem.index(rs).load(NOPE_L).to(gl.int32)
        for c in gl.static_range(C0, C1):
            raw = nope_smem[c].index(rs).load(NOPE_L)
            sc = gl.sum(gl.where(csc[None, :] == c, sc_all, 0), axis=1)
            scale = (sc << 23).to(gl.float32, bitcast=True)  # 2**(sc - 127), sc in 1..254
            kb = raw.to(gl.float8e4nv, bitcast=True).to(gl.float32) * scale[:, None]
            kv_smem[c].index(stage).store(kb.to(gl.bfloat16))
        if ROPE:
            kv_smem[7].index(stage).store(rope_smem.index(rs).load(NOPE_L))

    @gluon.jit
    def _produce(
        pos_ptr,
        seq_ptr,
        swa_u8,
        swa_bf16,
        swa_bt,
        swa_bt_stride,
        comp_u8,
        comp_bf16,
        comp_bt,
        comp_bt_stride,
        idx_ptr,
        idx_stride,
        n_comp_list,
        kv_smem,
        nope_smem,
        sc_smem,
        rope_smem,
        raw_ready,
        raw_free,
        ready,
        empty,
        WINDOW: gl.constexpr,
        SWA_PAGE: gl.constexpr,
        COMP_PAGE: gl.constexpr,
        SWA_STRIDE: gl.constexpr,
        COMP_STRIDE: gl.constexpr,
        RATIO: gl.constexpr,
        DENSE: gl.constexpr,
        N_SPLIT: gl.constexpr,
        BLOCK_N: gl.constexpr,
        STAGES: gl.constexpr,
        RAW_STAGES: gl.constexpr,
        FOLLOWER_CHUNKS: gl.constexpr,
    ):
        """Producer partition: cp.async raw rows RAW_STAGES - 1 tiles ahead, dequantise, publish.

        With FOLLOWER_CHUNKS > 0 it dequantises NoPE chunks 0 .. 6 - FOLLOWER_CHUNKS only (the
        follower consumer the rest and the RoPE chunk), and before reusing a raw stage waits
        for the follower's `raw_free` arrival on it.

        Entry ids are loaded two tiles before their rows are issued and page ids one tile
        before, so neither load's latency stalls the loop.
        """
        # 16 bytes per thread: every 576-byte record and its 64-byte column chunks start 16-byte
        # aligned in vLLM's block layout, so each cp.async moves 16 bytes (8 with 584-byte rows;
        # H200 HCA B=64 L=1M 240.0 -> 224.3 us, attention_ab.py).
        NOPE_L: gl.constexpr = gl.BlockedLayout([1, 16], [8, 4], [4, 1], [1, 0])
        LA: gl.constexpr = RAW_STAGES - 1
        split = gl.program_id(1)
        t = gl.program_id(2)
        t64 = t.to(gl.int64)
        seq = gl.load(seq_ptr + t).to(gl.int64)
        p, n_c, n_list, t0, t1 = _tile_range(
            pos_ptr, t, split, n_comp_list, RATIO, WINDOW, BLOCK_N, DENSE, N_SPLIT
        )
        WT: gl.constexpr = WINDOW // BLOCK_N
        offs = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, NOPE_L))

        # Pipeline state: tile k's entries (e_a, v_a) and pages (pg_a), tile k+1's entries
        # (e_b, v_b), k = j + LA. Iterations t0-LA .. t0-1 only fill the pipeline.
        e_a, v_a = _tile_valid(
            t0, t1, offs, p, n_c, n_list, t64, idx_ptr, idx_stride, WT, WINDOW, BLOCK_N, DENSE
        )
        pg_a = _tile_pages(
            t0,
            e_a,
            v_a,
            seq,
            swa_bt,
            swa_bt_stride,
            comp_bt,
            comp_bt_stride,
            WT,
            SWA_PAGE,
            COMP_PAGE,
        )
        e_b, v_b = _tile_valid(
            t0 + 1, t1, offs, p, n_c, n_list, t64, idx_ptr, idx_stride, WT, WINDOW, BLOCK_N, DENSE
        )
        for j in range(t0 - LA, t1):
            k = j + LA
            # Tile k+1's pages and tile k+2's entries are loaded first, then tile k's rows are
            # issued: the copies wait only for pages loaded one iteration earlier while the
            # new loads are in flight, so even the filling iterations cost about one load
            # latency each instead of two in series.
            pg_n = _tile_pages(
                k + 1,
                e_b,
                v_b,
                seq,
                swa_bt,
                swa_bt_stride,
                comp_bt,
                comp_bt_stride,
                WT,
                SWA_PAGE,
                COMP_PAGE,
            )
            e_n, v_n = _tile_valid(
                k + 2,
                t1,
                offs,
                p,
                n_c,
                n_list,
                t64,
                idx_ptr,
                idx_stride,
                WT,
                WINDOW,
                BLOCK_N,
                DENSE,
            )
            if FOLLOWER_CHUNKS > 0:  # noqa: SIM102  (gluon.jit: constexpr branch)
                if k - t0 >= RAW_STAGES:
                    # The follower's share of tile k - RAW_STAGES, the stage's last occupant
                    # (always a tile before t1, as LA = RAW_STAGES - 1), must be read first.
                    rf = (k - t0) % RAW_STAGES
                    mbarrier.wait(raw_free.index(rf), (((k - t0) // RAW_STAGES) - 1) & 1)
            _issue_tile(
                k,
                e_a,
                v_a,
                pg_a,
                (k - t0) % RAW_STAGES,
                nope_smem,
                sc_smem,
                rope_smem,
                raw_ready,
                swa_u8,
                swa_bf16,
                comp_u8,
                comp_bf16,
                WT,
                SWA_PAGE,
                COMP_PAGE,
                SWA_STRIDE,
                COMP_STRIDE,
                NOPE_L,
            )
            e_a = e_b
            v_a = v_b
            pg_a = pg_n
            e_b = e_n
            v_b = v_n
            if j >= t0:
                # Dequantise tile j from raw stage i % RAW_STAGES into bf16 stage i % STAGES.
                i = j - t0
                rs = i % RAW_STAGES
                stage = i % STAGES
                mbarrier.wait(raw_ready.index(rs), (i // RAW_STAGES) & 1)
                mbarrier.wait(empty.index(stage), ((i // STAGES) & 1) ^ 1)
                _dequantise(
                    kv_smem,
                    nope_smem,
                    sc_smem,
                    rope_smem,
                    rs,
                    stage,
                    0,
                    7 - FOLLOWER_CHUNKS,
                    FOLLOWER_CHUNKS == 0,
                    NOPE_L,
                )
                fence_async_shared()
                mbarrier.arrive(ready.index(stage), count=1)
        # The last LA issues were for tiles past t1 (masked, zero-fill): drain them before exit.
        async_copy.commit_group()
        async_copy.wait_group(0)

    @gluon.jit
    def _issue_s(q_smem, kv_smem, stage, s):
        """Issue S += Q K^T over the eight 64-column chunks of bf16 stage `stage` (8 groups).

        s: [64, BLOCK_N] float32 accumulator (zeros); returns the async accumulator.
        """
        for c in gl.static_range(8):
            s = warpgroup_mma(q_smem[c], kv_smem[c].index(stage).permute((1, 0)), s, is_async=True)
        return s

    @gluon.jit
    def _softmax_tile(s, valid, m, lsum, qk_scale):
        """Online-softmax step of one tile: (P, alpha, m, l) from S [64, BLOCK_N] float32.

        Scores in log2 units (qk_scale includes log2 e); masked entries get probability 0;
        alpha = 2^(m_old - m_new) rescales the running l and O (0 while every row is empty).
        """
        s = s * qk_scale
        s = gl.where(valid[None, :], s, float("-inf"))
        m_new = gl.maximum(m, gl.max(s, axis=1))
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = gl.exp2(m - m_safe)
        pr = gl.exp2(s - m_safe[:, None])
        lsum = lsum * alpha + gl.sum(pr, axis=1)
        return pr, alpha, m_new, lsum

    @gluon.jit
    def _publish_p(pr, alpha, p_smem, a_smem, p_bar, p_free, par, i):
        """Hand tile i's P (bf16) and rescale factors to the follower (buffer `par` = i % 2)."""
        mbarrier.wait(p_free.index(par), ((i // 2) & 1) ^ 1)
        p_smem.index(par).store(pr.to(gl.bfloat16))
        a_smem.index(par).store(alpha)
        fence_async_shared()
        mbarrier.arrive(p_bar.index(par), count=1)

    @gluon.jit
    def _accumulate_pv(pmat, alpha, kv_smem, stage, o0, o1, o2, o3, C0: gl.constexpr):
        """o_c = o_c * alpha[:, None] + P K_{C0+c}, c = 0..3, then wait for the MMAs.

        The four [64, 64] float32 accumulators of one consumer (chunks C0 .. C0+3 of bf16
        stage `stage`); P [64, BLOCK_N] bf16 from registers or shared memory.
        """
        al = alpha[:, None]
        o0 = warpgroup_mma(pmat, kv_smem[C0 + 0].index(stage), o0 * al, is_async=True)
        o1 = warpgroup_mma(pmat, kv_smem[C0 + 1].index(stage), o1 * al, is_async=True)
        o2 = warpgroup_mma(pmat, kv_smem[C0 + 2].index(stage), o2 * al, is_async=True)
        o3 = warpgroup_mma(pmat, kv_smem[C0 + 3].index(stage), o3 * al, is_async=True)
        return warpgroup_mma_wait(0, deps=[o0, o1, o2, o3])

    @gluon.jit
    def _follower_share(
        n,
        kv_smem,
        nope_smem,
        sc_smem,
        rope_smem,
        raw_ready,
        raw_free,
        ready,
        empty,
        STAGES: gl.constexpr,
        RAW_STAGES: gl.constexpr,
        FOLLOWER_CHUNKS: gl.constexpr,
    ):
        """The follower's part of tile n's dequantisation (n counted from the split's first).

        Waits for the raw stage (cp.async completion) and the bf16 stage (both consumers done
        with tile n - STAGES: the follower's own release came an iteration earlier, so
        STAGES >= 2), writes NoPE chunks 7 - FOLLOWER_CHUNKS .. 6 and the RoPE chunk, then
        arrives on `ready` (the producer's is the other arrival) and `raw_free`.
        """
        NOPE_L: gl.constexpr = gl.BlockedLayout([1, 16], [8, 4], [4, 1], [1, 0])
        rs = n % RAW_STAGES
        stage = n % STAGES
        mbarrier.wait(raw_ready.index(rs), (n // RAW_STAGES) & 1)
        mbarrier.wait(empty.index(stage), ((n // STAGES) & 1) ^ 1)
        _dequantise(
            kv_smem, nope_smem, sc_smem, rope_smem, rs, stage, 7 - FOLLOWER_CHUNKS, 7, True, NOPE_L
        )
        fence_async_shared()
        mbarrier.arrive(ready.index(stage), count=1)
        mbarrier.arrive(raw_free.index(rs), count=1)

    @gluon.jit
    def _consume(  # noqa: PLR0912, PLR0915  (one partition = one argument list)
        q_ptr,
        pos_ptr,
        idx_ptr,
        idx_stride,
        sink_ptr,
        out_ptr,
        lse_ptr,
        part_o_ptr,
        part_lse_ptr,
        H,
        n_comp_list,
        qk_scale,
        q_smem,
        kv_smem,
        ready,
        empty,
        q_bar,
        p_smem,
        a_smem,
        ml_smem,
        p_bar,
        p_free,
        ml_bar,
        nope_smem,
        sc_smem,
        rope_smem,
        raw_ready,
        raw_free,
        W: gl.constexpr,
        WINDOW: gl.constexpr,
        RATIO: gl.constexpr,
        DENSE: gl.constexpr,
        HAS_SINK: gl.constexpr,
        N_SPLIT: gl.constexpr,
        BLOCK_N: gl.constexpr,
        STAGES: gl.constexpr,
        RAW_STAGES: gl.constexpr,
        FOLLOWER_CHUNKS: gl.constexpr,
    ):
        """Consumer partition W, owning output dims 256W .. 256W+255.

        W = 0, the leader: loads the query into `q_smem`, then per tile S = Q K^T (wgmma),
        online softmax, publishes P (bf16) and the
        rescale factors to shared memory (double-buffered by tile parity: p_bar / p_free),
        then O[:, :256] += P K[:, :256]. W = 1, the follower: rescales and accumulates
        O[:, 256:] += P K[:, 256:] with P read by wgmma straight from shared memory, and gets
        the final (m, l) from the leader (ml_bar) for the epilogue. With FOLLOWER_CHUNKS > 0
        the follower also dequantises the last FOLLOWER_CHUNKS NoPE chunks and the RoPE chunk
        of the next tile (`_follower_share`) before its P V of this one: it would otherwise
        wait for P while the producer's dequantisation binds (Nsight Compute, H200).
        """
        s_l: gl.constexpr = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16]
        )
        o_l: gl.constexpr = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 64, 16]
        )
        p_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_l, k_width=2)
        hb = gl.program_id(0)
        split = gl.program_id(1)
        t = gl.program_id(2)
        t64 = t.to(gl.int64)
        p, n_c, n_list, t0, t1 = _tile_range(
            pos_ptr, t, split, n_comp_list, RATIO, WINDOW, BLOCK_N, DENSE, N_SPLIT
        )
        WT: gl.constexpr = WINDOW // BLOCK_N
        offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_l))
        m = gl.full([64], float("-inf"), gl.float32, layout=gl.SliceLayout(1, s_l))
        lsum = gl.zeros([64], gl.float32, layout=gl.SliceLayout(1, s_l))
        o0 = gl.zeros([64, 64], gl.float32, layout=o_l)
        o1 = gl.zeros([64, 64], gl.float32, layout=o_l)
        o2 = gl.zeros([64, 64], gl.float32, layout=o_l)
        o3 = gl.zeros([64, 64], gl.float32, layout=o_l)
        if W == 0:
            # The leader loads the query itself, all eight chunks in flight at once, while the
            # producer fetches the first tiles (H200, 2026-11-29: 2.5-4 us less per call than
            # the producer loading it before its first tiles, two chunks per load latency).
            # The arrive on q_bar (count 1) comes after a warpgroup barrier that follows every
            # thread's stores and proxy fence, so waiting on it orders them before the wgmma.
            q_l: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
            rows_h = hb * 64 + gl.arange(0, 64, layout=gl.SliceLayout(1, q_l))
            qcols = gl.arange(0, 64, layout=gl.SliceLayout(0, q_l))
            q_row = q_ptr + (t64 * H + rows_h[:, None]) * 512 + qcols[None, :]
            q0 = gl.load(q_row + 0)
            q1 = gl.load(q_row + 64)
            q2 = gl.load(q_row + 128)
            q3 = gl.load(q_row + 192)
            q4 = gl.load(q_row + 256)
            q5 = gl.load(q_row + 320)
            q6 = gl.load(q_row + 384)
            q7 = gl.load(q_row + 448)
            q_smem[0].store(q0)
            q_smem[1].store(q1)
            q_smem[2].store(q2)
            q_smem[3].store(q3)
            q_smem[4].store(q4)
            q_smem[5].store(q5)
            q_smem[6].store(q6)
            q_smem[7].store(q7)
            fence_async_shared()
            mbarrier.arrive(q_bar, count=1)
            mbarrier.wait(q_bar, 0)
        if W == 1:
            if FOLLOWER_CHUNKS > 0:  # noqa: SIM102  (gluon.jit: constexpr branch)
                if t0 < t1:
                    _follower_share(
                        0,
                        kv_smem,
                        nope_smem,
                        sc_smem,
                        rope_smem,
                        raw_ready,
                        raw_free,
                        ready,
                        empty,
                        STAGES,
                        RAW_STAGES,
                        FOLLOWER_CHUNKS,
                    )
            for ti in range(t0, t1):
                i = ti - t0
                stage = i % STAGES
                par = i % 2
                if FOLLOWER_CHUNKS > 0:  # noqa: SIM102  (gluon.jit: constexpr branch)
                    if ti + 1 < t1:
                        _follower_share(
                            i + 1,
                            kv_smem,
                            nope_smem,
                            sc_smem,
                            rope_smem,
                            raw_ready,
                            raw_free,
                            ready,
                            empty,
                            STAGES,
                            RAW_STAGES,
                            FOLLOWER_CHUNKS,
                        )
                mbarrier.wait(ready.index(stage), (i // STAGES) & 1)
                mbarrier.wait(p_bar.index(par), (i // 2) & 1)
                al = a_smem.index(par).load(gl.SliceLayout(1, o_l))
                o0, o1, o2, o3 = _accumulate_pv(
                    p_smem.index(par), al, kv_smem, stage, o0, o1, o2, o3, 4
                )
                mbarrier.arrive(p_free.index(par), count=1)
                mbarrier.arrive(empty.index(stage), count=1)
        else:
            for ti in range(t0, t1):
                i = ti - t0
                stage = i % STAGES
                par = i % 2
                _, valid = _tile_valid(
                    ti,
                    t1,
                    offs_n,
                    p,
                    n_c,
                    n_list,
                    t64,
                    idx_ptr,
                    idx_stride,
                    WT,
                    WINDOW,
                    BLOCK_N,
                    DENSE,
                )
                mbarrier.wait(ready.index(stage), (i // STAGES) & 1)
                s = _issue_s(
                    q_smem, kv_smem, stage, gl.zeros([64, BLOCK_N], gl.float32, layout=s_l)
                )
                s = warpgroup_mma_wait(0, deps=[s])
                pr, alpha, m, lsum = _softmax_tile(s, valid, m, lsum, qk_scale)
                _publish_p(pr, alpha, p_smem, a_smem, p_bar, p_free, par, i)
                al = gl.convert_layout(alpha, gl.SliceLayout(1, o_l))
                pb = gl.convert_layout(pr.to(gl.bfloat16), p_l)
                o0, o1, o2, o3 = _accumulate_pv(pb, al, kv_smem, stage, o0, o1, o2, o3, 0)
                mbarrier.arrive(empty.index(stage), count=1)
        if W == 0:
            ml_smem.index(0).store(m)
            ml_smem.index(1).store(lsum)
            mbarrier.arrive(ml_bar, count=1)
        else:
            mbarrier.wait(ml_bar, 0)
            m = ml_smem.index(0).load(gl.SliceLayout(1, s_l))
            lsum = ml_smem.index(1).load(gl.SliceLayout(1, s_l))

        offs_h = hb * 64 + gl.arange(0, 64, layout=gl.SliceLayout(1, o_l))
        cols = gl.arange(0, 64, layout=gl.SliceLayout(0, o_l))
        m_o = gl.convert_layout(m, gl.SliceLayout(1, o_l))
        l_o = gl.convert_layout(lsum, gl.SliceLayout(1, o_l))
        if N_SPLIT == 1:
            if HAS_SINK:
                sink2 = gl.load(sink_ptr + offs_h) * 1.4426950408889634
            else:
                sink2 = gl.full([64], float("-inf"), gl.float32, layout=gl.SliceLayout(1, o_l))
            mm = gl.maximum(m_o, sink2)
            mm_safe = gl.where((mm == float("-inf")) | (mm == float("inf")), 0.0, mm)
            den = l_o * gl.exp2(m_o - mm_safe) + gl.exp2(sink2 - mm_safe)
            # A +inf sink: scale 0 (exp2(m - 0) / inf was NaN once m > 128).
            scale_o = gl.where(
                (den > 0) & (sink2 != float("inf")), gl.exp2(m_o - mm_safe) / den, 0.0
            )[:, None]
            optr = out_ptr + (t64 * H + offs_h[:, None]) * 512 + 256 * W + cols[None, :]
            gl.store(optr + 0, (o0 * scale_o).to(gl.bfloat16))
            gl.store(optr + 64, (o1 * scale_o).to(gl.bfloat16))
            gl.store(optr + 128, (o2 * scale_o).to(gl.bfloat16))
            gl.store(optr + 192, (o3 * scale_o).to(gl.bfloat16))
            if W == 0:
                lse = (mm_safe + gl.log2(gl.maximum(den, 1e-30))) * 0.6931471805599453
                gl.store(lse_ptr + t64 * H + offs_h, gl.where(den > 0, lse, float("-inf")))
        else:
            inv = (1.0 / gl.where(l_o > 0, l_o, 1.0))[:, None]
            row = (t64 * N_SPLIT + split) * H + offs_h
            optr = part_o_ptr + row[:, None] * 512 + 256 * W + cols[None, :]
            gl.store(optr + 0, o0 * inv)
            gl.store(optr + 64, o1 * inv)
            gl.store(optr + 128, o2 * inv)
            gl.store(optr + 192, o3 * inv)
            if W == 0:
                lse2 = gl.where(l_o > 0, m_o + gl.log2(gl.maximum(l_o, 1e-30)), float("-inf"))
                gl.store(part_lse_ptr + row, lse2)

    @gluon.jit
    def _sparse_mla_ws_kernel(
        q_ptr,
        pos_ptr,
        seq_ptr,
        swa_u8,
        swa_bf16,
        swa_bt,
        swa_bt_stride,
        comp_u8,
        comp_bf16,
        comp_bt,
        comp_bt_stride,
        idx_ptr,
        idx_stride,
        sink_ptr,
        out_ptr,
        lse_ptr,
        part_o_ptr,
        part_lse_ptr,
        H,
        n_comp_list,
        qk_scale,
        WINDOW: gl.constexpr,
        SWA_PAGE: gl.constexpr,
        COMP_PAGE: gl.constexpr,
        SWA_STRIDE: gl.constexpr,
        COMP_STRIDE: gl.constexpr,
        RATIO: gl.constexpr,
        DENSE: gl.constexpr,
        HAS_SINK: gl.constexpr,
        N_SPLIT: gl.constexpr,
        BLOCK_N: gl.constexpr,
        STAGES: gl.constexpr,
        RAW_STAGES: gl.constexpr,
        CONSUMER_REGS: gl.constexpr,
        FOLLOWER_CHUNKS: gl.constexpr,
    ):
        chunk_l: gl.constexpr = gl.NVMMASharedLayout.get_default_for([64, 64], gl.bfloat16)
        kv_l: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, 64], gl.bfloat16)
        # One allocation per 64-column chunk (query and bf16 stages): accesses to different
        # chunks are then provably disjoint, and the compiler inserts no barrier between them.
        q_smem = (
            gl.allocate_shared_memory(gl.bfloat16, [64, 64], chunk_l),
            gl.allocate_shared_memory(gl.bfloat16, [64, 64], chunk_l),
            gl.allocate_shared_memory(gl.bfloat16, [64, 64], chunk_l),
            gl.allocate_shared_memory(gl.bfloat16, [64, 64], chunk_l),
            gl.allocate_shared_memory(gl.bfloat16, [64, 64], chunk_l),
            gl.allocate_shared_memory(gl.bfloat16, [64, 64], chunk_l),
            gl.allocate_shared_memory(gl.bfloat16, [64, 64], chunk_l),
            gl.allocate_shared_memory(gl.bfloat16, [64, 64], chunk_l),
        )
        kv_smem = (
            gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, 64], kv_l),
            gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, 64], kv_l),
            gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, 64], kv_l),
            gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, 64], kv_l),
            gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, 64], kv_l),
            gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, 64], kv_l),
            gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, 64], kv_l),
            gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, 64], kv_l),
        )
        raw_l: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
        nope_smem = (
            gl.allocate_shared_memory(gl.uint8, [RAW_STAGES, BLOCK_N, 64], raw_l),
            gl.allocate_shared_memory(gl.uint8, [RAW_STAGES, BLOCK_N, 64], raw_l),
            gl.allocate_shared_memory(gl.uint8, [RAW_STAGES, BLOCK_N, 64], raw_l),
            gl.allocate_shared_memory(gl.uint8, [RAW_STAGES, BLOCK_N, 64], raw_l),
            gl.allocate_shared_memory(gl.uint8, [RAW_STAGES, BLOCK_N, 64], raw_l),
            gl.allocate_shared_memory(gl.uint8, [RAW_STAGES, BLOCK_N, 64], raw_l),
            gl.allocate_shared_memory(gl.uint8, [RAW_STAGES, BLOCK_N, 64], raw_l),
        )
        sc_smem = gl.allocate_shared_memory(gl.uint8, [RAW_STAGES, BLOCK_N, 8], raw_l)
        rope_smem = gl.allocate_shared_memory(gl.bfloat16, [RAW_STAGES, BLOCK_N, 64], raw_l)
        raw_ready = gl.allocate_shared_memory(gl.int64, [RAW_STAGES, 1], mbarrier.MBarrierLayout())
        raw_free = gl.allocate_shared_memory(gl.int64, [RAW_STAGES, 1], mbarrier.MBarrierLayout())
        ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        for s in gl.static_range(STAGES):
            mbarrier.init(ready.index(s), count=1 + (FOLLOWER_CHUNKS > 0))
            mbarrier.init(empty.index(s), count=2)
        for s in gl.static_range(RAW_STAGES):
            mbarrier.init(raw_ready.index(s), count=128)  # every producer thread's copies
            mbarrier.init(raw_free.index(s), count=1)
        mbarrier.init(q_bar, count=1)
        # Leader -> follower: P (bf16, a wgmma A operand), the rescale factors, and the final
        # (m, l); P and the factors double-buffered by tile parity.
        vec_l: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
        pt_l: gl.constexpr = gl.NVMMASharedLayout.get_default_for([64, BLOCK_N], gl.bfloat16)
        p_smem = gl.allocate_shared_memory(gl.bfloat16, [2, 64, BLOCK_N], pt_l)
        a_smem = gl.allocate_shared_memory(gl.float32, [2, 64], vec_l)
        ml_smem = gl.allocate_shared_memory(gl.float32, [2, 64], vec_l)
        p_bar = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        p_free = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        for s in gl.static_range(2):
            mbarrier.init(p_bar.index(s), count=1)
            mbarrier.init(p_free.index(s), count=1)
        ml_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        mbarrier.init(ml_bar, count=1)
        gl.warp_specialize(
            [
                (
                    _produce,
                    (
                        pos_ptr,
                        seq_ptr,
                        swa_u8,
                        swa_bf16,
                        swa_bt,
                        swa_bt_stride,
                        comp_u8,
                        comp_bf16,
                        comp_bt,
                        comp_bt_stride,
                        idx_ptr,
                        idx_stride,
                        n_comp_list,
                        kv_smem,
                        nope_smem,
                        sc_smem,
                        rope_smem,
                        raw_ready,
                        raw_free,
                        ready,
                        empty,
                        WINDOW,
                        SWA_PAGE,
                        COMP_PAGE,
                        SWA_STRIDE,
                        COMP_STRIDE,
                        RATIO,
                        DENSE,
                        N_SPLIT,
                        BLOCK_N,
                        STAGES,
                        RAW_STAGES,
                        FOLLOWER_CHUNKS,
                    ),
                ),
                (
                    _consume,
                    (
                        q_ptr,
                        pos_ptr,
                        idx_ptr,
                        idx_stride,
                        sink_ptr,
                        out_ptr,
                        lse_ptr,
                        part_o_ptr,
                        part_lse_ptr,
                        H,
                        n_comp_list,
                        qk_scale,
                        q_smem,
                        kv_smem,
                        ready,
                        empty,
                        q_bar,
                        p_smem,
                        a_smem,
                        ml_smem,
                        p_bar,
                        p_free,
                        ml_bar,
                        nope_smem,
                        sc_smem,
                        rope_smem,
                        raw_ready,
                        raw_free,
                        0,
                        WINDOW,
                        RATIO,
                        DENSE,
                        HAS_SINK,
                        N_SPLIT,
                        BLOCK_N,
                        STAGES,
                        RAW_STAGES,
                        FOLLOWER_CHUNKS,
                    ),
                ),
                (
                    _consume,
                    (
                        q_ptr,
                        pos_ptr,
                        idx_ptr,
                        idx_stride,
                        sink_ptr,
                        out_ptr,
                        lse_ptr,
                        part_o_ptr,
                        part_lse_ptr,
                        H,
                        n_comp_list,
                        qk_scale,
                        q_smem,
                        kv_smem,
                        ready,
                        empty,
                        q_bar,
                        p_smem,
                        a_smem,
                        ml_smem,
                        p_bar,
                        p_free,
                        ml_bar,
                        nope_smem,
                        sc_smem,
                        rope_smem,
                        raw_ready,
                        raw_free,
                        1,
                        WINDOW,
                        RATIO,
                        DENSE,
                        HAS_SINK,
                        N_SPLIT,
                        BLOCK_N,
                        STAGES,
                        RAW_STAGES,
                        FOLLOWER_CHUNKS,
                    ),
                ),
            ],
            [4, 4],
            [CONSUMER_REGS, CONSUMER_REGS],
        )


def launch_options(
    stages: int = 2,
    raw_stages: int = 4,
    consumer_regs: int = 224,
    follower_chunks: int | None = None,
) -> dict[str, Any]:
    """Constexprs and launch options of `_sparse_mla_ws_kernel` (beyond the shared arguments).

    Defaults measured on the H200 (2026-11-29, V4-Flash HCA B=64 L=1M, CUDA graph, sixth
    session): raw_stages 3 and 5 within 1 % of 4 in a version before the leader / follower
    exchange (9 KiB), with which 5 raw stages fit only with stages=1 (233,848 B at stages=2);
    stages=3 with raw_stages=3 within 1 % of the default.

    Args:
        stages: bf16 ring depth (32 KiB per stage).
        raw_stages: raw ring depth (18,688 B per stage); RAW_STAGES - 1 tiles are in flight.
        consumer_regs: registers per consumer thread (setmaxnreg, a multiple of 8 up to 256); the
            producer gets the rest of `MAX_REGS` x 384 (56 at the default; the split applies
            for consumer_regs >= 128).
        follower_chunks: NoPE chunks (of 7) the follower consumer dequantises, with the RoPE
            chunk, instead of the producer (0: the producer does all; more needs stages >= 2).
            None: `FOLLOWER_CHUNKS` with 2 or more stages, else 0.

    Raises:
        ValueError: a depth below 1 (raw: 2), the buffers over `SMEM_LIMIT`, consumer_regs
            leaving the producer fewer than 24 registers, or follower_chunks outside 0 to 7
            (above 0 with stages 1).
    """
    if stages < 1 or raw_stages < 2:
        raise ValueError(f"stages={stages} must be >= 1 and raw_stages={raw_stages} >= 2")
    need = shared_bytes(stages, raw_stages)
    if need > SMEM_LIMIT:
        raise ValueError(
            f"stages={stages}, raw_stages={raw_stages} need {need} B of shared memory; "
            f"the limit is {SMEM_LIMIT} B"
        )
    producer = MAX_REGS * 3 - 2 * consumer_regs
    if consumer_regs % 8 or consumer_regs > 256 or producer < 24:
        raise ValueError(
            f"consumer_regs={consumer_regs} must be a multiple of 8, <= 256, and leave the "
            f"producer >= 24 registers (it would get {producer})"
        )
    if follower_chunks is None:
        follower_chunks = FOLLOWER_CHUNKS if stages >= 2 else 0
    if not 0 <= follower_chunks <= 7 or (follower_chunks and stages < 2):
        raise ValueError(
            f"follower_chunks={follower_chunks} must be 0 to 7, and needs stages >= 2 "
            f"(stages={stages})"
        )
    return {
        "STAGES": stages,
        "RAW_STAGES": raw_stages,
        "CONSUMER_REGS": consumer_regs,
        "FOLLOWER_CHUNKS": follower_chunks,
        "num_warps": 4,
        "maxnreg": MAX_REGS,
    }
