/**
 * NaN and infinite weights, found at load: a checkpoint holding them would load and then produce
 * garbage (every product touching the value), so the loader names the tensor and row instead.
 * f32 rows are checked value by value; blocks in a file's own type (GGUF) by their f16 scales,
 * where a non-finite value of a quantized tensor can only sit; F16/BF16/F32 rows value by value.
 */
import { LlameshError } from "../core/errors.js";
import { rowBytes, typeInfo, type TensorType } from "../kernels/formats.js";

/** Index of the first NaN or infinite value, or -1. */
export function firstNonFinite(x: Float32Array): number {
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (v - v !== 0) return i; // NaN - NaN and Inf - Inf are NaN
  }
  return -1;
}

/** Byte offsets of the f16 scales (d, and dmin or m) within one block of each type (ggml-common.h). */
const SCALE_OFFSETS: Partial<Record<TensorType, readonly number[]>> = {
  Q8_0: [0], Q4_0: [0], Q5_0: [0], IQ4_NL: [0], Q4_1: [0, 2], Q5_1: [0, 2],
  Q2_K: [80, 82], Q3_K: [108], Q4_K: [0, 2], Q5_K: [0, 2], Q6_K: [208],
};

/** Index of the first row of `n` rows (of `cols` values, in `type`) holding a non-finite value or scale, or -1. */
export function firstNonFiniteRow(type: TensorType, bytes: Uint8Array, n: number, cols: number): number {
  const rb = rowBytes(type, cols);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const offsets = SCALE_OFFSETS[type];
  if (offsets) {
    const { blockBytes } = typeInfo(type);
    for (let r = 0; r < n; r++) {
      for (let b = r * rb; b < (r + 1) * rb; b += blockBytes) {
        for (const o of offsets) if ((dv.getUint16(b + o, true) & 0x7c00) === 0x7c00) return r;
      }
    }
    return -1;
  }
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < cols; i++) {
      const at = r * rb;
      const bad = type === "F32" ? !Number.isFinite(dv.getFloat32(at + 4 * i, true))
        : type === "F16" ? (dv.getUint16(at + 2 * i, true) & 0x7c00) === 0x7c00
        : (dv.getUint16(at + 2 * i, true) & 0x7f80) === 0x7f80; // BF16
      if (bad) return r;
    }
  }
  return -1;
}

export function nonFiniteError(file: string, tensor: string, row: number): LlameshError {
  return new LlameshError(`${file}: tensor ${tensor} holds NaN or infinite values (row ${row}); the checkpoint is corrupt`);
}
