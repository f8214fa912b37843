// Quantizers: activations (the x86 CPU backend of llama.cpp, see src/kernels/quant/act.ts) and
// weights (llama-quantize's reference quantizers, scalar f32 ports of src/kernels/quant/*.ts,
// bit-identical with them).
import { T_BF16, T_F16, T_F32, T_Q8_0, T_Q8_1, T_Q8_K, f32ToF16, ROUND_C, storeRoundConsts } from "./common";
import { quantActQ8_0, q8Round } from "./q8";
import { quantizeWeightBlocks } from "./quantw";

/** Q8_1 as quantActQ8_0, plus s = f16(d * sum(q)) with the f32 d. */
function quantActQ8_1(dst: usize, src: usize, nBlocks: u32): void {
  const absMask = i32x4.splat(0x7fffffff);
  for (let b: u32 = 0; b < nBlocks; b++) {
    const s = src + b * 128;
    const o = dst + b * 36;
    const v0 = v128.load(s, 0), v1 = v128.load(s, 16), v2 = v128.load(s, 32), v3 = v128.load(s, 48);
    const v4 = v128.load(s, 64), v5 = v128.load(s, 80), v6 = v128.load(s, 96), v7 = v128.load(s, 112);
    let m = f32x4.max(
      f32x4.max(f32x4.max(v128.and(v0, absMask), v128.and(v1, absMask)), f32x4.max(v128.and(v2, absMask), v128.and(v3, absMask))),
      f32x4.max(f32x4.max(v128.and(v4, absMask), v128.and(v5, absMask)), f32x4.max(v128.and(v6, absMask), v128.and(v7, absMask))));
    m = f32x4.max(m, i32x4.shuffle(m, m, 2, 3, 0, 1));
    m = f32x4.max(m, i32x4.shuffle(m, m, 1, 0, 3, 2));
    const amax = f32x4.extract_lane(m, 0);
    const d: f32 = amax / (127.0 as f32);
    const id: f32 = amax != 0 ? (127.0 as f32) / amax : 0;
    store<u16>(o, f32ToF16(d) as u16);
    const vid = f32x4.splat(id);
    const q0 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v0, vid)));
    const q1 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v1, vid)));
    const q2 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v2, vid)));
    const q3 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v3, vid)));
    const q4 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v4, vid)));
    const q5 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v5, vid)));
    const q6 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v6, vid)));
    const q7 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v7, vid)));
    const lo = i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3));
    const hi = i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q4, q5), i16x8.narrow_i32x4_s(q6, q7));
    v128.store(o, lo, 4);
    v128.store(o, hi, 20);
    const sv = i32x4.add(i32x4.add(i32x4.add(q0, q1), i32x4.add(q2, q3)), i32x4.add(i32x4.add(q4, q5), i32x4.add(q6, q7)));
    const s2 = i32x4.add(sv, i32x4.shuffle(sv, sv, 2, 3, 0, 1));
    const sum = i32x4.extract_lane(i32x4.add(s2, i32x4.shuffle(s2, s2, 1, 0, 3, 2)), 0);
    store<u16>(o + 2, f32ToF16(d * (sum as f32)) as u16);
  }
}

/** A Q8_K block's 16 groups of 16 levels round(v * vs) and their sums, at o (q8Round's exact as there). */
// @ts-ignore: decorator
@inline function storeQ8KGroups(o: usize, s: usize, vs: v128, exact: bool, magic: v128, bits: v128): void {
  for (let g: u32 = 0; g < 16; g++) {
    const p = s + (g << 6);
    const q0 = q8Round(f32x4.mul(v128.load(p, 0), vs), exact, magic, bits);
    const q1 = q8Round(f32x4.mul(v128.load(p, 16), vs), exact, magic, bits);
    const q2 = q8Round(f32x4.mul(v128.load(p, 32), vs), exact, magic, bits);
    const q3 = q8Round(f32x4.mul(v128.load(p, 48), vs), exact, magic, bits);
    const q = i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3));
    v128.store(o + 4 + (g << 4), q);
    const sv = i32x4.add(i32x4.add(q0, q1), i32x4.add(q2, q3));
    const s2 = i32x4.add(sv, i32x4.shuffle(sv, sv, 2, 3, 0, 1));
    store<i16>(o + 260 + (g << 1), i32x4.extract_lane(i32x4.add(s2, i32x4.shuffle(s2, s2, 1, 0, 3, 2)), 0) as i16);
  }
}

