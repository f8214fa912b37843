/**
 * The kernel contract: every hot loop of the forward pass, addressed by byte offsets ("pointers")
 * into one Arena. Two implementations exist: `reference.ts` (plain TypeScript, the specification
 * and the fallback) and `wasm.ts` (WebAssembly SIMD on a thread pool). Tests compare them.
 *
 * Formats: f32 vectors; weight matrices in any tensor type of formats.ts (GGUF block layouts), each
 * multiplied with activations quantized to its activation type (actTypeOf); the KV cache in bfloat16.
 * Sizes called `cols` or `n` are multiples of the block size of the type they are in.
 */
import type { Arena } from "./arena.js";
import type { ActType, MatmulType, TensorType } from "./formats.js";

export type Ptr = number;

export interface Kernels {
  readonly arena: Arena;
  /**
   * The weight types whose matmuls add each block's sumi * scale to the sum with one rounding (a
   * fused multiply-add) instead of two: in the relaxed WebAssembly build where relaxed_madd is
   * fused, Q4_0, and Q8_0 where its unsigned several-token kernel runs (x86 with VNNI and FMA);
   * assembly/q8.ts fusedTypes. Empty elsewhere (the reference by default).
   */
  readonly fusedTypes: readonly TensorType[];
  /**
   * Quantize `n` f32 values at `src` to `act` at `dst` (rowBytes(act, n) bytes), as llama.cpp's CPU
   * backend does (kernels/quant/act.ts): Q8_0/Q8_1 with d = max|x|/127 and q = roundHalfEven(x * 127/max|x|),
   * Q8_K with ggml's quantize_row_q8_K_ref, F16/BF16 round to nearest even, F32 a copy. Bit-identical
   * in every implementation.
   */
  quantizeAct(act: ActType, dst: Ptr, src: Ptr, n: number): void;
  /**
   * out[t * rows + r] = dot(row r of w in `type`, token t of x in actTypeOf(type)) for r < rows,
   * t < nTok; rows of w are rowBytes(type, cols) apart, tokens of x rowBytes(actTypeOf(type), cols).
   * The dot has ggml's semantics (kernels/quant/dot.ts: integer sums per block or super-block, then
   * the f32 scales in block order); implementations agree up to f32 reassociation (in practice the
   * integer types are bit-identical; the float types sum in a different order).
   */
  matmul(type: MatmulType, out: Ptr, w: Ptr, x: Ptr, rows: number, cols: number, nTok: number): void;
  /**
   * A loaded matrix (rows x cols of `type` at w), rearranged in place into the layout these
   * kernels multiply fastest, if they have one: returns the layout to pass to matmul from then on
   * (formats.ts MatmulType; the type itself where nothing was done). The relaxed WebAssembly build
   * makes Q4_0 matrices of whole groups of four rows Q4_0x4 (LLAMESH_REPACK=0: never); results are
   * the same bits either way. The reference never repacks.
   */
  repackWeights(type: TensorType, w: Ptr, rows: number, cols: number): MatmulType;
  /**
   * Quantize `n` f32 values at `src` to weight type `type` at `dst` (rowBytes(type, n) bytes),
   * bit-identical with kernels/quant quantizeRow (llama-quantize without an importance matrix).
   */
  quantizeWeights(type: TensorType, dst: Ptr, src: Ptr, n: number): void;
  /**
   * The engine's former Q8_0 quantizer, for weights and activations alike (kept, numerics unchanged,
   * until the engine calls quantizeAct and quantizeWeights): d = max|x|/127 (f32), id = d ? 1/d : 0,
   * q = roundHalfEven(x * id), scale stored as f16(d). llama.cpp quantizes activations with
   * id = 127/max|x| (quantizeAct "Q8_0") and weights with round-half-away (quantizeWeights "Q8_0").
   */
  quantizeQ8(dst: Ptr, src: Ptr, n: number): void;
  /** matmul("Q8_0", ...) (kept until the engine calls matmul). */
  matmulQ8(out: Ptr, w: Ptr, x: Ptr, rows: number, cols: number, nTok: number): void;
  /** out = x / sqrt(mean(x^2) + eps) * weight, over `n` values (out may equal x). */
  rmsnorm(out: Ptr, x: Ptr, weight: Ptr, n: number, eps: number): void;
  /**
   * Rotate-half RoPE (the Hugging Face Llama layout) in place on `nHeads` heads of `headDim` at `vec`:
   * for i < headDim/2: (a, b) = (v[i], v[i + headDim/2]) -> (a*cos_i - b*sin_i, b*cos_i + a*sin_i).
   * `cosSin` holds headDim/2 cosines then headDim/2 sines for the token's position.
   */
  rope(vec: Ptr, nHeads: number, headDim: number, cosSin: Ptr): void;
  /** dst (bf16) = round-to-nearest-even of src (f32), n values. */
  storeBf16(dst: Ptr, src: Ptr, n: number): void;
  /**
   * Causal grouped-query attention for one query token at position nPos-1.
   * q: nHeads*headDim f32. kCache/vCache: [position][nKvHeads*headDim] bf16 (rows 0..nPos-1 are used).
   * Query head h reads KV head floor(h / (nHeads/nKvHeads)). scores = bf16(q).k / sqrt(headDim),
   * softmax over positions, out[h] = sum_p bf16(softmax_p) * v[p]: as llama.cpp multiplies a BF16
   * cache, q (rounded in place: its buffer is changed) and the weights are rounded to bf16 first.
   * scratch: nHeads*nPos f32.
   */
  attention(out: Ptr, q: Ptr, kCache: Ptr, vCache: Ptr, scratch: Ptr,
    nHeads: number, nKvHeads: number, headDim: number, nPos: number): void;
  /**
   * attention() for the n tokens of a step at once (one job for the thread pool, split over tokens
   * and heads): entry t of `table` (ATTENTION_ENTRY_BYTES each, u32) is token t's out, q, kCache,
   * vCache and nPos. scratch: one region of scratchPerThread bytes (nHeads * largest nPos f32 at
   * least) per thread of the backend.
   */
  attentionSteps(table: Ptr, n: number, scratch: Ptr, scratchPerThread: number, nHeads: number, nKvHeads: number, headDim: number): void;
  /** gate[i] = silu(gate[i]) * up[i], n values. */
  siluMul(gate: Ptr, up: Ptr, n: number): void;
}

