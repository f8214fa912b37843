/**
 * The interface between checkpoint files and the engine: named tensors with shapes, read a few rows
 * at a time. safetensors folders (model/safetensors.ts) and GGUF files (model/gguf-llama.ts)
 * implement it; the loaders (engine/slice.ts extractSlices) consume it.
 */

import type { TensorType } from "../kernels/formats.js";

/** How a tensor is stored in its file: safetensors gives F32/F16/BF16, GGUF any of kernels/formats.ts. */
export type TensorDtype = TensorType;

export interface TensorInfo {
  name: string;
  /** Storage type: safetensors gives F32/F16/BF16; GGUF any type of kernels/formats.ts. */
  dtype: TensorDtype;
  shape: number[];
  /** Absolute path of the file holding it. */
  file: string;
  /** Absolute byte offset of its data in the file. */
  offset: number;
  nbytes: number;
}

/** Source of named tensors for the loader, read as f32 rows. */
export interface TensorSource {
  /** Files the tensors come from, for the report. */
  readonly files: readonly string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** Fill `out` with rows [row0, row0 + nRows) of a 1-D (one row) or 2-D tensor, as f32. */
  readRows(name: string, row0: number, nRows: number, out: Float32Array): void;
  /**
   * Sources that store blocks the engine computes with (GGUF): copy rows [row0, row0 + nRows) as
   * they are, in the ggml block layout of info().dtype, so they need no re-quantization.
   */
  readRawRows?(name: string, row0: number, nRows: number, out: Uint8Array): void;
  close(): void;
}
