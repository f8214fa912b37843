/**
 * GGUF writer: llama GGUF v3 files that llama.cpp loads, made from a Hugging Face safetensors
 * folder or from synthetic tensors. Used to benchmark against llama.cpp on the very same weights.
 *
 * What it does, as llama.cpp's convert_hf_to_gguf.py does for a Llama model:
 * - renames the tensors (model.layers.N.self_attn.q_proj.weight -> blk.N.attn_q.weight, ...);
 * - permutes the rows of q_proj / k_proj per head from the HF rotate-half RoPE layout to the
 *   interleaved one llama.cpp expects (GGUF row 2i = HF row i, 2i+1 = HF row i + headDim/2);
 * - writes matrices as Q8_0 (llama.cpp's formula: d = max|x| / 127, q = round(x / d), d stored as
 *   f16; rounding half to even as gguf-py and our kernels do), F16 or F32, and norms as F32. A
 *   matrix whose rows are not a multiple of 32 cannot be Q8_0 and is written as F16, as the
 *   converter falls back;
 * - writes the llama metadata and the vocabulary (tokenizer.ggml.*): SentencePiece-style
 *   ("llama") or byte-level BPE ("gpt2" with merges and the pre-tokenizer name, for Llama 3 and
 *   Qwen tokenizer.json files, written as llama.cpp's converter writes them), and the chat template.
 *
 * Tensors are streamed a slice of rows at a time: a 7B file is never held in memory.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { QK8_0 } from "../kernels/q8.js";
import { f32ToF16 } from "../core/numbers.js";
import { typeInfo } from "../kernels/formats.js";
import { quantizeRow } from "../kernels/quant/index.js";
import { loadLlamaConfig, parseLlamaConfig, readJsonFile, type LlamaConfig } from "../model/config.js";
import { LlameshError } from "../core/errors.js";
import {
  GGUF_DEFAULT_ALIGNMENT,
  GgmlType,
  ggmlRowBytes,
  GgufValueType,
  type GgufTensorType,
} from "../gguf/reader.js";
import { ggufNameOf } from "../model/gguf-llama.js";
import { SafetensorsModel } from "../model/safetensors.js";
import { parseSentencePieceModel, PieceType } from "../model/sentencepiece.js";
import { preTokenizerNameOf } from "../model/gguf-bpe.js";
import { folderChatTemplate } from "../model/chat.js";
import { byteLevelTokenizerJson, syntheticConfig, type SyntheticShape, type TensorSpec } from "./checkpoint.js";

// ---------------------------------------------------------------------------------------------
// Low-level writer
// ---------------------------------------------------------------------------------------------

export type GgufMetaValue =
  | { type: "u32" | "i32" | "f32" | "u64"; value: number }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "string[]"; value: readonly string[] }
  | { type: "f32[]" | "i32[]"; value: ArrayLike<number> };

export interface GgufKV {
  key: string;
  value: GgufMetaValue;
}

export interface GgufTensorOut {
  /** GGUF name. */
  name: string;
  /** Shape in Hugging Face order: [rows, cols] or [n]. */
  shape: number[];
  type: GgufTensorType;
  /**
   * Called once, when the tensor's turn comes: calls `emit` with f32 values in row-major order,
   * whole rows per call, until the tensor is complete.
   */
  produce: (emit: (rows: Float32Array) => void) => void;
  /** Rows are permuted per head of this many rows (HF rotate-half -> interleaved RoPE). */
  permuteHeadDim?: number;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}
function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}
function gstring(s: string): Buffer[] {
  const bytes = Buffer.from(s, "utf8");
  return [u64(bytes.length), bytes];
}

function encodeKV(kv: GgufKV, out: Buffer[]): void {
  out.push(...gstring(kv.key));
  const v = kv.value;
  switch (v.type) {
    case "u32":
      out.push(u32(GgufValueType.UINT32), u32(v.value));
      return;
    case "i32": {
      const b = Buffer.alloc(4);
      b.writeInt32LE(v.value);
      out.push(u32(GgufValueType.INT32), b);
      return;
    }
    case "u64":
      out.push(u32(GgufValueType.UINT64), u64(v.value));
      return;
    case "f32": {
      const b = Buffer.alloc(4);
      b.writeFloatLE(v.value);
      out.push(u32(GgufValueType.FLOAT32), b);
      return;
    }
    case "bool":
      out.push(u32(GgufValueType.BOOL), Buffer.from([v.value ? 1 : 0]));
      return;
    case "string":
      out.push(u32(GgufValueType.STRING), ...gstring(v.value));
      return;
    case "string[]":
      out.push(u32(GgufValueType.ARRAY), u32(GgufValueType.STRING), u64(v.value.length));
      for (const s of v.value) out.push(...gstring(s));
      return;
    case "f32[]":
    case "i32[]": {
      const n = v.value.length;
      const b = Buffer.alloc(n * 4);
      if (v.type === "f32[]") for (let i = 0; i < n; i++) b.writeFloatLE(v.value[i]!, i * 4);
      else for (let i = 0; i < n; i++) b.writeInt32LE(v.value[i]!, i * 4);
      out.push(u32(GgufValueType.ARRAY), u32(v.type === "f32[]" ? GgufValueType.FLOAT32 : GgufValueType.INT32), u64(n), b);
      return;
    }
  }
}

