// Q8_0 x Q8_0 with relaxed dot products for several tokens (prefill and batched decode), compiled
// only into kernels-relaxed.wasm (q8.ts calls it under `if (ASC_FEATURE_RELAXED_SIMD)`). The tile
// functions below are written out group by group (immediate offsets everywhere).
//
// i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, c) is exact on every engine only when b is in 0..127
// (x86 with AVX-VNNI: one vpdpbusd, b the unsigned operand; without: pmaddubsw + pmaddwd; ARM:
// sdot). Q8_0 weights are signed, so the sign goes to the other operand (llama.cpp's AVX2 code
// does the same with _mm256_sign_epi8): b = |w| and a = x with w's sign applied. Applying it as
// a = x XOR m (m = -1 where w < 0, else 0) is one instruction and gives ~x = -x - 1 where w < 0;
// the missing +|w| per such value is the same for every token:
//     sum x*w = sum (x ^ m) * |w|  -  sum m * |w|,
// so D = sum m * |w| (relaxed dots of the masks with the levels) is computed once per row and
// block, and every token's integer sum starts from -D. Any int8 x is fine (x ^ m is an int8).
// A weight of -128 has |w| = 128, outside 0..127: such a block (never written by llama.cpp's or
// this engine's quantizer, but any byte is a valid file) splits |w| = min(|w|, 127) + e, e in
// {0, 1}, and adds the dots with e on a slow path; the flag is tested once per block and tile.
//
// Layout "lane = row" (as relaxed.ts's prefillQ4_0Rows): four rows' values are transposed so that
// lane r of vector g holds values 4g..4g+3 of row r; a token's values 4g..4g+3 are repacked once
// per chunk into a vector that holds them in all four lanes (a plain load in the inner loop: V8
// computes the address of every load32_splat with an extra lea). Each 4-row group is prepared
// once per chunk (levels, masks, -D, the rows' scales: PREP bytes per block, in the scratch), then
// tokens go eight (or four, or one) at a time. The float step is the reference's:
// acc += f32(sumi) * f32(dw * dx) per block, in block order, per lane; so the results are
// bit-identical with the reference and with the SIMD128 build.
//
// Scheduling: TurboFan keeps memory accesses in program order but sinks arithmetic to its uses,
// so without help it computes each token's eight dots in a row and keeps all 16 level and mask
// vectors of a block live (spilled). One store per token and group into a slack slot (SLACK)
// pins the dots of a group before the next group's loads: two weight vectors live at a time.
import { f16ToF32, halves4, storeGroupBroadcasts } from "./common";

const BLOCK: u32 = 34;
/** Per block of a prepared 4-row group: 8 x (levels, masks), then -D, the rows' dw, the -128 flag, slack. */
const PREP: u32 = 320;
/** Per block of a prepared group, the slow path's e vectors (only written for flagged blocks). */
const PREP_E: u32 = 128;
/** Bytes per (block, token) of repacked activations: 8 groups of 4 values, each in all four lanes. */
const XB: u32 = 128;

// @ts-ignore: decorator
@inline function rdot(x: v128, w: v128, acc: v128): v128 {
  return i32x4.relaxed_dot_i8x16_i7x16_add_s(x, w, acc);
}

/** Levels |w| at q, masks (w < 0) at q + 16 of the transposed weights wv; returns d plus their dot. */
// @ts-ignore: decorator
@inline function prepGroup(wv: v128, q: usize, d: v128): v128 {
  const lv = i8x16.abs(wv);
  const m = i8x16.lt_s(wv, i32x4.splat(0));
  v128.store(q, lv);
  v128.store(q, m, 16);
  return rdot(m, lv, d);
}

/**
 * Prepares nb blocks of rows p0..p3 (may alias) at P (PREP bytes per block): per group g the
 * levels |w| at 32g and the sign masks at 32g + 16, -D at 256, the rows' f32 scales at 272, a
 * nonzero u32 at 288 if the block holds a -128 (its levels are then min(|w|, 127) and its e
 * vectors at E + b * PREP_E).
 */
