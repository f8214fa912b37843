/**
 * safetensors reader: a u64 little-endian header length, a JSON header mapping tensor names to
 * {dtype, shape, data_offsets: [begin, end]} (offsets relative to the end of the header), then the
 * raw little-endian data. We check every header against the file before reading a byte of data,
 * and read tensors a few rows at a time so that loading never holds a whole file in memory.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fileError, LlameshError } from "../core/errors.js";
import type { TensorInfo, TensorSource } from "../core/tensor-source.js";
import { bf16ToF32, F16_TO_F32 } from "../core/numbers.js";

export type SafetensorsDtype = "F32" | "F16" | "BF16";
const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2 };
/** Headers above this are surely corrupt (real 7B-70B headers are well under 1 MB). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

function product(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Parse and validate the header of one safetensors file. */
export function readSafetensorsHeader(file: string): TensorInfo[] {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (e) {
    throw fileError(file, e, "open");
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) throw new LlameshError(`${file}: ${size} bytes, too short for a safetensors file (expected an 8-byte header length first)`);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen < 2 || headerLen > MAX_HEADER_BYTES || 8 + headerLen > size) {
      throw new LlameshError(
        `${file}: bad safetensors header length ${headerLen} (file is ${size} bytes; expected a JSON header that fits in the file)`,
      );
    }
    const headerBuf = Buffer.alloc(headerLen);
    fs.readSync(fd, headerBuf, 0, headerLen, 8);
    let header: unknown;
    try {
      header = JSON.parse(headerBuf.toString("utf8"));
    } catch {
      throw new LlameshError(`${file}: safetensors header is not valid JSON (file corrupt or not safetensors)`);
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) {
      throw new LlameshError(`${file}: safetensors header is not a JSON object`);
    }
    const dataStart = 8 + headerLen;
    const dataSize = size - dataStart;
    const out: TensorInfo[] = [];
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name === "__metadata__") continue;
      const entry = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const dtype = entry?.dtype;
      if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
        throw new LlameshError(`${file}: tensor ${name} has dtype ${JSON.stringify(dtype)}, expected F32, F16 or BF16`);
      }
      const shape = entry.shape;
      if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
        throw new LlameshError(`${file}: tensor ${name} has shape ${JSON.stringify(shape)}, expected a list of sizes`);
      }
      const offs = entry.data_offsets;
      if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isInteger(o) && o >= 0) || offs[1] < offs[0]) {
        throw new LlameshError(`${file}: tensor ${name} has data_offsets ${JSON.stringify(offs)}, expected [begin, end]`);
      }
      const [begin, end] = offs as [number, number];
      if (end > dataSize) {
        throw new LlameshError(
          `${file}: tensor ${name} data_offsets [${begin}, ${end}] lie outside the file (data section is ${dataSize} bytes; file truncated?)`,
        );
      }
      const expected = product(shape as number[]) * DTYPE_BYTES[dtype as SafetensorsDtype];
      if (end - begin !== expected) {
        throw new LlameshError(
          `${file}: tensor ${name} has ${end - begin} bytes of data, but shape ${JSON.stringify(shape)} in ${dtype} needs ${expected}`,
        );
      }
      out.push({ name, dtype: dtype as SafetensorsDtype, shape: shape as number[], file, offset: dataStart + begin, nbytes: expected });
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** Convert `n` little-endian values of `dtype` from `src` into `out`. */
export function convertToF32(dtype: SafetensorsDtype, src: Buffer, out: Float32Array, n: number): void {
  if (dtype === "F32") {
    if (src.byteOffset % 4 === 0) out.set(new Float32Array(src.buffer, src.byteOffset, n));
    else for (let i = 0; i < n; i++) out[i] = src.readFloatLE(i * 4);
    return;
  }
  const u16 = src.byteOffset % 2 === 0 ? new Uint16Array(src.buffer, src.byteOffset, n) : null;
  if (dtype === "F16") {
    for (let i = 0; i < n; i++) out[i] = F16_TO_F32[u16 ? u16[i]! : src.readUInt16LE(i * 2)]!;
  } else {
    // bf16 is the top half of an f32: write the bits through a u32 view
    const u32 = new Uint32Array(out.buffer, out.byteOffset, n);
    if (u16) for (let i = 0; i < n; i++) u32[i] = u16[i]! << 16;
    else for (let i = 0; i < n; i++) out[i] = bf16ToF32(src.readUInt16LE(i * 2));
  }
}

