/**
 * Host-side reference for every tensor type (pure functions on byte and float arrays, no arena):
 * dequantizeRow (bit-exact with ggml's dequantize_row_* and its F16/BF16 conversions),
 * quantizeRow (the weight quantizers llama-quantize runs without an importance matrix, bit-exact),
 * quantizeActRow (the activation quantizers of llama.cpp's CPU backend) and vecDot (reference dot
 * products with ggml's integer semantics). See formats.ts for the block layouts.
 */
import { F16_TO_F32, bf16ToF32, f32ToBf16, f32ToF16 } from "../../core/numbers.js";
import { rowBytes, typeInfo, type TensorType } from "../formats.js";
import { rdF32, wrF32, wrI16 } from "./common.js";
import { dequantIQ4_NL, dequantQ4_0, dequantQ4_1, dequantQ5_0, dequantQ5_1, dequantQ8_0,
  quantIQ4_NL, quantQ4_0, quantQ4_1, quantQ5_0, quantQ5_1, quantQ8_0 } from "./legacy.js";
import { dequantQ2_K, dequantQ3_K, dequantQ4_K, dequantQ5_K, dequantQ6_K,
  quantQ2_K, quantQ3_K, quantQ4_K, quantQ5_K, quantQ6_K } from "./kquants.js";

export { quantizeActRow } from "./act.js";
export { vecDot, kLevels } from "./dot.js";

type Dequant = (src: Uint8Array, o: number, out: Float32Array, at: number, nb: number) => void;
type Quant = (x: Float32Array, s: number, out: Uint8Array, o: number, nb: number) => void;

const DEQUANT: Partial<Record<TensorType, Dequant>> = {
  Q4_0: dequantQ4_0, Q4_1: dequantQ4_1, Q5_0: dequantQ5_0, Q5_1: dequantQ5_1, Q8_0: dequantQ8_0, IQ4_NL: dequantIQ4_NL,
  Q2_K: dequantQ2_K, Q3_K: dequantQ3_K, Q4_K: dequantQ4_K, Q5_K: dequantQ5_K, Q6_K: dequantQ6_K,
};
const QUANT: Partial<Record<TensorType, Quant>> = {
  Q4_0: quantQ4_0, Q4_1: quantQ4_1, Q5_0: quantQ5_0, Q5_1: quantQ5_1, Q8_0: quantQ8_0, IQ4_NL: quantIQ4_NL,
  Q2_K: quantQ2_K, Q3_K: quantQ3_K, Q4_K: quantQ4_K, Q5_K: quantQ5_K, Q6_K: quantQ6_K,
};

function checkRange(what: string, len: number, offset: number, count: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + count > len) {
    throw new RangeError(`${what}: [${offset}, ${offset + count}) outside an array of ${len}`);
  }
}

/** n values of `type` at src[srcOffset..] -> f32 at out[outOffset..]; n a multiple of the block size. */
export function dequantizeRow(type: TensorType, src: Uint8Array, srcOffset: number, out: Float32Array, outOffset: number, n: number): void {
  const bytes = rowBytes(type, n);
  checkRange(`dequantizeRow ${type} src`, src.length, srcOffset, bytes);
  checkRange(`dequantizeRow ${type} out`, out.length, outOffset, n);
  switch (type) {
    case "F32":
      for (let i = 0; i < n; i++) out[outOffset + i] = rdF32(src, srcOffset + 4 * i);
      return;
    case "F16":
      for (let i = 0; i < n; i++) out[outOffset + i] = F16_TO_F32[src[srcOffset + 2 * i]! | (src[srcOffset + 2 * i + 1]! << 8)]!;
      return;
    case "BF16":
      for (let i = 0; i < n; i++) out[outOffset + i] = bf16ToF32(src[srcOffset + 2 * i]! | (src[srcOffset + 2 * i + 1]! << 8));
      return;
    default:
      DEQUANT[type]!(src, srcOffset, out, outOffset, n / typeInfo(type).blockValues);
  }
}

/** n f32 values at src[srcOffset..] -> `type` at out[outOffset..] (llama-quantize's output without imatrix). */
export function quantizeRow(type: TensorType, src: Float32Array, srcOffset: number, out: Uint8Array, outOffset: number, n: number): void {
  const bytes = rowBytes(type, n);
  checkRange(`quantizeRow ${type} src`, src.length, srcOffset, n);
  checkRange(`quantizeRow ${type} out`, out.length, outOffset, bytes);
  switch (type) {
    case "F32":
      for (let i = 0; i < n; i++) wrF32(out, outOffset + 4 * i, src[srcOffset + i]!);
      return;
    case "F16":
      for (let i = 0; i < n; i++) wrI16(out, outOffset + 2 * i, f32ToF16(src[srcOffset + i]!));
      return;
    case "BF16":
      for (let i = 0; i < n; i++) wrI16(out, outOffset + 2 * i, f32ToBf16(src[srcOffset + i]!));
      return;
    default:
      QUANT[type]!(src, srcOffset, out, outOffset, n / typeInfo(type).blockValues);
  }
}