// @ts-ignore: decorator
@inline function prepareRows(p0: usize, p1: usize, p2: usize, p3: usize, nb: u32, P: usize, E: usize): void {
  for (let b: u32 = 0; b < nb; b++) {
    let d = i32x4.splat(0);
    const a0 = v128.load(p0, 2), a1 = v128.load(p1, 2), a2 = v128.load(p2, 2), a3 = v128.load(p3, 2);
    const c0 = v128.load(p0, 18), c1 = v128.load(p1, 18), c2 = v128.load(p2, 18), c3 = v128.load(p3, 18);
    // a -128 anywhere: the byte-wise minimum of the block's 128 weights is -128
    const mn = i8x16.min_s(i8x16.min_s(i8x16.min_s(a0, a1), i8x16.min_s(a2, a3)), i8x16.min_s(i8x16.min_s(c0, c1), i8x16.min_s(c2, c3)));
    const flag = i8x16.bitmask(i8x16.eq(mn, i8x16.splat(-128)));
    {
      const l01 = i32x4.shuffle(a0, a1, 0, 4, 1, 5), h01 = i32x4.shuffle(a0, a1, 2, 6, 3, 7);
      const l23 = i32x4.shuffle(a2, a3, 0, 4, 1, 5), h23 = i32x4.shuffle(a2, a3, 2, 6, 3, 7);
      d = prepGroup(i64x2.shuffle(l01, l23, 0, 2), P, d);
      d = prepGroup(i64x2.shuffle(l01, l23, 1, 3), P + 32, d);
      d = prepGroup(i64x2.shuffle(h01, h23, 0, 2), P + 64, d);
      d = prepGroup(i64x2.shuffle(h01, h23, 1, 3), P + 96, d);
    }
    {
      const l01 = i32x4.shuffle(c0, c1, 0, 4, 1, 5), h01 = i32x4.shuffle(c0, c1, 2, 6, 3, 7);
      const l23 = i32x4.shuffle(c2, c3, 0, 4, 1, 5), h23 = i32x4.shuffle(c2, c3, 2, 6, 3, 7);
      d = prepGroup(i64x2.shuffle(l01, l23, 0, 2), P + 128, d);
      d = prepGroup(i64x2.shuffle(l01, l23, 1, 3), P + 160, d);
      d = prepGroup(i64x2.shuffle(h01, h23, 0, 2), P + 192, d);
      d = prepGroup(i64x2.shuffle(h01, h23, 1, 3), P + 224, d);
    }
    if (flag != 0) d = prepareE(P, E);
    v128.store(P, i32x4.sub(i32x4.splat(0), d), 256);
    v128.store(P, halves4(p0, p1, p2, p3, 0), 272);
    store<u32>(P, flag, 288);
    p0 += BLOCK; p1 += BLOCK; p2 += BLOCK; p3 += BLOCK; P += PREP; E += PREP_E;
  }
}

/**
 * The slow path of a block with a -128 (level 128, 0x80, at P): the level becomes 127 and e = 1
 * there (at E); returns D = the masks' dots with both.
 */
function prepareE(P: usize, E: usize): v128 {
  const max7 = i8x16.splat(127), one = i8x16.splat(1);
  let d = i32x4.splat(0);
  for (let g: u32 = 0; g < 8; g++) {
    const q = P + (g << 5);
    const a = v128.load(q), m = v128.load(q, 16);
    const lv = i8x16.min_u(a, max7);
    const e = v128.and(i8x16.ne(a, lv), one);
    v128.store(q, lv);
    v128.store(E + (g << 4), e);
    d = rdot(m, e, rdot(m, lv, d));
  }
  return d;
}

/** Adds the e dots of a flagged block (P, E) for the repacked token values at xq to a. */
function slowToken(P: usize, E: usize, xq: usize, a: v128): v128 {
  for (let g: u32 = 0; g < 8; g++) {
    a = rdot(v128.xor(v128.load(xq + (g << 4)), v128.load(P + (g << 5), 16)), v128.load(E + (g << 4)), a);
  }
  return a;
}

