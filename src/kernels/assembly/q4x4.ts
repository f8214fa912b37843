// Q4_0 with rows interleaved by four ("Q4_0x4"): a layout of the engine's memory, never of a file.
// After a node's Q4_0 matrices are loaded, the relaxed build repacks them in place (repackQ4_0x4,
// engine/slice.ts seal), as llama.cpp's CPU backend repacks Q4_0 into its block_q4_0x4/x8. Each
// group of four rows keeps its 4 x rb bytes, block by block (72 bytes per block of the group):
//
//   bytes 0..7    the four rows' f16 scales d (row 0 first)
//   bytes 8..71   four vectors V_0..V_3 of 16 bytes: bytes 4r..4r+3 of V_g are qs[4g..4g+3] of row r
//
// so one 8-byte load gives the four scales, and the lane = row dots (lane r of a dot belongs to
// row r, its four products against the token's four values broadcast to every lane) read V_g's
// nibbles as they are: no 4x4 transposes, no horizontal sums, no scalar scale gathers, which were
// most of the old Q4_0 loops' instructions. Results are bit-identical with Q4_0's kernels and the
// reference (the same integer sums, the same float step per block: acc += f32(sumi) * f32(d dx),
// fused where Q4_0's is).
import { f16ToF32, mulAdd } from "./common";
import { CONSTS, blockSum8, halves4x4C, rdot, rdot16, storeConsts } from "./relaxed";

/** Bytes of one block of a group of four rows. */
const GB: u32 = 72;
/** widenQ4_0Raw's bytes per block, and the offset of its constants' i16 ones (relaxed.ts XS, ONES). */
const XS: u32 = 112;
const ONES: u32 = 96;

/**
 * Rows [0, rows) of a Q4_0 matrix at w (nb blocks per row, rows a multiple of 4) into Q4_0x4, in
 * place; scratch: 4 x nb x 18 bytes (one group's rows, copied first).
 */
export function repackQ4_0x4(w: usize, rows: u32, nb: u32, scratch: usize): void {
  const rb: usize = nb * 18;
  const gBytes = rb << 2;
  for (let g: u32 = 0; g + 4 <= rows; g += 4) {
    const base = w + (g as usize) * rb;
    let i: usize = 0;
    for (; i + 16 <= gBytes; i += 16) v128.store(scratch + i, v128.load(base + i));
    for (; i < gBytes; i++) store<u8>(scratch + i, load<u8>(base + i));
    let dst = base;
    for (let b: u32 = 0; b < nb; b++) {
      const s0 = scratch + b * 18, s1 = s0 + rb, s2 = s1 + rb, s3 = s2 + rb;
      store<u16>(dst, load<u16>(s0), 0);
      store<u16>(dst, load<u16>(s1), 2);
      store<u16>(dst, load<u16>(s2), 4);
      store<u16>(dst, load<u16>(s3), 6);
      for (let k: usize = 0; k < 16; k += 4) {
        const o = dst + 8 + (k << 2);
        store<u32>(o, load<u32>(s0 + 2 + k), 0);
        store<u32>(o, load<u32>(s1 + 2 + k), 4);
        store<u32>(o, load<u32>(s2 + 2 + k), 8);
        store<u32>(o, load<u32>(s3 + 2 + k), 12);
      }
      dst += GB;
    }
  }
}

/**
 * One block of a group at p against the raw token block at xs: i32x4, lane r = row r's
 * sum(q * x) with q the levels 0..15 (the -8 offset is the caller's): two chains of four relaxed
 * dots (VNNI, ARM's sdot; pmaddubsw engines take groupDotV).
 */
// @ts-ignore: decorator
@inline function groupDot(p: usize, xs: usize, m0f: v128): v128 {
  const v0 = v128.load(p, 8), v1 = v128.load(p, 24), v2 = v128.load(p, 40), v3 = v128.load(p, 56);
  let s = rdot(v128.load32_splat(xs, 0), v128.and(v0, m0f), i32x4.splat(0));
  let u = rdot(v128.load32_splat(xs, 16), v128.and(i16x8.shr_u(v0, 4), m0f), i32x4.splat(0));
  s = rdot(v128.load32_splat(xs, 4), v128.and(v1, m0f), s);
  u = rdot(v128.load32_splat(xs, 20), v128.and(i16x8.shr_u(v1, 4), m0f), u);
  s = rdot(v128.load32_splat(xs, 8), v128.and(v2, m0f), s);
  u = rdot(v128.load32_splat(xs, 24), v128.and(i16x8.shr_u(v2, 4), m0f), u);
  s = rdot(v128.load32_splat(xs, 12), v128.and(v3, m0f), s);
  u = rdot(v128.load32_splat(xs, 28), v128.and(i16x8.shr_u(v3, 4), m0f), u);
  return i32x4.add(s, u);
}

