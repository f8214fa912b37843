/**
 * The worker's disk cache of weight slices, and the model fingerprint that keys it.
 *
 * A slice is stored as one file `<key>.q8` holding its bytes (in its tensor's type), where the key
 * hashes the model fingerprint, the slice format, the type and the slice's place in its tensor
 * (withKeys below). Files
 * are written under a temporary name and renamed once complete, so a crash never leaves a short
 * file behind under a real key.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { LlameshError } from "../core/errors.js";
import type { SliceDesc } from "../engine/slice.js";

/** Bumped whenever the stored slice format changes (it is part of every cache key). */
export const SLICE_FORMAT = "typed-v2";

/** Give every slice its content key (hex, 40 characters). */
export function withKeys(descs: SliceDesc[], fingerprint: string): SliceDesc[] {
  return descs.map((d) => {
    const h = crypto.createHash("sha256");
    h.update(`${fingerprint}|${SLICE_FORMAT}|${d.tensor}|${d.type}|${d.kind}|${d.r0}-${d.r1}|${d.c0}-${d.c1}|${d.srcRows}x${d.srcCols}`);
    return { ...d, key: h.digest("hex").slice(0, 40) };
  });
}


/** $LLAMESH_CACHE_DIR, else $XDG_CACHE_HOME/llamesh, else ~/.cache/llamesh (%LOCALAPPDATA% on Windows). */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env["LLAMESH_CACHE_DIR"]) return env["LLAMESH_CACHE_DIR"];
  if (env["XDG_CACHE_HOME"]) return path.join(env["XDG_CACHE_HOME"], "llamesh");
  if (process.platform === "win32" && env["LOCALAPPDATA"]) return path.join(env["LOCALAPPDATA"], "llamesh", "cache");
  return path.join(os.homedir(), ".cache", "llamesh");
}

/**
 * Identifies a checkpoint's content cheaply: SHA-256 over its config, and for every weights file
 * (safetensors or GGUF) its name, size, safetensors header and 16 samples of 64 KB spread over it (a full hash of a 13 GB
 * checkpoint would take seconds at every start). Two folders with the same fingerprint hold the
 * same weights for any practical purpose; a re-exported or edited checkpoint changes its header
 * or its sampled bytes.
 */
export function modelFingerprint(configText: string, files: readonly string[]): string {
  const h = crypto.createHash("sha256");
  h.update("llamesh-fingerprint-v2\0");
  h.update(configText);
  const buf = Buffer.alloc(65536);
  for (const f of [...files].sort()) {
    const size = fs.statSync(f).size;
    h.update(`\0${path.basename(f)}\0${size}\0`);
    const fd = fs.openSync(f, "r");
    try {
      if (f.endsWith(".safetensors")) {
        const head = Buffer.alloc(8);
        fs.readSync(fd, head, 0, 8, 0);
        const hl = Math.min(Number(head.readBigUInt64LE(0)), size - 8);
        const header = Buffer.alloc(Math.max(0, hl));
        fs.readSync(fd, header, 0, header.length, 8);
        h.update(header);
      }
      // (a GGUF file's header and metadata sit in its first sampled 64 KB)
      for (let i = 0; i < 16; i++) {
        const at = Math.floor(((size - buf.length) * i) / 15);
        const n = fs.readSync(fd, buf, 0, buf.length, Math.max(0, at));
        h.update(buf.subarray(0, n));
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return h.digest("hex").slice(0, 32);
}

/** Default size limit of a worker's slice cache (--cache-max-gb). */
export const DEFAULT_CACHE_MAX_BYTES = 64e9;

/**
 * Least recently used slices are deleted once the cache holds more than `maxBytes` (after a
 * session's slices are in place; never one of that session's): a file's mtime is its last use
 * (set when it is written or read).
 */
export class SliceCache {
  constructor(readonly dir: string, readonly maxBytes = DEFAULT_CACHE_MAX_BYTES) {
    try {
      fs.mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw new LlameshError(`--cache-dir ${dir}: cannot create (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    }
  }

  private file(key: string): string {
    if (!/^[0-9a-f]{16,64}$/.test(key)) throw new RangeError(`bad cache key ${JSON.stringify(key)}`);
    return path.join(this.dir, `${key}.q8`);
  }

  has(key: string, bytes: number): boolean {
    try {
      return fs.statSync(this.file(key)).size === bytes;
    } catch {
      return false;
    }
  }

  /** Copy a cached slice into `out` (its exact size); false when absent or of another size. */
  readInto(key: string, out: Uint8Array): boolean {
    if (!this.has(key, out.length)) return false;
    const fd = fs.openSync(this.file(key), "r");
    try {
      let off = 0;
      while (off < out.length) {
        const n = fs.readSync(fd, out, off, Math.min(out.length - off, 1 << 24), off);
        if (n <= 0) return false;
        off += n;
      }
      const now = new Date();
      fs.futimesSync(fd, now, now); // last use, for eviction
      return true;
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Delete least recently used slices until the cache holds at most maxBytes, keeping `keep`
   * (the current session's keys) whatever their size. Returns the number of bytes freed.
   */
  evict(keep: ReadonlySet<string>): number {
    let entries: { key: string; file: string; size: number; used: number }[] = [];
    for (const name of fs.readdirSync(this.dir)) {
      const m = /^([0-9a-f]{16,64})\.q8$/.exec(name);
      if (!m) continue;
      const file = path.join(this.dir, name);
      try {
        const st = fs.statSync(file);
        entries.push({ key: m[1]!, file, size: st.size, used: st.mtimeMs });
      } catch {
        // deleted meanwhile (another worker on the same folder)
      }
    }
    let total = entries.reduce((t, e) => t + e.size, 0);
    let freed = 0;
    entries = entries.filter((e) => !keep.has(e.key)).sort((a, b) => a.used - b.used);
    for (const e of entries) {
      if (total <= this.maxBytes) break;
      fs.rmSync(e.file, { force: true });
      total -= e.size;
      freed += e.size;
    }
    return freed;
  }

  /** Start writing a slice; chunks may come in any order; commit() publishes it when complete. */
  writer(key: string, bytes: number): CacheWriter {
    return new CacheWriter(this.file(key), bytes);
  }
}

export class CacheWriter {
  private readonly tmp: string;
  private fd: number | null;
  received = 0;

  constructor(private readonly target: string, readonly bytes: number) {
    this.tmp = `${target}.${process.pid}.${crypto.randomBytes(4).toString("hex")}.tmp`;
    this.fd = fs.openSync(this.tmp, "w");
  }

  write(offset: number, data: Uint8Array): void {
    if (this.fd === null) return;
    fs.writeSync(this.fd, data, 0, data.length, offset);
    this.received += data.length;
  }

  get complete(): boolean {
    return this.received === this.bytes;
  }

  /** Publish the file when every byte arrived; otherwise drop it. Returns whether it was published. */
  commit(): boolean {
    if (this.fd === null) return false;
    fs.closeSync(this.fd);
    this.fd = null;
    if (this.complete) {
      fs.renameSync(this.tmp, this.target);
      return true;
    }
    fs.rmSync(this.tmp, { force: true });
    return false;
  }

  abort(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    fs.rmSync(this.tmp, { force: true });
  }
}