/**
 * Loads one byte of the block at nx of four rows nrb bytes apart and stores their or into the
 * slack slot of P: while the tiles compute, the next 4-row group's weights come into the cache,
 * so that preparing it does not wait on memory with nothing to compute (measured: with a
 * separate preparation pass and no touch, 8 tokens over the 1.1B shapes from DRAM ran at 0.6x
 * the speed in cache).
 */
// @ts-ignore: decorator
@inline function touch(nx: usize, nrb: usize, P: usize): void {
  store<u32>(P, (load<u8>(nx) as u32) | (load<u8>(nx + nrb) as u32) | (load<u8>(nx + 2 * nrb) as u32) | (load<u8>(nx + 3 * nrb) as u32), 316);
}

/** acc + f32(sumi) * f32(dw * dx): the reference's float step of one block, four rows. */
// @ts-ignore: decorator
@inline function fstep(f: v128, sumi: v128, dw: v128, dx: v128): v128 {
  return f32x4.add(f, f32x4.mul(f32x4.convert_i32x4_s(sumi), f32x4.mul(dw, dx)));
}

/**
 * 8 tokens of the repacked chunk (token j's block at xp + 128j, its scale in four
 * lanes at sp + 16j; the next block xstride and sstride bytes on) times the prepared group
 * (P, E; nb blocks): f32x4 per token (lane = row) added to FA + 16j. Meanwhile it touches the
 * same block of the next four rows (nx, nrb bytes apart: see touch).
 */