/**
 * Quantize whole Q8_0 blocks of `x` into `out` (34 bytes per 32 values) with llama-quantize's own
 * quantizer (kernels/quant, ggml's quantize_row_q8_0_ref), which is also what the loader uses for
 * a folder: a GGUF we write holds the bytes llama.cpp would write and the loader would make.
 */
export function quantizeQ8_0(x: Float32Array, out: Uint8Array): void {
  quantizeRow("Q8_0", x, 0, out, 0, x.length);
}

function encodeRows(type: GgufTensorType, x: Float32Array): Uint8Array {
  switch (type) {
    case "F32":
      return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    case "F16": {
      const u16 = new Uint16Array(x.length);
      for (let i = 0; i < x.length; i++) u16[i] = f32ToF16(x[i]!);
      return new Uint8Array(u16.buffer);
    }
    case "BF16":
      throw new Error("BF16 output is not supported by the writer");
    case "Q8_0": {
      const out = new Uint8Array(ggmlRowBytes("Q8_0", x.length));
      quantizeQ8_0(x, out);
      return out;
    }
    default: {
      // the other block types: llama-quantize's own quantizers (kernels/quant), bit for bit
      const out = new Uint8Array(ggmlRowBytes(type, x.length));
      quantizeRow(type, x, 0, out, 0, x.length);
      return out;
    }
  }
}

/** HF rows -> GGUF rows for whole heads of `headDim` rows: GGUF row 2i = HF i, 2i+1 = HF half + i. */
export function permuteHeadsToGguf(src: Float32Array, dst: Float32Array, headDim: number, cols: number): void {
  const half = headDim / 2;
  const heads = src.length / (headDim * cols);
  for (let h = 0; h < heads; h++) {
    const base = h * headDim * cols;
    for (let i = 0; i < half; i++) {
      dst.set(src.subarray(base + i * cols, base + (i + 1) * cols), base + 2 * i * cols);
      dst.set(src.subarray(base + (half + i) * cols, base + (half + i + 1) * cols), base + (2 * i + 1) * cols);
    }
  }
}

export interface WriteGgufOptions {
  alignment?: number;
  /** Called after each tensor with bytes of tensor data written so far and in all. */
  onProgress?: (done: number, total: number) => void;
  /** Encodes a tensor's rows (e.g. with the WASM quantizers); undefined: the TypeScript quantizers. */
  encode?: (type: GgufTensorType, rows: Float32Array) => Uint8Array | undefined;
}

/**
 * Write a GGUF v3 file: header, metadata, tensor infos, then each tensor's data in order, every
 * tensor padded to the alignment (llama.cpp expects offsets to follow each other exactly so).
 * Written to `file`.partial and renamed at the end.
 */
