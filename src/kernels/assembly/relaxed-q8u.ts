// Q8_0 x Q8_0 for several tokens with relaxed dots whose second operand is read as UNSIGNED bytes
// (compiled only into kernels-relaxed.wasm; q8.ts calls it under `if (ASC_FEATURE_RELAXED_SIMD)`).
//
// i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, c) is specified exactly only for b in 0..127. Where
// the engine lowers it to one vpdpbusd (x86 with AVX-VNNI or AVX512-VNNI: V8 does), b is read as
// unsigned bytes with no saturation, so with u = w XOR 0x80 = w + 128 (0..255 for any int8 w):
//     sum x*w = sum x*u - 128 * sum x,
// one dot per 16 weights and token, and 128*sum(x) is once per token and block: the structure of
// relaxed.ts's Q4_0 prefill (whose levels 0..15 are always exact), with no sign trick: the
// same code (prefillLegacyRows), the weight kind a compile-time constant.
// Other lowerings (pmaddubsw + pmaddwd saturates the pair sums, ARM's sdot reads b as signed) give
// other numbers for b >= 128, so every Q8_0 matmul first checks the engine's semantics on values
// that tell the three apart (q8.ts matmulQ8 calls unsignedDotExact, from memory so nothing can be
// folded) and otherwise runs the exact kernels. The result is bit-identical with the
// reference wherever this runs: the integer sums are exact, and the float step is the
// reference's, acc += f32(sumi) * f32(dw * dx) per block, in block order.
/** Scratch unsignedDotExact uses (three 16-byte operands, a 16-byte result). */
export const UNSIGNED_PROBE_BYTES: u32 = 64;

// @ts-ignore: decorator
@inline function rdot(x: v128, w: v128, acc: v128): v128 {
  return i32x4.relaxed_dot_i8x16_i7x16_add_s(x, w, acc);
}

/**
 * True if relaxed dots at p (64 bytes of scratch) read their second operand as unsigned bytes
 * without saturation: 4 x 127 x 255 = 129540 per lane (signed reading: -508; pmaddubsw's
 * saturated pairs: 65534), and 4 x -127 x 255 = -129540.
 */
export function unsignedDotExact(p: usize): bool {
  v128.store(p, i8x16.splat(127));
  v128.store(p, i8x16.splat(-1), 16);
  v128.store(p, i8x16.splat(-127), 32);
  const hi = rdot(v128.load(p), v128.load(p, 16), i32x4.splat(0));
  const lo = rdot(v128.load(p, 32), v128.load(p, 16), i32x4.splat(0));
  v128.store(p, i32x4.sub(hi, lo), 48);
  return load<i32>(p, 48) == 259080 && load<i32>(p, 60) == 259080 && i32x4.extract_lane(hi, 1) == 129540;
}

/** dotLowering's answer once known (a per-instance global: each pool thread has its own). */
let lowering: i32 = -1;

/**
 * How this engine lowers relaxed dots, probed once (p: 64 bytes of scratch): 0 one instruction
 * per dot (unsignedDotExact: x86 with VNNI), 2 pmaddubsw + pmaddwd + paddd with a re-made
 * constant (x86 without VNNI: the saturated pair sum 65534), 1 anything else (ARM's sdot).
 * On the second kind a relaxed dot costs more than SIMD128's widening dot_i16x8_s, and the
 * K-quant decode kernels run the SIMD128 ones (matmul.ts).
 */
export function dotLowering(p: usize): i32 {
  if (lowering >= 0) return lowering;
  if (unsignedDotExact(p)) {
    lowering = 0;
  } else {
    v128.store(p, i8x16.splat(127));
    v128.store(p, i8x16.splat(-1), 16);
    const hi = rdot(v128.load(p), v128.load(p, 16), i32x4.splat(0));
    lowering = i32x4.extract_lane(hi, 0) == 65534 ? 2 : 1;
  }
  return lowering;
}