// @ts-ignore: decorator
@inline function tile8(P: usize, E: usize, nb: u32, xp: usize, sp: usize, xstride: usize, sstride: usize, FA: usize, nx: usize, nrb: usize): void {
  for (let b: u32 = 0; b < nb; b++) {
    const nd = v128.load(P, 256);
    let a0 = nd, a1 = nd, a2 = nd, a3 = nd, a4 = nd, a5 = nd, a6 = nd, a7 = nd;
    { const lv = v128.load(P, 0), m = v128.load(P, 16);
      a0 = rdot(v128.xor(v128.load(xp, 0), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 128), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 256), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 384), m), lv, a3);
      a4 = rdot(v128.xor(v128.load(xp, 512), m), lv, a4);
      a5 = rdot(v128.xor(v128.load(xp, 640), m), lv, a5);
      a6 = rdot(v128.xor(v128.load(xp, 768), m), lv, a6);
      a7 = rdot(v128.xor(v128.load(xp, 896), m), lv, a7);
      v128.store(P, a0, 304); v128.store(P, a1, 304); v128.store(P, a2, 304); v128.store(P, a3, 304); v128.store(P, a4, 304); v128.store(P, a5, 304); v128.store(P, a6, 304); v128.store(P, a7, 304);
    }
    { const lv = v128.load(P, 32), m = v128.load(P, 48);
      a0 = rdot(v128.xor(v128.load(xp, 16), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 144), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 272), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 400), m), lv, a3);
      a4 = rdot(v128.xor(v128.load(xp, 528), m), lv, a4);
      a5 = rdot(v128.xor(v128.load(xp, 656), m), lv, a5);
      a6 = rdot(v128.xor(v128.load(xp, 784), m), lv, a6);
      a7 = rdot(v128.xor(v128.load(xp, 912), m), lv, a7);
      v128.store(P, a0, 304); v128.store(P, a1, 304); v128.store(P, a2, 304); v128.store(P, a3, 304); v128.store(P, a4, 304); v128.store(P, a5, 304); v128.store(P, a6, 304); v128.store(P, a7, 304);
    }
    { const lv = v128.load(P, 64), m = v128.load(P, 80);
      a0 = rdot(v128.xor(v128.load(xp, 32), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 160), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 288), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 416), m), lv, a3);
      a4 = rdot(v128.xor(v128.load(xp, 544), m), lv, a4);
      a5 = rdot(v128.xor(v128.load(xp, 672), m), lv, a5);
      a6 = rdot(v128.xor(v128.load(xp, 800), m), lv, a6);
      a7 = rdot(v128.xor(v128.load(xp, 928), m), lv, a7);
      v128.store(P, a0, 304); v128.store(P, a1, 304); v128.store(P, a2, 304); v128.store(P, a3, 304); v128.store(P, a4, 304); v128.store(P, a5, 304); v128.store(P, a6, 304); v128.store(P, a7, 304);
    }
    { const lv = v128.load(P, 96), m = v128.load(P, 112);
      a0 = rdot(v128.xor(v128.load(xp, 48), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 176), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 304), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 432), m), lv, a3);
      a4 = rdot(v128.xor(v128.load(xp, 560), m), lv, a4);
      a5 = rdot(v128.xor(v128.load(xp, 688), m), lv, a5);
      a6 = rdot(v128.xor(v128.load(xp, 816), m), lv, a6);
      a7 = rdot(v128.xor(v128.load(xp, 944), m), lv, a7);
      v128.store(P, a0, 304); v128.store(P, a1, 304); v128.store(P, a2, 304); v128.store(P, a3, 304); v128.store(P, a4, 304); v128.store(P, a5, 304); v128.store(P, a6, 304); v128.store(P, a7, 304);
    }
    { const lv = v128.load(P, 128), m = v128.load(P, 144);
      a0 = rdot(v128.xor(v128.load(xp, 64), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 192), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 320), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 448), m), lv, a3);
      a4 = rdot(v128.xor(v128.load(xp, 576), m), lv, a4);
      a5 = rdot(v128.xor(v128.load(xp, 704), m), lv, a5);
      a6 = rdot(v128.xor(v128.load(xp, 832), m), lv, a6);
      a7 = rdot(v128.xor(v128.load(xp, 960), m), lv, a7);
      v128.store(P, a0, 304); v128.store(P, a1, 304); v128.store(P, a2, 304); v128.store(P, a3, 304); v128.store(P, a4, 304); v128.store(P, a5, 304); v128.store(P, a6, 304); v128.store(P, a7, 304);
    }
    { const lv = v128.load(P, 160), m = v128.load(P, 176);
      a0 = rdot(v128.xor(v128.load(xp, 80), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 208), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 336), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 464), m), lv, a3);
      a4 = rdot(v128.xor(v128.load(xp, 592), m), lv, a4);
      a5 = rdot(v128.xor(v128.load(xp, 720), m), lv, a5);
      a6 = rdot(v128.xor(v128.load(xp, 848), m), lv, a6);
      a7 = rdot(v128.xor(v128.load(xp, 976), m), lv, a7);
      v128.store(P, a0, 304); v128.store(P, a1, 304); v128.store(P, a2, 304); v128.store(P, a3, 304); v128.store(P, a4, 304); v128.store(P, a5, 304); v128.store(P, a6, 304); v128.store(P, a7, 304);
    }
    { const lv = v128.load(P, 192), m = v128.load(P, 208);
      a0 = rdot(v128.xor(v128.load(xp, 96), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 224), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 352), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 480), m), lv, a3);
      a4 = rdot(v128.xor(v128.load(xp, 608), m), lv, a4);
      a5 = rdot(v128.xor(v128.load(xp, 736), m), lv, a5);
      a6 = rdot(v128.xor(v128.load(xp, 864), m), lv, a6);
      a7 = rdot(v128.xor(v128.load(xp, 992), m), lv, a7);
      v128.store(P, a0, 304); v128.store(P, a1, 304); v128.store(P, a2, 304); v128.store(P, a3, 304); v128.store(P, a4, 304); v128.store(P, a5, 304); v128.store(P, a6, 304); v128.store(P, a7, 304);
    }
    { const lv = v128.load(P, 224), m = v128.load(P, 240);
      a0 = rdot(v128.xor(v128.load(xp, 112), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 240), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 368), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 496), m), lv, a3);
      a4 = rdot(v128.xor(v128.load(xp, 624), m), lv, a4);
      a5 = rdot(v128.xor(v128.load(xp, 752), m), lv, a5);
      a6 = rdot(v128.xor(v128.load(xp, 880), m), lv, a6);
      a7 = rdot(v128.xor(v128.load(xp, 1008), m), lv, a7);
    }
    if (load<u32>(P, 288) != 0) {
      a0 = slowToken(P, E, xp + 0, a0);
      a1 = slowToken(P, E, xp + 128, a1);
      a2 = slowToken(P, E, xp + 256, a2);
      a3 = slowToken(P, E, xp + 384, a3);
      a4 = slowToken(P, E, xp + 512, a4);
      a5 = slowToken(P, E, xp + 640, a5);
      a6 = slowToken(P, E, xp + 768, a6);
      a7 = slowToken(P, E, xp + 896, a7);
    }
    const dw = v128.load(P, 272);
    v128.store(FA, fstep(v128.load(FA, 0), a0, dw, v128.load(sp, 0)), 0);
    v128.store(FA, fstep(v128.load(FA, 16), a1, dw, v128.load(sp, 16)), 16);
    v128.store(FA, fstep(v128.load(FA, 32), a2, dw, v128.load(sp, 32)), 32);
    v128.store(FA, fstep(v128.load(FA, 48), a3, dw, v128.load(sp, 48)), 48);
    v128.store(FA, fstep(v128.load(FA, 64), a4, dw, v128.load(sp, 64)), 64);
    v128.store(FA, fstep(v128.load(FA, 80), a5, dw, v128.load(sp, 80)), 80);
    v128.store(FA, fstep(v128.load(FA, 96), a6, dw, v128.load(sp, 96)), 96);
    v128.store(FA, fstep(v128.load(FA, 112), a7, dw, v128.load(sp, 112)), 112);
    touch(nx, nrb, P);
    xp += xstride; sp += sstride; P += PREP; E += PREP_E; nx += BLOCK;
  }
}