/** Bytes per block of widenQ4_0Bcast's token. */
const XB: u32 = 160;

/**
 * nb Q8_0 blocks at x -> XB-byte blocks for the i16 decode (groupDotV): the eight groups of four
 * int8 values each broadcast to a vector (group k at 16k: values 4k..4k+3 four times), d as f32x4
 * at 128, 8 * sum(q) as i32x4 at 144; then the constants (relaxed.ts storeConsts, i16 ones at
 * CONSTS). The broadcasts are done once per token instead of once per group of rows, and they
 * make each pair of groupDotV's dots two adjacent loads.
 */
export function widenQ4_0Bcast(x: usize, nb: u32, dst: usize): void {
  for (let b: u32 = 0; b < nb; b++) {
    const a = v128.load(x, 2), c = v128.load(x, 18);
    v128.store(dst, i32x4.shuffle(a, a, 0, 0, 0, 0), 0);
    v128.store(dst, i32x4.shuffle(a, a, 1, 1, 1, 1), 16);
    v128.store(dst, i32x4.shuffle(a, a, 2, 2, 2, 2), 32);
    v128.store(dst, i32x4.shuffle(a, a, 3, 3, 3, 3), 48);
    v128.store(dst, i32x4.shuffle(c, c, 0, 0, 0, 0), 64);
    v128.store(dst, i32x4.shuffle(c, c, 1, 1, 1, 1), 80);
    v128.store(dst, i32x4.shuffle(c, c, 2, 2, 2, 2), 96);
    v128.store(dst, i32x4.shuffle(c, c, 3, 3, 3, 3), 112);
    v128.store(dst, f32x4.splat(f16ToF32(load<u16>(x) as u32)), 128);
    v128.store(dst, blockSum8(a, c), 144);
    x += 34; dst += XB;
  }
  storeConsts(dst);
  v128.store(dst, i16x8.splat(1), CONSTS);
}

/**
 * groupDot's i16 path for V8's revectorizer (src/kernels/revec.ts) with the broadcast token of
 * widenQ4_0Bcast at xs: V_0 and V_2 (values 0..3, 8..11 and 16..19, 24..27) in chain sA, V_1 and
 * V_3 in chain sB, the same operations on adjacent 16 bytes (weights and activations alike), so
 * each pair becomes one 256-bit operation and the final i32x4.add (the revectorizer's seed) one
 * extract and add. Each i16 lane of a chain: four pair sums, at most 4 x 2 x 15 x 128.
 */
// @ts-ignore: decorator
@inline function groupDotV(p: usize, xs: usize, m0f: v128, ones: v128): v128 {
  const v0 = v128.load(p, 8), v1 = v128.load(p, 24), v2 = v128.load(p, 40), v3 = v128.load(p, 56);
  let sA = rdot16(v128.load(xs, 0), v128.and(v0, m0f));
  let sB = rdot16(v128.load(xs, 16), v128.and(v1, m0f));
  sA = i16x8.add(sA, rdot16(v128.load(xs, 32), v128.and(v2, m0f)));
  sB = i16x8.add(sB, rdot16(v128.load(xs, 48), v128.and(v3, m0f)));
  sA = i16x8.add(sA, rdot16(v128.load(xs, 64), v128.and(i16x8.shr_u(v0, 4), m0f)));
  sB = i16x8.add(sB, rdot16(v128.load(xs, 80), v128.and(i16x8.shr_u(v1, 4), m0f)));
  sA = i16x8.add(sA, rdot16(v128.load(xs, 96), v128.and(i16x8.shr_u(v2, 4), m0f)));
  sB = i16x8.add(sB, rdot16(v128.load(xs, 112), v128.and(i16x8.shr_u(v3, 4), m0f)));
  return i32x4.add(i32x4.dot_i16x8_s(sA, ones), i32x4.dot_i16x8_s(sB, ones));
}

