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
 * This is the container only, whatever the architecture (as ggml's gguf.c is apart from
 * llama.cpp's model loading): model/gguf-llama.ts maps a llama file onto the engine.
 */
import * as fs from "node:fs";
import { fileError, LlameshError } from "../core/errors.js";
import { TENSOR_TYPES, rowBytes, typeInfo, type TensorType } from "../kernels/formats.js";

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

/** ggml_type ids of the tensor types we read (ggml.h / gguf-py constants; see kernels/formats.ts). */
export const GgmlType: Readonly<Record<TensorType, number>> = Object.fromEntries(
  TENSOR_TYPES.map((t) => [t, typeInfo(t).ggmlId]),
) as Record<TensorType, number>;
export type GgufTensorType = TensorType;

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

/** Bytes of `n` values (n a multiple of the type's block size) of a supported type. */
export function ggmlRowBytes(type: GgufTensorType, n: number): number {
  return rowBytes(type, n);
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

export function openFile(file: string): number {
  try {
    return fs.openSync(file, "r");
  } catch (e) {
    throw fileError(file, e, "open");
  }
}

export function readFully(fd: number, file: string, buf: Uint8Array, len: number, pos: number): void {
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
 * Tensors must be of a type we read (kernels/formats.ts) and lie inside the file.
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
        `${file}: tensor ${name} has type ${ggmlTypeName(typeId)}, which llamesh does not read (expected one of ${TENSOR_TYPES.join(", ")}; requantize with llama-quantize)`,
      );
    }
    const block = typeInfo(type).blockValues;
    if (dims[0]! % block !== 0) {
      throw new LlameshError(`${file}: tensor ${name} is ${type} with rows of ${dims[0]} values, not a multiple of its ${block}-value blocks`);
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
        `${file}: tensor ${t.name} (${t.type} [${t.dims.join(", ")}], ${t.nbytes} bytes) data [${begin}, ${end}) lies outside the file (${size} bytes; truncated or corrupt GGUF file?)`,
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
// metadata accessors
// ---------------------------------------------------------------------------------------------

/** A metadata value; a per-layer array whose entries all agree counts as that one value. */
export function metaScalar(meta: Map<string, unknown>, key: string): unknown {
  const v = meta.get(key);
  // per-layer arrays (some converters write them) are fine when every layer agrees
  if (Array.isArray(v) || ArrayBuffer.isView(v)) {
    const arr = Array.from(v as ArrayLike<unknown>);
    if (arr.length > 0 && arr.every((x) => x === arr[0])) return arr[0];
  }
  return v;
}

/** A positive integer metadata value (or `fallback` when absent), else a one-line error naming the file and key. */
export function metaInt(meta: Map<string, unknown>, key: string, file: string, fallback?: number): number {
  const v = meta.has(key) ? metaScalar(meta, key) : fallback;
  if (v === undefined) throw new LlameshError(`${file}: missing metadata ${key} (expected a positive integer)`);
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new LlameshError(`${file}: metadata ${key} is ${describeValue(v)}, expected a positive integer`);
  }
  return v;
}

/** A positive finite number metadata value (or `fallback`). */
export function metaNum(meta: Map<string, unknown>, key: string, file: string, fallback: number): number {
  const v = meta.has(key) ? metaScalar(meta, key) : fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new LlameshError(`${file}: metadata ${key} is ${describeValue(v)}, expected a positive number`);
  }
  return v;
}

/** A token id metadata value, or null when absent. */
export function metaTokenId(meta: Map<string, unknown>, key: string, file: string): number | null {
  if (!meta.has(key)) return null;
  const v = meta.get(key);
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    throw new LlameshError(`${file}: metadata ${key} is ${describeValue(v)}, expected a token id`);
  }
  return v;
}

/** A metadata value as an error message shows it. */
export function describeValue(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v) || ArrayBuffer.isView(v)) return `an array of ${(v as ArrayLike<unknown>).length}`;
  return String(v);
}
