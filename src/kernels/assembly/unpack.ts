// Per-type unpacking of weight blocks into int16 lanes, shared by the generic matmul loops
// (matmul.ts). Every function takes the type as a parameter and is inlined where the type is a
// constant, so the switch folds away.
import {
  T_IQ4_NL, T_Q2_K, T_Q3_K, T_Q4_0, T_Q4_1, T_Q4_K, T_Q5_0, T_Q5_1, T_Q5_K, T_Q6_K, T_Q8_0,
  minK4, scaleK4, scaleQ3K,
} from "./common";

/**
 * Q4_K/Q5_K scales and mins (get_scale_min_k4 for j = 0..7) of the 12 bytes at q, as bytes
 * [sc0..sc7, m0..m7]. Reads 16 bytes (the 4 after the scales are unused).
 */
// @ts-ignore: decorator
@inline export function q4kScales(q: usize): v128 {
  const v = v128.load(q);
  const low = v128.and(v, i8x16.splat(63));                 // lanes 0..7: sc0..3, m0..3
  const top = i8x16.shl(i8x16.shr_u(v, 6), 4);              // lanes 0..7: their top 2 bits << 4
  const n = i8x16.shuffle(v, v, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11);
  const lohi = i8x16.shuffle(v128.and(n, i8x16.splat(15)), i8x16.shr_u(n, 4), 0, 1, 2, 3, 20, 21, 22, 23, 0, 1, 2, 3, 20, 21, 22, 23);
  const upper = v128.or(lohi, top);                         // lanes 0..7: sc4..7, m4..7
  return i8x16.shuffle(low, upper, 0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
}

/**
 * The integer scales (16 i16 at dst, one per 16-value sub-block) and mins (16 i16 at dst + 32;
 * zeros for Q3_K and Q6_K) of the K-quant super-block at p.
 */
// @ts-ignore: decorator
@inline export function kScales16(t: u32, p: usize, dst: usize): void {
  const z = i32x4.splat(0);
  switch (t) {
    case T_Q2_K: {
      const v = v128.load(p);
      const sc = v128.and(v, i8x16.splat(15)), mn = i8x16.shr_u(v, 4);
      v128.store(dst, i16x8.extend_low_i8x16_u(sc), 0);
      v128.store(dst, i16x8.extend_high_i8x16_u(sc), 16);
      v128.store(dst, i16x8.extend_low_i8x16_u(mn), 32);
      v128.store(dst, i16x8.extend_high_i8x16_u(mn), 48);
      return;
    }
    case T_Q4_K: case T_Q5_K: {
      const s8 = q4kScales(p + 4);
      v128.store(dst, i8x16.shuffle(s8, z, 0, 16, 0, 16, 1, 16, 1, 16, 2, 16, 2, 16, 3, 16, 3, 16), 0);
      v128.store(dst, i8x16.shuffle(s8, z, 4, 16, 4, 16, 5, 16, 5, 16, 6, 16, 6, 16, 7, 16, 7, 16), 16);
      v128.store(dst, i8x16.shuffle(s8, z, 8, 16, 8, 16, 9, 16, 9, 16, 10, 16, 10, 16, 11, 16, 11, 16), 32);
      v128.store(dst, i8x16.shuffle(s8, z, 12, 16, 12, 16, 13, 16, 13, 16, 14, 16, 14, 16, 15, 16, 15, 16), 48);
      return;
    }
    case T_Q6_K: {
      const v = v128.load(p, 192);
      v128.store(dst, i16x8.extend_low_i8x16_s(v), 0);
      v128.store(dst, i16x8.extend_high_i8x16_s(v), 16);
      v128.store(dst, z, 32);
      v128.store(dst, z, 48);
      return;
    }
    default: { // Q3_K
      for (let j: u32 = 0; j < 16; j++) store<i16>(dst + (j << 1), ((scaleQ3K(p + 96, j) as i32) - 32) as i16);
      v128.store(dst, z, 32);
      v128.store(dst, z, 48);
    }
  }
}

/** The 16 IQ4_NL levels (kvalues_iq4nl) as a v128 constant (a swizzle table, no data segment). */
// @ts-ignore: decorator
@inline export function iq4Table(): v128 {
  return i8x16(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
}

/**
 * i16x8 of the integer levels of values c*32 + 8k .. +7 (c: 32-value chunk within the block, 0
 * for 32-value blocks; k: 0..3) of the block at p: signed values (offsets applied) for Q8_0,
 * Q4_0, Q5_0, IQ4_NL, Q3_K, Q6_K; unsigned levels for the types with mins (Q4_1, Q5_1, Q2_K,
 * Q4_K, Q5_K). K-quant sub-block scales are not applied (see subScale).
 */
// @ts-ignore: decorator
@inline export function w16(t: u32, p: usize, c: u32, k: u32): v128 {
  switch (t) {
    case T_Q8_0:
      return v128.load8x8_s(p + 2 + (k << 3));
    case T_Q4_0: case T_Q4_1: {
      const v = v128.load8x8_u(p + (t == T_Q4_0 ? 2 : 4) + ((k & 1) << 3));
      const q = k < 2 ? v128.and(v, i16x8.splat(15)) : i16x8.shr_u(v, 4);
      return t == T_Q4_0 ? i16x8.sub(q, i16x8.splat(8)) : q;
    }
    case T_IQ4_NL: {
      const v = v128.load8x8_u(p + 2 + ((k & 1) << 3));
      const q = k < 2 ? v128.and(v, i16x8.splat(15)) : i16x8.shr_u(v, 4);
      // high bytes index 0: only the low byte of each lane is kept (shl/shr_s sign-extends it)
      return i16x8.shr_s(i16x8.shl(i8x16.swizzle(iq4Table(), q), 8), 8);
    }
    case T_Q5_0: case T_Q5_1: {
      const one = t == T_Q5_1;
      const v = v128.load8x8_u(p + (one ? 8 : 6) + ((k & 1) << 3));
      const q = k < 2 ? v128.and(v, i16x8.splat(15)) : i16x8.shr_u(v, 4);
      const bits = i16x8(1, 2, 4, 8, 16, 32, 64, 128);
      const hb = v128.and(i16x8.splat(load<u8>(p + (one ? 4 : 2) + k) as i16), bits);
      const h = v128.and(i16x8.eq(hb, bits), i16x8.splat(16));
      const u = v128.or(q, h);
      return one ? u : i16x8.sub(u, i16x8.splat(16));
    }
    case T_Q2_K: {
      const v = v128.load8x8_u(p + 16 + ((c >> 2) << 5) + (k << 3));
      return v128.and(i16x8.shr_u(v, (c & 3) << 1), i16x8.splat(3));
    }
    case T_Q3_K: {
      const v = v128.load8x8_u(p + 32 + ((c >> 2) << 5) + (k << 3));
      const q = v128.and(i16x8.shr_u(v, (c & 3) << 1), i16x8.splat(3));
      const h = v128.and(i16x8.shr_u(v128.load8x8_u(p + (k << 3)), c), i16x8.splat(1));
      return i16x8.sub(v128.or(q, i16x8.shl(h, 2)), i16x8.splat(4));
    }
    case T_Q4_K: case T_Q5_K: {
      const five = t == T_Q5_K;
      const v = v128.load8x8_u(p + (five ? 48 : 16) + ((c >> 1) << 5) + (k << 3));
      const q = (c & 1) == 0 ? v128.and(v, i16x8.splat(15)) : i16x8.shr_u(v, 4);
      if (!five) return q;
      const h = v128.and(i16x8.shr_u(v128.load8x8_u(p + 16 + (k << 3)), c), i16x8.splat(1));
      return v128.or(q, i16x8.shl(h, 4));
    }
    case T_Q6_K: {
      const n = c >> 2, j = c & 3;
      const v = v128.load8x8_u(p + (n << 6) + ((j & 1) << 5) + (k << 3));
      const lo = j < 2 ? v128.and(v, i16x8.splat(15)) : i16x8.shr_u(v, 4);
      const h = v128.and(i16x8.shr_u(v128.load8x8_u(p + 128 + (n << 5) + (k << 3)), j << 1), i16x8.splat(3));
      return i16x8.sub(v128.or(lo, i16x8.shl(h, 4)), i16x8.splat(32));
    }
    default:
      return i16x8.splat(0);
  }
}

/**
 * The levels of values 0..15 (hi = false) or 16..31 (hi = true) of a 32-value block (Q4_1, Q5_0,
 * Q5_1, IQ4_NL) at p as i8x16, built 16 bytes at a time: signed for Q5_0 and IQ4_NL, unsigned
 * (0..31) for Q4_1 and Q5_1. The fifth bits of Q5_x: qh byte k/8 spread to lane k, tested
 * against its bit.
 */
// @ts-ignore: decorator
@inline export function w8(t: u32, p: usize, hi: bool): v128 {
  const qo: usize = t == T_Q4_1 ? 4 : t == T_Q5_0 ? 6 : t == T_Q5_1 ? 8 : 2;
  const v = v128.load(p + qo);
  const q = hi ? v128.and(i16x8.shr_u(v, 4), i8x16.splat(15)) : v128.and(v, i8x16.splat(15));
  if (t == T_IQ4_NL) return i8x16.swizzle(iq4Table(), q);
  if (t == T_Q4_1) return q;
  const qh = v128.load32_splat(p + (t == T_Q5_1 ? 4 : 2));
  const bytes = hi ? i8x16.shuffle(qh, qh, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3)
    : i8x16.shuffle(qh, qh, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const bit = i8x16(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
  const u = v128.or(q, v128.and(i8x16.eq(v128.and(bytes, bit), bit), i8x16.splat(16)));
  return t == T_Q5_0 ? i8x16.sub(u, i8x16.splat(16)) : u;
}

/** Integer scale of 16-value sub-block s (0..15) of a K-quant super-block at p. */
// @ts-ignore: decorator
@inline export function subScale(t: u32, p: usize, s: u32): i32 {
  switch (t) {
    case T_Q2_K: return (load<u8>(p + s) & 15) as i32;
    case T_Q3_K: return (scaleQ3K(p + 96, s) as i32) - 32;
    case T_Q4_K: case T_Q5_K: return scaleK4(p + 4, s >> 1) as i32;
    case T_Q6_K: return load<i8>(p + 192 + s) as i32;
    default: return 0;
  }
}

/** Integer min of 16-value sub-block s of a K-quant super-block (0 for Q3_K and Q6_K). */
// @ts-ignore: decorator
@inline export function subMin(t: u32, p: usize, s: u32): i32 {
  switch (t) {
    case T_Q2_K: return (load<u8>(p + s) >> 4) as i32;
    case T_Q4_K: case T_Q5_K: return minK4(p + 4, s >> 1) as i32;
    default: return 0;
  }
}

/** Whether the type has a min term (Q4_1/Q5_1: f16 m; Q2_K/Q4_K/Q5_K: dmin with integer mins). */
// @ts-ignore: decorator
@inline export function hasMin(t: u32): bool {
  return t == T_Q4_1 || t == T_Q5_1 || t == T_Q2_K || t == T_Q4_K || t == T_Q5_K;
}

/** Byte offset of the f16 scale d in a block. */
// @ts-ignore: decorator
@inline export function dOffset(t: u32): usize {
  switch (t) {
    case T_Q2_K: return 80;
    case T_Q3_K: return 108;
    case T_Q6_K: return 208;
    default: return 0;
  }
}

/** Byte offset of the f16 min m (Q4_1, Q5_1) or dmin (Q2_K, Q4_K, Q5_K). */
// @ts-ignore: decorator
@inline export function mOffset(t: u32): usize {
  return t == T_Q2_K ? 82 : 2;
}