export function writeGguf(file: string, metadata: GgufKV[], tensors: GgufTensorOut[], opts: WriteGgufOptions = {}): void {
  const alignment = opts.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  const meta = [...metadata];
  if (alignment !== GGUF_DEFAULT_ALIGNMENT) meta.push({ key: "general.alignment", value: { type: "u32", value: alignment } });
  const pad = (n: number): number => Math.ceil(n / alignment) * alignment;

  const head: Buffer[] = [Buffer.from("GGUF", "latin1"), u32(3), u64(tensors.length), u64(meta.length)];
  for (const kv of meta) encodeKV(kv, head);
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    const cols = t.shape[t.shape.length - 1]!;
    if (cols % typeInfo(t.type).blockValues !== 0) throw new Error(`${t.name}: ${t.type} rows of ${cols} values`);
    const n = t.shape.reduce((a, b) => a * b, 1);
    const nbytes = ggmlRowBytes(t.type, n);
    head.push(...gstring(t.name), u32(t.shape.length));
    for (let d = t.shape.length - 1; d >= 0; d--) head.push(u64(t.shape[d]!)); // ggml order: innermost first
    head.push(u32(GgmlType[t.type]), u64(offset));
    sizes.push(nbytes);
    offset += pad(nbytes);
  }
  const total = offset;
  let headBuf = Buffer.concat(head);
  headBuf = Buffer.concat([headBuf, Buffer.alloc(pad(headBuf.length) - headBuf.length)]);

  const tmp = file + ".partial";
  const fd = fs.openSync(tmp, "w");
  try {
    fs.writeSync(fd, headBuf);
    let done = 0;
    tensors.forEach((t, ti) => {
      const cols = t.shape[t.shape.length - 1]!;
      const rows = t.shape.length > 1 ? t.shape.slice(0, -1).reduce((a, b) => a * b, 1) : 1;
      let written = 0;
      let rowsSeen = 0;
      const out = (x: Float32Array): void => {
        const bytes = opts.encode?.(t.type, x) ?? encodeRows(t.type, x);
        fs.writeSync(fd, bytes);
        written += bytes.length;
      };
      const hd = t.permuteHeadDim ?? 0;
      if (hd > 0 && rows % hd !== 0) throw new Error(`${t.name}: ${rows} rows are not whole heads of ${hd}`);
      const head = hd > 0 ? new Float32Array(hd * cols) : null;
      const headOut = hd > 0 ? new Float32Array(hd * cols) : null;
      let fill = 0; // values pending in `head`
      t.produce((x) => {
        if (x.length % cols !== 0) throw new Error(`${t.name}: a slice of ${x.length} values is not whole rows of ${cols}`);
        rowsSeen += x.length / cols;
        if (rowsSeen > rows) throw new Error(`${t.name}: more than ${rows} rows produced`);
        if (head === null) return out(x);
        // gather whole heads, permute, write
        let at = 0;
        while (at < x.length) {
          const k = Math.min(head.length - fill, x.length - at);
          head.set(x.subarray(at, at + k), fill);
          fill += k;
          at += k;
          if (fill === head.length) {
            permuteHeadsToGguf(head, headOut!, hd, cols);
            out(headOut!);
            fill = 0;
          }
        }
      });
      if (written !== sizes[ti]) throw new Error(`${t.name}: wrote ${written} bytes, expected ${sizes[ti]}`);
      const padding = pad(written) - written;
      if (padding > 0) fs.writeSync(fd, Buffer.alloc(padding));
      done += written + padding;
      opts.onProgress?.(done, total);
    });
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

// ---------------------------------------------------------------------------------------------
// Llama metadata and vocabulary
// ---------------------------------------------------------------------------------------------

/** A vocabulary as GGUF stores it: SentencePiece-style ("llama") or byte-level BPE ("gpt2"). */
export interface GgufTokenizerSpec {
  /** tokenizer.ggml.model; default "llama". */
  model?: "llama" | "gpt2";
  /** tokenizer.ggml.pre ("gpt2" only: "llama-bpe", "qwen2", "gpt-2", "default"). */
  pre?: string;
  pieces: readonly string[];
  /** tokenizer.ggml.scores ("llama"; a "gpt2" vocabulary has none). */
  scores?: ArrayLike<number>;
  /** PieceType values (llama.cpp's token types are the same numbers). */
  types: ArrayLike<number>;
  /** tokenizer.ggml.merges ("gpt2"): "left right" in rank order. */
  merges?: readonly string[];
  bos: number | null;
  eos: number | null;
  unk?: number | null;
  eot?: number | null;
  eom?: number | null;
  padding?: number | null;
  /** tokenizer.ggml.add_bos_token; "llama": default true; "gpt2": not written unless set. */
  addBos?: boolean;
  /** tokenizer.ggml.add_space_prefix (SentencePiece's add_dummy_prefix, "llama" only); default true. */
  addSpacePrefix?: boolean;
  /** tokenizer.chat_template */
  chatTemplate?: string;
}

export type GgufQuant = "Q8_0" | "F16" | "F32";

export interface GgufWriteOptions {
  quant: GgufQuant;
  /**
   * Per-matrix types by Hugging Face tensor name (engine/types.ts typePlan, e.g. Q4_K_M's);
   * matrices not in it, and the norms, get `quant`'s types. With `fileType`: general.file_type.
   */
  types?: Readonly<Record<string, GgufTensorType>>;
  fileType?: number;
  /** See WriteGgufOptions.encode. */
  encode?: WriteGgufOptions["encode"];
  /** The vocabulary; default: the model folder's tokenizer (or, for synthetic tensors, the byte-level one). */
  tokenizer?: GgufTokenizerSpec;
  /** general.name */
  name?: string;
  onProgress?: (done: number, total: number) => void;
}

const FILE_TYPE: Record<GgufQuant, number> = { F32: 0, F16: 1, Q8_0: 7 };

/** The GGUF architecture llama.cpp's converter writes for a family (Mistral 7B is "llama"). */
export function ggufArchitecture(c: LlamaConfig): "llama" | "qwen2" | "qwen3" {
  return c.family === "qwen2" || c.family === "qwen3" ? c.family : "llama";
}

/** The metadata llama.cpp reads, for `c` and `tok` (padded with unused pieces to the vocabulary size). */
export function llamaMetadata(c: LlamaConfig, tok: GgufTokenizerSpec, quant: GgufQuant, name = "llamesh"): GgufKV[] {
  const arch = ggufArchitecture(c);
  const u = (key: string, value: number): GgufKV => ({ key: `${arch}.${key}`, value: { type: "u32", value } });
  const f = (key: string, value: number): GgufKV => ({ key: `${arch}.${key}`, value: { type: "f32", value } });
  const kvs: GgufKV[] = [
    { key: "general.architecture", value: { type: "string", value: arch } },
    { key: "general.name", value: { type: "string", value: name } },
    { key: "general.file_type", value: { type: "u32", value: FILE_TYPE[quant] } },
    { key: "general.quantization_version", value: { type: "u32", value: 2 } },
    u("vocab_size", c.vocabSize),
    u("context_length", c.seqLen),
    u("embedding_length", c.dim),
    u("block_count", c.nLayers),
    u("feed_forward_length", c.hiddenDim),
    u("rope.dimension_count", c.headDim),
    u("attention.head_count", c.nHeads),
    u("attention.head_count_kv", c.nKvHeads),
    ...(c.headDim * c.nHeads !== c.dim || arch === "qwen3" ? [u("attention.key_length", c.headDim), u("attention.value_length", c.headDim)] : []),
    f("attention.layer_norm_rms_epsilon", c.normEps),
    f("rope.freq_base", c.ropeTheta),
    ...(c.ropeScaling?.type === "linear"
      ? [{ key: `${arch}.rope.scaling.type`, value: { type: "string", value: "linear" } } as GgufKV, f("rope.scaling.factor", c.ropeScaling.factor)]
      : []),
    ...tokenizerMetadata(tok, c.vocabSize),
  ];
  return kvs;
}

/**
 * llama.cpp's form of llama3 RoPE scaling: one divisor per frequency, computed as its converter
 * does (convert_hf_to_gguf.py LlamaModel.generate_extra_tensors) and stored as rope_freqs.weight.
 */
export function ropeFreqFactors(c: LlamaConfig): Float32Array | null {
  const s = c.ropeScaling;
  if (!s || s.type === "linear") return null;
  if (s.type === "factors") return Float32Array.from(s.factors);
  const out = new Float32Array(c.headDim / 2);
  const low = s.originalMaxPositions / s.lowFreqFactor;
  const high = s.originalMaxPositions / s.highFreqFactor;
  for (let i = 0; i < out.length; i++) {
    const freq = 1 / Math.pow(c.ropeTheta, (2 * i) / c.headDim);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < high) out[i] = 1;
    else if (wavelen > low) out[i] = s.factor;
    else {
      const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      out[i] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return out;
}

/**
 * The tokenizer.ggml.* (and tokenizer.chat_template) keys for `tok`, padded with unused pieces to
 * `vocabSize` (llama.cpp needs one piece per embedding row, and its converter pads so).
 */
export function tokenizerMetadata(tok: GgufTokenizerSpec, vocabSize: number): GgufKV[] {
  const model = tok.model ?? "llama";
  const n = tok.pieces.length;
  if (tok.types.length !== n || (model === "llama" && tok.scores?.length !== n)) {
    throw new LlameshError(`tokenizer: ${n} pieces but ${tok.scores?.length ?? "no"} scores and ${tok.types.length} types`);
  }
  if (n > vocabSize) {
    throw new LlameshError(`tokenizer: ${n} pieces, more than the model's vocabulary of ${vocabSize} (llama.cpp needs them equal)`);
  }
  if (model === "gpt2" && (tok.merges === undefined || tok.pre === undefined)) {
    throw new LlameshError(`tokenizer: a "gpt2" vocabulary needs merges and a pre-tokenizer name`);
  }
  const pieces = [...tok.pieces];
  const scores = model === "llama" ? Array.from(tok.scores!) : null;
  const types = Array.from(tok.types);
  for (let id = n; id < vocabSize; id++) {
    pieces.push(`[PAD${id}]`);
    scores?.push(-1000);
    types.push(PieceType.UNUSED);
  }
  const u = (key: string, value: number): GgufKV => ({ key, value: { type: "u32", value } });
  const str = (key: string, value: string): GgufKV => ({ key, value: { type: "string", value } });
  const bool = (key: string, value: boolean): GgufKV => ({ key, value: { type: "bool", value } });
  const kvs: GgufKV[] = [
    str("tokenizer.ggml.model", model),
    str("tokenizer.ggml.pre", model === "gpt2" ? tok.pre! : "default"),
    { key: "tokenizer.ggml.tokens", value: { type: "string[]", value: pieces } },
  ];
  if (scores !== null) kvs.push({ key: "tokenizer.ggml.scores", value: { type: "f32[]", value: scores } });
  kvs.push({ key: "tokenizer.ggml.token_type", value: { type: "i32[]", value: types } });
  if (model === "gpt2") kvs.push({ key: "tokenizer.ggml.merges", value: { type: "string[]", value: tok.merges! } });
  const id = (key: string, v: number | null | undefined): void => {
    if (v !== null && v !== undefined && v >= 0 && v < vocabSize) kvs.push(u(key, v));
  };
  id("tokenizer.ggml.bos_token_id", tok.bos);
  id("tokenizer.ggml.eos_token_id", tok.eos);
  id("tokenizer.ggml.unknown_token_id", tok.unk);
  id("tokenizer.ggml.eot_token_id", tok.eot);
  id("tokenizer.ggml.eom_token_id", tok.eom);
  id("tokenizer.ggml.padding_token_id", tok.padding);
  if (model === "llama") {
    kvs.push(
      bool("tokenizer.ggml.add_bos_token", tok.addBos ?? true),
      bool("tokenizer.ggml.add_eos_token", false),
      bool("tokenizer.ggml.add_space_prefix", tok.addSpacePrefix ?? true),
    );
  } else if (tok.addBos !== undefined) {
    kvs.push(bool("tokenizer.ggml.add_bos_token", tok.addBos));
  }
  if (tok.chatTemplate !== undefined) kvs.push(str("tokenizer.chat_template", tok.chatTemplate));
  return kvs;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const BYTE_PIECE = /^<0x[0-9A-Fa-f]{2}>$/;

/**
 * A SentencePiece vocabulary from a Hugging Face tokenizer.json in the Llama layout (BPE with
 * byte fallback). Types: the unknown token UNKNOWN, other special added tokens CONTROL, other
 * added tokens USER_DEFINED, <0xXX> pieces BYTE, the rest NORMAL. Scores: a piece made by merge
 * number r scores -r (so SentencePiece's highest-score-first merging follows the merge ranks);
 * pieces no merge makes score lower than all of them, in id order.
 */
export function tokenizerSpecFromJson(json: Json, file: string, ids: { bos?: number | null; eos?: number | null; addBos?: boolean } = {}): GgufTokenizerSpec {
  if (isByteLevelJson(json)) {
    const spec = byteLevelSpecFromJson(json, file);
    if (ids.bos !== undefined) spec.bos = ids.bos;
    if (ids.eos !== undefined) spec.eos = ids.eos;
    if (ids.addBos !== undefined) spec.addBos = ids.addBos;
    return spec;
  }
  const model = json["model"];
  if (!isObject(model) || model["type"] !== "BPE" || !isObject(model["vocab"])) {
    throw new LlameshError(`${file}: not a Llama tokenizer.json (expected a BPE model with a vocab, as SentencePiece converts to)`);
  }
  const vocab = model["vocab"] as Record<string, unknown>;
  const added = Array.isArray(json["added_tokens"]) ? (json["added_tokens"] as unknown[]).filter(isObject) : [];
  let size = 0;
  for (const v of Object.values(vocab)) if (typeof v === "number" && v + 1 > size) size = v + 1;
  for (const t of added) if (typeof t["id"] === "number" && t["id"] + 1 > size) size = t["id"] + 1;
  const pieces: (string | undefined)[] = new Array(size);
  for (const [p, v] of Object.entries(vocab)) if (typeof v === "number" && v >= 0) pieces[v] = p;
  const types = new Int32Array(size).fill(PieceType.NORMAL);
  const byteFallback = model["byte_fallback"] === true;
  for (let id = 0; id < size; id++) if (byteFallback && pieces[id] !== undefined && BYTE_PIECE.test(pieces[id]!)) types[id] = PieceType.BYTE;
  const unkToken = typeof model["unk_token"] === "string" ? model["unk_token"] : null;
  for (const t of added) {
    if (typeof t["id"] !== "number" || typeof t["content"] !== "string") continue;
    pieces[t["id"]] = t["content"];
    types[t["id"]] = t["content"] === unkToken ? PieceType.UNKNOWN : t["special"] === true ? PieceType.CONTROL : PieceType.USER_DEFINED;
  }
  let unk: number | null = null;
  for (let id = 0; id < size; id++) {
    if (pieces[id] === undefined) {
      pieces[id] = `[PAD${id}]`;
      types[id] = PieceType.UNUSED;
    }
    if (pieces[id] === unkToken) {
      types[id] = PieceType.UNKNOWN;
      unk ??= id;
    }
  }
  const merges = Array.isArray(model["merges"]) ? (model["merges"] as unknown[]) : [];
  const index = new Map<string, number>();
  pieces.forEach((p, id) => index.set(p!, id));
  const scores = new Float32Array(size).fill(NaN);
  merges.forEach((m, rank) => {
    const pair = typeof m === "string" ? m.split(" ") : Array.isArray(m) ? m : [];
    if (pair.length !== 2) return;
    const id = index.get(`${pair[0]}${pair[1]}`);
    if (id !== undefined && Number.isNaN(scores[id]!)) scores[id] = -rank;
  });
  for (let id = 0; id < size; id++) if (Number.isNaN(scores[id]!)) scores[id] = -(merges.length + id);
  const find = (p: string): number | null => index.get(p) ?? null;
  return {
    pieces: pieces as string[],
    scores,
    types,
    bos: ids.bos !== undefined ? ids.bos : find("<s>"),
    eos: ids.eos !== undefined ? ids.eos : find("</s>"),
    unk,
    addBos: ids.addBos ?? true,
    addSpacePrefix: true,
  };
}

/** A byte-level BPE tokenizer.json (GPT-2, Llama 3, Qwen): a ByteLevel pre-tokenizer or decoder. */
function isByteLevelJson(json: Json): boolean {
  const has = (node: unknown, listKey: string): boolean => {
    if (!isObject(node)) return false;
    if (node["type"] === "ByteLevel") return true;
    const list = node[listKey];
    return node["type"] === "Sequence" && Array.isArray(list) && list.some((c) => has(c, listKey));
  };
  return has(json["pre_tokenizer"], "pretokenizers") || has(json["decoder"], "decoders");
}

/** llama.cpp's converter (does_token_look_special): added tokens it makes CONTROL though not marked special. */
function looksSpecial(t: string): boolean {
  return (
    ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].includes(t) ||
    (t.startsWith("<|") && t.endsWith("|>")) ||
    (t.startsWith("<\uff5c") && t.endsWith("\uff5c>")) ||
    (t.startsWith("<unused") && t.endsWith(">"))
  );
}

/**
 * A "gpt2" vocabulary from a byte-level tokenizer.json, as llama.cpp's converter builds it
 * (get_vocab_base): the vocabulary's byte-level strings NORMAL, added tokens as their text,
 * CONTROL when special or special-looking ("<|...|>") and USER_DEFINED otherwise, missing ids
 * "[PADn]" UNUSED; the merges as "left right"; the pre-tokenizer name from its Split regex.
 * bos/eos: the tokenizer's first-position template token only (the folder reader adds the rest).
 */
function byteLevelSpecFromJson(json: Json, file: string): GgufTokenizerSpec {
  const model = json["model"];
  if (!isObject(model) || model["type"] !== "BPE" || !isObject(model["vocab"])) {
    throw new LlameshError(`${file}: expected a byte-level BPE tokenizer.json (a "model" of type BPE with a vocab)`);
  }
  const pre = preTokenizerNameOf(json);
  if (pre === null) {
    throw new LlameshError(`${file}: its pre-tokenizer is none that llamesh can name in a GGUF file (supported: Llama 3 "llama-bpe", Qwen2 "qwen2", GPT-2 "gpt-2")`);
  }
  const vocab = model["vocab"] as Record<string, unknown>;
  const added = Array.isArray(json["added_tokens"]) ? (json["added_tokens"] as unknown[]).filter(isObject) : [];
  let size = 0;
  for (const v of Object.values(vocab)) if (typeof v === "number" && v + 1 > size) size = v + 1;
  for (const t of added) if (typeof t["id"] === "number" && t["id"] + 1 > size) size = t["id"] + 1;
  const pieces: (string | undefined)[] = new Array(size);
  const types = new Int32Array(size).fill(PieceType.NORMAL);
  for (const [p, v] of Object.entries(vocab)) if (typeof v === "number" && v >= 0) pieces[v] = p;
  for (const t of added) {
    if (typeof t["id"] !== "number" || typeof t["content"] !== "string") continue;
    pieces[t["id"]] = t["content"];
    types[t["id"]] = t["special"] === true || looksSpecial(t["content"]) ? PieceType.CONTROL : PieceType.USER_DEFINED;
  }
  for (let id = 0; id < size; id++) {
    if (pieces[id] === undefined) {
      pieces[id] = `[PAD${id}]`;
      types[id] = PieceType.UNUSED;
    }
  }
  const rawMerges = Array.isArray(model["merges"]) ? (model["merges"] as unknown[]) : [];
  const merges = rawMerges.map((m, i) => {
    if (typeof m === "string") return m;
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string") {
      // the pair form may hold spaces; the converter writes them as U+0120 as the byte-level alphabet does
      return (m as string[]).map((part) => part.replaceAll(" ", "\u0120")).join(" ");
    }
    throw new LlameshError(`${file}: model.merges[${i}] is ${JSON.stringify(m)}, expected "left right" or ["left", "right"]`);
  });
  // a post-processor template that starts with a special token adds it as BOS
  let bos: number | null = null;
  let addBos: boolean | undefined;
  const procs: unknown[] = [];
  const pp = json["post_processor"];
  if (isObject(pp)) procs.push(...(Array.isArray(pp["processors"]) ? pp["processors"] : [pp]));
  for (const p of procs) {
    if (!isObject(p) || p["type"] !== "TemplateProcessing" || !Array.isArray(p["single"]) || p["single"].length < 2) continue;
    const first: unknown = p["single"][0];
    if (isObject(first) && isObject(first["SpecialToken"]) && typeof first["SpecialToken"]["id"] === "string") {
      const name = first["SpecialToken"]["id"];
      const idx = pieces.indexOf(name);
      if (idx >= 0) bos = idx;
      addBos = true;
    }
  }
  return { model: "gpt2", pre, pieces: pieces as string[], types, merges, bos, eos: null, addBos };
}

function firstId(v: unknown): number | null | undefined {
  if (typeof v === "number" && Number.isInteger(v)) return v;
  if (Array.isArray(v) && typeof v[0] === "number") return v[0];
  return undefined;
}

function tokenName(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (isObject(v) && typeof v["content"] === "string") return v["content"];
  return null;
}

/**
 * The vocabulary of a Hugging Face model folder: tokenizer.model when present (as llama.cpp's
 * converter prefers it), else tokenizer.json in the Llama layout. BOS/EOS ids from config.json,
 * else tokenizer_config.json, else the tokenizer's own; add_bos_token from tokenizer_config.json.
 */
export function tokenizerSpecFromFolder(dir: string): GgufTokenizerSpec {
  const opt = (name: string): Json | null => {
    const f = path.join(dir, name);
    return fs.existsSync(f) ? readJsonFile(f) : null;
  };
  const config = opt("config.json");
  const tc = opt("tokenizer_config.json");
  const tcAddBos = typeof tc?.["add_bos_token"] === "boolean" ? (tc["add_bos_token"] as boolean) : undefined;
  const addBos = tcAddBos ?? true;
  const spFile = path.join(dir, "tokenizer.model");
  const jsonFile = path.join(dir, "tokenizer.json");
  const chat = folderChatTemplate(dir);
  let spec: GgufTokenizerSpec;
  const json = !fs.existsSync(spFile) && fs.existsSync(jsonFile) ? readJsonFile(jsonFile) : null;
  if (json !== null && isByteLevelJson(json)) {
    // as llama.cpp's converter (SpecialVocab): tokenizer_config's token names first, then config.json's ids
    spec = byteLevelSpecFromJson(json, jsonFile);
    if (tcAddBos !== undefined) spec.addBos = tcAddBos;
    const addedId = (v: unknown): number | undefined => {
      const name = tokenName(v);
      if (name === null) return undefined;
      const id = spec.pieces.indexOf(name);
      return id >= 0 && spec.types[id] !== PieceType.NORMAL ? id : undefined;
    };
    const idOf = (key: "bos" | "eos" | "pad"): number | null | undefined =>
      addedId(tc?.[`${key}_token`]) ?? firstId(config?.[`${key}_token_id`]);
    spec.bos = idOf("bos") ?? spec.bos;
    spec.eos = idOf("eos") ?? null;
    spec.padding = idOf("pad") ?? null;
    if (chat !== null) spec.chatTemplate = chat.template;
    return spec;
  }
  if (fs.existsSync(spFile)) {
    const m = parseSentencePieceModel(fs.readFileSync(spFile), spFile);
    if (m.trainerSpec.modelType !== "bpe") {
      throw new LlameshError(`${spFile}: a SentencePiece ${m.trainerSpec.modelType} model; llama.cpp's "llama" tokenizer is BPE`);
    }
    const n = m.pieces.length;
    const inRange = (id: number): number | null => (id >= 0 && id < n ? id : null);
    spec = {
      pieces: m.pieces.map((p) => p.piece),
      scores: Float32Array.from(m.pieces, (p) => p.score),
      types: Int32Array.from(m.pieces, (p) => p.type),
      bos: inRange(m.trainerSpec.bosId),
      eos: inRange(m.trainerSpec.eosId),
      unk: inRange(m.trainerSpec.unkId),
      addBos,
      addSpacePrefix: m.normalizerSpec.addDummyPrefix,
    };
  } else if (json !== null) {
    spec = tokenizerSpecFromJson(json, jsonFile, { addBos });
  } else {
    throw new LlameshError(`${dir}: no tokenizer.model or tokenizer.json (a GGUF file needs the vocabulary)`);
  }
  const lookup = (v: unknown): number | undefined => {
    const name = tokenName(v);
    if (name === null) return undefined;
    const id = spec.pieces.indexOf(name);
    return id >= 0 ? id : undefined;
  };
  const bos = firstId(config?.["bos_token_id"]) ?? lookup(tc?.["bos_token"]);
  const eos = firstId(config?.["eos_token_id"]) ?? lookup(tc?.["eos_token"]);
  if (bos !== undefined) spec.bos = bos;
  if (eos !== undefined) spec.eos = eos;
  if (chat !== null) spec.chatTemplate = chat.template;
  return spec;
}

// ---------------------------------------------------------------------------------------------
// From a model folder, from synthetic tensors
// ---------------------------------------------------------------------------------------------

/** Type of a tensor of `shape` in a file of `quant`: norms F32, Q8_0 matrices with odd rows F16. */
export function tensorTypeFor(shape: number[], quant: GgufQuant): GgufTensorType {
  if (shape.length === 1) return "F32";
  if (quant === "Q8_0" && shape[shape.length - 1]! % QK8_0 !== 0) return "F16";
  return quant;
}

interface Described {
  name: string;
  rope: "q" | "k" | null;
}

function describeHf(hfName: string, c: LlamaConfig): Described {
  // the llama architecture has its q/k rows permuted for llama.cpp's interleaved RoPE; qwen does not
  const g = ggufNameOf(hfName, ggufArchitecture(c) === "llama");
  if (g === null) throw new LlameshError(`tensor ${hfName} has no GGUF name (not a tensor llamesh knows)`);
  return g;
}

function outTensor(c: LlamaConfig, hfName: string, shape: number[], quant: GgufQuant, produce: GgufTensorOut["produce"]): GgufTensorOut {
  const g = describeHf(hfName, c);
  return {
    name: g.name,
    shape,
    type: tensorTypeFor(shape, quant),
    produce,
    permuteHeadDim: g.rope !== null ? c.headDim : undefined,
  };
}

/** Names of a Llama checkpoint's tensors, in the order we write them. */
function llamaTensorNames(c: LlamaConfig): string[] {
  const names = ["model.embed_tokens.weight"];
  const layer = [
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    ...(c.attnBias ? ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"] : []),
    ...(c.qkNorm ? ["self_attn.q_norm.weight", "self_attn.k_norm.weight"] : []),
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
  ];
  for (let i = 0; i < c.nLayers; i++) for (const k of layer) names.push(`model.layers.${i}.${k}`);
  names.push("model.norm.weight");
  if (!c.tiedEmbeddings) names.push("lm_head.weight");
  return names;
}

const SLICE_FLOATS = 1 << 22;

/** Write a llama GGUF from a Hugging Face safetensors folder (config.json, weights, tokenizer). */
export function writeGgufFromSafetensors(modelDir: string, file: string, opts: GgufWriteOptions): void {
  const c = loadLlamaConfig(modelDir);
  const tok = opts.tokenizer ?? tokenizerSpecFromFolder(modelDir);
  const meta = llamaMetadata(c, tok, opts.quant, opts.name ?? path.basename(path.resolve(modelDir)));
  if (opts.fileType !== undefined) {
    const ft = meta.find((kv) => kv.key === "general.file_type");
    if (ft) ft.value = { type: "u32", value: opts.fileType };
  }
  const src = SafetensorsModel.open(modelDir);
  try {
    const tensors = llamaTensorNames(c).map((name) => {
      const shape = src.info(name).shape;
      const rows = shape.length === 1 ? 1 : shape[0]!;
      const cols = shape.length === 1 ? shape[0]! : shape.slice(1).reduce((a, b) => a * b, 1);
      const gg = shape.length <= 2 ? shape : [rows, cols];
      const t = outTensor(c, name, gg, opts.quant, (emit) => {
        const per = Math.max(1, Math.floor(SLICE_FLOATS / cols));
        const buf = new Float32Array(Math.min(rows, per) * cols);
        for (let r = 0; r < rows; r += per) {
          const k = Math.min(per, rows - r);
          const slice = buf.subarray(0, k * cols);
          src.readRows(name, r, k, slice);
          emit(slice);
        }
      });
      const planned = opts.types?.[name];
      if (planned !== undefined && shape.length > 1) t.type = planned;
      return t;
    });
    writeGguf(file, meta, [...tensors, ...ropeFreqsTensor(c)], { onProgress: opts.onProgress, encode: opts.encode });
  } finally {
    src.close();
  }
}

/** The byte-level vocabulary of synthetic checkpoints (see byteLevelTokenizerJson). */
export function byteLevelTokenizerSpec(): GgufTokenizerSpec {
  return tokenizerSpecFromJson(byteLevelTokenizerJson(), "byte-level tokenizer", { bos: 1, eos: 2, addBos: true });
}

/**
 * Write a llama GGUF straight from synthetic tensors (HF names, values from `fill`). `fill` is a
 * stateful generator: tensors are generated in the list's order and sliced by rows exactly as
 * writeSafetensors does, so a GGUF and a safetensors file of one seed hold the same values.
 */
export function writeGgufFromTensors(file: string, shape: SyntheticShape, tensors: TensorSpec[], opts: GgufWriteOptions): void {
  const c = parseLlamaConfig(syntheticConfig(shape, "F32"), "synthetic shape");
  const tok = opts.tokenizer ?? byteLevelTokenizerSpec();
  const meta = llamaMetadata(c, tok, opts.quant, opts.name ?? "llamesh synthetic");
  const out = tensors.map((t) =>
    outTensor(c, t.name, t.shape, opts.quant, (emit) => {
      const n = t.shape.reduce((a, b) => a * b, 1);
      const rowLen = t.shape.length > 1 ? n / t.shape[0]! : n;
      if (n <= SLICE_FLOATS) {
        const all = new Float32Array(n);
        t.fill(all);
        emit(all);
        return;
      }
      const rows = t.shape.length > 1 ? t.shape[0]! : 1;
      const rowsPer = Math.max(1, Math.floor(SLICE_FLOATS / rowLen));
      const buf = new Float32Array(rowsPer * rowLen);
      for (let r = 0; r < rows; r += rowsPer) {
        const slice = buf.subarray(0, Math.min(rowsPer, rows - r) * rowLen);
        t.fill(slice);
        emit(slice);
      }
    }),
  );
  writeGguf(file, meta, [...out, ...ropeFreqsTensor(c)], { onProgress: opts.onProgress });
}

/** rope_freqs.weight for llama3 RoPE scaling (none otherwise). */
function ropeFreqsTensor(c: LlamaConfig): GgufTensorOut[] {
  const f = ropeFreqFactors(c);
  return f ? [{ name: "rope_freqs.weight", shape: [f.length], type: "F32", produce: (emit) => emit(f) }] : [];
}

/**
 * A GGUF file holding a vocabulary and no tensors (llama architecture metadata of a tiny model, so
 * llama.cpp opens it with vocab_only, as its own ggml-vocab-*.gguf test files): for tokenizer tests.
 */
export function writeTokenizerGguf(file: string, tok: GgufTokenizerSpec, vocabSize = tok.pieces.length): void {
  const shape: SyntheticShape = { dim: 64, hiddenDim: 128, nLayers: 1, nHeads: 2, nKvHeads: 2, vocabSize, seqLen: 256, tied: true };
  const c = parseLlamaConfig(syntheticConfig(shape, "F32"), "vocabulary-only GGUF");
  writeGguf(file, llamaMetadata(c, tok, "F32", "llamesh vocabulary"), []);
}
