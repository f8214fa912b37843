// Relaxed-SIMD kernels (compiled only into kernels-relaxed.wasm: every caller tests
// ASC_FEATURE_RELAXED_SIMD, a compile-time constant, so the SIMD128 build never sees them).
//
// The one instruction used is i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, c): lane i of c plus the
// four products a[4i+k] * b[4i+k]. Its result is implementation-defined only when b has its top
// bit set, so b is always a weight level in 0..63 (Q4_0/Q4_K nibbles 0..15, Q6_K levels 0..63,
// offsets applied afterwards through the activation sums) and a the int8 activations: the result
// is exact on every engine (x86 with AVX-VNNI: one vpdpbusd; without: pmaddubsw, whose i16 pair
// sums 2 x 63 x 128 cannot saturate, pmaddwd, paddd; ARM: sdot).
//
// Prefill (several tokens) is "lane = row" for every type: per 32-value chunk four rows' levels
// are rearranged so that a dot's lanes belong to rows (Q4_0, Q6_K: 4x4 transpose, lane r = row r;
// Q4_K: row pairs, see rows4Q4KPairs) and each token's activations are broadcast from its own
// block (load32_splat / load64_splat), so the unpacking is shared by all tokens of a chunk, a
// prompt of 9 tokens is not padded to 12, and there is no horizontal reduction in the inner loop.
// The float steps follow the reference's order (acc += f32(sumi) * f32(dw * dx), per block or
// super-block), so the results are bit-identical with the reference and with the SIMD128 build.
// (A "lane = token" layout, token quads against broadcast weights, was slower at every prompt
// length once the rows variant lost its scalar gathers: Q4_K x32 58 vs 77 GMAC/s, Q6_K 50 vs 51.)
import { T_Q4_0, T_Q4_K, T_Q5_K, T_Q6_K, f16ToF32, halves4Safe, mulAdd, storeEightStreams, transposeSum, storeFourStreams } from "./common";
import { q4kScales } from "./unpack";
import { kScalePairs, q5Bit, q6Scales } from "./kquant-decode";

// @ts-ignore: decorator
@inline export function rdot(x: v128, w: v128, acc: v128): v128 {
  return i32x4.relaxed_dot_i8x16_i7x16_add_s(x, w, acc);
}

/**
 * The pair sums of a relaxed dot as i16 (x signed, w in 0..127: exact everywhere while a pair's
 * sum fits i16). Where relaxed dots are pmaddubsw sequences (x86 without VNNI), this is the one
 * pmaddubsw of them, and the Q4_K decode kernel scales these sums straight with its sub-block
 * scales (dot_i16x8_s) instead of widening them to i32 first (i16: true below).
 */
// @ts-ignore: decorator
@inline export function rdot16(x: v128, w: v128): v128 {
  return i16x8.relaxed_dot_i8x16_i7x16_s(x, w);
}


/**
 * Prefill of Q4_0, Q4_K and Q6_K with relaxed dot products (nTok >= 2); false (nothing done) for
 * other types or when the scratch is too small. Tokens in chunks (as many as fit in scratchBytes,
 * at most 64), rows four at a time (one sequential stream per thread), each group of four rows
 * unpacked once per chunk. i16: the engine's relaxed dots are pmaddubsw sequences (relaxed-q8u.ts
 * dotLowering 2, decided by the caller): their i16 pair sums instead (the same integers).
 */
export function prefillRelaxed(t: u32, out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32, reuse: bool, i16: bool): bool {
  switch (t) {
    case T_Q4_0: return prefillQ4_0Rows(out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes, reuse, i16);
    case T_Q4_K: return prefillKRows(T_Q4_K, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes, i16);
    case T_Q6_K: return prefillKRows(T_Q6_K, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes, i16);
    // Q5_K only with the i16 sums: its levels (0..31) would overflow the other path's narrowed
    // chains of four dots (16 x 31 x 128); with i16 a chain's pair sums are at most 4 x 2 x 31 x 128
    case T_Q5_K: return i16 ? prefillKRows(T_Q5_K, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes, true) : false;
    default: return false;
  }
}

// ---------------------------------------------------------------------------------------------
// decode (one token) of Q4_K and Q6_K: eight rows as eight long streams (spaced an eighth of the
// chunk apart), the activations as plain int8 (no widening to i16), one relaxed dot per 16
// values. Constants come from the scratch (see storeConsts), the groups and quarters are unrolled
// so that every scale vector is one pshufd of the row's scale pairs, and each stream is touched
// TOUCH bytes ahead. Spaced streams read DRAM much better than adjacent rows (7B shapes, 2
// threads, four streams: Q4_K 34.4 vs 22.3 GMAC/s, Q6_K 20.8 vs 15.5), and eight better than four
// (Q4_0 33.1 -> 41.4; the 1.1B Q4_K_M file's matmuls 1.19x). Where relaxed dots are pmaddubsw
// sequences the loops differ (decodeRows4I16): four streams, no touches, i16 pair sums, and Q5_K
// too.

/**
 * nsb Q8_K super-blocks at x -> KS-byte blocks at dst as kquant-decode.ts expects them, except
 * that bytes 0..255 hold the int8 values as they are: d as f32x4 at 512, bsums at 544, sums per
 * 32 values (8 i16) at 576. Then the constants of the loops (storeConsts, storeConstsK: KCONSTS
 * bytes) and the rows' scale vectors (see dot4Q4KR, dot4Q6KR).
 */
export function widenKRaw(x: usize, nsb: u32, dst: usize): void {
  for (let b: u32 = 0; b < nsb; b++) {
    for (let i: u32 = 0; i < 16; i++) v128.store(dst + (i << 4), v128.load(x + 4 + (i << 4)));
    v128.store(dst, f32x4.splat(load<f32>(x)), 512);
    const b0 = v128.load(x, 260), b1 = v128.load(x, 276);
    v128.store(dst, b0, 544);
    v128.store(dst, b1, 560);
    v128.store(dst, i16x8.narrow_i32x4_s(i32x4.extadd_pairwise_i16x8_s(b0), i32x4.extadd_pairwise_i16x8_s(b1)), 576);
    x += 292; dst += KS;
  }
  storeConsts(dst);
  storeConstsK(dst);
}

const KS: u32 = 592;
/** Constants after the widened K-quant token: storeConsts' (0..96), then f16hiToF32Safe's (96..192). */
const KCONSTS: u32 = 192;
/** Offset from the constants of the 0x10 bytes (q4GroupR's Q5_K levels): past the four rows' scale vectors (KCONSTS + 256 at most). */
const M10: u32 = 464;
/** Offset from the constants of a slot the i16 decodes store row sums to (see sbQ4KR). */
const BAR: u32 = 480;

/** f16hiToF32Safe's six constants at dst + 96 .. dst + 192. */
// @ts-ignore: decorator
@inline function storeConstsK(dst: usize): void {
  v128.store(dst, i32x4.splat(0x0fffe000), 96);
  v128.store(dst, i32x4.splat(0x0f800000), 112);
  v128.store(dst, i32x4.splat(0x38000000), 128);
  v128.store(dst, i32x4.splat(0x00800000), 144);
  v128.store(dst, i32x4.splat(0x38800000), 160);
  v128.store(dst, i32x4.splat(0x80000000), 176);
  v128.store(dst, i8x16.splat(0x10), M10); // Q5_K's fifth bits (after the rows' scale vectors)
}

/** halves4Safe (common.ts) with its constants from C (storeConstsK). */
// @ts-ignore: decorator
@inline function halves4SafeC(p0: usize, p1: usize, p2: usize, p3: usize, off: usize, C: usize): v128 {
  const hw = (load<u16>(p0 + off) as u64) | ((load<u16>(p1 + off) as u64) << 16) |
    ((load<u16>(p2 + off) as u64) << 32) | ((load<u16>(p3 + off) as u64) << 48);
  const v = i16x8.shuffle(i32x4.splat(0), i64x2.splat(hw), 0, 8, 1, 9, 2, 10, 3, 11);
  const em = v128.and(i32x4.shr_u(v, 3), v128.load(C, 96));
  const den = i32x4.eq(v128.and(em, v128.load(C, 112)), i32x4.splat(0));
  const t = i32x4.add(i32x4.add(em, v128.load(C, 128)), v128.and(den, v128.load(C, 144)));
  const f = f32x4.sub(t, v128.and(den, v128.load(C, 160)));
  return v128.or(f, v128.and(v, v128.load(C, 176)));
}

/**
 * unpack.ts q4kScales (the 12 scale bytes at q -> [sc0..sc7, m0..m7]) with 32-bit lane shifts
 * (one instruction; an i8x16 shift is two or three) and constants from C: lanes a, b, c of the
 * bytes give sc0..3 = a & 63, m0..3 = b & 63, sc4..7 = (c & 15) | ((a >> 6) & 3) << 4, m4..7 =
 * ((c >> 4) & 15) | ((b >> 6) & 3) << 4 (ggml's get_scale_min_k4).
 */
// @ts-ignore: decorator
@inline function q4ScalesC(q: usize, C: usize): v128 {
  const v = v128.load(q);
  const m0f = v128.load(C, 0);
  const low = v128.and(v, v128.load(C, 64));
  const top = i32x4.shl(v128.and(i32x4.shr_u(v, 6), v128.load(C, 80)), 4);
  const hi = v128.or(i32x4.shuffle(v128.and(v, m0f), v128.and(i32x4.shr_u(v, 4), m0f), 2, 6, 3, 7), top);
  return i32x4.shuffle(low, hi, 0, 4, 1, 5);
}

/**
 * Group g (sub-blocks 2g, 2g+1: qs[32g..32g+32)) of one Q4_K row at p with the raw activations at
 * xs, for engines with one-instruction relaxed dots (VNNI, ARM's sdot; pmaddubsw engines take
 * q4RowV): each sub-block's four lane sums (8 values each, at most 8 x 15 x 128) fit i16, so the
 * pair is narrowed and scaled by one dot_i16x8_s with its two scales. uv: the row's scales as i16
 * pairs [s2k s2k] per i32 lane (k = 0..3 for g < 2, 4..7 for g >= 2), so the pair's vector [s2g x4,
 * s2g+1 x4] is one pshufd; g is a constant after inlining.
 */
// @ts-ignore: decorator
@inline function q4GroupR(p: usize, xs: usize, g: u32, uv: v128, m0f: v128): v128 {
  const q = p + 16 + (g << 5), x = xs + (g << 6);
  const V0 = v128.load(q), V1 = v128.load(q, 16);
  let lo = rdot(v128.load(x, 0), v128.and(V0, m0f), i32x4.splat(0));
  lo = rdot(v128.load(x, 16), v128.and(V1, m0f), lo);
  let hi = rdot(v128.load(x, 32), v128.and(i16x8.shr_u(V0, 4), m0f), i32x4.splat(0));
  hi = rdot(v128.load(x, 48), v128.and(i16x8.shr_u(V1, 4), m0f), hi);
  const sc = (g & 1) == 0 ? i32x4.shuffle(uv, uv, 0, 0, 1, 1) : i32x4.shuffle(uv, uv, 2, 2, 3, 3);
  return i32x4.dot_i16x8_s(i16x8.narrow_i32x4_s(lo, hi), sc);
}

/**
 * One term of q4RowV's chains: half h (0: bytes 0..15 of the group's 32 at q, 1: bytes 16..31) of
 * group g of a Q4_K row (Q5_K with q5), its low nibbles or, with hi, its high ones, against the
 * matching 16 activations of the group's 64 at x, scaled by s (the sub-block's scale pair
 * broadcast). g, h and hi are literals after inlining, so every load has a constant offset from
 * q or x. For Q5_K, qh's bit 2g (2g + 1 with hi) becomes bit 4 (H: the half's 16 qh bytes).
 */
