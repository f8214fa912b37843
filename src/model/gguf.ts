/**
 * GGUF reader (llama.cpp's single-file format, versions 2 and 3, little-endian).
 *
 * Layout: "GGUF", u32 version, u64 tensor count, u64 metadata count; the metadata as
 * (string key, u32 value type, value); the tensor infos as (string name, u32 n_dims,
 * u64 dims[n_dims] with dims[0] the innermost = columns, u32 ggml type, u64 offset); then,
 * aligned to `general.alignment` (default 32), the data section the offsets are relative to.
 * Strings are a u64 byte length and UTF-8 bytes; arrays are a u32 element type, a u64 count and
 * the elements. Every count, length and offset is checked against the file size before it is
 * used, and only the header is read at open: tensors are read a few rows at a time.
 *
 * `openGguf` turns a llama GGUF into what the engine needs: a LlamaConfig, a TensorSource that
 * answers to the Hugging Face tensor names (see hfNames in engine/weights.ts) and a tokenizer.
 *
 * RoPE layout: llama.cpp's converter permutes the rows of q_proj and k_proj from the Hugging Face
 * rotate-half layout into the interleaved (Meta) layout, per head of headDim rows:
 *   permute(w, n_head) = w.reshape(n_head, 2, headDim/2, cols).swapaxes(1, 2).reshape(w.shape)
 * so GGUF row 2i of a head holds HF row i and GGUF row 2i+1 holds HF row i + headDim/2. Our
 * kernels use rotate-half, so the source undoes this when reading attn_q / attn_k rows. Rows are
 * whole (Q8_0 rows too), so this is a row reordering, never a re-quantization.
 */
import * as fs from "node:fs";
import type { LlamaConfig } from "./config.js";
import { fileError, LlameshError } from "./errors.js";
import type { TensorInfo, TensorSource } from "./safetensors.js";
import { PieceType } from "./sentencepiece.js";
import { tokenizerFromSentencePiece, type ConfiguredTokenizer } from "./tokenizer.js";
import { bf16ToF32, F16_TO_F32, Q8_0_BLOCK_BYTES, QK8_0 } from "../kernels/q8.js";

export const GGUF_MAGIC = "GGUF";
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** gguf_metadata_value_type */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

/** ggml_type ids of the tensor types we read (ggml.h / gguf-py constants). */
export const GgmlType = { F32: 0, F16: 1, Q8_0: 8, BF16: 30 } as const;
export type GgufTensorType = keyof typeof GgmlType;

/** Names of the other ggml types, for error messages. */
const GGML_TYPE_NAMES: Record<number, string> = {
  0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
  10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
  16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
  23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
  34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
};

export function ggmlTypeName(id: number): string {
  return GGML_TYPE_NAMES[id] ?? `unknown type ${id}`;
}

const TYPE_BY_ID = new Map<number, GgufTensorType>(
  (Object.entries(GgmlType) as [GgufTensorType, number][]).map(([name, id]) => [id, name]),
);

/** Bytes of `n` values (n a multiple of 32 for Q8_0) of a supported type. */
export function ggmlRowBytes(type: GgufTensorType, n: number): number {
  switch (type) {
    case "F32":
      return n * 4;
    case "F16":
    case "BF16":
      return n * 2;
    case "Q8_0":
      return (n / QK8_0) * Q8_0_BLOCK_BYTES;
  }
}

/** A tensor as the GGUF file describes it. */
export interface GgufTensor {
  name: string;
  /** ggml order: dims[0] is the innermost (columns). */
  dims: number[];
  type: GgufTensorType;
  /** Absolute byte offset of the data in the file. */
  offset: number;
  nbytes: number;
}

export interface GgufFile {
  file: string;
  version: number;
  size: number;
  alignment: number;
  metadata: Map<string, unknown>;
  tensors: Map<string, GgufTensor>;
  /** Absolute offset of the data section. */
  dataStart: number;
}

/** Bytes the smallest possible metadata entry / tensor info take: bound counts by the file size. */
const MIN_KV_BYTES = 8 + 1 + 4 + 1;
const MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8;
const MAX_DIMS = 4;
const WINDOW = 1 << 20;

function openFile(file: string): number {
  try {
    return fs.openSync(file, "r");
  } catch (e) {
    throw fileError(file, e, "open");
  }
}