/**
 * 4 tokens of the repacked chunk (token j's block at xp + 128j, its scale in four
 * lanes at sp + 16j; the next block xstride and sstride bytes on) times the prepared group
 * (P, E; nb blocks): f32x4 per token (lane = row) added to FA + 16j. Meanwhile it touches the
 * same block of the next four rows (nx, nrb bytes apart: see touch).
 */
// @ts-ignore: decorator
@inline function tile4(P: usize, E: usize, nb: u32, xp: usize, sp: usize, xstride: usize, sstride: usize, FA: usize, nx: usize, nrb: usize): void {
  for (let b: u32 = 0; b < nb; b++) {
    const nd = v128.load(P, 256);
    let a0 = nd, a1 = nd, a2 = nd, a3 = nd;
    { const lv = v128.load(P, 0), m = v128.load(P, 16);
      a0 = rdot(v128.xor(v128.load(xp, 0), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 128), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 256), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 384), m), lv, a3);
      v128.store(P, a0, 304); v128.store(P, a1, 304); v128.store(P, a2, 304); v128.store(P, a3, 304);
    }
    { const lv = v128.load(P, 32), m = v128.load(P, 48);
      a0 = rdot(v128.xor(v128.load(xp, 16), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 144), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 272), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 400), m), lv, a3);
      v128.store(P, a0, 304); v128.store(P, a1, 304); v128.store(P, a2, 304); v128.store(P, a3, 304);
    }
    { const lv = v128.load(P, 64), m = v128.load(P, 80);
      a0 = rdot(v128.xor(v128.load(xp, 32), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 160), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 288), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 416), m), lv, a3);
      v128.store(P, a0, 304); v128.store(P, a1, 304); v128.store(P, a2, 304); v128.store(P, a3, 304);
    }
    { const lv = v128.load(P, 96), m = v128.load(P, 112);
      a0 = rdot(v128.xor(v128.load(xp, 48), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 176), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 304), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 432), m), lv, a3);
      v128.store(P, a0, 304); v128.store(P, a1, 304); v128.store(P, a2, 304); v128.store(P, a3, 304);
    }
    { const lv = v128.load(P, 128), m = v128.load(P, 144);
      a0 = rdot(v128.xor(v128.load(xp, 64), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 192), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 320), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 448), m), lv, a3);
      v128.store(P, a0, 304); v128.store(P, a1, 304); v128.store(P, a2, 304); v128.store(P, a3, 304);
    }
    { const lv = v128.load(P, 160), m = v128.load(P, 176);
      a0 = rdot(v128.xor(v128.load(xp, 80), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 208), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 336), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 464), m), lv, a3);
      v128.store(P, a0, 304); v128.store(P, a1, 304); v128.store(P, a2, 304); v128.store(P, a3, 304);
    }
    { const lv = v128.load(P, 192), m = v128.load(P, 208);
      a0 = rdot(v128.xor(v128.load(xp, 96), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 224), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 352), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 480), m), lv, a3);
      v128.store(P, a0, 304); v128.store(P, a1, 304); v128.store(P, a2, 304); v128.store(P, a3, 304);
    }
    { const lv = v128.load(P, 224), m = v128.load(P, 240);
      a0 = rdot(v128.xor(v128.load(xp, 112), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 240), m), lv, a1);
      a2 = rdot(v128.xor(v128.load(xp, 368), m), lv, a2);
      a3 = rdot(v128.xor(v128.load(xp, 496), m), lv, a3);
    }
    if (load<u32>(P, 288) != 0) {
      a0 = slowToken(P, E, xp + 0, a0);
      a1 = slowToken(P, E, xp + 128, a1);
      a2 = slowToken(P, E, xp + 256, a2);
      a3 = slowToken(P, E, xp + 384, a3);
    }
    const dw = v128.load(P, 272);
    v128.store(FA, fstep(v128.load(FA, 0), a0, dw, v128.load(sp, 0)), 0);
    v128.store(FA, fstep(v128.load(FA, 16), a1, dw, v128.load(sp, 16)), 16);
    v128.store(FA, fstep(v128.load(FA, 32), a2, dw, v128.load(sp, 32)), 32);
    v128.store(FA, fstep(v128.load(FA, 48), a3, dw, v128.load(sp, 48)), 48);
    touch(nx, nrb, P);
    xp += xstride; sp += sstride; P += PREP; E += PREP_E; nx += BLOCK;
  }
}

