// Q8_0 x Q8_0 for several tokens with relaxed dots whose second operand is read as UNSIGNED bytes
// (compiled only into kernels-relaxed.wasm; q8.ts calls it under `if (ASC_FEATURE_RELAXED_SIMD)`).
//
// i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, c) is specified exactly only for b in 0..127. Where
// the engine lowers it to one vpdpbusd (V8 on x86 with AVX-VNNI, the VEX form; not with AVX512-VNNI
// alone: an AMD EPYC Zen 4 gets pmaddubsw, Node 24.22.3, --print-wasm-code), b is read as
// unsigned bytes with no saturation, so with u = w XOR 0x80 = w + 128 (0..255 for any int8 w):
//     sum x*w = sum x*u - 128 * sum x,
// one dot per 16 weights and token, and 128*sum(x) is once per token and block: the structure of
// relaxed.ts's Q4_0 prefill (whose levels 0..15 are always exact), with no sign trick: the
// same code (prefillLegacyRows), the weight kind a compile-time constant.
// Other lowerings (pmaddubsw + pmaddwd saturates the pair sums, ARM's sdot reads b as signed) give
// other numbers for b >= 128, so the engine's semantics are checked on values that tell the three
// apart (dotLowering, once per instance; q8.ts matmulQ8 runs this kernel only where it is 0) and
// otherwise the exact kernels run. The result is bit-identical with the
// reference wherever this runs: the integer sums are exact, and the float step is the
// reference's, acc += f32(sumi) * f32(dw * dx) per block, in block order.
/** Scratch dotLowering's probe uses (three 16-byte operands, a 16-byte result). */
export const UNSIGNED_PROBE_BYTES: u32 = 64;

// @ts-ignore: decorator
@inline function rdot(x: v128, w: v128, acc: v128): v128 {
  return i32x4.relaxed_dot_i8x16_i7x16_add_s(x, w, acc);
}

/** dotLowering's answer once known (a per-instance global: each pool thread has its own). */
let lowering: i32 = -1;

/**
 * How this engine lowers relaxed dots, probed once per instance at p (UNSIGNED_PROBE_BYTES of
 * scratch, from memory so nothing can be folded), on 127 x 255 (b = -1 read as unsigned):
 * - 0: the second operand read as unsigned bytes without saturation, one instruction per dot
 *   (x86 with VNNI: vpdpbusd): 4 x 127 x 255 = 129540 per lane, and 4 x -127 x 255 = -129540;
 * - 2: pmaddubsw + pmaddwd + paddd, the pair sums saturated (x86 without VNNI: 65534), where a
 *   relaxed dot costs more than SIMD128's widening dot_i16x8_s (matmul.ts then picks other
 *   K-quant decode kernels);
 * - 1: anything else (ARM's sdot reads b as signed: -508).
 */
export function dotLowering(p: usize): i32 {
  if (lowering >= 0) return lowering;
  v128.store(p, i8x16.splat(127));
  v128.store(p, i8x16.splat(-1), 16);
  v128.store(p, i8x16.splat(-127), 32);
  const hi = rdot(v128.load(p), v128.load(p, 16), i32x4.splat(0));
  const lo = rdot(v128.load(p, 32), v128.load(p, 16), i32x4.splat(0));
  v128.store(p, i32x4.sub(hi, lo), 48);
  if (load<i32>(p, 48) == 259080 && load<i32>(p, 60) == 259080 && i32x4.extract_lane(hi, 1) == 129540) lowering = 0;
  else lowering = i32x4.extract_lane(hi, 0) == 65534 ? 2 : 1;
  return lowering;
}