function readFully(fd: number, file: string, buf: Uint8Array, len: number, pos: number): void {
  let got = 0;
  while (got < len) {
    const r = fs.readSync(fd, buf, got, len - got, pos + got);
    if (r === 0) throw new LlameshError(`${file}: unexpected end of file at byte ${pos + got} (file truncated?)`);
    got += r;
  }
}

/** Sequential little-endian reads over a window of the file, every read checked against its size. */
class Cursor {
  pos = 0;
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  private bufEnd = 0;

  constructor(
    private readonly fd: number,
    readonly size: number,
    readonly file: string,
  ) {}

  /** Make `n` bytes at the cursor available; returns their offset in `this.buf` and advances. */
  private take(n: number, what: string): number {
    if (this.pos + n > this.size) {
      throw new LlameshError(
        `${this.file}: truncated GGUF file: ${what} needs ${n} bytes at byte ${this.pos}, but the file is ${this.size} bytes`,
      );
    }
    if (this.pos < this.bufStart || this.pos + n > this.bufEnd) {
      const len = Math.min(Math.max(n, WINDOW), this.size - this.pos);
      if (this.buf.length < len) this.buf = Buffer.alloc(len);
      readFully(this.fd, this.file, this.buf, len, this.pos);
      this.bufStart = this.pos;
      this.bufEnd = this.pos + len;
    }
    const o = this.pos - this.bufStart;
    this.pos += n;
    return o;
  }

  remaining(): number {
    return this.size - this.pos;
  }

  bytes(n: number, what: string): Buffer {
    const o = this.take(n, what);
    return this.buf.subarray(o, o + n);
  }

