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
 * - writes the llama metadata and the SentencePiece vocabulary (tokenizer.ggml.*).
 *
 * Tensors are streamed a slice of rows at a time: a 7B file is never held in memory.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Q8_0_BLOCK_BYTES, QK8_0 } from "../kernels/q8.js";
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
 * Adding then subtracting 1.5 * 2^52 rounds a double of magnitude below 2^51 to an integer, ties
 * to even (the IEEE default rounding): the same as roundHalfEven, several times faster.
 */
const ROUND_MAGIC = 6755399441055744;

/** Quantize whole Q8_0 blocks of `x` into `out` (34 bytes per 32 values), as ReferenceKernels.quantizeQ8. */
export function quantizeQ8_0(x: Float32Array, out: Uint8Array): void {
  const fround = Math.fround;
  const nb = x.length / QK8_0;
  const i8 = new Int8Array(out.buffer, out.byteOffset, nb * Q8_0_BLOCK_BYTES);
  for (let b = 0; b < nb; b++) {
    const s = b * QK8_0;
    let amax = 0;
    for (let i = 0; i < QK8_0; i++) {
      const a = Math.abs(x[s + i]!);
      if (a > amax) amax = a;
    }
    const d = fround(amax / 127);
    const id = d !== 0 ? fround(1 / d) : 0;
    const o = b * Q8_0_BLOCK_BYTES;
    const h = f32ToF16(d);
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    for (let i = 0; i < QK8_0; i++) i8[o + 2 + i] = fround(x[s + i]! * id) + ROUND_MAGIC - ROUND_MAGIC;
  }
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
        const bytes = encodeRows(t.type, x);
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

/** A SentencePiece vocabulary as GGUF stores it. */
export interface GgufTokenizerSpec {
  pieces: readonly string[];
  scores: ArrayLike<number>;
  /** PieceType values (llama.cpp's token types are the same numbers). */
  types: ArrayLike<number>;
  bos: number | null;
  eos: number | null;
  unk?: number | null;
  /** tokenizer.ggml.add_bos_token; default true. */
  addBos?: boolean;
  /** tokenizer.ggml.add_space_prefix (SentencePiece's add_dummy_prefix); default true. */
  addSpacePrefix?: boolean;
}

export type GgufQuant = "Q8_0" | "F16" | "F32";

export interface GgufWriteOptions {
  quant: GgufQuant;
  /** The vocabulary; default: the model folder's tokenizer (or, for synthetic tensors, the byte-level one). */
  tokenizer?: GgufTokenizerSpec;
  /** general.name */
  name?: string;
  onProgress?: (done: number, total: number) => void;
}

const FILE_TYPE: Record<GgufQuant, number> = { F32: 0, F16: 1, Q8_0: 7 };

/** The llama metadata llama.cpp reads, for `c` and `tok` (padded with unused pieces to the vocabulary size). */
export function llamaMetadata(c: LlamaConfig, tok: GgufTokenizerSpec, quant: GgufQuant, name = "llamesh"): GgufKV[] {
  const n = tok.pieces.length;
  if (tok.scores.length !== n || tok.types.length !== n) {
    throw new LlameshError(`tokenizer: ${n} pieces but ${tok.scores.length} scores and ${tok.types.length} types`);
  }
  if (n > c.vocabSize) {
    throw new LlameshError(`tokenizer: ${n} pieces, more than the model's vocabulary of ${c.vocabSize} (llama.cpp needs them equal)`);
  }
  // llama.cpp needs one piece per embedding row: pad as its converter does
  const pieces = [...tok.pieces];
  const scores = Array.from(tok.scores);
  const types = Array.from(tok.types);
  for (let id = n; id < c.vocabSize; id++) {
    pieces.push(`[PAD${id}]`);
    scores.push(-1000);
    types.push(PieceType.UNUSED);
  }
  const u = (key: string, value: number): GgufKV => ({ key, value: { type: "u32", value } });
  const f = (key: string, value: number): GgufKV => ({ key, value: { type: "f32", value } });
  const kvs: GgufKV[] = [
    { key: "general.architecture", value: { type: "string", value: "llama" } },
    { key: "general.name", value: { type: "string", value: name } },
    u("general.file_type", FILE_TYPE[quant]),
    u("general.quantization_version", 2),
    u("llama.vocab_size", c.vocabSize),
    u("llama.context_length", c.seqLen),
    u("llama.embedding_length", c.dim),
    u("llama.block_count", c.nLayers),
    u("llama.feed_forward_length", c.hiddenDim),
    u("llama.rope.dimension_count", c.headDim),
    u("llama.attention.head_count", c.nHeads),
    u("llama.attention.head_count_kv", c.nKvHeads),
    f("llama.attention.layer_norm_rms_epsilon", c.normEps),
    f("llama.rope.freq_base", c.ropeTheta),
    { key: "tokenizer.ggml.model", value: { type: "string", value: "llama" } },
    { key: "tokenizer.ggml.pre", value: { type: "string", value: "default" } },
    { key: "tokenizer.ggml.tokens", value: { type: "string[]", value: pieces } },
    { key: "tokenizer.ggml.scores", value: { type: "f32[]", value: scores } },
    { key: "tokenizer.ggml.token_type", value: { type: "i32[]", value: types } },
  ];
  const id = (key: string, v: number | null | undefined): void => {
    if (v !== null && v !== undefined && v >= 0 && v < c.vocabSize) kvs.push(u(key, v));
  };
  id("tokenizer.ggml.bos_token_id", tok.bos);
  id("tokenizer.ggml.eos_token_id", tok.eos);
  id("tokenizer.ggml.unknown_token_id", tok.unk);
  kvs.push(
    { key: "tokenizer.ggml.add_bos_token", value: { type: "bool", value: tok.addBos ?? true } },
    { key: "tokenizer.ggml.add_eos_token", value: { type: "bool", value: false } },
    { key: "tokenizer.ggml.add_space_prefix", value: { type: "bool", value: tok.addSpacePrefix ?? true } },
  );
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
  const addBos = typeof tc?.["add_bos_token"] === "boolean" ? (tc["add_bos_token"] as boolean) : true;
  const spFile = path.join(dir, "tokenizer.model");
  const jsonFile = path.join(dir, "tokenizer.json");
  let spec: GgufTokenizerSpec;
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
  } else if (fs.existsSync(jsonFile)) {
    spec = tokenizerSpecFromJson(readJsonFile(jsonFile), jsonFile, { addBos });
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

function describeHf(hfName: string): Described {
  const g = ggufNameOf(hfName);
  if (g === null) throw new LlameshError(`tensor ${hfName} has no GGUF name (not a Llama tensor llamesh knows)`);
  return g;
}

function outTensor(c: LlamaConfig, hfName: string, shape: number[], quant: GgufQuant, produce: GgufTensorOut["produce"]): GgufTensorOut {
  const g = describeHf(hfName);
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
  const src = SafetensorsModel.open(modelDir);
  try {
    const tensors = llamaTensorNames(c).map((name) => {
      const shape = src.info(name).shape;
      const rows = shape.length === 1 ? 1 : shape[0]!;
      const cols = shape.length === 1 ? shape[0]! : shape.slice(1).reduce((a, b) => a * b, 1);
      const gg = shape.length <= 2 ? shape : [rows, cols];
      return outTensor(c, name, gg, opts.quant, (emit) => {
        const per = Math.max(1, Math.floor(SLICE_FLOATS / cols));
        const buf = new Float32Array(Math.min(rows, per) * cols);
        for (let r = 0; r < rows; r += per) {
          const k = Math.min(per, rows - r);
          const slice = buf.subarray(0, k * cols);
          src.readRows(name, r, k, slice);
          emit(slice);
        }
      });
    });
    writeGguf(file, meta, tensors, { onProgress: opts.onProgress });
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
  writeGguf(file, meta, out, { onProgress: opts.onProgress });
}