// @ts-ignore: decorator
@inline function q4Term(q: usize, x: usize, s: v128, g: u32, h: u32, hi: bool, H: v128, m0f: v128, C: usize, q5: bool): v128 {
  const V = h == 0 ? v128.load(q) : v128.load(q, 16);
  const X = hi ? (h == 0 ? v128.load(x, 32) : v128.load(x, 48)) : (h == 0 ? v128.load(x) : v128.load(x, 16));
  const l = v128.and(hi ? i16x8.shr_u(V, 4) : V, m0f);
  const lv = q5 ? v128.or(l, q5Bit(H, (g << 1) + (hi ? 1 : 0), v128.load(C, M10))) : l;
  return i32x4.dot_i16x8_s(rdot16(X, lv), s);
}

/**
 * One Q4_K row's integer super-block sum (Q5_K with q5) for engines whose relaxed dots are
 * pmaddubsw sequences, written for V8's revectorizer (src/kernels/revec.ts): the first and the
 * second 16 bytes of each group's 32 (q4Term h = 0, 1) go through the same operations in two
 * chains, jA and jB, that meet only in the final i32x4.add. The revectorizer takes that add as its
 * seed and fuses each pair of the chains into one 256-bit AVX2 operation (a ymm load, vpand,
 * vpsrlw, vpmaddubsw, vpmaddwd, vpaddd), the add itself into one extract and add. What keeps the
 * fusion whole:
 * - every chain add has a dot product as one operand: an add of two adds is a seed too, and one
 *   pairing a chain with a group's term ties unrelated loads together (seen in the generated code);
 * - paired loads have one address node (computed once per group here) and offsets 16 apart: the
 *   revectorizer runs before V8 merges equal address computations, and loads from two of them
 *   become two loads and a vinserti128;
 * - the scales are broadcast by load32_splat, one node for both chains (a shuffle of a computed
 *   vector would end the fusion);
 * - the groups are written out: a loop over g cost eight scalar instructions per group.
 * sv: the row's scale pairs (q4RowScales: i32 lane j is sub-block j's scale twice). The integer
 * sum is q4GroupR's (the same bits); each i16 lane holds two products (at most 2 x 15 x 128, Q5_K
 * 2 x 31 x 128).
 */
// @ts-ignore: decorator
@inline function q4RowV(p: usize, xs: usize, sv: usize, m0f: v128, C: usize, q5: bool): v128 {
  const z = i32x4.splat(0);
  const HA = q5 ? v128.load(p, 16) : z, HB = q5 ? v128.load(p, 32) : z;
  let jA = z, jB = z;
  const q0 = p + (q5 ? 48 : 16), x0 = xs + 0;
  const sa0 = v128.load32_splat(sv + 0), sb0 = v128.load32_splat(sv + 4);
  jA = i32x4.add(jA, q4Term(q0, x0, sa0, 0, 0, false, HA, m0f, C, q5)); jB = i32x4.add(jB, q4Term(q0, x0, sa0, 0, 1, false, HB, m0f, C, q5));
  jA = i32x4.add(jA, q4Term(q0, x0, sb0, 0, 0, true, HA, m0f, C, q5)); jB = i32x4.add(jB, q4Term(q0, x0, sb0, 0, 1, true, HB, m0f, C, q5));
  const q1 = p + (q5 ? 80 : 48), x1 = xs + 64;
  const sa1 = v128.load32_splat(sv + 8), sb1 = v128.load32_splat(sv + 12);
  jA = i32x4.add(jA, q4Term(q1, x1, sa1, 1, 0, false, HA, m0f, C, q5)); jB = i32x4.add(jB, q4Term(q1, x1, sa1, 1, 1, false, HB, m0f, C, q5));
  jA = i32x4.add(jA, q4Term(q1, x1, sb1, 1, 0, true, HA, m0f, C, q5)); jB = i32x4.add(jB, q4Term(q1, x1, sb1, 1, 1, true, HB, m0f, C, q5));
  const q2 = p + (q5 ? 112 : 80), x2 = xs + 128;
  const sa2 = v128.load32_splat(sv + 16), sb2 = v128.load32_splat(sv + 20);
  jA = i32x4.add(jA, q4Term(q2, x2, sa2, 2, 0, false, HA, m0f, C, q5)); jB = i32x4.add(jB, q4Term(q2, x2, sa2, 2, 1, false, HB, m0f, C, q5));
  jA = i32x4.add(jA, q4Term(q2, x2, sb2, 2, 0, true, HA, m0f, C, q5)); jB = i32x4.add(jB, q4Term(q2, x2, sb2, 2, 1, true, HB, m0f, C, q5));
  const q3 = p + (q5 ? 144 : 112), x3 = xs + 192;
  const sa3 = v128.load32_splat(sv + 24), sb3 = v128.load32_splat(sv + 28);
  jA = i32x4.add(jA, q4Term(q3, x3, sa3, 3, 0, false, HA, m0f, C, q5)); jB = i32x4.add(jB, q4Term(q3, x3, sa3, 3, 1, false, HB, m0f, C, q5));
  jA = i32x4.add(jA, q4Term(q3, x3, sb3, 3, 0, true, HA, m0f, C, q5)); jB = i32x4.add(jB, q4Term(q3, x3, sb3, 3, 1, true, HB, m0f, C, q5));
  return i32x4.add(jA, jB);
}

/**
 * One row's Q4_K scales of a super-block: the sub-block scales as i16 pairs (see q4GroupR) to
 * sv (2 vectors), and the min term (i32x4 lanes summing to sum(m_j * sum of x over sub-block j)).
 */
// @ts-ignore: decorator
@inline function q4RowScales(p: usize, xm: v128, C: usize, sv: usize): v128 {
  return kScalePairs(q4ScalesC(p + 4, C), xm, sv);
}

/**
 * Distance of the demand loads ahead of each row stream (wasm has no prefetch instruction): one
 * byte per 64-byte line, so the line's miss overlaps the arithmetic on the lines before it; the
 * address is clamped to the chunk's last byte (lim), so nothing past the matrix is read. The
 * loaded bytes are xor-ed into a sink stored to the scratch, which keeps the loads alive. On the
 * 7B shapes (2 threads, DRAM): Q6_K 20.6 -> 25.3 GMAC/s; 512, 1024 and 2048 bytes within noise.
 */
const TOUCH: usize = 1024;
/** A byte of each of the three 64-byte lines at p + TOUCH .. (at most lim). */
// @ts-ignore: decorator
@inline function touch3(p: usize, lim: usize): u32 {
  const a = p + TOUCH;
  return (load<u8>(a < lim ? a : lim) as u32) ^ (load<u8>(a + 64 < lim ? a + 64 : lim) as u32) ^ (load<u8>(a + 128 < lim ? a + 128 : lim) as u32);
}
// @ts-ignore: decorator
@inline function touch4(p: usize, lim: usize): u32 {
  const a = p + TOUCH + 192;
  return touch3(p, lim) ^ (load<u8>(a < lim ? a : lim) as u32);
}

/**
 * One super-block of four Q4_K rows (p0..p3, may alias), or Q5_K rows with q5 (pmaddubsw engines
 * only, i16), with the raw token's at xs: its f32 term (numerics of dot4Q4K, dot4Q5K: the two
 * types share d, dmin and the scale format).
 */
// @ts-ignore: decorator
@inline function sbQ4KR(p0: usize, p1: usize, p2: usize, p3: usize, xs: usize, C: usize, i16: bool, q5: bool): v128 {
  const SV = C + KCONSTS; // the four rows' scale pairs, 32 bytes each
  const xm = v128.load(xs, 576);
  const mins = f32x4.convert_i32x4_s(transposeSum(
    q4RowScales(p0, xm, C, SV), q4RowScales(p1, xm, C, SV + 32), q4RowScales(p2, xm, C, SV + 64), q4RowScales(p3, xm, C, SV + 96)));
  const m0f = v128.load(C);
  if (i16) {
    // each row's sum stored to a slot: the store keeps V8 from sharing one row's activation
    // loads with the next rows (sixteen more live vectors: spills)
    const j0 = q4RowV(p0, xs, SV, m0f, C, q5);
    v128.store(C, j0, BAR);
    const j1 = q4RowV(p1, xs, SV + 32, m0f, C, q5);
    v128.store(C, j1, BAR);
    const j2 = q4RowV(p2, xs, SV + 64, m0f, C, q5);
    v128.store(C, j2, BAR);
    const isumV = f32x4.convert_i32x4_s(transposeSum(j0, j1, j2, q4RowV(p3, xs, SV + 96, m0f, C, q5)));
    const dxV = v128.load(xs, 512);
    const tV = f32x4.mul(isumV, f32x4.mul(halves4SafeC(p0, p1, p2, p3, 0, C), dxV));
    return f32x4.sub(tV, f32x4.mul(mins, f32x4.mul(halves4SafeC(p0, p1, p2, p3, 2, C), dxV)));
  }
  let i0 = q4GroupR(p0, xs, 0, v128.load(SV, 0), m0f);
  let i1 = q4GroupR(p1, xs, 0, v128.load(SV, 32), m0f);
  let i2 = q4GroupR(p2, xs, 0, v128.load(SV, 64), m0f);
  let i3 = q4GroupR(p3, xs, 0, v128.load(SV, 96), m0f);
  i0 = i32x4.add(i0, q4GroupR(p0, xs, 1, v128.load(SV, 0), m0f));
  i1 = i32x4.add(i1, q4GroupR(p1, xs, 1, v128.load(SV, 32), m0f));
  i2 = i32x4.add(i2, q4GroupR(p2, xs, 1, v128.load(SV, 64), m0f));
  i3 = i32x4.add(i3, q4GroupR(p3, xs, 1, v128.load(SV, 96), m0f));
  i0 = i32x4.add(i0, q4GroupR(p0, xs, 2, v128.load(SV, 16), m0f));
  i1 = i32x4.add(i1, q4GroupR(p1, xs, 2, v128.load(SV, 48), m0f));
  i2 = i32x4.add(i2, q4GroupR(p2, xs, 2, v128.load(SV, 80), m0f));
  i3 = i32x4.add(i3, q4GroupR(p3, xs, 2, v128.load(SV, 112), m0f));
  i0 = i32x4.add(i0, q4GroupR(p0, xs, 3, v128.load(SV, 16), m0f));
  i1 = i32x4.add(i1, q4GroupR(p1, xs, 3, v128.load(SV, 48), m0f));
  i2 = i32x4.add(i2, q4GroupR(p2, xs, 3, v128.load(SV, 80), m0f));
  i3 = i32x4.add(i3, q4GroupR(p3, xs, 3, v128.load(SV, 112), m0f));
  const isum = f32x4.convert_i32x4_s(transposeSum(i0, i1, i2, i3));
  const dx = v128.load(xs, 512);
  const tt = f32x4.mul(isum, f32x4.mul(halves4SafeC(p0, p1, p2, p3, 0, C), dx));
  return f32x4.sub(tt, f32x4.mul(mins, f32x4.mul(halves4SafeC(p0, p1, p2, p3, 2, C), dx)));
}

/**
 * Quarter (n, h) of one Q6_K row with the raw activations (as kquant-decode.ts q6Quarter): four
 * 16-value level vectors (0..63), one relaxed dot each; a sub-block's lane sums (4 x 63 x 128)
 * fit i16, so pairs are narrowed and scaled by their int8 scales with one dot_i16x8_s. uv: the
 * row's scales 8n..8n+3 (u) and 8n+4..8n+7 (v) as i16 pairs per i32 lane (kquant-decode.ts
 * q6Scales), so each scale vector is one pshufd; n and h are constants after inlining. For
 * engines with one-instruction relaxed dots (pmaddubsw engines take q6RowV).
 */