/**
 * 2 tokens of the repacked chunk (token j's block at xp + 128j, its scale in four
 * lanes at sp + 16j; the next block xstride and sstride bytes on) times the prepared group
 * (P, E; nb blocks): f32x4 per token (lane = row) added to FA + 16j. Meanwhile it touches the
 * same block of the next four rows (nx, nrb bytes apart: see touch).
 */
// @ts-ignore: decorator
@inline function tile2(P: usize, E: usize, nb: u32, xp: usize, sp: usize, xstride: usize, sstride: usize, FA: usize, nx: usize, nrb: usize): void {
  for (let b: u32 = 0; b < nb; b++) {
    const nd = v128.load(P, 256);
    let a0 = nd, a1 = nd;
    { const lv = v128.load(P, 0), m = v128.load(P, 16);
      a0 = rdot(v128.xor(v128.load(xp, 0), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 128), m), lv, a1);
      v128.store(P, a0, 304); v128.store(P, a1, 304);
    }
    { const lv = v128.load(P, 32), m = v128.load(P, 48);
      a0 = rdot(v128.xor(v128.load(xp, 16), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 144), m), lv, a1);
      v128.store(P, a0, 304); v128.store(P, a1, 304);
    }
    { const lv = v128.load(P, 64), m = v128.load(P, 80);
      a0 = rdot(v128.xor(v128.load(xp, 32), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 160), m), lv, a1);
      v128.store(P, a0, 304); v128.store(P, a1, 304);
    }
    { const lv = v128.load(P, 96), m = v128.load(P, 112);
      a0 = rdot(v128.xor(v128.load(xp, 48), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 176), m), lv, a1);
      v128.store(P, a0, 304); v128.store(P, a1, 304);
    }
    { const lv = v128.load(P, 128), m = v128.load(P, 144);
      a0 = rdot(v128.xor(v128.load(xp, 64), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 192), m), lv, a1);
      v128.store(P, a0, 304); v128.store(P, a1, 304);
    }
    { const lv = v128.load(P, 160), m = v128.load(P, 176);
      a0 = rdot(v128.xor(v128.load(xp, 80), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 208), m), lv, a1);
      v128.store(P, a0, 304); v128.store(P, a1, 304);
    }
    { const lv = v128.load(P, 192), m = v128.load(P, 208);
      a0 = rdot(v128.xor(v128.load(xp, 96), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 224), m), lv, a1);
      v128.store(P, a0, 304); v128.store(P, a1, 304);
    }
    { const lv = v128.load(P, 224), m = v128.load(P, 240);
      a0 = rdot(v128.xor(v128.load(xp, 112), m), lv, a0);
      a1 = rdot(v128.xor(v128.load(xp, 240), m), lv, a1);
    }
    if (load<u32>(P, 288) != 0) {
      a0 = slowToken(P, E, xp + 0, a0);
      a1 = slowToken(P, E, xp + 128, a1);
    }
    const dw = v128.load(P, 272);
    v128.store(FA, fstep(v128.load(FA, 0), a0, dw, v128.load(sp, 0)), 0);
    v128.store(FA, fstep(v128.load(FA, 16), a1, dw, v128.load(sp, 16)), 16);
    touch(nx, nrb, P);
    xp += xstride; sp += sstride; P += PREP; E += PREP_E; nx += BLOCK;
  }
}

