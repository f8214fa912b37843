// Helpers shared by the kernel files (see kernels.ts for the rules every kernel follows).

// ggml type ids (ggml.h), as the TypeScript side passes them.
export const T_F32: u32 = 0;
export const T_F16: u32 = 1;
export const T_Q4_0: u32 = 2;
export const T_Q4_1: u32 = 3;
export const T_Q5_0: u32 = 6;
export const T_Q5_1: u32 = 7;
export const T_Q8_0: u32 = 8;
export const T_Q8_1: u32 = 9;
export const T_Q2_K: u32 = 10;
export const T_Q3_K: u32 = 11;
export const T_Q4_K: u32 = 12;
export const T_Q5_K: u32 = 13;
export const T_Q6_K: u32 = 14;
export const T_Q8_K: u32 = 15;
export const T_IQ4_NL: u32 = 20;
export const T_BF16: u32 = 30;
/** Q4_0 with rows interleaved by four (q4x4.ts): the kernels' own layout, no ggml type. */
export const T_Q4_0X4: u32 = 48;

/** Bytes per block of a weight or activation type (per value for the float types). */
// @ts-ignore: decorator
@inline export function blockBytes(t: u32): u32 {
  switch (t) {
    case T_F32: return 4;
    case T_F16: case T_BF16: return 2;
    case T_Q4_0: case T_IQ4_NL: return 18;
    case T_Q4_1: return 20;
    case T_Q5_0: return 22;
    case T_Q5_1: return 24;
    case T_Q8_0: return 34;
    case T_Q8_1: return 36;
    case T_Q2_K: return 84;
    case T_Q3_K: return 110;
    case T_Q4_K: return 144;
    case T_Q5_K: return 176;
    case T_Q6_K: return 210;
    case T_Q8_K: return 292;
    default: return 0;
  }
}

/** Values per block (1 for the float types). */
// @ts-ignore: decorator
@inline export function blockValues(t: u32): u32 {
  if (t == T_F32 || t == T_F16 || t == T_BF16) return 1;
  return t >= T_Q2_K && t <= T_Q8_K ? 256 : 32;
}

// @ts-ignore: decorator
@inline export function isKQuant(t: u32): bool {
  return t >= T_Q2_K && t <= T_Q6_K;
}

/**
 * f16 bits in the high halves of i32 lanes (low halves ignored) -> f32 lanes; sign kept, inf/nan
 * not handled. Only for normal halves (and zero): a subnormal half makes the multiply's operand
 * an f32 denormal, which x86 handles in microcode (a block of subnormal scales made a whole
 * matmul 4x slower). See f16hiToF32Safe.
 */
// @ts-ignore: decorator
@inline export function f16hiToF32(v: v128): v128 {
  return f32x4.mul(v128.and(i32x4.shr_s(v, 3), i32x4.splat(0x8fffe000)), f32x4.splat(5.192296858534828e33));
}

/**
 * As f16hiToF32 for every half (inf/nan excepted), with no denormal operand: exponent and
 * mantissa moved to their f32 places and the exponent rebiased by integer addition; a subnormal
 * half gets 2^-14 more and has 2^-14 subtracted (both normal f32), which is exact.
 */
// @ts-ignore: decorator
@inline export function f16hiToF32Safe(v: v128): v128 {
  const em = v128.and(i32x4.shr_u(v, 3), i32x4.splat(0x0fffe000));
  const den = i32x4.eq(v128.and(em, i32x4.splat(0x0f800000)), i32x4.splat(0));
  const t = i32x4.add(i32x4.add(em, i32x4.splat(0x38000000)), v128.and(den, i32x4.splat(0x00800000)));
  const f = f32x4.sub(t, v128.and(den, i32x4.splat(0x38800000)));
  return v128.or(f, v128.and(v, i32x4.splat(0x80000000)));
}

/** f16 bits -> f32 (exact for normal and subnormal halves, never a denormal operand; inf/nan not handled). */
// @ts-ignore: decorator
@inline export function f16ToF32(h: u32): f32 {
  const em = h & 0x7fff;
  const f = em >= 0x400 ? reinterpret<f32>((em << 13) + 0x38000000) : (em as f32) * (5.960464477539063e-8 as f32);
  return reinterpret<f32>(reinterpret<u32>(f) | ((h & 0x8000) << 16));
}