  u8(what: string): number {
    return this.buf[this.take(1, what)]!;
  }
  i8(what: string): number {
    return this.buf.readInt8(this.take(1, what));
  }
  u16(what: string): number {
    return this.buf.readUInt16LE(this.take(2, what));
  }
  i16(what: string): number {
    return this.buf.readInt16LE(this.take(2, what));
  }
  u32(what: string): number {
    return this.buf.readUInt32LE(this.take(4, what));
  }
  i32(what: string): number {
    return this.buf.readInt32LE(this.take(4, what));
  }
  f32(what: string): number {
    return this.buf.readFloatLE(this.take(4, what));
  }
  f64(what: string): number {
    return this.buf.readDoubleLE(this.take(8, what));
  }
  /** A u64 as a number, or a bigint when it does not fit exactly. */
  u64Value(what: string): number | bigint {
    const v = this.buf.readBigUInt64LE(this.take(8, what));
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  i64Value(what: string): number | bigint {
    const v = this.buf.readBigInt64LE(this.take(8, what));
    return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
  }
  /** A u64 size or count: must fit in a safe integer. */
  u64(what: string): number {
    const v = this.u64Value(what);
    if (typeof v === "bigint") throw new LlameshError(`${this.file}: ${what} is ${v}, impossibly large (corrupt GGUF file?)`);
    return v;
  }

  string(what: string): string {
    const at = this.pos;
    const len = this.u64(`${what} length`);
    if (len > this.remaining()) {
      throw new LlameshError(
        `${this.file}: truncated GGUF file: ${what} at byte ${at} has length ${len}, but only ${this.remaining()} bytes follow`,
      );
    }
    const o = this.take(len, what);
    return this.buf.toString("utf8", o, o + len);
  }
}

/**
 * The shortest decimal that rounds to the same f32: a FLOAT32 scalar such as rms_norm_eps 1e-5
 * reads back as 1e-5, as in config.json, not as 9.99999974e-6.
 */
export function shortestF32(v: number): number {
  if (!Number.isFinite(v)) return v;
  for (let p = 1; p <= 9; p++) {
    const d = Number(v.toPrecision(p));
    if (Math.fround(d) === v) return d;
  }
  return v;
}

/** A copy of `n` little-endian elements of `bytesPer` bytes, as a fresh aligned buffer. */
function copyAligned(src: Buffer, nbytes: number): ArrayBuffer {
  const out = new Uint8Array(nbytes);
  out.set(src.subarray(0, nbytes));
  return out.buffer;
}

const FIXED_SIZE: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

function readValue(c: Cursor, type: number, key: string): unknown {
  const what = `metadata ${key}`;
  switch (type) {
    case GgufValueType.UINT8:
      return c.u8(what);
    case GgufValueType.INT8:
      return c.i8(what);
    case GgufValueType.UINT16:
      return c.u16(what);
    case GgufValueType.INT16:
      return c.i16(what);
    case GgufValueType.UINT32:
      return c.u32(what);
    case GgufValueType.INT32:
      return c.i32(what);
    case GgufValueType.FLOAT32:
      return shortestF32(c.f32(what));
    case GgufValueType.UINT64:
      return c.u64Value(what);
    case GgufValueType.INT64:
      return c.i64Value(what);
    case GgufValueType.FLOAT64:
      return c.f64(what);
    case GgufValueType.BOOL: {
      const at = c.pos;
      const b = c.u8(what);
      if (b > 1) throw new LlameshError(`${c.file}: ${what} at byte ${at} is a bool of value ${b}, expected 0 or 1 (corrupt GGUF file?)`);
      return b === 1;
    }
    case GgufValueType.STRING:
      return c.string(what);
    case GgufValueType.ARRAY:
      return readArray(c, key);
    default:
      throw new LlameshError(`${c.file}: ${what} has value type ${type}, not a GGUF value type (corrupt file?)`);
  }
}

function readArray(c: Cursor, key: string): unknown {
  const at = c.pos;
  const itemType = c.u32(`metadata ${key} array type`);
  const n = c.u64(`metadata ${key} array length`);
  const minItem = FIXED_SIZE[itemType] ?? (itemType === GgufValueType.STRING || itemType === GgufValueType.ARRAY ? 8 : 1);
  if (n * minItem > c.remaining()) {
    throw new LlameshError(
      `${c.file}: truncated GGUF file: metadata ${key} at byte ${at} is an array of ${n} elements, more than the ${c.remaining()} bytes that follow hold`,
    );
  }
  const fixed = FIXED_SIZE[itemType];
  const what = `metadata ${key}`;
  if (fixed !== undefined && itemType !== GgufValueType.BOOL && itemType !== GgufValueType.UINT64 && itemType !== GgufValueType.INT64) {
    const buf = copyAligned(c.bytes(n * fixed, what), n * fixed);
    switch (itemType) {
      case GgufValueType.UINT8:
        return new Uint8Array(buf);
      case GgufValueType.INT8:
        return new Int8Array(buf);
      case GgufValueType.UINT16:
        return new Uint16Array(buf);
      case GgufValueType.INT16:
        return new Int16Array(buf);
      case GgufValueType.UINT32:
        return new Uint32Array(buf);
      case GgufValueType.INT32:
        return new Int32Array(buf);
      case GgufValueType.FLOAT32:
        return new Float32Array(buf);
      case GgufValueType.FLOAT64:
        return new Float64Array(buf);
    }
  }
  const out: unknown[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = readValue(c, itemType, key);
  return out;
}

/**
 * Parse and validate the header, metadata and tensor infos of a GGUF file (any architecture).
 * Tensors must be of a type we read (F32, F16, BF16, Q8_0) and lie inside the file.
 */
export function readGguf(file: string, checkMetadata?: (metadata: Map<string, unknown>) => void): GgufFile {
  const fd = openFile(file);
  try {
    return parseGguf(fd, file, checkMetadata);
  } finally {
    fs.closeSync(fd);
  }
}

function parseGguf(fd: number, file: string, checkMetadata?: (metadata: Map<string, unknown>) => void): GgufFile {
  const size = fs.fstatSync(fd).size;
  if (size < 24) {
    if (size >= 4) {
      const head = Buffer.alloc(4);
      readFully(fd, file, head, 4, 0);
      if (head.toString("latin1") !== GGUF_MAGIC) throw badMagic(file, head);
    }
    throw new LlameshError(`${file}: ${size} bytes, too short for a GGUF file (expected a 24-byte header first)`);
  }
  const c = new Cursor(fd, size, file);
  const magic = c.bytes(4, "magic");
  if (magic.toString("latin1") !== GGUF_MAGIC) throw badMagic(file, magic);
  const version = c.u32("version");
  if (version !== 2 && version !== 3) {
    const swapped = ((version & 0xff) << 24) | ((version >>> 8) & 0xff) << 16 | ((version >>> 16) & 0xff) << 8 | (version >>> 24);
    const hint = version === 1 ? " (version 1 is the 2023 draft format)" : swapped === 2 || swapped === 3 ? " (a big-endian file?)" : "";
    throw new LlameshError(`${file}: GGUF version ${version} is not supported${hint}; expected version 2 or 3, little-endian`);
  }
  const nTensors = c.u64("tensor count");
  const nKv = c.u64("metadata count");
  if (nKv * MIN_KV_BYTES > c.remaining() || nTensors * MIN_TENSOR_INFO_BYTES > c.remaining()) {
    throw new LlameshError(
      `${file}: GGUF header claims ${nTensors} tensors and ${nKv} metadata entries, more than a ${size}-byte file can hold (corrupt or truncated?)`,
    );
  }

  const metadata = new Map<string, unknown>();
  for (let i = 0; i < nKv; i++) {
    const key = c.string(`metadata key #${i}`);
    if (metadata.has(key)) throw new LlameshError(`${file}: metadata key ${key} appears twice (corrupt GGUF file?)`);
    const type = c.u32(`metadata ${key} type`);
    metadata.set(key, readValue(c, type, key));
  }

  checkMetadata?.(metadata);
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  if (metadata.has("general.alignment")) {
    const a = metadata.get("general.alignment");
    if (typeof a !== "number" || !Number.isInteger(a) || a <= 0 || (a & (a - 1)) !== 0) {
      throw new LlameshError(`${file}: general.alignment is ${String(a)}, expected a power of two`);
    }
    alignment = a;
  }

  interface RawInfo {
    name: string;
    dims: number[];
    type: GgufTensorType;
    rel: number;
    nbytes: number;
  }
  const infos: RawInfo[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const name = c.string(`tensor name #${i}`);
    if (seen.has(name)) throw new LlameshError(`${file}: tensor ${name} appears twice (corrupt GGUF file?)`);
    seen.add(name);
    const nDims = c.u32(`tensor ${name} n_dims`);
    if (nDims < 1 || nDims > MAX_DIMS) {
      throw new LlameshError(`${file}: tensor ${name} has ${nDims} dimensions, expected 1 to ${MAX_DIMS}`);
    }
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(c.u64(`tensor ${name} dimension ${d}`));
    const typeId = c.u32(`tensor ${name} type`);
    const rel = c.u64(`tensor ${name} offset`);
    const type = TYPE_BY_ID.get(typeId);
    if (type === undefined) {
      throw new LlameshError(
        `${file}: tensor ${name} has type ${ggmlTypeName(typeId)}, which llamesh does not read (expected F32, F16, BF16 or Q8_0; requantize with llama-quantize to Q8_0)`,
      );
    }
    if (type === "Q8_0" && dims[0]! % QK8_0 !== 0) {
      throw new LlameshError(`${file}: tensor ${name} is Q8_0 with rows of ${dims[0]} values, not a multiple of ${QK8_0}`);
    }
    const count = dims.reduce((a, b) => a * b, 1);
    const nbytes = ggmlRowBytes(type, count);
    if (!Number.isSafeInteger(nbytes)) throw new LlameshError(`${file}: tensor ${name} has impossible dimensions [${dims.join(", ")}]`);
    if (rel % alignment !== 0) {
      throw new LlameshError(`${file}: tensor ${name} has data offset ${rel}, not a multiple of the alignment ${alignment} (corrupt GGUF file?)`);
    }
    infos.push({ name, dims, type, rel, nbytes });
  }
  const dataStart = Math.ceil(c.pos / alignment) * alignment;
  const tensors = new Map<string, GgufTensor>();
  for (const t of infos) {
    const begin = dataStart + t.rel;
    const end = begin + t.nbytes;
    if (end > size) {
      throw new LlameshError(
        `${file}: tensor ${t.name} data [${begin}, ${end}) lies outside the file (${size} bytes; truncated or corrupt GGUF file?)`,
      );
    }
    tensors.set(t.name, { name: t.name, dims: t.dims, type: t.type, offset: begin, nbytes: t.nbytes });
  }
  return { file, version, size, alignment, metadata, tensors, dataStart };
}

function badMagic(file: string, head: Buffer): LlameshError {
  const hex = [...head.subarray(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
  return new LlameshError(`${file}: not a GGUF file (starts with bytes ${hex}, expected "GGUF")`);
}

// ---------------------------------------------------------------------------------------------
// Hugging Face <-> GGUF tensor names
// ---------------------------------------------------------------------------------------------

const LAYER_NAMES: Record<string, string> = {
  "input_layernorm.weight": "attn_norm.weight",
  "self_attn.q_proj.weight": "attn_q.weight",
  "self_attn.k_proj.weight": "attn_k.weight",
  "self_attn.v_proj.weight": "attn_v.weight",
  "self_attn.o_proj.weight": "attn_output.weight",
  "post_attention_layernorm.weight": "ffn_norm.weight",
  "mlp.gate_proj.weight": "ffn_gate.weight",
  "mlp.up_proj.weight": "ffn_up.weight",
  "mlp.down_proj.weight": "ffn_down.weight",
};
const GLOBAL_NAMES: Record<string, string> = {
  "model.embed_tokens.weight": "token_embd.weight",
  "model.norm.weight": "output_norm.weight",
  "lm_head.weight": "output.weight",
};

/** What becomes of a Hugging Face tensor in GGUF: its name, and whether its rows are RoPE-permuted. */
export interface GgufName {
  name: string;
  /** "q": permuted per query head, "k": per key/value head; null: rows as they are. */
  rope: "q" | "k" | null;
}

/** The GGUF name of a Hugging Face Llama tensor name, or null if it has none. */
export function ggufNameOf(hfName: string): GgufName | null {
  const g = GLOBAL_NAMES[hfName];
  if (g !== undefined) return { name: g, rope: null };
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  if (m === null) return null;
  const rest = LAYER_NAMES[m[2]!];
  if (rest === undefined) return null;
  const rope = m[2] === "self_attn.q_proj.weight" ? "q" : m[2] === "self_attn.k_proj.weight" ? "k" : null;
  return { name: `blk.${Number(m[1])}.${rest}`, rope };
}

/**
 * Row `hfRow` of a RoPE-permuted tensor: the GGUF row holding it. Within each head of `headDim`
 * rows, HF row i (first half) is GGUF row 2i and HF row headDim/2 + i is GGUF row 2i + 1.
 */
export function ggufRowOfHfRow(hfRow: number, headDim: number): number {
  const half = headDim / 2;
  const head = Math.floor(hfRow / headDim);
  const i = hfRow - head * headDim;
  return head * headDim + (i < half ? 2 * i : 2 * (i - half) + 1);
}

// ---------------------------------------------------------------------------------------------
// The tensor source
// ---------------------------------------------------------------------------------------------

interface Mapped {
  hfName: string;
  t: GgufTensor;
  rows: number;
  cols: number;
  rowBytes: number;
  /** headDim when the rows are RoPE-permuted, else 0. */
  headDim: number;
}

/** The tensors of a llama GGUF file under their Hugging Face names, rows in the HF layout. */
export class GgufSource implements TensorSource {
  readonly files: readonly string[];
  private readonly mapped = new Map<string, Mapped>();
  private fd: number | null = null;
  private buf = Buffer.alloc(0);

  constructor(
    readonly gguf: GgufFile,
    nLayers: number,
    headDim: number,
  ) {
    this.files = [gguf.file];
    const names: string[] = Object.keys(GLOBAL_NAMES);
    for (let i = 0; i < nLayers; i++) for (const k of Object.keys(LAYER_NAMES)) names.push(`model.layers.${i}.${k}`);
    for (const hfName of names) {
      const g = ggufNameOf(hfName)!;
      const t = gguf.tensors.get(g.name);
      if (t === undefined) continue;
      const cols = t.dims[0]!;
      const rows = t.dims.slice(1).reduce((a, b) => a * b, 1);
      this.mapped.set(hfName, { hfName, t, rows, cols, rowBytes: ggmlRowBytes(t.type, cols), headDim: g.rope !== null ? headDim : 0 });
    }
  }

  has(name: string): boolean {
    return this.mapped.has(name);
  }

  /** The Hugging Face names of the tensors present (as SafetensorsModel.names). */
  get names(): string[] {
    return [...this.mapped.keys()];
  }

  private get(name: string): Mapped {
    const m = this.mapped.get(name);
    if (m === undefined) {
      const g = ggufNameOf(name);
      throw new LlameshError(`${this.gguf.file}: missing tensor ${g !== null ? `${g.name} (${name})` : name}`);
    }
    return m;
  }

  info(name: string): TensorInfo {
    const m = this.get(name);
    const shape = m.t.dims.length === 1 ? [m.cols] : [...m.t.dims].reverse();
    return { name, dtype: m.t.type, shape, file: this.gguf.file, offset: m.t.offset, nbytes: m.t.nbytes };
  }

  /** The GGUF tensor behind a Hugging Face name. */
  ggufTensor(name: string): GgufTensor {
    return this.get(name).t;
  }

  /**
   * Raw bytes of rows [row0, row0 + nRows) in HF order; calls `each(bufferOffset, k)` for the
   * k-th HF row with the offset of its bytes in this.buf.
   */
  private readRaw(m: Mapped, row0: number, nRows: number, each: (off: number, k: number) => void): void {
    if (!(row0 >= 0 && nRows >= 0 && row0 + nRows <= m.rows)) {
      throw new RangeError(`${m.hfName}: rows [${row0}, ${row0 + nRows}) outside [0, ${m.rows})`);
    }
    if (nRows === 0) return;
    const hd = m.headDim;
    if (hd > 0 && m.rows % hd !== 0) {
      throw new LlameshError(`${this.gguf.file}: tensor ${m.t.name} has ${m.rows} rows, not a multiple of the head size ${hd}`);
    }
    // without permutation the rows are contiguous; with it, read the whole heads they fall in
    const first = hd > 0 ? Math.floor(row0 / hd) * hd : row0;
    const last = hd > 0 ? Math.ceil((row0 + nRows) / hd) * hd : row0 + nRows;
    const nbytes = (last - first) * m.rowBytes;
    if (this.buf.length < nbytes) this.buf = Buffer.alloc(nbytes);
    if (this.fd === null) this.fd = openFile(this.gguf.file);
    readFully(this.fd, this.gguf.file, this.buf, nbytes, m.t.offset + first * m.rowBytes);
    for (let k = 0; k < nRows; k++) {
      const g = hd > 0 ? ggufRowOfHfRow(row0 + k, hd) : row0 + k;
      each((g - first) * m.rowBytes, k);
    }
  }

  readRows(name: string, row0: number, nRows: number, out: Float32Array): void {
    const m = this.get(name);
    const cols = m.cols;
    if (out.length < nRows * cols) throw new RangeError(`${name}: output holds ${out.length} values, need ${nRows * cols}`);
    this.readRaw(m, row0, nRows, (off, k) => decodeRow(m.t.type, this.buf, off, out, k * cols, cols));
  }

  readQ8Rows(name: string, row0: number, nRows: number, out: Uint8Array): void {
    const m = this.get(name);
    if (m.t.type !== "Q8_0") throw new Error(`${name}: readQ8Rows on a ${m.t.type} tensor`);
    const rb = m.rowBytes;
    if (out.length < nRows * rb) throw new RangeError(`${name}: output holds ${out.length} bytes, need ${nRows * rb}`);
    this.readRaw(m, row0, nRows, (off, k) => out.set(this.buf.subarray(off, off + rb), k * rb));
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    this.buf = Buffer.alloc(0);
  }
}

/** Decode one row of `cols` values at byte `off` of `src` into out[at..]. */
function decodeRow(type: GgufTensorType, src: Buffer, off: number, out: Float32Array, at: number, cols: number): void {
  const p = src.byteOffset + off;
  switch (type) {
    case "F32":
      if (p % 4 === 0) out.set(new Float32Array(src.buffer, p, cols), at);
      else for (let i = 0; i < cols; i++) out[at + i] = src.readFloatLE(off + 4 * i);
      return;
    case "F16":
    case "BF16": {
      const u16 = p % 2 === 0 ? new Uint16Array(src.buffer, p, cols) : null;
      const conv = type === "F16" ? (h: number) => F16_TO_F32[h]! : bf16ToF32;
      for (let i = 0; i < cols; i++) out[at + i] = conv(u16 ? u16[i]! : src.readUInt16LE(off + 2 * i));
      return;
    }
    case "Q8_0": {
      const i8 = new Int8Array(src.buffer, p, (cols / QK8_0) * Q8_0_BLOCK_BYTES);
      for (let b = 0; b < cols / QK8_0; b++) {
        const o = b * Q8_0_BLOCK_BYTES;
        const d = F16_TO_F32[src.readUInt16LE(off + o)]!;
        const base = at + b * QK8_0;
        for (let i = 0; i < QK8_0; i++) out[base + i] = d * i8[o + 2 + i]!;
      }
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// llama metadata -> LlamaConfig, tokenizer
// ---------------------------------------------------------------------------------------------

function scalar(meta: Map<string, unknown>, key: string): unknown {
  const v = meta.get(key);
  // per-layer arrays (some converters write them) are fine when every layer agrees
  if (Array.isArray(v) || ArrayBuffer.isView(v)) {
    const arr = Array.from(v as ArrayLike<unknown>);
    if (arr.length > 0 && arr.every((x) => x === arr[0])) return arr[0];
  }
  return v;
}

function intKey(meta: Map<string, unknown>, key: string, file: string, fallback?: number): number {
  const v = meta.has(key) ? scalar(meta, key) : fallback;
  if (v === undefined) throw new LlameshError(`${file}: missing metadata ${key} (expected a positive integer)`);
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new LlameshError(`${file}: metadata ${key} is ${describe(v)}, expected a positive integer`);
  }
  return v;
}

function numKey(meta: Map<string, unknown>, key: string, file: string, fallback: number): number {
  const v = meta.has(key) ? scalar(meta, key) : fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new LlameshError(`${file}: metadata ${key} is ${describe(v)}, expected a positive number`);
  }
  return v;
}

function optId(meta: Map<string, unknown>, key: string, file: string): number | null {
  if (!meta.has(key)) return null;
  const v = meta.get(key);
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    throw new LlameshError(`${file}: metadata ${key} is ${describe(v)}, expected a token id`);
  }
  return v;
}

function describe(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v) || ArrayBuffer.isView(v)) return `an array of ${(v as ArrayLike<unknown>).length}`;
  return String(v);
}

/** The LlamaConfig a llama GGUF describes (`tensors` settles vocabulary size and tied embeddings). */
function checkArchitecture(file: string, meta: Map<string, unknown>): void {
  const arch = meta.get("general.architecture");
  if (arch !== "llama") {
    throw new LlameshError(
      `${file}: general.architecture is ${arch === undefined ? "missing" : describe(arch)}, expected "llama" (llamesh runs Llama models)`,
    );
  }
}

export function llamaConfigFromGguf(g: GgufFile): LlamaConfig {
  const { file, metadata: meta } = g;
  checkArchitecture(file, meta);
  const experts = meta.get("llama.expert_count");
  if (typeof experts === "number" && experts > 0) {
    throw new LlameshError(`${file}: llama.expert_count is ${experts}: mixture-of-experts models are not supported`);
  }
  const scaling = meta.get("llama.rope.scaling.type");
  const linear = meta.get("llama.rope.scale_linear");
  if ((scaling !== undefined && scaling !== "none") || (typeof linear === "number" && linear !== 1) || g.tensors.has("rope_freqs.weight")) {
    throw new LlameshError(`${file}: RoPE scaling is not supported yet (llama.rope.scaling.type / rope_freqs.weight)`);
  }
  const dim = intKey(meta, "llama.embedding_length", file);
  const nHeads = intKey(meta, "llama.attention.head_count", file);
  const nKvHeads = intKey(meta, "llama.attention.head_count_kv", file, nHeads);
  if (dim % nHeads !== 0) throw new LlameshError(`${file}: llama.embedding_length ${dim} is not a multiple of llama.attention.head_count ${nHeads}`);
  if (nHeads % nKvHeads !== 0) {
    throw new LlameshError(`${file}: llama.attention.head_count ${nHeads} is not a multiple of llama.attention.head_count_kv ${nKvHeads}`);
  }
  const headDim = intKey(meta, "llama.attention.key_length", file, dim / nHeads);
  if (headDim * nHeads !== dim || headDim % 2 !== 0) {
    throw new LlameshError(`${file}: head size ${headDim} must be even and equal llama.embedding_length / llama.attention.head_count`);
  }
  const valueLength = intKey(meta, "llama.attention.value_length", file, headDim);
  if (valueLength !== headDim) throw new LlameshError(`${file}: llama.attention.value_length ${valueLength} differs from the key length ${headDim}`);
  const ropeDims = intKey(meta, "llama.rope.dimension_count", file, headDim);
  if (ropeDims !== headDim) {
    throw new LlameshError(`${file}: llama.rope.dimension_count ${ropeDims} differs from the head size ${headDim} (partial RoPE is not supported)`);
  }
  const embd = g.tensors.get("token_embd.weight");
  if (embd === undefined) throw new LlameshError(`${file}: missing tensor token_embd.weight`);
  if (embd.dims.length !== 2) throw new LlameshError(`${file}: tensor token_embd.weight has ${embd.dims.length} dimensions, expected 2`);
  const vocabSize = embd.dims[1]!;
  const declared = meta.has("llama.vocab_size") ? intKey(meta, "llama.vocab_size", file) : vocabSize;
  if (declared !== vocabSize) {
    throw new LlameshError(`${file}: llama.vocab_size ${declared} differs from the ${vocabSize} rows of token_embd.weight`);
  }
  const bos = optId(meta, "tokenizer.ggml.bos_token_id", file);
  const eosIds: number[] = [];
  for (const k of ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]) {
    const id = optId(meta, k, file);
    if (id !== null && !eosIds.includes(id)) eosIds.push(id);
  }
  return {
    dim,
    hiddenDim: intKey(meta, "llama.feed_forward_length", file),
    nLayers: intKey(meta, "llama.block_count", file),
    nHeads,
    nKvHeads,
    vocabSize,
    seqLen: intKey(meta, "llama.context_length", file, 2048),
    normEps: numKey(meta, "llama.attention.layer_norm_rms_epsilon", file, 1e-5),
    ropeTheta: numKey(meta, "llama.rope.freq_base", file, 10000),
    tiedEmbeddings: !g.tensors.has("output.weight"),
    headDim,
    bosTokenId: bos,
    eosTokenIds: eosIds,
  };
}

/** The SentencePiece tokenizer a llama GGUF carries (tokenizer.ggml.model "llama"). */
export function tokenizerFromGguf(g: GgufFile): ConfiguredTokenizer {
  const { file, metadata: meta } = g;
  const model = meta.get("tokenizer.ggml.model");
  if (model !== "llama") {
    throw new LlameshError(
      `${file}: tokenizer.ggml.model is ${model === undefined ? "missing" : describe(model)}, expected "llama" (SentencePiece; other GGUF tokenizers are not supported)`,
    );
  }
  const tokens = meta.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || tokens.length === 0 || !tokens.every((t) => typeof t === "string")) {
    throw new LlameshError(`${file}: metadata tokenizer.ggml.tokens is ${tokens === undefined ? "missing" : describe(tokens)}, expected an array of strings`);
  }
  const n = tokens.length;
  const numbers = (key: string): ArrayLike<number> | undefined => {
    if (!meta.has(key)) return undefined;
    const v = meta.get(key);
    const ok = (ArrayBuffer.isView(v) && !(v instanceof DataView)) || (Array.isArray(v) && v.every((x) => typeof x === "number"));
    if (!ok || (v as ArrayLike<number>).length !== n) {
      throw new LlameshError(`${file}: metadata ${key} is ${describe(v)}, expected ${n} numbers (one per token)`);
    }
    return v as ArrayLike<number>;
  };
  const scores = numbers("tokenizer.ggml.scores") ?? new Float32Array(n);
  const types = numbers("tokenizer.ggml.token_type");
  const bos = optId(meta, "tokenizer.ggml.bos_token_id", file);
  const eos = optId(meta, "tokenizer.ggml.eos_token_id", file);
  const eot = optId(meta, "tokenizer.ggml.eot_token_id", file);
  const unk = optId(meta, "tokenizer.ggml.unknown_token_id", file);
  const flag = (key: string, fallback: boolean): boolean => {
    const v = meta.get(key);
    return typeof v === "boolean" ? v : fallback;
  };
  const eosIds = [eos, eot].filter((x, i, a): x is number => x !== null && x < n && a.indexOf(x) === i);
  const hasByte = types !== undefined && Array.from(types).some((t) => t === PieceType.BYTE);
  return tokenizerFromSentencePiece(
    {
      pieces: tokens as string[],
      scores,
      types,
      modelType: "bpe",
      byteFallback: hasByte,
      unkId: unk ?? undefined,
      bosId: bos ?? -1,
      eosId: eos ?? -1,
      // llama.cpp's SentencePiece tokenizer: a dummy prefix, spaces as "▁", no whitespace collapsing
      addDummyPrefix: flag("tokenizer.ggml.add_space_prefix", true),
      removeExtraWhitespaces: false,
      escapeWhitespaces: true,
      normalization: "identity",
    },
    {
      fileName: file,
      source: "gguf",
      bosId: bos !== null && bos < n ? bos : null,
      eosIds,
      addBosToken: flag("tokenizer.ggml.add_bos_token", true),
    },
  );
}

export interface OpenedGguf {
  config: LlamaConfig;
  source: GgufSource;
  tokenizer: ConfiguredTokenizer;
  metadata: Map<string, unknown>;
}

/** Open a llama GGUF file: its config, its tensors under Hugging Face names, its tokenizer. */
export function openGguf(file: string): OpenedGguf {
  // the architecture first: a file of another family should say so, not name a tensor type
  const g = readGguf(file, (meta) => checkArchitecture(file, meta));
  const config = llamaConfigFromGguf(g);
  const tokenizer = tokenizerFromGguf(g);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new LlameshError(`${file}: the tokenizer has ${tokenizer.vocabSize} tokens but token_embd.weight only ${config.vocabSize} rows`);
  }
  const source = new GgufSource(g, config.nLayers, config.headDim);
  return { config, source, tokenizer, metadata: g.metadata };
}