/**
 * 1 token of the repacked chunk (token j's block at xp + 128j, its scale in four
 * lanes at sp + 16j; the next block xstride and sstride bytes on) times the prepared group
 * (P, E; nb blocks): f32x4 per token (lane = row) added to FA + 16j. Meanwhile it touches the
 * same block of the next four rows (nx, nrb bytes apart: see touch).
 */
// @ts-ignore: decorator
@inline function tile1(P: usize, E: usize, nb: u32, xp: usize, sp: usize, xstride: usize, sstride: usize, FA: usize, nx: usize, nrb: usize): void {
  for (let b: u32 = 0; b < nb; b++) {
    const nd = v128.load(P, 256);
    let a0 = nd, a1 = i32x4.splat(0);
    { const lv = v128.load(P, 0), m = v128.load(P, 16);
      a0 = rdot(v128.xor(v128.load(xp, 0), m), lv, a0);
    }
    { const lv = v128.load(P, 32), m = v128.load(P, 48);
      a1 = rdot(v128.xor(v128.load(xp, 16), m), lv, a1);
    }
    { const lv = v128.load(P, 64), m = v128.load(P, 80);
      a0 = rdot(v128.xor(v128.load(xp, 32), m), lv, a0);
    }
    { const lv = v128.load(P, 96), m = v128.load(P, 112);
      a1 = rdot(v128.xor(v128.load(xp, 48), m), lv, a1);
    }
    { const lv = v128.load(P, 128), m = v128.load(P, 144);
      a0 = rdot(v128.xor(v128.load(xp, 64), m), lv, a0);
    }
    { const lv = v128.load(P, 160), m = v128.load(P, 176);
      a1 = rdot(v128.xor(v128.load(xp, 80), m), lv, a1);
    }
    { const lv = v128.load(P, 192), m = v128.load(P, 208);
      a0 = rdot(v128.xor(v128.load(xp, 96), m), lv, a0);
    }
    { const lv = v128.load(P, 224), m = v128.load(P, 240);
      a1 = rdot(v128.xor(v128.load(xp, 112), m), lv, a1);
    }
    a0 = i32x4.add(a0, a1);
    if (load<u32>(P, 288) != 0) {
      a0 = slowToken(P, E, xp + 0, a0);
    }
    const dw = v128.load(P, 272);
    v128.store(FA, fstep(v128.load(FA, 0), a0, dw, v128.load(sp, 0)), 0);
    touch(nx, nrb, P);
    xp += xstride; sp += sstride; P += PREP; E += PREP_E; nx += BLOCK;
  }
}

/** Scratch bytes of matmulQ8Relaxed that do not depend on the token count (one prepared 4-row group). */
// @ts-ignore: decorator
@inline function fixedBytes(nb: u32): u32 {
  return nb * (PREP + PREP_E);
}

