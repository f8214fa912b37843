/**
 * Scalar helpers shared by the reference quantizers: exact f32 arithmetic (Math.fround after every
 * operation, which gives the correctly rounded f32 result of +, -, *, / and sqrt), ggml's
 * nearest_int, and little-endian block field access.
 */
import { F16_TO_F32, f32ToF16 } from "../../core/numbers.js";

export const fround = Math.fround;
export { F16_TO_F32, f32ToF16 };

const f32 = new Float32Array(1);
const i32 = new Int32Array(f32.buffer);

/**
 * ggml's nearest_int: adds 1.5 * 2^23 in f32 and reads the mantissa, i.e. round half to even for
 * |x| <= 4194303 (and ggml's exact bit result beyond, which its asserts exclude).
 */
export function nearestInt(x: number): number {
  f32[0] = x + 12582912;
  return (i32[0]! & 0x007fffff) - 0x00400000;
}

/** C's (int8_t) / (uint8_t) conversions of an int: keep the low 8 bits. */
export function toI8(v: number): number {
  return (v << 24) >> 24;
}
export function toU8(v: number): number {
  return v & 0xff;
}

/** C's float -> integer conversion (truncation toward zero). */
export function truncInt(x: number): number {
  return Math.trunc(x);
}

export function rdF16(b: Uint8Array, o: number): number {
  return F16_TO_F32[b[o]! | (b[o + 1]! << 8)]!;
}

export function wrF16(b: Uint8Array, o: number, v: number): void {
  const h = f32ToF16(v);
  b[o] = h & 0xff;
  b[o + 1] = h >>> 8;
}

/** f32 -> f16 -> f32 (what storing a scale as ggml_half and reading it back gives). */
export function viaF16(v: number): number {
  return F16_TO_F32[f32ToF16(v)]!;
}

export function rdF32(b: Uint8Array, o: number): number {
  return new DataView(b.buffer, b.byteOffset).getFloat32(o, true);
}

export function wrF32(b: Uint8Array, o: number, v: number): void {
  new DataView(b.buffer, b.byteOffset).setFloat32(o, v, true);
}

export function rdI16(b: Uint8Array, o: number): number {
  return ((b[o]! | (b[o + 1]! << 8)) << 16) >> 16;
}

export function wrI16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >> 8) & 0xff;
}

export function rdU32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

export function wrU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = (v >>> 24) & 0xff;
}

/** ggml's GROUP_MAX_EPS (1e-15f). */
export const GROUP_MAX_EPS = fround(1e-15);

/** kvalues_iq4nl (ggml-common.h): the 16 non-linear IQ4_NL levels. */
export const KVALUES_IQ4NL: readonly number[] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/**
 * a * b + c rounded once to f32 (IEEE fusedMultiplyAdd on f32 values; what vfmadd and ARM's fmla
 * compute). a * b is exact in f64 (24 + 24 bits); s = a * b + c rounds once to f64, and rounding s
 * to f32 is the right answer except when s lies exactly halfway between two f32 values while the
 * exact sum does not (double rounding): then the f64 error of s (TwoSum) says which way it goes.
 */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = Math.fround(s);
  if (r === s || !Number.isFinite(s)) return r;
  const other = 2 * s - r; // the f32 on s's other side, if s is halfway between two
  if (Math.fround(other) !== other) return r;
  const bb = s - p;
  const err = (p - (s - bb)) + (c - bb);
  if (err === 0) return r; // a true tie: ties to even, as fround did
  return err > 0 ? Math.max(r, other) : Math.min(r, other);
}