// @ts-ignore: decorator
@inline function q6QuarterR(p: usize, xs: usize, n: u32, h: u32, u: v128, v: v128, C: usize): v128 {
  const l0: usize = h << 4;
  const A = v128.load(p + (n << 6) + l0), B = v128.load(p + (n << 6) + 32 + l0), H = v128.load(p + 128 + (n << 5) + l0);
  const m0f = v128.load(C, 0), m30 = v128.load(C, 16);
  const q1 = v128.or(v128.and(A, m0f), v128.and(i16x8.shl(H, 4), m30));
  const q2 = v128.or(v128.and(B, m0f), v128.and(i16x8.shl(H, 2), m30));
  const q3 = v128.or(v128.and(i16x8.shr_u(A, 4), m0f), v128.and(H, m30));
  const q4 = v128.or(v128.and(i16x8.shr_u(B, 4), m0f), v128.and(i16x8.shr_u(H, 2), m30));
  const xo = xs + (n << 7) + l0;
  const z = i32x4.splat(0);
  const p0 = rdot(v128.load(xo, 0), q1, z), p1 = rdot(v128.load(xo, 32), q2, z);
  const p2 = rdot(v128.load(xo, 64), q3, z), p3 = rdot(v128.load(xo, 96), q4, z);
  // pair 0: scales 8n+h, 8n+2+h; pair 1: 8n+4+h, 8n+6+h
  const s01 = h == 0 ? i32x4.shuffle(u, u, 0, 0, 2, 2) : i32x4.shuffle(u, u, 1, 1, 3, 3);
  const s23 = h == 0 ? i32x4.shuffle(v, v, 0, 0, 2, 2) : i32x4.shuffle(v, v, 1, 1, 3, 3);
  return i32x4.add(i32x4.dot_i16x8_s(i16x8.narrow_i32x4_s(p0, p1), s01), i32x4.dot_i16x8_s(i16x8.narrow_i32x4_s(p2, p3), s23));
}

/**
 * One Q6_K row's integer super-block sum without its offset term (q6Scales gives that) for engines
 * whose relaxed dots are pmaddubsw sequences, written for V8's revectorizer as q4RowV is: the two
 * 16-byte halves of each 32-value chunk (h = 0, 1 of q6QuarterR) run in chains jA and jB that meet
 * in the final add. Their scales differ (sub-blocks 2k and 2k + 1), so each pair of broadcasts is
 * two loads the revectorizer joins (vinserti128). sv: the row's scale pairs (q6Scales: i32 lane k
 * is sub-block k's scale twice). Each i16 lane holds two products (at most 2 x 63 x 128).
 */
// @ts-ignore: decorator
@inline function q6RowV(p: usize, xs: usize, sv: usize, C: usize): v128 {
  const m0f = v128.load(C, 0), m30 = v128.load(C, 16);
  let jA = i32x4.splat(0), jB = i32x4.splat(0);
  // n = 0: quants at 0, high bits at 128, activations at 0, sub-blocks 0..7
  const qa0 = p + 0, qh0 = p + 128, x0 = xs + 0, s0 = sv + 0;
  const A00 = v128.load(qa0), A01 = v128.load(qa0, 16), B00 = v128.load(qa0, 32), B01 = v128.load(qa0, 48);
  const H00 = v128.load(qh0), H01 = v128.load(qh0, 16);
  jA = i32x4.add(jA, i32x4.dot_i16x8_s(rdot16(v128.load(x0, 0), v128.or(v128.and(A00, m0f), v128.and(i16x8.shl(H00, 4), m30))), v128.load32_splat(s0)));
  jB = i32x4.add(jB, i32x4.dot_i16x8_s(rdot16(v128.load(x0, 16), v128.or(v128.and(A01, m0f), v128.and(i16x8.shl(H01, 4), m30))), v128.load32_splat(s0 + 4)));
  jA = i32x4.add(jA, i32x4.dot_i16x8_s(rdot16(v128.load(x0, 32), v128.or(v128.and(B00, m0f), v128.and(i16x8.shl(H00, 2), m30))), v128.load32_splat(s0 + 8)));
  jB = i32x4.add(jB, i32x4.dot_i16x8_s(rdot16(v128.load(x0, 48), v128.or(v128.and(B01, m0f), v128.and(i16x8.shl(H01, 2), m30))), v128.load32_splat(s0 + 12)));
  jA = i32x4.add(jA, i32x4.dot_i16x8_s(rdot16(v128.load(x0, 64), v128.or(v128.and(i16x8.shr_u(A00, 4), m0f), v128.and(H00, m30))), v128.load32_splat(s0 + 16)));
  jB = i32x4.add(jB, i32x4.dot_i16x8_s(rdot16(v128.load(x0, 80), v128.or(v128.and(i16x8.shr_u(A01, 4), m0f), v128.and(H01, m30))), v128.load32_splat(s0 + 20)));
  jA = i32x4.add(jA, i32x4.dot_i16x8_s(rdot16(v128.load(x0, 96), v128.or(v128.and(i16x8.shr_u(B00, 4), m0f), v128.and(i16x8.shr_u(H00, 2), m30))), v128.load32_splat(s0 + 24)));
  jB = i32x4.add(jB, i32x4.dot_i16x8_s(rdot16(v128.load(x0, 112), v128.or(v128.and(i16x8.shr_u(B01, 4), m0f), v128.and(i16x8.shr_u(H01, 2), m30))), v128.load32_splat(s0 + 28)));
  // n = 1: quants at 64, high bits at 160, activations at 128, sub-blocks 8..15
  const qa1 = p + 64, qh1 = p + 160, x1 = xs + 128, s1 = sv + 32;
  const A10 = v128.load(qa1), A11 = v128.load(qa1, 16), B10 = v128.load(qa1, 32), B11 = v128.load(qa1, 48);
  const H10 = v128.load(qh1), H11 = v128.load(qh1, 16);
  jA = i32x4.add(jA, i32x4.dot_i16x8_s(rdot16(v128.load(x1, 0), v128.or(v128.and(A10, m0f), v128.and(i16x8.shl(H10, 4), m30))), v128.load32_splat(s1)));
  jB = i32x4.add(jB, i32x4.dot_i16x8_s(rdot16(v128.load(x1, 16), v128.or(v128.and(A11, m0f), v128.and(i16x8.shl(H11, 4), m30))), v128.load32_splat(s1 + 4)));
  jA = i32x4.add(jA, i32x4.dot_i16x8_s(rdot16(v128.load(x1, 32), v128.or(v128.and(B10, m0f), v128.and(i16x8.shl(H10, 2), m30))), v128.load32_splat(s1 + 8)));
  jB = i32x4.add(jB, i32x4.dot_i16x8_s(rdot16(v128.load(x1, 48), v128.or(v128.and(B11, m0f), v128.and(i16x8.shl(H11, 2), m30))), v128.load32_splat(s1 + 12)));
  jA = i32x4.add(jA, i32x4.dot_i16x8_s(rdot16(v128.load(x1, 64), v128.or(v128.and(i16x8.shr_u(A10, 4), m0f), v128.and(H10, m30))), v128.load32_splat(s1 + 16)));
  jB = i32x4.add(jB, i32x4.dot_i16x8_s(rdot16(v128.load(x1, 80), v128.or(v128.and(i16x8.shr_u(A11, 4), m0f), v128.and(H11, m30))), v128.load32_splat(s1 + 20)));
  jA = i32x4.add(jA, i32x4.dot_i16x8_s(rdot16(v128.load(x1, 96), v128.or(v128.and(i16x8.shr_u(B10, 4), m0f), v128.and(i16x8.shr_u(H10, 2), m30))), v128.load32_splat(s1 + 24)));
  jB = i32x4.add(jB, i32x4.dot_i16x8_s(rdot16(v128.load(x1, 112), v128.or(v128.and(i16x8.shr_u(B11, 4), m0f), v128.and(i16x8.shr_u(H11, 2), m30))), v128.load32_splat(s1 + 28)));
  return i32x4.add(jA, jB);
}

/** One super-block of four Q6_K rows (may alias) with the raw token's at xs: its f32 term (numerics of dot4Q6K). */
// @ts-ignore: decorator
@inline function sbQ6KR(p0: usize, p1: usize, p2: usize, p3: usize, xs: usize, C: usize, i16: bool): v128 {
  const SV = C + KCONSTS; // the four rows' scale pairs, 64 bytes each
  const b0 = v128.load(xs, 544), b1 = v128.load(xs, 560);
  let i0 = q6Scales(p0, b0, b1, SV), i1 = q6Scales(p1, b0, b1, SV + 64);
  let i2 = q6Scales(p2, b0, b1, SV + 128), i3 = q6Scales(p3, b0, b1, SV + 192);
  if (i16) {
    const isumV = f32x4.convert_i32x4_s(transposeSum(
      i32x4.add(i0, q6RowV(p0, xs, SV, C)), i32x4.add(i1, q6RowV(p1, xs, SV + 64, C)),
      i32x4.add(i2, q6RowV(p2, xs, SV + 128, C)), i32x4.add(i3, q6RowV(p3, xs, SV + 192, C))));
    return f32x4.mul(isumV, f32x4.mul(halves4SafeC(p0, p1, p2, p3, 208, C), v128.load(xs, 512)));
  }
  for (let n: u32 = 0; n < 2; n++) { // n only moves addresses; h (the shuffles) is a literal
    const o: usize = n << 5;
    i0 = i32x4.add(i0, q6QuarterR(p0, xs, n, 0, v128.load(SV + o, 0), v128.load(SV + o, 16), C));
    i1 = i32x4.add(i1, q6QuarterR(p1, xs, n, 0, v128.load(SV + o, 64), v128.load(SV + o, 80), C));
    i2 = i32x4.add(i2, q6QuarterR(p2, xs, n, 0, v128.load(SV + o, 128), v128.load(SV + o, 144), C));
    i3 = i32x4.add(i3, q6QuarterR(p3, xs, n, 0, v128.load(SV + o, 192), v128.load(SV + o, 208), C));
    i0 = i32x4.add(i0, q6QuarterR(p0, xs, n, 1, v128.load(SV + o, 0), v128.load(SV + o, 16), C));
    i1 = i32x4.add(i1, q6QuarterR(p1, xs, n, 1, v128.load(SV + o, 64), v128.load(SV + o, 80), C));
    i2 = i32x4.add(i2, q6QuarterR(p2, xs, n, 1, v128.load(SV + o, 128), v128.load(SV + o, 144), C));
    i3 = i32x4.add(i3, q6QuarterR(p3, xs, n, 1, v128.load(SV + o, 192), v128.load(SV + o, 208), C));
  }
  const isum = f32x4.convert_i32x4_s(transposeSum(i0, i1, i2, i3));
  return f32x4.mul(isum, f32x4.mul(halves4SafeC(p0, p1, p2, p3, 208, C), v128.load(xs, 512)));
}

/**
 * Rows [r0, r1) as eight streams (rows i, i + q, ..., i + 7q of the chunk, q = ceil(n / 8)): two
 * sets of four rows per super-block, each row's float terms added in super-block order. For
 * engines with one-instruction relaxed dots (VNNI, ARM's sdot); decodeRows4I16 for the others.
 */