/**
 * out[t * rows + r] = row r of the Q8_0 weights w . token t of x (Q8_0), r in [r0, r1), t < nTok
 * (nTok >= 2), with relaxed dots; false (nothing done) if the scratch cannot hold one prepared
 * 4-row group and one token. Tokens go in chunks of up to 32, repacked block-major into the
 * scratch (block b of token j: XB bytes at XS + (b*tc + j)*XB, its f32 scale in four lanes at
 * S + (b*tc + j)*16), so that a tile of tokens is at immediate offsets from one pointer; per
 * chunk, each group of four rows (one sequential stream per thread) is prepared once and reused
 * for every token.
 */
export function matmulQ8Relaxed(out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32): bool {
  const nb = cols >> 5;
  const rb = nb * BLOCK;
  const fixed = fixedBytes(nb);
  const per: u32 = nb * (XB + 16) + 16;
  if (scratchBytes < fixed + per) return false;
  let chunk: u32 = (scratchBytes - fixed) / per;
  if (chunk > 32) chunk = 32;
  const P = scratch, E = scratch + nb * PREP, XS = E + nb * PREP_E;
  for (let t0: u32 = 0; t0 < nTok; t0 += chunk) {
    const tc = nTok - t0 < chunk ? nTok - t0 : chunk;
    const S = XS + tc * nb * XB, FA = S + ((tc * nb) << 4);
    const xstride: usize = tc * XB, sstride: usize = tc << 4;
    for (let j: u32 = 0; j < tc; j++) {
      let xb = x + (t0 + j) * rb;
      let q = XS + j * XB, sq = S + (j << 4);
      for (let b: u32 = 0; b < nb; b++) {
        const lo = v128.load(xb, 2), hi = v128.load(xb, 18);
        storeGroupBroadcasts(q, lo, hi);
        v128.store(sq, f32x4.splat(f16ToF32(load<u16>(xb) as u32)));
        xb += BLOCK; q += xstride; sq += sstride;
      }
    }
    for (let r = r0; r < r1; r += 4) {
      const left = r1 - r;
      const p0 = w + r * rb;
      const p1 = left > 1 ? p0 + rb : p0, p2 = left > 2 ? p0 + 2 * rb : p0, p3 = left > 3 ? p0 + 3 * rb : p0;
      prepareRows(p0, p1, p2, p3, nb, P, E);
      for (let j: u32 = 0; j < tc; j++) v128.store(FA + (j << 4), f32x4.splat(0));
      let j: u32 = 0;
      // the first tile touches the next group (rows r+4.. if the matrix has them), the others
      // this group again (in cache)
      let nx = r + 8 <= rows ? p0 + 4 * rb : p0, nrb: usize = r + 8 <= rows ? rb : 0;
      for (; j + 8 <= tc; j += 8) { tile8(P, E, nb, XS + j * XB, S + (j << 4), xstride, sstride, FA + (j << 4), nx, nrb); nx = p0; nrb = 0; }
      if (j + 4 <= tc) { tile4(P, E, nb, XS + j * XB, S + (j << 4), xstride, sstride, FA + (j << 4), nx, nrb); j += 4; nx = p0; nrb = 0; }
      if (j + 2 <= tc) { tile2(P, E, nb, XS + j * XB, S + (j << 4), xstride, sstride, FA + (j << 4), nx, nrb); j += 2; nx = p0; nrb = 0; }
      for (; j < tc; j++) { tile1(P, E, nb, XS + j * XB, S + (j << 4), xstride, sstride, FA + (j << 4), nx, nrb); nx = p0; nrb = 0; }
      for (let i: u32 = 0; i < tc; i++) {
        const v = v128.load(FA + (i << 4));
        const o = out + (((t0 + i) * rows + r) << 2);
        if (left >= 4) { v128.store(o, v); continue; }
        v128.store32_lane(o, v, 0);
        if (left > 1) v128.store32_lane(o, v, 1, 4);
        if (left > 2) v128.store32_lane(o, v, 2, 8);
      }
    }
  }
  return true;
}
