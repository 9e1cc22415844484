"""The Triton source of the compiled-inference operators (wrapped for callers by :mod:`ecanet.ops.projected_gate`).

Imported only when a kernel is first needed, like :mod:`ecanet.ops.triton_jit` (whose helpers these
kernels share), because ``@triton.jit`` reads ``TRITON_INTERPRET`` when it runs.
"""

import triton
import triton.language as tl

from ecanet.ops.triton_jit import frozen_norm, neighbours, split_offsets, split_tile

__all__ = ["norm_relu_sums_kernel", "projected_gate_kernel"]


@triton.jit
def norm_relu_sums_kernel(
    y_ptr,
    out_ptr,
    partial_ptr,
    norm_mean_ptr,
    norm_var_ptr,
    norm_weight_ptr,
    norm_bias_ptr,
    norm_eps,
    C,
    S,
    sn,
    sc,
    ss,
    splits,
    blocks_per_split,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    # out = relu(norm(y)) for an eval-mode BatchNorm, and partial[n, split, c] = the sum of out
    # (as stored, in out's dtype) over this split's positions, in partial's dtype.
    n, split, channels, base, first = split_offsets(
        tl.program_id(0), C, sn, sc, splits, blocks_per_split, BLOCK_C, BLOCK_S
    )
    acc = tl.zeros([BLOCK_C, BLOCK_S], dtype=partial_ptr.dtype.element_ty)
    scale, shift = frozen_norm(
        norm_mean_ptr, norm_var_ptr, norm_weight_ptr, norm_bias_ptr, norm_eps, channels, channels < C, acc.dtype
    )
    for block in range(0, blocks_per_split):
        mask, offsets = split_tile(base, first, block, channels, C, S, ss, BLOCK_S)
        values = tl.load(y_ptr + offsets, mask=mask, other=0.0).to(acc.dtype)
        values = tl.maximum(values * scale[:, None] + shift[:, None], 0.0).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + offsets, values, mask=mask)
        acc += tl.where(mask, values.to(acc.dtype), 0.0)  # masked lanes hold relu(shift)
    row = (n.to(tl.int64) * splits + split) * C
    tl.store(partial_ptr + row + channels, tl.sum(acc, axis=1), mask=channels < C)


@triton.jit
def projected_gate_kernel(
    partial_ptr,
    conv_ptr,
    taps_ptr,
    gate_ptr,
    norm_mean_ptr,
    norm_var_ptr,
    norm_weight_ptr,
    norm_bias_ptr,
    norm_eps,
    N,
    C_in,
    C_out,
    splits,
    conv_so,
    conv_si,
    inv_positions,
    K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_I: tl.constexpr,
):
    # ECA's gate of a block of samples and output channels from the pooled input of the 1x1
    # convolution before the block's last (eval-mode) BatchNorm:
    #   gate[n, o] = sigmoid(sum_j taps[j] * norm(conv(pooled))[n, o + j - K // 2]), zero padded,
    # with pooled[n, i] = inv_positions * sum_split partial[n, split, i]. The taps and the norm's
    # scale are folded into the convolution's weights on the way, so each block of input channels
    # costs one product, and the norm's shift into a bias.
    pid = tl.program_id(0)
    o_blocks = tl.cdiv(C_out, BLOCK_O)
    outputs = (pid % o_blocks) * BLOCK_O + tl.arange(0, BLOCK_O)
    samples = (pid // o_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    dtype = gate_ptr.dtype.element_ty
    rows = samples.to(tl.int64)[:, None] * splits * C_in
    acc = tl.zeros([BLOCK_N, BLOCK_O], dtype=dtype)
    for first in range(0, C_in, BLOCK_I):
        inputs = first + tl.arange(0, BLOCK_I)
        pooled_mask = (samples[:, None] < N) & (inputs[None, :] < C_in)
        pooled = tl.zeros([BLOCK_N, BLOCK_I], dtype=dtype)
        for split in range(0, splits):
            pooled += tl.load(partial_ptr + rows + split * C_in + inputs[None, :], mask=pooled_mask, other=0.0)
        folded = tl.zeros([BLOCK_I, BLOCK_O], dtype=dtype)
        for j in tl.static_range(K):
            source, present = neighbours(outputs, j - K // 2, C_out, False)
            scale, _ = frozen_norm(
                norm_mean_ptr, norm_var_ptr, norm_weight_ptr, norm_bias_ptr, norm_eps, source, present, dtype
            )
            weights = tl.load(
                conv_ptr + source.to(tl.int64)[None, :] * conv_so + inputs[:, None] * conv_si,
                mask=present[None, :] & (inputs[:, None] < C_in),
                other=0.0,
            )
            folded += weights.to(dtype) * (tl.load(taps_ptr + j).to(dtype) * scale)[None, :]
        acc += tl.dot(pooled, folded, input_precision="ieee")
    bias = tl.zeros([BLOCK_O], dtype=dtype)
    for j in tl.static_range(K):
        source, present = neighbours(outputs, j - K // 2, C_out, False)
        _, shift = frozen_norm(
            norm_mean_ptr, norm_var_ptr, norm_weight_ptr, norm_bias_ptr, norm_eps, source, present, dtype
        )
        bias += tl.load(taps_ptr + j).to(dtype) * shift
    logits = acc * inv_positions + bias[None, :]
    gates = 1.0 / (1.0 + tl.exp(-logits))
    mask = (samples[:, None] < N) & (outputs[None, :] < C_out)
    tl.store(gate_ptr + samples.to(tl.int64)[:, None] * C_out + outputs[None, :], gates, mask=mask)
