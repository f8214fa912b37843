/**
 * The tensor types llamesh reads and computes with: every common GGUF weight type, plus the
 * activation types llama.cpp's CPU backend quantizes a matrix's input vector to before the dot
 * products (its `vec_dot_type`). Block layouts are exactly those of ggml-common.h, so GGUF tensors
 * are loaded as their bytes are (a kernel build may rearrange a loaded matrix afterwards into a
 * layout of its own, MatmulType below):
 *
 * | type   | values/block | bytes/block | layout (little-endian)                                      |
 * |--------|-----|-----|------------------------------------------------------------------------------|
 * | F32    | 1   | 4   | f32                                                                          |
 * | F16    | 1   | 2   | IEEE half                                                                    |
 * | BF16   | 1   | 2   | bfloat16                                                                     |
 * | Q8_0   | 32  | 34  | f16 d, i8 q[32]; x = d*q                                                     |
 * | Q8_1   | 32  | 36  | f16 d, f16 s (= d * sum q), i8 q[32]                                        |
 * | Q4_0   | 32  | 18  | f16 d, u8 qs[16] (value j: low nibble of qs[j], j+16: high); x = d*(q-8)     |
 * | Q4_1   | 32  | 20  | f16 d, f16 m, u8 qs[16]; x = d*q + m                                         |
 * | Q5_0   | 32  | 22  | f16 d, u32 qh (bit j = 5th bit of value j), u8 qs[16]; x = d*(q-16)          |
 * | Q5_1   | 32  | 24  | f16 d, f16 m, u32 qh, u8 qs[16]; x = d*q + m                                 |
 * | IQ4_NL | 32  | 18  | f16 d, u8 qs[16]; x = d*kvalues_iq4nl[q]                                     |
 * | Q2_K   | 256 | 84  | u8 scales[16] (4-bit scale, 4-bit min), u8 qs[64], f16 d, f16 dmin           |
 * | Q3_K   | 256 | 110 | u8 hmask[32], u8 qs[64], u8 scales[12] (6-bit), f16 d                        |
 * | Q4_K   | 256 | 144 | f16 d, f16 dmin, u8 scales[12] (6-bit scales and mins), u8 qs[128]          |
 * | Q5_K   | 256 | 176 | f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]                       |
 * | Q6_K   | 256 | 210 | u8 ql[128], u8 qh[64], i8 scales[16], f16 d                                  |
 * | Q8_K   | 256 | 292 | f32 d, i8 qs[256], i16 bsums[16] (sums of 16 consecutive qs)                |
 *
 * Activation type per weight type (ggml-cpu.c type_traits_cpu): Q8_0 for Q4_0, Q5_0, Q8_0 and
 * IQ4_NL; Q8_1 for Q4_1 and Q5_1; Q8_K for the K-quants; F32, F16, BF16 for themselves.
 */

export type TensorType =
  | "F32" | "F16" | "BF16" | "Q8_0" | "Q4_0" | "Q4_1" | "Q5_0" | "Q5_1"
  | "Q2_K" | "Q3_K" | "Q4_K" | "Q5_K" | "Q6_K" | "IQ4_NL";
export type ActType = "F32" | "F16" | "BF16" | "Q8_0" | "Q8_1" | "Q8_K";
/**
 * What a matmul's weights can be in memory: a file's type, or a layout no file has that the
 * kernels repack a loaded matrix into (Kernels.repackWeights). Q4_0x4: Q4_0 with each group of four
 * rows interleaved block by block (the four scales, then the quants transposed in 4-byte groups,
 * 72 bytes per block of four rows: assembly/q4x4.ts), the same bytes per row as Q4_0.
 */
export type MatmulType = TensorType | "Q4_0x4";

export interface TypeInfo {
  name: MatmulType | ActType;
  /** ggml_type id (ggml.h), as stored in GGUF tensor infos (Q4_0x4: the kernels' own id, in no file). */
  ggmlId: number;
  /** Values per block (1 for the float types). */
  blockValues: number;
  blockBytes: number;
}