/** Q8_K (ggml's quantize_row_q8_K_ref): iscale = -127/max (max: the first value of largest magnitude). */
function quantActQ8_K(dst: usize, src: usize, nBlocks: u32): void {
  storeRoundConsts();
  const magic = v128.load(ROUND_C), bits = v128.load(ROUND_C, 16), absMask = v128.load(ROUND_C, 32);
  for (let b: u32 = 0; b < nBlocks; b++) {
    const s = src + b * 1024;
    const o = dst + b * 292;
    let m = f32x4.splat(0);
    for (let i: u32 = 0; i < 1024; i += 16) m = f32x4.max(m, v128.and(v128.load(s + i), absMask));
    m = f32x4.max(m, i32x4.shuffle(m, m, 2, 3, 0, 1));
    m = f32x4.max(m, i32x4.shuffle(m, m, 1, 0, 3, 2));
    const amax = f32x4.extract_lane(m, 0);
    if (amax == 0) {
      store<f32>(o, 0);
      for (let i: u32 = 4; i < 292; i += 4) store<u32>(o + i, 0);
      continue;
    }
    let j: u32 = 0;
    while (j < 255 && abs<f32>(load<f32>(s + (j << 2))) != amax) j++; // (bounded: a NaN matches nothing)
    const iscale: f32 = (-127.0 as f32) / load<f32>(s + (j << 2));
    const vs = f32x4.splat(iscale);
    // roundI32 (common.ts) where every product is finite; the exact conversion otherwise
    if (amax < Infinity && abs<f32>(iscale) < Infinity) storeQ8KGroups(o, s, vs, false, magic, bits);
    else storeQ8KGroups(o, s, vs, true, magic, bits);
    store<f32>(o, (1.0 as f32) / iscale);
  }
}

// @ts-ignore: decorator
@inline function bf16x4(v: v128): v128 {
  const nanMask = i32x4.gt_u(v128.and(v, i32x4.splat(0x7fffffff)), i32x4.splat(0x7f800000));
  const rounded = i32x4.shr_u(i32x4.add(i32x4.add(v, i32x4.splat(0x7fff)), v128.and(i32x4.shr_u(v, 16), i32x4.splat(1))), 16);
  const nan = v128.or(i32x4.shr_u(v, 16), i32x4.splat(0x40));
  return v128.and(v128.bitselect(nan, rounded, nanMask), i32x4.splat(0xffff));
}

/** quantizeAct id of the engine's former Q8_0 formula (id = 1/d instead of 127/amax). */
const Q8_0_LEGACY: u32 = 0x108;

/**
 * n f32 at src -> activation type act (ggml id) at dst: n is a number of blocks for Q8_0, Q8_1
 * (32 values) and Q8_K (256), of values for F32, F16 and BF16.
 */
export function quantizeAct(act: u32, dst: usize, src: usize, n: u32): void {
  switch (act) {
    case T_Q8_0: quantActQ8_0(dst, src, n, false); return;
    case Q8_0_LEGACY: quantActQ8_0(dst, src, n, true); return;
    case T_Q8_1: quantActQ8_1(dst, src, n); return;
    case T_Q8_K: quantActQ8_K(dst, src, n); return;
    case T_F32: memory.copy(dst, src, n << 2); return;
    case T_F16: for (let i: u32 = 0; i < n; i++) store<u16>(dst + (i << 1), f32ToF16(load<f32>(src + (i << 2))) as u16); return;
    case T_BF16: {
      let i: u32 = 0;
      for (; i + 8 <= n; i += 8) {
        v128.store(dst + (i << 1), i16x8.narrow_i32x4_u(bf16x4(v128.load(src + (i << 2))), bf16x4(v128.load(src + (i << 2), 16))));
      }
      for (; i < n; i++) store<u16>(dst + (i << 1), i32x4.extract_lane(bf16x4(f32x4.splat(load<f32>(src + (i << 2)))), 0) as u16);
      return;
    }
  }
}

/**
 * nBlocks blocks of weight type t (ggml id; values for F32/F16/BF16) from f32 at src to dst,
 * bit-identical with src/kernels/quant (llama-quantize without an importance matrix). scratch:
 * QUANTW_SCRATCH bytes of this thread's scratch (level buffers).
 */
export function quantizeWeights(t: u32, dst: usize, src: usize, nBlocks: u32, scratch: usize): void {
  if (t == T_F32 || t == T_F16 || t == T_BF16) {
    quantizeAct(t, dst, src, nBlocks);
    return;
  }
  quantizeWeightBlocks(t, dst, src, nBlocks, scratch);
}