// @ts-ignore: decorator
@inline function decodeRowsR(t: u32, out: usize, w: usize, xs0: usize, nsb: u32, rb: u32, r0: u32, r1: u32): void {
  const n = r1 - r0;
  const q: u32 = (n + 7) >> 3;
  const lim = w + r1 * rb - 1;
  const qb = q * rb;
  const bb: usize = t == T_Q4_K ? 144 : 210;
  const C = xs0 + nsb * KS;
  let sink: u32 = 0;
  for (let i: u32 = 0; i < q; i++) {
    const ra = r0 + i;
    const pa = w + ra * rb;
    let p0 = pa;
    let p1 = q + i < n ? pa + qb : pa, p2 = q * 2 + i < n ? pa + 2 * qb : pa, p3 = q * 3 + i < n ? pa + 3 * qb : pa;
    let p4 = q * 4 + i < n ? pa + 4 * qb : pa, p5 = q * 5 + i < n ? pa + 5 * qb : pa;
    let p6 = q * 6 + i < n ? pa + 6 * qb : pa, p7 = q * 7 + i < n ? pa + 7 * qb : pa;
    let accA = f32x4.splat(0), accB = f32x4.splat(0);
    let xs = xs0;
    for (let sb: u32 = 0; sb < nsb; sb++) {
      if (t == T_Q4_K) {
        accA = f32x4.add(accA, sbQ4KR(p0, p1, p2, p3, xs, C, false, false));
        accB = f32x4.add(accB, sbQ4KR(p4, p5, p6, p7, xs, C, false, false));
        sink ^= touch3(p0, lim) ^ touch3(p1, lim) ^ touch3(p2, lim) ^ touch3(p3, lim);
        sink ^= touch3(p4, lim) ^ touch3(p5, lim) ^ touch3(p6, lim) ^ touch3(p7, lim);
      } else {
        accA = f32x4.add(accA, sbQ6KR(p0, p1, p2, p3, xs, C, false));
        accB = f32x4.add(accB, sbQ6KR(p4, p5, p6, p7, xs, C, false));
        sink ^= touch4(p0, lim) ^ touch4(p1, lim) ^ touch4(p2, lim) ^ touch4(p3, lim);
        sink ^= touch4(p4, lim) ^ touch4(p5, lim) ^ touch4(p6, lim) ^ touch4(p7, lim);
      }
      p0 += bb; p1 += bb; p2 += bb; p3 += bb; p4 += bb; p5 += bb; p6 += bb; p7 += bb; xs += KS;
    }
    storeEightStreams(out, ra, q, i, n, accA, accB);
  }
  store<u32>(C, sink, 496);
}

/**
 * Rows [r0, r1) as four streams (rows i, i + q, i + 2q, i + 3q, q = ceil(n / 4)) with the i16
 * pair sums (rdot16), no touches: for engines whose relaxed dots are pmaddubsw sequences
 * (relaxed-q8u.ts dotLowering 2). Measured on an AMD EPYC Zen 4 (Node 24.22.3, bench gmac's 7B
 * shapes from DRAM, 2 threads, alternating, best / median of 15), against the eight streams of
 * decodeRowsR with the same i16 sums (then in the folded loop described below): Q4_K 47.8 / 39.9
 * against 40.9 / 35.4 GMAC/s; Q6_K against
 * the SIMD128 kernel (kquant-decode.ts) 31.8 / 24.2 against 21.8 / 20.4, and the eight-stream
 * Q6_K 13.8 / 12.4. Eight streams of four rows need more registers than x64's sixteen (spills);
 * touches cost 1.3-1.5x there.
 */
// @ts-ignore: decorator
@inline function decodeRows4I16(t: u32, out: usize, w: usize, xs0: usize, nsb: u32, rb: u32, r0: u32, r1: u32): void {
  const n = r1 - r0;
  const q: u32 = (n + 3) >> 2;
  const qb = q * rb;
  const bb: usize = t == T_Q4_K ? 144 : t == T_Q5_K ? 176 : 210;
  const C = xs0 + nsb * KS;
  for (let i: u32 = 0; i < q; i++) {
    const ra = r0 + i;
    let p0 = w + ra * rb;
    const v1 = q + i < n, v2 = (q << 1) + i < n, v3 = q * 3 + i < n;
    let p1 = v1 ? p0 + qb : p0, p2 = v2 ? p0 + (qb << 1) : p0, p3 = v3 ? p0 + qb * 3 : p0;
    let acc = f32x4.splat(0);
    let xs = xs0;
    for (let sb: u32 = 0; sb < nsb; sb++) {
      if (t == T_Q6_K) acc = f32x4.add(acc, sbQ6KR(p0, p1, p2, p3, xs, C, true));
      else acc = f32x4.add(acc, sbQ4KR(p0, p1, p2, p3, xs, C, true, t == T_Q5_K));
      p0 += bb; p1 += bb; p2 += bb; p3 += bb; xs += KS;
    }
    storeFourStreams(out, ra, q, acc, v1, v2, v3);
  }
}

// One function per kernel, each with its flags as literals. Two inlined copies of one loop that
// differ only in a literal flag (`if (i16) loop(true) else loop(false)`) are folded back by
// Binaryen into one loop that tests the flag at run time (seen with --print-wasm-code: a `cmp`
// per group), which cost the Q4_K decode 1.1-1.2x in cache.
function decodeQ4KR(out: usize, w: usize, xs: usize, nsb: u32, rb: u32, r0: u32, r1: u32): void { decodeRowsR(T_Q4_K, out, w, xs, nsb, rb, r0, r1); }
function decodeQ6KR(out: usize, w: usize, xs: usize, nsb: u32, rb: u32, r0: u32, r1: u32): void { decodeRowsR(T_Q6_K, out, w, xs, nsb, rb, r0, r1); }
function decodeQ4KI16(out: usize, w: usize, xs: usize, nsb: u32, rb: u32, r0: u32, r1: u32): void { decodeRows4I16(T_Q4_K, out, w, xs, nsb, rb, r0, r1); }
function decodeQ6KI16(out: usize, w: usize, xs: usize, nsb: u32, rb: u32, r0: u32, r1: u32): void { decodeRows4I16(T_Q6_K, out, w, xs, nsb, rb, r0, r1); }
function decodeQ5KI16(out: usize, w: usize, xs: usize, nsb: u32, rb: u32, r0: u32, r1: u32): void { decodeRows4I16(T_Q5_K, out, w, xs, nsb, rb, r0, r1); }

/**
 * Rows [r0, r1) of Q4_K or Q6_K weights (rb bytes per row), or of Q5_K with i16, times the token
 * widened by widenKRaw; false (nothing done) otherwise. i16: the sums as i16 pair sums (rdot16),
 * for engines whose relaxed dots are pmaddubsw sequences (relaxed-q8u.ts dotLowering 2); the same
 * integers, the same bits.
 */