const TABLE: Record<MatmulType | ActType, TypeInfo> = {
  F32: { name: "F32", ggmlId: 0, blockValues: 1, blockBytes: 4 },
  F16: { name: "F16", ggmlId: 1, blockValues: 1, blockBytes: 2 },
  Q4_0: { name: "Q4_0", ggmlId: 2, blockValues: 32, blockBytes: 18 },
  Q4_1: { name: "Q4_1", ggmlId: 3, blockValues: 32, blockBytes: 20 },
  Q5_0: { name: "Q5_0", ggmlId: 6, blockValues: 32, blockBytes: 22 },
  Q5_1: { name: "Q5_1", ggmlId: 7, blockValues: 32, blockBytes: 24 },
  Q8_0: { name: "Q8_0", ggmlId: 8, blockValues: 32, blockBytes: 34 },
  Q8_1: { name: "Q8_1", ggmlId: 9, blockValues: 32, blockBytes: 36 },
  Q2_K: { name: "Q2_K", ggmlId: 10, blockValues: 256, blockBytes: 84 },
  Q3_K: { name: "Q3_K", ggmlId: 11, blockValues: 256, blockBytes: 110 },
  Q4_K: { name: "Q4_K", ggmlId: 12, blockValues: 256, blockBytes: 144 },
  Q5_K: { name: "Q5_K", ggmlId: 13, blockValues: 256, blockBytes: 176 },
  Q6_K: { name: "Q6_K", ggmlId: 14, blockValues: 256, blockBytes: 210 },
  Q8_K: { name: "Q8_K", ggmlId: 15, blockValues: 256, blockBytes: 292 },
  IQ4_NL: { name: "IQ4_NL", ggmlId: 20, blockValues: 32, blockBytes: 18 },
  BF16: { name: "BF16", ggmlId: 30, blockValues: 1, blockBytes: 2 },
  Q4_0x4: { name: "Q4_0x4", ggmlId: 48, blockValues: 32, blockBytes: 18 },
};

export const TENSOR_TYPES: readonly TensorType[] = [
  "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL",
];
export const ACT_TYPES: readonly ActType[] = ["F32", "F16", "BF16", "Q8_0", "Q8_1", "Q8_K"];

const ACT_OF: Record<MatmulType, ActType> = {
  F32: "F32", F16: "F16", BF16: "BF16",
  Q8_0: "Q8_0", Q4_0: "Q8_0", Q4_0x4: "Q8_0", Q5_0: "Q8_0", IQ4_NL: "Q8_0",
  Q4_1: "Q8_1", Q5_1: "Q8_1",
  Q2_K: "Q8_K", Q3_K: "Q8_K", Q4_K: "Q8_K", Q5_K: "Q8_K", Q6_K: "Q8_K",
};

const BY_ID = new Map<number, TensorType>(TENSOR_TYPES.map((t) => [TABLE[t].ggmlId, t]));

export function typeInfo(t: MatmulType | ActType): TypeInfo {
  const info = TABLE[t];
  if (info === undefined) throw new RangeError(`unknown tensor type ${String(t)}`);
  return info;
}

/** The type llama.cpp's CPU backend quantizes activations to for weights of type `w`. */
export function actTypeOf(w: MatmulType): ActType {
  const a = ACT_OF[w];
  if (a === undefined) throw new RangeError(`unknown tensor type ${String(w)}`);
  return a;
}

/** Bytes of a row of `n` values; n must be a non-negative multiple of the type's block size. */
export function rowBytes(t: MatmulType | ActType, n: number): number {
  const { blockValues, blockBytes } = typeInfo(t);
  if (!Number.isSafeInteger(n) || n < 0 || n % blockValues !== 0) {
    throw new RangeError(`${t}: a row of ${n} values is not a whole number of ${blockValues}-value blocks`);
  }
  return (n / blockValues) * blockBytes;
}

/** The file type a matmul layout holds (Q4_0x4: Q4_0). */
export function fileTypeOf(t: MatmulType): TensorType {
  return t === "Q4_0x4" ? "Q4_0" : t;
}

/** The weight type of a ggml type id, or undefined if llamesh does not read it. */
export function tensorTypeOfGgmlId(id: number): TensorType | undefined {
  return BY_ID.get(id);
}

export function isTensorType(s: string): s is TensorType {
  return (TENSOR_TYPES as readonly string[]).includes(s);
}