/** Makes Kernels for arenas; owns threads (if any) that must be released with close(). */
export interface KernelBackend {
  /** For the log line and the report, e.g. "wasm-simd128 x2 threads" or "typescript reference". */
  readonly name: string;
  readonly threads: number;
  /**
   * Bytes bind() takes from each arena for the kernels' own scratch (64-aligned, the first
   * allocation after binding): whoever plans an arena adds exactly this (see engine/layout.ts).
   */
  readonly scratchBytes: number;
  /** Kernels for this arena; throws a RangeError naming the arena when it has no room for scratchBytes. */
  bind(arena: Arena): Kernels;
  /**
   * The arena is no longer used: forget what bind() made for it, so its memory can be collected
   * (kernels bound to it must not be called again). Unknown arenas are ignored.
   */
  release(arena: Arena): void;
  /** Arenas bound and not released (what a long-lived process holds). */
  readonly boundArenas: number;
  /** Between tokens: lets spinning helper threads go to sleep. */
  idle(): void;
  close(): Promise<void>;
}

/** u32 words of one attentionSteps table entry: out, q, kCache, vCache, nPos. */
export const ATTENTION_ENTRY_WORDS = 5;
/** Bytes of one attentionSteps table entry. */
export const ATTENTION_ENTRY_BYTES = 4 * ATTENTION_ENTRY_WORDS;