export function decodeRelaxed(t: u32, out: usize, w: usize, xs: usize, nsb: u32, rb: u32, r0: u32, r1: u32, i16: bool): bool {
  if (t == T_Q4_K) {
    if (i16) decodeQ4KI16(out, w, xs, nsb, rb, r0, r1);
    else decodeQ4KR(out, w, xs, nsb, rb, r0, r1);
    return true;
  }
  if (t == T_Q6_K) {
    if (i16) decodeQ6KI16(out, w, xs, nsb, rb, r0, r1);
    else decodeQ6KR(out, w, xs, nsb, rb, r0, r1);
    return true;
  }
  if (t == T_Q5_K && i16) { decodeQ5KI16(out, w, xs, nsb, rb, r0, r1); return true; }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Q4_0 prefill with "lane = row": four rows' levels transposed so that lane r of weight vector g
// holds group g (four values) of row r, against each token's four activations of the group
// broadcast to all lanes. Eight dots give a block's integer sums of four rows for one token; the
// float step (f32(sumi) * f32(dw * dx), block order) is per lane as in the reference. No padding
// of the token count, and the unpacking is shared by four rows.
//
// The activations of a slab of blocks and a chunk of tokens are copied to Q4X bytes per (block,
// token): the 32 int8 as they are, -8 * sum(x) (Q8_0: -128 * sum(x); the dots' starting value: no
// subtraction) and dx as vectors, and each dot takes its group with a load32_splat. V8 lowers a
// load32_splat with an offset to an lea plus a vbroadcastss (15 uops for eight, where eight
// v128.load of pre-broadcast groups are 8), and the kernel once kept 128 bytes of pre-broadcast
// groups per (block, token) for that reason; but 160 bytes per (block, token) do not stay in L1
// (9 tokens x 64 blocks: 92 KB), 64 do (37 KB). Measured 2026-12-02, Node 24, q8-batch-ab (Q8_0
// from DRAM), splats against pre-broadcast groups, best / median of 6: 1 thread x 9 tokens
// 1.09x / 1.10x, 2 x 8 1.15x / 1.07x, 2 x 9 1.06x / 1.05x. The rows accumulate straight into out
// across slabs (a slab keeps the expanded data small); a last group of fewer than four rows uses
// a scratch accumulator.

/** Bytes per (block, token) of the expanded activations: the 32 int8, -8*sum(x) as i32x4 (Q8_0: -128*sum(x)), dx as f32x4. */
const Q4X: u32 = 64;
/** Blocks per slab at most (the expanded data of a slab: Q4X * tokens * blocks bytes); the scratch is the limit: capping it at 24 or 48 (L1-sized) was 0.75-0.95x on the 7B shapes. */
const Q4_SLAB: u32 = 1 << 30;
const Q4_SPACED = true;

/**
 * Rows (four, p1..p3 may alias p0) of Q4_0 (q8 false) or Q8_0 (q8 true, read as w XOR 0x80:
 * relaxed-q8u.ts) times tc tokens over nb blocks: f32x4 accumulators at fa, fs bytes apart.
 */
// @ts-ignore: decorator
@inline function rows4Legacy(q8: bool, x4: bool, p0: usize, p1: usize, p2: usize, p3: usize, nb: u32, xp: usize, tc: u32, fa: usize, fs: usize, C: usize, i16: bool): void {
  const m0f = v128.load(C);
  // 0x80 bytes, from a loaded value: a v128.const would be re-materialized at every use
  const flip = i8x16.shl(m0f, 7);
  const bb: usize = x4 ? 72 : q8 ? 34 : 18;
  for (let b: u32 = 0; b < nb; b++) {
    let r0: v128, r1: v128, r2: v128, r3: v128, dw: v128;
    if (x4) {
      // Q4_0x4 (q4x4.ts): the group's four rows already transposed, their scales first
      r0 = v128.load(p0, 8); r1 = v128.load(p0, 24); r2 = v128.load(p0, 40); r3 = v128.load(p0, 56);
      dw = halves4x4C(p0, C);
    } else {
      const v0 = v128.load(p0, 2), v1 = v128.load(p1, 2), v2 = v128.load(p2, 2), v3 = v128.load(p3, 2);
      dw = halves4C(p0, p1, p2, p3, C);
      // transpose the raw bytes 4x4 as i32 (lane r of t_g: bytes 4g..4g+3 of row r); Q4_0 then splits
      // the nibbles (bytewise, so it commutes with the transpose): lo = values 0..15 (groups 0..3), hi = 16..31
      const t01l = i32x4.shuffle(v0, v1, 0, 4, 1, 5), t01h = i32x4.shuffle(v0, v1, 2, 6, 3, 7);
      const t23l = i32x4.shuffle(v2, v3, 0, 4, 1, 5), t23h = i32x4.shuffle(v2, v3, 2, 6, 3, 7);
      r0 = i64x2.shuffle(t01l, t23l, 0, 2); r1 = i64x2.shuffle(t01l, t23l, 1, 3);
      r2 = i64x2.shuffle(t01h, t23h, 0, 2); r3 = i64x2.shuffle(t01h, t23h, 1, 3);
    }
    let w0: v128, w1: v128, w2: v128, w3: v128, w4: v128, w5: v128, w6: v128, w7: v128;
    if (q8) {
      const c0 = v128.load(p0, 18), c1 = v128.load(p1, 18), c2 = v128.load(p2, 18), c3 = v128.load(p3, 18);
      const u01l = i32x4.shuffle(c0, c1, 0, 4, 1, 5), u01h = i32x4.shuffle(c0, c1, 2, 6, 3, 7);
      const u23l = i32x4.shuffle(c2, c3, 0, 4, 1, 5), u23h = i32x4.shuffle(c2, c3, 2, 6, 3, 7);
      w0 = v128.xor(r0, flip); w1 = v128.xor(r1, flip); w2 = v128.xor(r2, flip); w3 = v128.xor(r3, flip);
      w4 = v128.xor(i64x2.shuffle(u01l, u23l, 0, 2), flip); w5 = v128.xor(i64x2.shuffle(u01l, u23l, 1, 3), flip);
      w6 = v128.xor(i64x2.shuffle(u01h, u23h, 0, 2), flip); w7 = v128.xor(i64x2.shuffle(u01h, u23h, 1, 3), flip);
    } else {
      w0 = v128.and(r0, m0f); w1 = v128.and(r1, m0f); w2 = v128.and(r2, m0f); w3 = v128.and(r3, m0f);
      w4 = v128.and(i16x8.shr_u(r0, 4), m0f); w5 = v128.and(i16x8.shr_u(r1, 4), m0f);
      w6 = v128.and(i16x8.shr_u(r2, 4), m0f); w7 = v128.and(i16x8.shr_u(r3, 4), m0f);
    }
    let f = fa;
    const xEnd = xp + tc * Q4X;
    while (i16 && xp < xEnd) {
      // Q4_0 where relaxed dots are pmaddubsw sequences: the eight dots' i16 pair sums (each at
      // most 2 x 15 x 128, all eight 30720) added as i16, then one dot_i16x8_s with ones (the
      // same integer sums; two chains of four)
      let s = i16x8.add(rdot16(v128.load32_splat(xp, 0), w0), rdot16(v128.load32_splat(xp, 4), w1));
      let u = i16x8.add(rdot16(v128.load32_splat(xp, 16), w4), rdot16(v128.load32_splat(xp, 20), w5));
      s = i16x8.add(s, rdot16(v128.load32_splat(xp, 8), w2));
      u = i16x8.add(u, rdot16(v128.load32_splat(xp, 24), w6));
      s = i16x8.add(s, rdot16(v128.load32_splat(xp, 12), w3));
      u = i16x8.add(u, rdot16(v128.load32_splat(xp, 28), w7));
      const sum = i32x4.add(v128.load(xp, 32), i32x4.dot_i16x8_s(i16x8.add(s, u), v128.load(C, CONSTS)));
      v128.store(f, mulAdd(v128.load(f), f32x4.convert_i32x4_s(sum), f32x4.mul(dw, v128.load(xp, 48)), true));
      xp += Q4X; f += fs;
    }
    while (!i16 && xp < xEnd) {
      // two chains of four dots (one chain of eight: latency-bound, 1.1-1.3x slower)
      let s = rdot(v128.load32_splat(xp, 0), w0, v128.load(xp, 32));
      let u = rdot(v128.load32_splat(xp, 16), w4, i32x4.splat(0));
      s = rdot(v128.load32_splat(xp, 4), w1, s);
      u = rdot(v128.load32_splat(xp, 20), w5, u);
      s = rdot(v128.load32_splat(xp, 8), w2, s);
      u = rdot(v128.load32_splat(xp, 24), w6, u);
      s = rdot(v128.load32_splat(xp, 12), w3, s);
      u = rdot(v128.load32_splat(xp, 28), w7, u);
      // one rounding where relaxed_madd is fused (q8.ts fusedTypes; the one-token kernels of both
      // types round alike: decodeQ4_0Relaxed, q8.ts matmulQ8)
      v128.store(f, mulAdd(v128.load(f), f32x4.convert_i32x4_s(i32x4.add(s, u)), f32x4.mul(dw, v128.load(xp, 48)), true));
      xp += Q4X; f += fs;
    }
    p0 += bb; p1 += bb; p2 += bb; p3 += bb;
  }
}

/** Q4_0 prefill (lane = row; i16 as prefillRelaxed); false (nothing done) if the scratch cannot hold one block of one token. */
export function prefillQ4_0Rows(out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32, reuse: bool, i16: bool): bool {
  return prefillLegacyRows(false, false, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes, reuse, i16);
}

/**
 * Q4_0x4 prefill (rows interleaved by four, q4x4.ts; rows, r0 and r1 multiples of 4): as
 * prefillQ4_0Rows without its transposes, the same bits.
 */
export function prefillQ4_0x4Rows(out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32, reuse: bool, i16: bool): bool {
  return prefillLegacyRows(false, true, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes, reuse, i16);
}

/**
 * Q8_0 several-token matmul with weights read as w XOR 0x80, for engines whose relaxed dots read
 * them as unsigned bytes (the caller, q8.ts matmulQ8, checks: relaxed-q8u.ts dotLowering 0);
 * false if the scratch is too small.
 */
export function prefillQ8_0UnsignedRows(out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32, reuse: bool): bool {
  return prefillLegacyRows(true, false, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes, reuse, false);
}

/** prefillQ4_0Rows and prefillQ8_0UnsignedRows: one body, the weight kind a constant. */
// @ts-ignore: decorator
@inline function prefillLegacyRows(q8: bool, x4: bool, out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32, reuse: bool, i16: bool): bool {
  const nb = cols >> 5;
  const rb = nb * (q8 ? 34 : 18), arb = nb * 34;
  // the dots' start: -8 * sum(x) for Q4_0's levels 0..15, -128 * sum(x) for Q8_0's w + 128
  const shift: u32 = q8 ? 7 : 3;
  // constants (storeConsts', then i16 ones), then the accumulators of a short last group
  const C = scratch, TAIL = scratch + CONSTS + 16;
  const D = TAIL + (64 << 4);
  if (scratchBytes < CONSTS + 16 + (64 << 4) + Q4X) return false;
  const room = scratchBytes - CONSTS - 16 - (64 << 4);
  let chunk: u32 = nTok < 64 ? nTok : 64;
  if (chunk * Q4X > room) chunk = room / Q4X;
  storeConsts(C);
  v128.store(C, i16x8.splat(1), CONSTS);
  const full = r1 - ((r1 - r0) & 3); // rows [r0, full) in groups of four, then a short group
  for (let t0: u32 = 0; t0 < nTok; t0 += chunk) {
    const tc = nTok - t0 < chunk ? nTok - t0 : chunk;
    let slab: u32 = room / (tc * Q4X);
    if (slab > Q4_SLAB) slab = Q4_SLAB;
    if (slab > nb) slab = nb;
    for (let j: u32 = 0; j < tc; j++) {
      const o = out + (((t0 + j) * rows + r0) << 2);
      for (let r = r0; r < full; r += 4) v128.store(o + ((r - r0) << 2), f32x4.splat(0));
      v128.store(TAIL + (j << 4), f32x4.splat(0));
    }
    for (let b0: u32 = 0; b0 < nb; b0 += slab) {
      const sn = nb - b0 < slab ? nb - b0 : slab;
      // expand the slab's activations: (block, token) order, Q4X bytes each. Where one slab and one
      // token chunk hold them all, a chunk that follows one of the same job on this thread finds
      // them there already (matmul's reuse; about 1.5% of an 8-token step on 2 threads, measured
      // at 8 chunks per job)
      let dp = D;
      const kept = reuse && sn == nb && tc == nTok;
      const bEnd: u32 = kept ? b0 : b0 + sn;
      for (let b = b0; b < bEnd; b++) {
        for (let j: u32 = 0; j < tc; j++) {
          const xb = x + (t0 + j) * arb + b * 34;
          const a = v128.load(xb, 2), c = v128.load(xb, 18);
          v128.store(dp, a, 0);
          v128.store(dp, c, 16);
          const s32 = i32x4.extadd_pairwise_i16x8_s(i16x8.add(i16x8.extadd_pairwise_i8x16_s(a), i16x8.extadd_pairwise_i8x16_s(c)));
          const s2 = i32x4.add(s32, i32x4.shuffle(s32, s32, 2, 3, 0, 1));
          v128.store(dp, i32x4.sub(i32x4.splat(0), i32x4.shl(i32x4.add(s2, i32x4.shuffle(s2, s2, 1, 0, 3, 2)), shift)), 32);
          v128.store(dp, f32x4.splat(f16ToF32(load<u16>(xb) as u32)), 48);
          dp += Q4X;
        }
      }
      if (sn == nb && x4) {
        // Q4_0x4, one slab: each group's sums in TAIL (L1, contiguous), stored once at its end
        // (accumulating in out itself touches tc lines rows x 4 bytes apart, which for 2048 or
        // 4096 rows all fall in one L1 set)
        for (let r = r0; r < r1; r += 4) {
          for (let j: u32 = 0; j < tc; j++) v128.store(TAIL + (j << 4), f32x4.splat(0));
          const p0 = w + r * rb;
          if (i16) rows4Legacy(false, true, p0, p0, p0, p0, nb, D, tc, TAIL, 16, C, true);
          else rows4Legacy(false, true, p0, p0, p0, p0, nb, D, tc, TAIL, 16, C, false);
          for (let j: u32 = 0; j < tc; j++) v128.store(out + (((t0 + j) * rows + r) << 2), v128.load(TAIL + (j << 4)));
        }
        continue;
      }
      if (sn == nb && Q4_SPACED && !x4) {
        // one slab: the four rows of a group spaced a quarter of the range apart (four streams
        // far apart read DRAM better than four adjacent rows, as in the decode loops)
        const n = r1 - r0, q = (n + 3) >> 2, qb = q * rb;
        for (let i: u32 = 0; i < q; i++) {
          const p0 = w + (r0 + i) * rb;
          const p1 = q + i < n ? p0 + qb : p0, p2 = q * 2 + i < n ? p0 + 2 * qb : p0, p3 = q * 3 + i < n ? p0 + 3 * qb : p0;
          for (let j: u32 = 0; j < tc; j++) v128.store(TAIL + (j << 4), f32x4.splat(0));
          if (i16) rows4Legacy(q8, false, p0, p1, p2, p3, nb, D, tc, TAIL, 16, C, true);
          else rows4Legacy(q8, false, p0, p1, p2, p3, nb, D, tc, TAIL, 16, C, false);
          for (let j: u32 = 0; j < tc; j++) {
            const v = v128.load(TAIL + (j << 4));
            const o = out + (((t0 + j) * rows + r0 + i) << 2);
            v128.store32_lane(o, v, 0);
            if (q + i < n) v128.store32_lane(o + (q << 2), v, 1);
            if (q * 2 + i < n) v128.store32_lane(o + (q << 3), v, 2);
            if (q * 3 + i < n) v128.store32_lane(o + q * 12, v, 3);
          }
        }
        continue;
      }
      for (let r = r0; r < r1; r += 4) {
        const left = r1 - r;
        // Q4_0x4: group r / 4 starts at r * rb too (four rows of rb bytes each), its blocks 72 bytes
        const p0 = w + r * rb + b0 * (x4 ? 72 : q8 ? 34 : 18);
        const p1 = left > 1 ? p0 + rb : p0, p2 = left > 2 ? p0 + 2 * rb : p0, p3 = left > 3 ? p0 + 3 * rb : p0;
        const fa = left >= 4 ? out + ((t0 * rows + r) << 2) : TAIL, fs: usize = left >= 4 ? ((rows << 2) as usize) : 16;
        if (i16) rows4Legacy(q8, x4, p0, p1, p2, p3, sn, D, tc, fa, fs, C, true);
        else rows4Legacy(q8, x4, p0, p1, p2, p3, sn, D, tc, fa, fs, C, false);
      }
    }
    if (full < r1 && !(slab == nb && Q4_SPACED)) {
      const left = r1 - full;
      for (let j: u32 = 0; j < tc; j++) {
        const v = v128.load(TAIL + (j << 4));
        const o = out + (((t0 + j) * rows + full) << 2);
        v128.store32_lane(o, v, 0);
        if (left > 1) v128.store32_lane(o, v, 1, 4);
        if (left > 2) v128.store32_lane(o, v, 2, 8);
      }
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Q4_0 decode: per block and row two relaxed dots (low nibbles with values 0..15, high with
// 16..31), four rows reduced together (transposeSum), then legacy-decode.ts's float step; eight
// row streams (two sets of four) per chunk.
//
// V8 (TurboFan, x64) re-materializes every v128.const at each use inside a loop (a movq of the
// immediate, vmovq, vpunpcklqdq: 3 uops where the use itself is one), so the hot loops take their
// masks and f16 constants from the scratch (written by the widening, at CONSTS): V8 cannot fold a
// load, keeps the value in a register (or reloads it, one uop). In the Q4_0 loop that was 10 of
// ~85 uops per block of four rows; in the Q4_K group 12 of ~40.

const XS: u32 = 112;
/** Bytes of constants after the widened activations (storeConsts). */
export const CONSTS: u32 = 96;

/**
 * The constants of the decode loops at dst: 0x0f bytes (0), 0x30 bytes (16), f16hiToF32's mask
 * (32) and scale (48), 0x3f bytes (64), 0x03 bytes (80).
 */
// @ts-ignore: decorator
@inline export function storeConsts(dst: usize): void {
  v128.store(dst, i8x16.splat(0x0f), 0);
  v128.store(dst, i8x16.splat(0x30), 16);
  v128.store(dst, i32x4.splat(0x8fffe000), 32);
  v128.store(dst, f32x4.splat(5.192296858534828e33), 48);
  v128.store(dst, i8x16.splat(0x3f), 64);
  v128.store(dst, i8x16.splat(0x03), 80);
}

/** 8 x the sum of a Q8_0 block's 32 int8 (a: the first 16, c: the last 16) in every lane. */
// @ts-ignore: decorator
@inline export function blockSum8(a: v128, c: v128): v128 {
  const s32 = i32x4.extadd_pairwise_i16x8_s(i16x8.add(i16x8.extadd_pairwise_i8x16_s(a), i16x8.extadd_pairwise_i8x16_s(c)));
  const s2 = i32x4.add(s32, i32x4.shuffle(s32, s32, 2, 3, 0, 1));
  return i32x4.shl(i32x4.add(s2, i32x4.shuffle(s2, s2, 1, 0, 3, 2)), 3);
}

/**
 * nb Q8_0 blocks at x -> XS-byte blocks: the 32 int8 as they are, d as f32x4 at 64, slack at 80,
 * 8 * sum(q) as i32x4 at 96; then the CONSTS bytes of constants.
 */
export function widenQ4_0Raw(x: usize, nb: u32, dst: usize): void {
  for (let b: u32 = 0; b < nb; b++) {
    const a = v128.load(x, 2), c = v128.load(x, 18);
    v128.store(dst, a, 0);
    v128.store(dst, c, 16);
    v128.store(dst, f32x4.splat(f16ToF32(load<u16>(x) as u32)), 64);
    v128.store(dst, blockSum8(a, c), 96);
    x += 34; dst += XS;
  }
  storeConsts(dst);
  v128.store(dst, i16x8.splat(1), CONSTS); // decodeQ4_0Relaxed's i16 path (ONES)
}

/** Offset from the constants of decodeQ4_0Relaxed's i16 ones (after storeConsts'; wasm.ts matmulScratchBytes counts them). */
const ONES: u32 = CONSTS;

/**
 * nibDotR's sum from the dots' i16 pair sums (pmaddubsw engines: relaxed-q8u.ts dotLowering 2):
 * both halves' pairs added as i16 (each at most 2 x 15 x 128; the sum fits), then one
 * dot_i16x8_s with ones loaded from memory (a splat constant would be rebuilt at every use).
 * The same integer sum as nibDotR.
 */
// @ts-ignore: decorator
@inline function nibDot16(p: usize, x0: v128, x1: v128, m0f: v128, C: usize): v128 {
  const v = v128.load(p, 2);
  return i32x4.dot_i16x8_s(i16x8.add(rdot16(x0, v128.and(v, m0f)), rdot16(x1, v128.and(i16x8.shr_u(v, 4), m0f))), v128.load(C, ONES));
}

// @ts-ignore: decorator
@inline function nibDotR(p: usize, x0: v128, x1: v128, m0f: v128): v128 {
  const v = v128.load(p, 2);
  return rdot(x1, v128.and(i16x8.shr_u(v, 4), m0f), rdot(x0, v128.and(v, m0f), i32x4.splat(0)));
}

/** Four f16 (u64 hw: the first in its low bits) as f32x4, with f16hiToF32's constants from C (see CONSTS). */
// @ts-ignore: decorator
@inline function halves4u64C(hw: u64, C: usize): v128 {
  const h = i16x8.shuffle(i32x4.splat(0), i64x2.splat(hw), 0, 8, 1, 9, 2, 10, 3, 11);
  return f32x4.mul(v128.and(i32x4.shr_s(h, 3), v128.load(C, 32)), v128.load(C, 48));
}

/** halves4 with f16hiToF32's constants from C (see CONSTS). */
// @ts-ignore: decorator
@inline function halves4C(p0: usize, p1: usize, p2: usize, p3: usize, C: usize): v128 {
  return halves4u64C((load<u16>(p0) as u64) | ((load<u16>(p1) as u64) << 16) |
    ((load<u16>(p2) as u64) << 32) | ((load<u16>(p3) as u64) << 48), C);
}

/** halves4C of the four f16 scales stored together at p (a Q4_0x4 block of four rows). */
// @ts-ignore: decorator
@inline export function halves4x4C(p: usize, C: usize): v128 {
  return halves4u64C(load<u64>(p), C);
}

/** Rows [r0, r1) of Q4_0 weights (rb bytes per row, nb blocks) times the token widened by widenQ4_0Raw: eight streams. */
export function decodeQ4_0Relaxed(out: usize, w: usize, xs0: usize, nb: u32, rb: u32, r0: u32, r1: u32, i16: bool): void {
  if (i16) decodeQ4_0I16(out, w, xs0, nb, rb, r0, r1);
  else decodeQ4_0R(out, w, xs0, nb, rb, r0, r1);
}
// one function per variant (see decodeRelaxed)
function decodeQ4_0I16(out: usize, w: usize, xs0: usize, nb: u32, rb: u32, r0: u32, r1: u32): void { decodeQ4_0Rows(out, w, xs0, nb, rb, r0, r1, true); }
function decodeQ4_0R(out: usize, w: usize, xs0: usize, nb: u32, rb: u32, r0: u32, r1: u32): void { decodeQ4_0Rows(out, w, xs0, nb, rb, r0, r1, false); }

/** decodeQ4_0Relaxed's loop; i16 (a constant after inlining): nibDot16 for nibDotR. */
// @ts-ignore: decorator
@inline function decodeQ4_0Rows(out: usize, w: usize, xs0: usize, nb: u32, rb: u32, r0: u32, r1: u32, i16: bool): void {
  const n = r1 - r0;
  const q: u32 = (n + 7) >> 3;
  const C = xs0 + nb * XS;
  const qb = q * rb;
  for (let i: u32 = 0; i < q; i++) {
    const ra = r0 + i;
    const pa = w + ra * rb;
    let p0 = pa;
    let p1 = q + i < n ? pa + qb : pa, p2 = q * 2 + i < n ? pa + 2 * qb : pa, p3 = q * 3 + i < n ? pa + 3 * qb : pa;
    let p4 = q * 4 + i < n ? pa + 4 * qb : pa, p5 = q * 5 + i < n ? pa + 5 * qb : pa;
    let p6 = q * 6 + i < n ? pa + 6 * qb : pa, p7 = q * 7 + i < n ? pa + 7 * qb : pa;
    let accA = f32x4.splat(0), accB = f32x4.splat(0);
    let xs = xs0;
    const m0f = v128.load(C);
    while (xs < C) {
      const x0 = v128.load(xs, 0), x1 = v128.load(xs, 16);
      const sx = v128.load(xs, 96), dx = v128.load(xs, 64);
      const a = i16
        ? i32x4.sub(transposeSum(nibDot16(p0, x0, x1, m0f, C), nibDot16(p1, x0, x1, m0f, C), nibDot16(p2, x0, x1, m0f, C), nibDot16(p3, x0, x1, m0f, C)), sx)
        : i32x4.sub(transposeSum(nibDotR(p0, x0, x1, m0f), nibDotR(p1, x0, x1, m0f), nibDotR(p2, x0, x1, m0f), nibDotR(p3, x0, x1, m0f)), sx);
      // relaxed_madd as prefillQ4_0Rows (one rounding where it is fused): the same bits for a row in a step of one token or several
      accA = mulAdd(accA, f32x4.convert_i32x4_s(a), f32x4.mul(halves4C(p0, p1, p2, p3, C), dx), true);
      const b = i16
        ? i32x4.sub(transposeSum(nibDot16(p4, x0, x1, m0f, C), nibDot16(p5, x0, x1, m0f, C), nibDot16(p6, x0, x1, m0f, C), nibDot16(p7, x0, x1, m0f, C)), sx)
        : i32x4.sub(transposeSum(nibDotR(p4, x0, x1, m0f), nibDotR(p5, x0, x1, m0f), nibDotR(p6, x0, x1, m0f), nibDotR(p7, x0, x1, m0f)), sx);
      accB = mulAdd(accB, f32x4.convert_i32x4_s(b), f32x4.mul(halves4C(p4, p5, p6, p7, C), dx), true);
      p0 += 18; p1 += 18; p2 += 18; p3 += 18; p4 += 18; p5 += 18; p6 += 18; p7 += 18; xs += XS;
    }
    storeEightStreams(out, ra, q, i, n, accA, accB);
  }
}

// ---------------------------------------------------------------------------------------------
// Q4_K and Q6_K prefill with "lane = row" (as prefillQ4_0Rows): the tokens' activations broadcast
// from their Q8_K blocks; integer sums per (four rows, token) accumulate over the super-block in
// IA[t] (one lane per row), then one float step per super-block in the reference's order. The
// rows' scales and mins are rearranged once per super-block with byte shuffles (no scalar gathers).

// Q4_K "lane = row" with row pairs: a weight vector holds eight levels of each of two rows (an i64
// lane per row), the activation vector the token's matching eight values in both halves (one
// load64_splat). After four dots, lane 2k / 2k+1 of chain A (rows 0, 1) or B (rows 2, 3) holds
// row k's sum over 16 of the sub-block's 32 values (at most 16 x 15 x 128, fits i16), so one
// narrow and one dot_i16x8_s with the rows' scales give the scaled sub-block sums of four rows:
// no i32 multiply and no 4x4 transpose (one 64-bit unpack per weight vector).

/**
 * Four Q4_K rows (may alias), or Q5_K rows with q5 (i16 only), times nTok Q8_K tokens at x: FA[t]
 * (f32x4, lane = row).
 */
// @ts-ignore: decorator
@inline function rows4Q4KPairs(p0: usize, p1: usize, p2: usize, p3: usize, nsb: u32, x: usize, arb: u32, nTok: u32,
  D: usize, FA: usize, IA: usize, i16: bool, q5: bool): void {
  const m0f = i8x16.splat(0x0f), m10 = i8x16.splat(0x10);
  // i16 (pmaddubsw engines): two accumulators per token, [r0 r0 r1 r1] and [r2 r2 r3 r3] (see below)
  const iaEnd = IA + (nTok << (i16 ? 5 : 4));
  for (let b: u32 = 0; b < nsb; b++) {
    for (let ia = IA; ia < iaEnd; ia += 16) v128.store(ia, i32x4.splat(0));
    // [sc0..7, m0..7] of each row, interleaved: u/u2 bytes 4s..4s+3 = sub-block s (u2: s - 4) of rows 0..3
    const S0 = q4kScales(p0 + 4), S1 = q4kScales(p1 + 4), S2 = q4kScales(p2 + 4), S3 = q4kScales(p3 + 4);
    const t01 = i8x16.shuffle(S0, S1, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const t23 = i8x16.shuffle(S2, S3, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const u = i16x8.shuffle(t01, t23, 0, 8, 1, 9, 2, 10, 3, 11), u2 = i16x8.shuffle(t01, t23, 4, 12, 5, 13, 6, 14, 7, 15);
    const xb = x + b * 292 + 4;
    for (let s: u32 = 0; s < 8; s++) {
      const o: usize = (q5 ? 48 : 16) + ((s >> 1) << 5);
      const Q0a = v128.load(p0 + o), Q0b = v128.load(p1 + o), Q1a = v128.load(p0 + o + 16), Q1b = v128.load(p1 + o + 16);
      const Q0c = v128.load(p2 + o), Q0d = v128.load(p3 + o), Q1c = v128.load(p2 + o + 16), Q1d = v128.load(p3 + o + 16);
      let A0 = i64x2.shuffle(Q0a, Q0b, 0, 2), A1 = i64x2.shuffle(Q0a, Q0b, 1, 3);
      let A2 = i64x2.shuffle(Q1a, Q1b, 0, 2), A3 = i64x2.shuffle(Q1a, Q1b, 1, 3);
      let B0 = i64x2.shuffle(Q0c, Q0d, 0, 2), B1 = i64x2.shuffle(Q0c, Q0d, 1, 3);
      let B2 = i64x2.shuffle(Q1c, Q1d, 0, 2), B3 = i64x2.shuffle(Q1c, Q1d, 1, 3);
      if (s & 1) {
        A0 = i16x8.shr_u(A0, 4); A1 = i16x8.shr_u(A1, 4); A2 = i16x8.shr_u(A2, 4); A3 = i16x8.shr_u(A3, 4);
        B0 = i16x8.shr_u(B0, 4); B1 = i16x8.shr_u(B1, 4); B2 = i16x8.shr_u(B2, 4); B3 = i16x8.shr_u(B3, 4);
      }
      A0 = v128.and(A0, m0f); A1 = v128.and(A1, m0f); A2 = v128.and(A2, m0f); A3 = v128.and(A3, m0f);
      B0 = v128.and(B0, m0f); B1 = v128.and(B1, m0f); B2 = v128.and(B2, m0f); B3 = v128.and(B3, m0f);
      if (q5) { // Q5_K: qh bit s of each value as bit 4 (qh[l] for value l of the sub-block, paired as the nibbles)
        const H0a = v128.load(p0, 16), H1a = v128.load(p0, 32), H0b = v128.load(p1, 16), H1b = v128.load(p1, 32);
        const H0c = v128.load(p2, 16), H1c = v128.load(p2, 32), H0d = v128.load(p3, 16), H1d = v128.load(p3, 32);
        A0 = v128.or(A0, q5Bit(i64x2.shuffle(H0a, H0b, 0, 2), s, m10));
        A1 = v128.or(A1, q5Bit(i64x2.shuffle(H0a, H0b, 1, 3), s, m10));
        A2 = v128.or(A2, q5Bit(i64x2.shuffle(H1a, H1b, 0, 2), s, m10));
        A3 = v128.or(A3, q5Bit(i64x2.shuffle(H1a, H1b, 1, 3), s, m10));
        B0 = v128.or(B0, q5Bit(i64x2.shuffle(H0c, H0d, 0, 2), s, m10));
        B1 = v128.or(B1, q5Bit(i64x2.shuffle(H0c, H0d, 1, 3), s, m10));
        B2 = v128.or(B2, q5Bit(i64x2.shuffle(H1c, H1d, 0, 2), s, m10));
        B3 = v128.or(B3, q5Bit(i64x2.shuffle(H1c, H1d, 1, 3), s, m10));
      }
      // the rows' scales of sub-block s as i16 [r0, r0, r1, r1, r2, r2, r3, r3] (index >= 16: zero byte)
      const sel = i8x16.add(i8x16(0, 16, 0, 16, 1, 16, 1, 16, 2, 16, 2, 16, 3, 16, 3, 16), i8x16.splat(((s & 3) << 2) as i8));
      let xq = xb + (s << 5);
      if (i16) {
        // the four dots' i16 pair sums of a chain added (each at most 2 x 15 x 128, all four 15360;
        // Q5_K 2 x 31 x 128 and 31744), then scaled per row pair with one dot_i16x8_s: [s_r0 x4,
        // s_r1 x4] and [s_r2 x4, s_r3 x4]
        const off = i8x16.splat(((s & 3) << 2) as i8);
        const sa = i8x16.swizzle(s < 4 ? u : u2, i8x16.add(i8x16(0, 16, 0, 16, 0, 16, 0, 16, 1, 16, 1, 16, 1, 16, 1, 16), off));
        const sc = i8x16.swizzle(s < 4 ? u : u2, i8x16.add(i8x16(2, 16, 2, 16, 2, 16, 2, 16, 3, 16, 3, 16, 3, 16, 3, 16), off));
        for (let ia = IA; ia < iaEnd; ia += 32) {
          const X0 = v128.load64_splat(xq, 0), X1 = v128.load64_splat(xq, 8);
          const X2 = v128.load64_splat(xq, 16), X3 = v128.load64_splat(xq, 24);
          const a = i16x8.add(i16x8.add(rdot16(X0, A0), rdot16(X1, A1)), i16x8.add(rdot16(X2, A2), rdot16(X3, A3)));
          const c = i16x8.add(i16x8.add(rdot16(X0, B0), rdot16(X1, B1)), i16x8.add(rdot16(X2, B2), rdot16(X3, B3)));
          v128.store(ia, i32x4.add(v128.load(ia), i32x4.dot_i16x8_s(a, sa)));
          v128.store(ia, i32x4.add(v128.load(ia, 16), i32x4.dot_i16x8_s(c, sc)), 16);
          xq += arb;
        }
        continue;
      }
      const scv = i8x16.swizzle(s < 4 ? u : u2, sel);
      for (let ia = IA; ia < iaEnd; ia += 16) {
        const X0 = v128.load64_splat(xq, 0), X1 = v128.load64_splat(xq, 8);
        let a = rdot(X0, A0, i32x4.splat(0));
        let c = rdot(X0, B0, i32x4.splat(0));
        a = rdot(X1, A1, a);
        c = rdot(X1, B1, c);
        const X2 = v128.load64_splat(xq, 16), X3 = v128.load64_splat(xq, 24);
        a = rdot(X2, A2, a);
        c = rdot(X2, B2, c);
        a = rdot(X3, A3, a);
        c = rdot(X3, B3, c);
        v128.store(ia, i32x4.add(v128.load(ia), i32x4.dot_i16x8_s(i16x8.narrow_i32x4_s(a, c), scv)));
        xq += arb;
      }
    }
    // the mins as i16 pairs per row: mv_k lanes [r0 m2k, r0 m2k+1, r1 m2k, ...] (gather4pair's layout)
    const w01 = i16x8.shuffle(S0, S1, 4, 12, 5, 13, 6, 14, 7, 15), w23 = i16x8.shuffle(S2, S3, 4, 12, 5, 13, 6, 14, 7, 15);
    const lo = i32x4.shuffle(w01, w23, 0, 4, 1, 5), hi = i32x4.shuffle(w01, w23, 2, 6, 3, 7);
    const mv0 = i16x8.extend_low_i8x16_u(lo), mv1 = i16x8.extend_high_i8x16_u(lo);
    const mv2 = i16x8.extend_low_i8x16_u(hi), mv3 = i16x8.extend_high_i8x16_u(hi);
    const dx4 = halves4Safe(p0, p1, p2, p3, 0), dm4 = halves4Safe(p0, p1, p2, p3, 2);
    let dp = D + (b << 5);
    for (let j: u32 = 0; j < nTok; j++) {
      const mins = i32x4.add(
        i32x4.add(i32x4.dot_i16x8_s(mv0, v128.load32_splat(dp, 16)), i32x4.dot_i16x8_s(mv1, v128.load32_splat(dp, 20))),
        i32x4.add(i32x4.dot_i16x8_s(mv2, v128.load32_splat(dp, 24)), i32x4.dot_i16x8_s(mv3, v128.load32_splat(dp, 28))));
      const dx = v128.load32_splat(dp);
      let isum = v128.load(IA + (j << 4));
      if (i16) {
        const a = v128.load(IA + (j << 5)), c = v128.load(IA + (j << 5), 16);
        isum = i32x4.add(i32x4.shuffle(a, c, 0, 2, 4, 6), i32x4.shuffle(a, c, 1, 3, 5, 7));
      }
      const tt = f32x4.mul(f32x4.convert_i32x4_s(isum), f32x4.mul(dx4, dx));
      const f = FA + (j << 4);
      v128.store(f, f32x4.add(v128.load(f), f32x4.sub(tt, f32x4.mul(f32x4.convert_i32x4_s(mins), f32x4.mul(dm4, dx)))));
      dp += nsb << 5;
    }
    const bb: usize = q5 ? 176 : 144;
    p0 += bb; p1 += bb; p2 += bb; p3 += bb;
  }
}

/** Bytes 4k..4k+3 of v (scale k of four rows, int8) as four sign-extended i32x4 at dst + 16k. */
// @ts-ignore: decorator
@inline function q6ScalesI32(v: v128, dst: usize): void {
  const lo = i16x8.extend_low_i8x16_s(v), hi = i16x8.extend_high_i8x16_s(v);
  v128.store(dst, i32x4.extend_low_i16x8_s(lo), 0);
  v128.store(dst, i32x4.extend_high_i16x8_s(lo), 16);
  v128.store(dst, i32x4.extend_low_i16x8_s(hi), 32);
  v128.store(dst, i32x4.extend_high_i16x8_s(hi), 48);
}

/**
 * Four Q6_K rows (may alias) times nTok Q8_K tokens at x: FA[t] (f32x4, lane = row). As rows4K,
 * with the transposed levels kept in registers and the rows' scales built once per super-block
 * by byte shuffles (T: 16 i32x4 [r0 s_k, r1 s_k, r2 s_k, r3 s_k]) instead of scalar gathers.
 */
// @ts-ignore: decorator
@inline function rows4Q6K(p0: usize, p1: usize, p2: usize, p3: usize, nsb: u32, x: usize, arb: u32, nTok: u32,
  D: usize, FA: usize, IA: usize, T: usize, i16: bool): void {
  const iaEnd = IA + (nTok << 4);
  for (let b: u32 = 0; b < nsb; b++) {
    for (let ia = IA; ia < iaEnd; ia += 16) v128.store(ia, i32x4.splat(0));
    const S0 = v128.load(p0, 192), S1 = v128.load(p1, 192), S2 = v128.load(p2, 192), S3 = v128.load(p3, 192);
    {
      // bytes 4k..4k+3 of u (scales 0..3), u1 (4..7), u2 (8..11), u3 (12..15): scale k of rows 0..3
      const l01 = i8x16.shuffle(S0, S1, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
      const l23 = i8x16.shuffle(S2, S3, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
      const h01 = i8x16.shuffle(S0, S1, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
      const h23 = i8x16.shuffle(S2, S3, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
      q6ScalesI32(i16x8.shuffle(l01, l23, 0, 8, 1, 9, 2, 10, 3, 11), T);
      q6ScalesI32(i16x8.shuffle(l01, l23, 4, 12, 5, 13, 6, 14, 7, 15), T + 64);
      q6ScalesI32(i16x8.shuffle(h01, h23, 0, 8, 1, 9, 2, 10, 3, 11), T + 128);
      q6ScalesI32(i16x8.shuffle(h01, h23, 4, 12, 5, 13, 6, 14, 7, 15), T + 192);
    }
    const xb = x + b * 292 + 4;
    for (let c: u32 = 0; c < 8; c++) {
      const a0 = q6Levels(p0, c, 0), a1 = q6Levels(p1, c, 0), a2 = q6Levels(p2, c, 0), a3 = q6Levels(p3, c, 0);
      const l01 = i32x4.shuffle(a0, a1, 0, 4, 1, 5), h01 = i32x4.shuffle(a0, a1, 2, 6, 3, 7);
      const l23 = i32x4.shuffle(a2, a3, 0, 4, 1, 5), h23 = i32x4.shuffle(a2, a3, 2, 6, 3, 7);
      const w0 = i64x2.shuffle(l01, l23, 0, 2), w1 = i64x2.shuffle(l01, l23, 1, 3);
      const w2 = i64x2.shuffle(h01, h23, 0, 2), w3 = i64x2.shuffle(h01, h23, 1, 3);
      const c0 = q6Levels(p0, c, 16), c1 = q6Levels(p1, c, 16), c2 = q6Levels(p2, c, 16), c3 = q6Levels(p3, c, 16);
      const m01 = i32x4.shuffle(c0, c1, 0, 4, 1, 5), n01 = i32x4.shuffle(c0, c1, 2, 6, 3, 7);
      const m23 = i32x4.shuffle(c2, c3, 0, 4, 1, 5), n23 = i32x4.shuffle(c2, c3, 2, 6, 3, 7);
      const w4 = i64x2.shuffle(m01, m23, 0, 2), w5 = i64x2.shuffle(m01, m23, 1, 3);
      const w6 = i64x2.shuffle(n01, n23, 0, 2), w7 = i64x2.shuffle(n01, n23, 1, 3);
      const sa = v128.load(T + (c << 5)), sb = v128.load(T + (c << 5), 16);
      let xq = xb + (c << 5);
      if (i16) {
        // pmaddubsw engines: two dots' i16 pair sums added (each at most 2 x 63 x 128, both
        // 32256), scaled with one dot_i16x8_s by the rows' scales as i16 pairs; the same integers
        const sa16 = i16x8.shuffle(sa, sa, 0, 0, 2, 2, 4, 4, 6, 6), sb16 = i16x8.shuffle(sb, sb, 0, 0, 2, 2, 4, 4, 6, 6);
        for (let ia = IA; ia < iaEnd; ia += 16) {
          const s01 = i16x8.add(rdot16(v128.load32_splat(xq, 0), w0), rdot16(v128.load32_splat(xq, 4), w1));
          const u01 = i16x8.add(rdot16(v128.load32_splat(xq, 16), w4), rdot16(v128.load32_splat(xq, 20), w5));
          const s23 = i16x8.add(rdot16(v128.load32_splat(xq, 8), w2), rdot16(v128.load32_splat(xq, 12), w3));
          const u23 = i16x8.add(rdot16(v128.load32_splat(xq, 24), w6), rdot16(v128.load32_splat(xq, 28), w7));
          const sum = i32x4.add(
            i32x4.add(i32x4.dot_i16x8_s(s01, sa16), i32x4.dot_i16x8_s(s23, sa16)),
            i32x4.add(i32x4.dot_i16x8_s(u01, sb16), i32x4.dot_i16x8_s(u23, sb16)));
          v128.store(ia, i32x4.add(v128.load(ia), sum));
          xq += arb;
        }
        continue;
      }
      for (let ia = IA; ia < iaEnd; ia += 16) {
        let s = rdot(v128.load32_splat(xq, 0), w0, i32x4.splat(0));
        let u = rdot(v128.load32_splat(xq, 16), w4, i32x4.splat(0));
        s = rdot(v128.load32_splat(xq, 4), w1, s);
        u = rdot(v128.load32_splat(xq, 20), w5, u);
        s = rdot(v128.load32_splat(xq, 8), w2, s);
        u = rdot(v128.load32_splat(xq, 24), w6, u);
        s = rdot(v128.load32_splat(xq, 12), w3, s);
        u = rdot(v128.load32_splat(xq, 28), w7, u);
        v128.store(ia, i32x4.add(v128.load(ia), i32x4.add(i32x4.mul(s, sa), i32x4.mul(u, sb))));
        xq += arb;
      }
    }
    // the scales as i16 pairs per row for the -32 term: k-th vector [r0 s2k, r0 s2k+1, r1 s2k, ...]
    const e01 = i16x8.shuffle(S0, S1, 0, 8, 1, 9, 2, 10, 3, 11), e23 = i16x8.shuffle(S2, S3, 0, 8, 1, 9, 2, 10, 3, 11);
    const f01 = i16x8.shuffle(S0, S1, 4, 12, 5, 13, 6, 14, 7, 15), f23 = i16x8.shuffle(S2, S3, 4, 12, 5, 13, 6, 14, 7, 15);
    const g0 = i32x4.shuffle(e01, e23, 0, 4, 1, 5), g1 = i32x4.shuffle(e01, e23, 2, 6, 3, 7);
    const g2 = i32x4.shuffle(f01, f23, 0, 4, 1, 5), g3 = i32x4.shuffle(f01, f23, 2, 6, 3, 7);
    const k0 = i16x8.extend_low_i8x16_s(g0), k1 = i16x8.extend_high_i8x16_s(g0), k2 = i16x8.extend_low_i8x16_s(g1), k3 = i16x8.extend_high_i8x16_s(g1);
    const k4 = i16x8.extend_low_i8x16_s(g2), k5 = i16x8.extend_high_i8x16_s(g2), k6 = i16x8.extend_low_i8x16_s(g3), k7 = i16x8.extend_high_i8x16_s(g3);
    const dx4 = halves4Safe(p0, p1, p2, p3, 208);
    let dp = D + b * 48;
    for (let j: u32 = 0; j < nTok; j++) {
      let bs = i32x4.add(i32x4.dot_i16x8_s(k0, v128.load32_splat(dp, 16)), i32x4.dot_i16x8_s(k1, v128.load32_splat(dp, 20)));
      bs = i32x4.add(bs, i32x4.add(i32x4.dot_i16x8_s(k2, v128.load32_splat(dp, 24)), i32x4.dot_i16x8_s(k3, v128.load32_splat(dp, 28))));
      bs = i32x4.add(bs, i32x4.add(i32x4.dot_i16x8_s(k4, v128.load32_splat(dp, 32)), i32x4.dot_i16x8_s(k5, v128.load32_splat(dp, 36))));
      bs = i32x4.add(bs, i32x4.add(i32x4.dot_i16x8_s(k6, v128.load32_splat(dp, 40)), i32x4.dot_i16x8_s(k7, v128.load32_splat(dp, 44))));
      const isum = i32x4.sub(v128.load(IA + (j << 4)), i32x4.shl(bs, 5));
      const f = FA + (j << 4);
      v128.store(f, f32x4.add(v128.load(f), f32x4.mul(f32x4.convert_i32x4_s(isum), f32x4.mul(dx4, v128.load32_splat(dp)))));
      dp += nsb * 48;
    }
    p0 += 210; p1 += 210; p2 += 210; p3 += 210;
  }
}

/** Levels (0..63) of values 32c + h .. 32c + h + 15 (h = 0 or 16) of the Q6_K block at p. */
// @ts-ignore: decorator
@inline function q6Levels(p: usize, c: u32, h: u32): v128 {
  const n = c >> 2, j = c & 3;
  const A = v128.load(p + (n << 6) + ((j & 1) << 5) + h), H = v128.load(p + 128 + (n << 5) + h);
  const m0f = i8x16.splat(0x0f), m30 = i8x16.splat(0x30);
  const lo = j < 2 ? v128.and(A, m0f) : v128.and(i16x8.shr_u(A, 4), m0f);
  let hb: v128;
  if (j == 0) hb = i16x8.shl(H, 4);
  else if (j == 1) hb = i16x8.shl(H, 2);
  else if (j == 2) hb = H;
  else hb = i16x8.shr_u(H, 2);
  return v128.or(lo, v128.and(hb, m30));
}

/** Q4_K / Q6_K prefill (lane = row); false (nothing done) if the per-token data do not fit. */
// @ts-ignore: decorator
@inline function prefillKRows(t: u32, out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32, i16: bool): bool {
  const nsb = cols >> 8;
  const rb = nsb * (t == T_Q4_K ? 144 : t == T_Q5_K ? 176 : 210), arb = nsb * 292;
  const DB: u32 = t == T_Q6_K ? 48 : 32; // per token and super-block: dx, then the sums as i16 pairs at 16
  // i16 (relaxed dots are pmaddubsw sequences): i16 pair sums (Q4_K, Q5_K: two integer accumulators per token)
  const per: u32 = nsb * DB + 48;
  if (scratchBytes < per + 256) return false;
  let chunk: u32 = (scratchBytes - 256) / per;
  if (chunk > 64) chunk = 64;
  for (let t0: u32 = 0; t0 < nTok; t0 += chunk) {
    const tc = nTok - t0 < chunk ? nTok - t0 : chunk;
    const D = scratch, FA = D + tc * nsb * DB, IA = FA + (tc << 4), T = IA + (tc << 5);
    for (let j: u32 = 0; j < tc; j++) {
      for (let b: u32 = 0; b < nsb; b++) {
        const xb = x + (t0 + j) * arb + b * 292;
        const dp = D + (j * nsb + b) * DB;
        store<f32>(dp, load<f32>(xb));
        if (t != T_Q6_K) {
          for (let s: u32 = 0; s < 8; s++) store<i16>(dp + 16 + (s << 1), ((load<i16>(xb + 260 + (s << 2)) as i32) + (load<i16>(xb + 262 + (s << 2)) as i32)) as i16);
        } else {
          v128.store(dp, v128.load(xb, 260), 16);
          v128.store(dp, v128.load(xb, 276), 32);
        }
      }
    }
    // the four rows of a group spaced a quarter of the range apart (as prefillQ4_0Rows)
    const n = r1 - r0, q = (n + 3) >> 2, qb = q * rb;
    for (let i: u32 = 0; i < q; i++) {
      const p0 = w + (r0 + i) * rb;
      const p1 = q + i < n ? p0 + qb : p0, p2 = q * 2 + i < n ? p0 + 2 * qb : p0, p3 = q * 3 + i < n ? p0 + 3 * qb : p0;
      for (let j: u32 = 0; j < tc; j++) v128.store(FA + (j << 4), f32x4.splat(0));
      if (t == T_Q5_K) rows4Q4KPairs(p0, p1, p2, p3, nsb, x + t0 * arb, arb, tc, D, FA, IA, true, true);
      else if (t == T_Q4_K && i16) rows4Q4KPairs(p0, p1, p2, p3, nsb, x + t0 * arb, arb, tc, D, FA, IA, true, false);
      else if (t == T_Q4_K) rows4Q4KPairs(p0, p1, p2, p3, nsb, x + t0 * arb, arb, tc, D, FA, IA, false, false);
      else if (i16) rows4Q6K(p0, p1, p2, p3, nsb, x + t0 * arb, arb, tc, D, FA, IA, T, true);
      else rows4Q6K(p0, p1, p2, p3, nsb, x + t0 * arb, arb, tc, D, FA, IA, T, false);
      for (let j: u32 = 0; j < tc; j++) {
        const v = v128.load(FA + (j << 4));
        const o = out + (((t0 + j) * rows + r0 + i) << 2);
        v128.store32_lane(o, v, 0);
        if (q + i < n) v128.store32_lane(o + (q << 2), v, 1);
        if (q * 2 + i < n) v128.store32_lane(o + (q << 3), v, 2);
        if (q * 3 + i < n) v128.store32_lane(o + q * 12, v, 3);
      }
    }
  }
  return true;
}