/** f32 -> f16 bits, round to nearest even (port of core/numbers.ts f32ToF16). */
export function f32ToF16(value: f32): u32 {
  const x = reinterpret<u32>(value);
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) as i32;
  let mant = x & 0x7fffff;
  if (exp == 0xff) return sign | 0x7c00 | (mant != 0 ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = (14 - e) as u32;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid: u32 = 1 << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1) != 0)) half++;
    return sign | half;
  }
  let half = ((e as u32) << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1) != 0)) half++;
  return sign | half;
}

/** Sum of the 4 f32 lanes. */
// @ts-ignore: decorator
@inline export function hsum(v: v128): f32 {
  const s = f32x4.add(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  const t = f32x4.add(s, i32x4.shuffle(s, s, 1, 0, 3, 2));
  return f32x4.extract_lane(t, 0);
}

/** [sum(a), sum(b), sum(c), sum(d)] of four i32x4 vectors. */
// @ts-ignore: decorator
@inline export function transposeSum(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.add(i32x4.shuffle(a, b, 0, 4, 1, 5), i32x4.shuffle(a, b, 2, 6, 3, 7)); // a02 b02 a13 b13
  const cd = i32x4.add(i32x4.shuffle(c, d, 0, 4, 1, 5), i32x4.shuffle(c, d, 2, 6, 3, 7));
  return i32x4.add(i32x4.shuffle(ab, cd, 0, 1, 4, 5), i32x4.shuffle(ab, cd, 2, 3, 6, 7));
}

/**
 * The four-stream decode loops' results: lane k of acc is row ra + k*q of a chunk split into four
 * streams of q rows (v1..v3: whether streams 1..3 have a row i, else they were aliased to stream 0
 * and are not stored).
 */
// @ts-ignore: decorator
@inline export function storeFourStreams(out: usize, ra: u32, q: u32, acc: v128, v1: bool, v2: bool, v3: bool): void {
  const o = out + (ra << 2);
  v128.store32_lane(o, acc, 0);
  if (v1) v128.store32_lane(o + (q << 2), acc, 1);
  if (v2) v128.store32_lane(o + (q << 3), acc, 2);
  if (v3) v128.store32_lane(o + q * 12, acc, 3);
}

/**
 * The eight-stream decode loops' results (q8.ts, relaxed.ts): lane k of accA is row ra + k*q, lane
 * k of accB row ra + (4+k)*q, of a chunk of n rows split into eight streams of q (stream i's rows
 * past n were aliased to the first stream and are not stored).
 */
// @ts-ignore: decorator
@inline export function storeEightStreams(out: usize, ra: u32, q: u32, i: u32, n: u32, accA: v128, accB: v128): void {
  const o = out + (ra << 2), qo: usize = q << 2;
  v128.store32_lane(o, accA, 0);
  if (q + i < n) v128.store32_lane(o + qo, accA, 1);
  if (q * 2 + i < n) v128.store32_lane(o + 2 * qo, accA, 2);
  if (q * 3 + i < n) v128.store32_lane(o + 3 * qo, accA, 3);
  if (q * 4 + i < n) v128.store32_lane(o + 4 * qo, accB, 0);
  if (q * 5 + i < n) v128.store32_lane(o + 5 * qo, accB, 1);
  if (q * 6 + i < n) v128.store32_lane(o + 6 * qo, accB, 2);
  if (q * 7 + i < n) v128.store32_lane(o + 7 * qo, accB, 3);
}

/** [sum(a), sum(b), sum(c), sum(d)] of four f32x4 vectors. */
// @ts-ignore: decorator
@inline export function transposeSumF(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = f32x4.add(i32x4.shuffle(a, b, 0, 4, 1, 5), i32x4.shuffle(a, b, 2, 6, 3, 7));
  const cd = f32x4.add(i32x4.shuffle(c, d, 0, 4, 1, 5), i32x4.shuffle(c, d, 2, 6, 3, 7));
  return f32x4.add(i32x4.shuffle(ab, cd, 0, 1, 4, 5), i32x4.shuffle(ab, cd, 2, 3, 6, 7));
}

/** The f16 values at p0+off .. p3+off as f32x4 (f16hiToF32: slow for subnormal halves, see there). */
// @ts-ignore: decorator
@inline export function halves4(p0: usize, p1: usize, p2: usize, p3: usize, off: usize): v128 {
  const hw = (load<u16>(p0 + off) as u64) | ((load<u16>(p1 + off) as u64) << 16) |
    ((load<u16>(p2 + off) as u64) << 32) | ((load<u16>(p3 + off) as u64) << 48);
  return f16hiToF32(i16x8.shuffle(i32x4.splat(0), i64x2.splat(hw), 0, 8, 1, 9, 2, 10, 3, 11));
}

/**
 * halves4 with the exact decode that never has a denormal operand (f16hiToF32Safe): for the
 * K-quants, whose f16 d and dmin are often subnormal (d ~ range / 945 for Q4_K), and where it is
 * paid once per 256 values. The 32-value types keep the cheap decode: in their hot loops the
 * exact one costs 12-15% (measured on Q8_0 and Q4_0), and their scales are subnormal only for
 * blocks of tiny weights.
 */
// @ts-ignore: decorator
@inline export function halves4Safe(p0: usize, p1: usize, p2: usize, p3: usize, off: usize): v128 {
  const hw = (load<u16>(p0 + off) as u64) | ((load<u16>(p1 + off) as u64) << 16) |
    ((load<u16>(p2 + off) as u64) << 32) | ((load<u16>(p3 + off) as u64) << 48);
  return f16hiToF32Safe(i16x8.shuffle(i32x4.splat(0), i64x2.splat(hw), 0, 8, 1, 9, 2, 10, 3, 11));
}

/** ggml's get_scale_min_k4: 6-bit scale (j < 8) or min (j >= 8: min j - 8) of the 12 bytes at q. */
// @ts-ignore: decorator
@inline export function scaleK4(q: usize, j: u32): u32 {
  if (j < 4) return load<u8>(q + j) & 63;
  return (load<u8>(q + j + 4) & 15) | ((load<u8>(q + j - 4) >> 6) << 4);
}
// @ts-ignore: decorator
@inline export function minK4(q: usize, j: u32): u32 {
  if (j < 4) return load<u8>(q + j + 4) & 63;
  return (load<u8>(q + j + 4) >> 4) | ((load<u8>(q + j) >> 6) << 4);
}

/** 6-bit scale j (0..15) of a Q3_K block's 12 scale bytes at q (0..63, before the -32). */
// @ts-ignore: decorator
@inline export function scaleQ3K(q: usize, j: u32): u32 {
  const low = j < 8 ? load<u8>(q + j) & 15 : load<u8>(q + j - 8) >> 4;
  return low | (((load<u8>(q + 8 + (j & 3)) as u32 >> (2 * (j >> 2))) & 3) << 4);
}


/**
 * roundI32's constants, in the module's reserved head of every arena (arena.ts ARENA_RESERVED;
 * after kernels.ts's EXP_C): 1.5 * 2^23 as f32 and its bits, then the quantizers' |x| mask (32). Loaded from memory: V8 rebuilds a
 * v128.const at each use inside a loop (3 uops). Every quantizer stores them first.
 */
export const ROUND_C: usize = 512;

// @ts-ignore: decorator
@inline export function storeRoundConsts(): void {
  v128.store(ROUND_C, f32x4.splat(12582912.0), 0);
  v128.store(ROUND_C, i32x4.splat(0x4b400000), 16);
  v128.store(ROUND_C, i32x4.splat(0x7fffffff), 32);
}

/**
 * i32x4.trunc_sat_f32x4_s(f32x4.nearest(v)) for lanes with |v| < 2^22 (the quantizers' 127 at
 * most): v + 1.5 * 2^23 rounds v to a whole number, ties to even as nearest does, and keeps it in
 * the low mantissa bits; two uops where the saturating conversion is about eight. magic and bits
 * are roundI32's constants (v128.load(ROUND_C), v128.load(ROUND_C, 16)).
 */
// @ts-ignore: decorator
@inline export function roundI32(v: v128, magic: v128, bits: v128): v128 {
  return i32x4.sub(f32x4.add(v, magic), bits);
}

/**
 * acc + a * b: with `fused` (a compile-time constant at every call) and in the relaxed build, one
 * relaxed_madd, which is one vfmadd (one rounding) where the engine has FMA and a multiply and an
 * add (the other branch's two roundings) elsewhere. Kernels that must agree (the Q8_0 decode and
 * prefill, see q8.ts) pass the same `fused`, so that on any one engine they round alike.
 */
// @ts-ignore: decorator
@inline export function mulAdd(acc: v128, a: v128, b: v128, fused: bool): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    if (fused) return f32x4.relaxed_madd(a, b, acc);
  }
  return f32x4.add(acc, f32x4.mul(a, b));
}