/**
 * Rows [r0, r1) (multiples of 4) of Q4_0x4 weights at w (nb blocks per row) times the token
 * widened by relaxed.ts widenQ4_0Raw (i16: widenQ4_0Bcast) at xs0: out[r] for those rows. Four groups per pass, a
 * quarter of the range apart: four long streams (more streams read DRAM better, as the eight row
 * streams of the Q4_0 kernels), sharing each block's activation loads.
 */
export function decodeQ4_0x4(out: usize, w: usize, xs0: usize, nb: u32, r0: u32, r1: u32, i16: bool): void {
  if (i16) decodeGroupsI16(out, w, xs0, nb, r0, r1);
  else decodeGroupsR(out, w, xs0, nb, r0, r1);
}

// One function per variant, so that Binaryen does not fold the two loops into one that tests i16
// at run time (relaxed.ts, before decodeRelaxed).
function decodeGroupsI16(out: usize, w: usize, xs0: usize, nb: u32, r0: u32, r1: u32): void { decodeGroups(out, w, xs0, nb, r0, r1, true); }
function decodeGroupsR(out: usize, w: usize, xs0: usize, nb: u32, r0: u32, r1: u32): void { decodeGroups(out, w, xs0, nb, r0, r1, false); }

// @ts-ignore: decorator
@inline function decodeGroups(out: usize, w: usize, xs0: usize, nb: u32, r0: u32, r1: u32, i16: bool): void {
  const gBytes: usize = nb * GB;
  const xb: usize = i16 ? XB : XS;
  const C = xs0 + nb * xb;
  const ones = v128.load(C, ONES);
  const ng = (r1 - r0) >> 2;
  const q = (ng + 3) >> 2;
  const qb = (q as usize) * gBytes;
  const m0f = v128.load(C);
  for (let i: u32 = 0; i < q; i++) {
    const ga = (r0 >> 2) + i;
    const hasB = q + i < ng, hasC = (q << 1) + i < ng, hasD = q * 3 + i < ng;
    let pa = w + (ga as usize) * gBytes;
    let pb = hasB ? pa + qb : pa, pc = hasC ? pa + 2 * qb : pa, pd = hasD ? pa + 3 * qb : pa;
    let accA = f32x4.splat(0), accB = f32x4.splat(0), accC = f32x4.splat(0), accD = f32x4.splat(0);
    let xs = xs0;
    while (xs < C) {
      const dx = i16 ? v128.load(xs, 128) : v128.load(xs, 64), sx = i16 ? v128.load(xs, 144) : v128.load(xs, 96);
      const a = i32x4.sub(i16 ? groupDotV(pa, xs, m0f, ones) : groupDot(pa, xs, m0f), sx);
      accA = mulAdd(accA, f32x4.convert_i32x4_s(a), f32x4.mul(halves4x4C(pa, C), dx), true);
      const b = i32x4.sub(i16 ? groupDotV(pb, xs, m0f, ones) : groupDot(pb, xs, m0f), sx);
      accB = mulAdd(accB, f32x4.convert_i32x4_s(b), f32x4.mul(halves4x4C(pb, C), dx), true);
      const c = i32x4.sub(i16 ? groupDotV(pc, xs, m0f, ones) : groupDot(pc, xs, m0f), sx);
      accC = mulAdd(accC, f32x4.convert_i32x4_s(c), f32x4.mul(halves4x4C(pc, C), dx), true);
      const d = i32x4.sub(i16 ? groupDotV(pd, xs, m0f, ones) : groupDot(pd, xs, m0f), sx);
      accD = mulAdd(accD, f32x4.convert_i32x4_s(d), f32x4.mul(halves4x4C(pd, C), dx), true);
      pa += GB; pb += GB; pc += GB; pd += GB; xs += xb;
    }
    v128.store(out + (ga << 4), accA);
    if (hasB) v128.store(out + ((ga + q) << 4), accB);
    if (hasC) v128.store(out + ((ga + (q << 1)) << 4), accC);
    if (hasD) v128.store(out + ((ga + q * 3) << 4), accD);
  }
}