/** Tensors of one model folder: one model.safetensors, or shards listed in model.safetensors.index.json. */
export class SafetensorsModel implements TensorSource {
  readonly files: string[];
  private readonly tensors = new Map<string, TensorInfo>();
  private readonly fds = new Map<string, number>();
  private buf = Buffer.alloc(0);

  private constructor(files: string[], infos: TensorInfo[]) {
    this.files = files;
    for (const t of infos) this.tensors.set(t.name, t);
  }

  static open(modelDir: string): SafetensorsModel {
    const indexFile = path.join(modelDir, "model.safetensors.index.json");
    const single = path.join(modelDir, "model.safetensors");
    if (fs.existsSync(indexFile)) return SafetensorsModel.openIndex(indexFile);
    if (fs.existsSync(single)) return new SafetensorsModel([single], readSafetensorsHeader(single));
    const others = fs.readdirSync(modelDir).filter((f) => f.endsWith(".safetensors")).sort();
    if (others.length === 1) {
      const f = path.join(modelDir, others[0]!);
      return new SafetensorsModel([f], readSafetensorsHeader(f));
    }
    throw new LlameshError(
      others.length > 1
        ? `${modelDir}: ${others.length} .safetensors files but no model.safetensors.index.json to say which tensor is where`
        : `${modelDir}: no model.safetensors or model.safetensors.index.json (expected a Hugging Face safetensors checkpoint)`,
    );
  }

  private static openIndex(indexFile: string): SafetensorsModel {
    const dir = path.dirname(indexFile);
    let index: { weight_map?: unknown };
    try {
      index = JSON.parse(fs.readFileSync(indexFile, "utf8")) as { weight_map?: unknown };
    } catch (e) {
      throw new LlameshError(`${indexFile}: not valid JSON (${(e as Error).message})`);
    }
    const map = index.weight_map;
    if (typeof map !== "object" || map === null) {
      throw new LlameshError(`${indexFile}: missing "weight_map" (expected {tensor name: shard file})`);
    }
    const byFile = new Map<string, string[]>();
    for (const [name, f] of Object.entries(map as Record<string, unknown>)) {
      if (typeof f !== "string" || f.includes("/") || f.includes("\\")) {
        throw new LlameshError(`${indexFile}: weight_map entry for ${name} is ${JSON.stringify(f)}, expected a file name in this folder`);
      }
      const list = byFile.get(f) ?? [];
      list.push(name);
      byFile.set(f, list);
    }
    const files: string[] = [];
    const infos: TensorInfo[] = [];
    for (const [f, names] of [...byFile.entries()].sort()) {
      const file = path.join(dir, f);
      const header = readSafetensorsHeader(file);
      const have = new Set(header.map((t) => t.name));
      for (const n of names) {
        if (!have.has(n)) throw new LlameshError(`${file}: tensor ${n} is listed in model.safetensors.index.json but not in this shard`);
      }
      files.push(file);
      infos.push(...header.filter((t) => names.includes(t.name)));
    }
    return new SafetensorsModel(files, infos);
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new LlameshError(`${this.files.join(", ")}: missing tensor ${name}`);
    return t;
  }

  get names(): string[] {
    return [...this.tensors.keys()];
  }

  readRows(name: string, row0: number, nRows: number, out: Float32Array): void {
    const t = this.info(name);
    const rowLen = t.shape.length === 1 ? t.shape[0]! : product(t.shape.slice(1));
    if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "BF16") throw new Error(`${name}: ${t.dtype} in a safetensors file`);
    const bytesPer = DTYPE_BYTES[t.dtype];
    const n = nRows * rowLen;
    const nbytes = n * bytesPer;
    if (this.buf.length < nbytes) this.buf = Buffer.alloc(nbytes);
    let fd = this.fds.get(t.file);
    if (fd === undefined) {
      fd = fs.openSync(t.file, "r");
      this.fds.set(t.file, fd);
    }
    const pos = t.offset + row0 * rowLen * bytesPer;
    let got = 0;
    while (got < nbytes) {
      const r = fs.readSync(fd, this.buf, got, nbytes - got, pos + got);
      if (r === 0) throw new LlameshError(`${t.file}: unexpected end of file reading tensor ${name}`);
      got += r;
    }
    convertToF32(t.dtype as SafetensorsDtype, this.buf, out, n);
  }

  close(): void {
    for (const fd of this.fds.values()) fs.closeSync(fd);
    this.fds.clear();
    this.buf = Buffer.alloc(0);
  }
}
