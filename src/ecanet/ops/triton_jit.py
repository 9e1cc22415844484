"""The Triton source of the fast path's CUDA kernels (wrapped for callers by :mod:`ecanet.ops.triton_kernels`).

Importing this module compiles nothing: Triton compiles each kernel on its first launch. It is
imported only when a kernel is first needed, because ``@triton.jit`` reads ``TRITON_INTERPRET``
when it runs (set it beforehand to run the kernels through Triton's interpreter on CPU tensors).
"""

import triton
import triton.language as tl

__all__ = ["channel_affine_kernel", "channel_reduce_kernel", "weight_gradient_kernel"]


@triton.jit
def tile_offsets(pid, C, S, sn, sc, ss, CHANNELS_INNER, BLOCK_C, BLOCK_S):
    # Consecutive programs take neighbouring tiles in memory order: positions fastest in
    # channels-first memory, channels fastest in channels-last memory.
    c_blocks = tl.cdiv(C, BLOCK_C)
    s_blocks = tl.cdiv(S, BLOCK_S)
    if CHANNELS_INNER:
        c_block = pid % c_blocks
        s_block = (pid // c_blocks) % s_blocks
    else:
        s_block = pid % s_blocks
        c_block = (pid // s_blocks) % c_blocks
    n = pid // (c_blocks * s_blocks)
    channels = c_block * BLOCK_C + tl.arange(0, BLOCK_C)
    positions = s_block * BLOCK_S + tl.arange(0, BLOCK_S)
    mask = (channels[:, None] < C) & (positions[None, :] < S)
    offsets = n.to(tl.int64) * sn + channels.to(tl.int64)[:, None] * sc + positions.to(tl.int64)[None, :] * ss
    return n, c_block, channels, s_block, mask, offsets


@triton.jit
def split_offsets(pid, C, sn, sc, splits, blocks_per_split, BLOCK_C, BLOCK_S):
    # A reduction program's sample, split of the positions and block of channels: the offset of
    # its channels' rows and its first position.
    c_blocks = tl.cdiv(C, BLOCK_C)
    c_block = pid % c_blocks
    split = (pid // c_blocks) % splits
    n = pid // (c_blocks * splits)
    channels = c_block * BLOCK_C + tl.arange(0, BLOCK_C)
    base = n.to(tl.int64) * sn + channels.to(tl.int64)[:, None] * sc
    return n, split, channels, base, split * blocks_per_split * BLOCK_S


@triton.jit
def split_tile(base, first, block, channels, C, S, ss, BLOCK_S):
    # Mask and offsets of a reduction program's `block`-th tile of positions.
    positions = first + block * BLOCK_S + tl.arange(0, BLOCK_S)
    mask = (channels[:, None] < C) & (positions[None, :] < S)
    return mask, base + positions.to(tl.int64)[None, :] * ss


@triton.jit
def channel_reduce_kernel(
    x_ptr,
    other_ptr,
    relu_out_ptr,
    masked_ptr,
    subtrahend_ptr,
    partial_ptr,
    C,
    S,
    sn,
    sc,
    ss,
    splits,
    blocks_per_split,
    scale,
    PRODUCT: tl.constexpr,
    RELU: tl.constexpr,
    SUBTRACT: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    # partial[n, split, c] = scale * sum over this split's positions of x, or of relu-masked
    # x * other, or of relu-masked x * (other - subtrahend).
    n, split, channels, base, first = split_offsets(
        tl.program_id(0), C, sn, sc, splits, blocks_per_split, BLOCK_C, BLOCK_S
    )
    acc = tl.zeros([BLOCK_C, BLOCK_S], dtype=partial_ptr.dtype.element_ty)
    for block in range(0, blocks_per_split):
        mask, offsets = split_tile(base, first, block, channels, C, S, ss, BLOCK_S)
        values = tl.load(x_ptr + offsets, mask=mask, other=0.0)
        if RELU:
            out = tl.load(relu_out_ptr + offsets, mask=mask, other=0.0)
            values = tl.where(out > 0, values, tl.zeros_like(values))
            tl.store(masked_ptr + offsets, values, mask=mask)
        values = values.to(acc.dtype)
        if PRODUCT:
            factor = tl.load(other_ptr + offsets, mask=mask, other=0.0).to(acc.dtype)
            if SUBTRACT:
                factor -= tl.load(subtrahend_ptr + offsets, mask=mask, other=0.0).to(acc.dtype)
            values *= factor
        acc += values
    row = (n.to(tl.int64) * splits + split) * C
    tl.store(partial_ptr + row + channels, tl.sum(acc, axis=1) * scale, mask=channels < C)


@triton.jit
def neighbours(channels, offset, C, CIRCULAR):
    # Channels `channels + offset` under the gate's padding, and which of them exist (with zero
    # padding, those past either end do not).
    valid = channels < C
    source = channels + offset
    if CIRCULAR:
        source = (source + C) % C
        present = valid
    else:
        present = valid & (source >= 0) & (source < C)
    return source, present


@triton.jit
def frozen_norm(mean_ptr, var_ptr, weight_ptr, bias_ptr, eps, channels, present, dtype):
    # The per-channel scale and shift of an eval-mode BatchNorm, norm(y) = y * scale + shift, from
    # its running mean and variance, weight and bias; both 0 where not present.
    var = tl.load(var_ptr + channels, mask=present, other=1.0).to(dtype)
    scale = tl.load(weight_ptr + channels, mask=present, other=0.0).to(dtype) / tl.sqrt(var + eps)
    shift = tl.load(bias_ptr + channels, mask=present, other=0.0).to(dtype)
    shift -= tl.load(mean_ptr + channels, mask=present, other=0.0).to(dtype) * scale
    return scale, shift


@triton.jit
def channel_gate(
    descriptor_ptr,
    weight_ptr,
    n,
    channels,
    C,
    K,
    PER_CHANNEL,
    CIRCULAR,
    GATE,
    norm_mean_ptr,
    norm_var_ptr,
    norm_weight_ptr,
    norm_bias_ptr,
    norm_eps,
    NORM,
):
    # ECA's gate for `channels` of sample n: sigmoid or hard sigmoid of the k-tap convolution of
    # the descriptor across channels (zero or circular padding), as ecanet.ops.channel_gate. With
    # NORM the descriptor is that of the BatchNorm's input, normalised here.
    valid = channels < C
    row = descriptor_ptr + n.to(tl.int64) * C
    logits = tl.zeros(channels.shape, dtype=descriptor_ptr.dtype.element_ty)
    for j in tl.static_range(K):
        source, present = neighbours(channels, j - K // 2, C, CIRCULAR)
        values = tl.load(row + source, mask=present, other=0.0)
        if NORM:
            scale, shift = frozen_norm(
                norm_mean_ptr, norm_var_ptr, norm_weight_ptr, norm_bias_ptr, norm_eps, source, present, logits.dtype
            )
            values = values * scale + shift
        if PER_CHANNEL:
            taps = tl.load(weight_ptr + channels * K + j, mask=valid, other=0.0)
        else:
            taps = tl.load(weight_ptr + j)
        logits += taps.to(logits.dtype) * values
    if GATE == 0:
        gates = 1.0 / (1.0 + tl.exp(-logits))
    else:
        gates = tl.minimum(tl.maximum(logits / 6.0 + 0.5, 0.0), 1.0)
    return gates


@triton.jit
def logit_gradient(d_gate_ptr, gate_ptr, row, channels, present, GATE, INPLACE):
    # dL/dlogit of `channels` (0 where not present) from dL/dgate; in place the sums hold
    # dL/dgate * gate (the output stood in for x), so they are divided by the gate, where it is 0
    # both gates have zero slope.
    d_gate = tl.load(d_gate_ptr + row + channels, mask=present, other=0.0)
    gate = tl.load(gate_ptr + row + channels, mask=present, other=0.0)
    if INPLACE:
        d_gate = tl.where(gate == 0, 0.0, d_gate / tl.where(gate == 0, 1.0, gate))
    if GATE == 0:
        d_logit = d_gate * gate * (1.0 - gate)
    else:
        d_logit = tl.where((gate > 0) & (gate < 1), d_gate / 6.0, 0.0)
    return d_logit


@triton.jit
def mean_gradient(d_gate_ptr, gate_ptr, weight_ptr, row, channels, C, K, PER_CHANNEL, CIRCULAR, GATE, INPLACE):
    # dL/dmean of `channels` from the gates' gradients: tap j of the logit of channel
    # c - (j - K // 2) read this channel's mean.
    d_mean = tl.zeros(channels.shape, dtype=gate_ptr.dtype.element_ty)
    for j in tl.static_range(K):
        source, present = neighbours(channels, K // 2 - j, C, CIRCULAR)
        d_logit = logit_gradient(d_gate_ptr, gate_ptr, row, source, present, GATE, INPLACE)
        if PER_CHANNEL:
            taps = tl.load(weight_ptr + source * K + j, mask=present, other=0.0)
        else:
            taps = tl.load(weight_ptr + j)
        d_mean += taps.to(d_mean.dtype) * d_logit
    return d_mean


@triton.jit
def store_weight_gradient(
    d_gate_ptr, gate_ptr, mean_ptr, d_weight_ptr, row, channels, slot, C, K, PER_CHANNEL, CIRCULAR, GATE, INPLACE
):
    # The kernel's gradient from `channels` of one sample: per channel (PER_CHANNEL, rows of K at
    # row + channel) or summed over them into row `slot` of K partial sums.
    valid = channels < C
    own = logit_gradient(d_gate_ptr, gate_ptr, row, channels, valid, GATE, INPLACE)
    for j in tl.static_range(K):
        source, present = neighbours(channels, j - K // 2, C, CIRCULAR)
        contribution = own * tl.load(mean_ptr + row + source, mask=present, other=0.0)
        if PER_CHANNEL:
            tl.store(d_weight_ptr + (row + channels) * K + j, contribution, mask=valid)
        else:
            tl.store(d_weight_ptr + slot.to(tl.int64) * K + j, tl.sum(contribution, axis=0))


@triton.jit
def weight_gradient_kernel(
    d_gate_ptr,
    gate_ptr,
    mean_ptr,
    d_weight_ptr,
    C,
    K: tl.constexpr,
    PER_CHANNEL: tl.constexpr,
    CIRCULAR: tl.constexpr,
    GATE: tl.constexpr,
    INPLACE: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # The kernel's gradient from one block of channels of one sample (for a backward that writes
    # no input gradient; otherwise channel_affine_kernel works it out).
    pid = tl.program_id(0)
    c_blocks = tl.cdiv(C, BLOCK_C)
    c_block = pid % c_blocks
    n = pid // c_blocks
    channels = c_block * BLOCK_C + tl.arange(0, BLOCK_C)
    row = n.to(tl.int64) * C
    store_weight_gradient(
        d_gate_ptr, gate_ptr, mean_ptr, d_weight_ptr, row, channels, pid, C, K, PER_CHANNEL, CIRCULAR, GATE, INPLACE
    )


@triton.jit
def channel_affine_kernel(
    x_ptr,
    a_ptr,
    b_ptr,
    identity_ptr,
    out_ptr,
    weight_ptr,
    side_out_ptr,
    mean_ptr,
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
    INPUT_GRADIENT: tl.constexpr,
    STORE_GATES: tl.constexpr,
    NORM: tl.constexpr,
    INPLACE: tl.constexpr,
    K: tl.constexpr,
    PER_CHANNEL: tl.constexpr,
    CIRCULAR: tl.constexpr,
    GATE: tl.constexpr,
    HAS_IDENTITY: tl.constexpr,
    RELU: tl.constexpr,
    CHANNELS_INNER: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    # out = act(x * a[n, c] + b[n, c] + identity), a and b worked out on the way:
    # - the forward: a is ECA's gate, computed here from the pooled means in a_ptr, and stored to
    #   side_out once per channel if STORE_GATES (for a backward); no b;
    # - INPUT_GRADIENT: a_ptr holds the gates and b_ptr their gradients (times the gates INPLACE);
    #   b is dL/dmean / S, and the kernel's gradient goes to side_out once per channel (partial
    #   sums per sample and channel block, or per channel).
    # NORM (forward, inference): x is the input of an eval-mode BatchNorm and a_ptr holds x's means;
    # the kernel rescales norm(x) = x * scale + shift, so a becomes gate * scale and b gate * shift.
    pid = tl.program_id(0)
    n, c_block, channels, s_block, mask, offsets = tile_offsets(pid, C, S, sn, sc, ss, CHANNELS_INNER, BLOCK_C, BLOCK_S)
    row = n.to(tl.int64) * C
    if INPUT_GRADIENT:
        a = tl.load(a_ptr + row + channels, mask=channels < C, other=0.0)
    else:
        a = channel_gate(
            a_ptr,
            weight_ptr,
            n,
            channels,
            C,
            K,
            PER_CHANNEL,
            CIRCULAR,
            GATE,
            norm_mean_ptr,
            norm_var_ptr,
            norm_weight_ptr,
            norm_bias_ptr,
            norm_eps,
            NORM,
        )
        if STORE_GATES:
            tl.store(side_out_ptr + row + channels, a, mask=(channels < C) & (s_block == 0))
    out = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(a.dtype)
    if NORM:
        scale, shift = frozen_norm(
            norm_mean_ptr, norm_var_ptr, norm_weight_ptr, norm_bias_ptr, norm_eps, channels, channels < C, a.dtype
        )
        out = out * (a * scale)[:, None] + (a * shift)[:, None]
    else:
        out *= a[:, None]
    if INPUT_GRADIENT:
        d_mean = mean_gradient(b_ptr, a_ptr, weight_ptr, row, channels, C, K, PER_CHANNEL, CIRCULAR, GATE, INPLACE)
        out += (d_mean / S).to(a.dtype)[:, None]
        if s_block == 0:
            slot = n * tl.cdiv(C, BLOCK_C) + c_block
            store_weight_gradient(
                b_ptr, a_ptr, mean_ptr, side_out_ptr, row, channels, slot, C, K, PER_CHANNEL, CIRCULAR, GATE, INPLACE
            )
    if HAS_IDENTITY:
        out += tl.load(identity_ptr + offsets, mask=mask, other=0.0).to(a.dtype)
    if RELU:
        out = tl.maximum(out, 0.0)
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)
