/**
 * Q8_0 matrix x vector throughput of the WASM kernels on the Llama 2 7B shapes, with a working set
 * (~1.1 GB: five layers' worth of wq wk wv wo w1 w3 w2) far larger than the last-level cache, so
 * weights stream from DRAM as in a real forward pass. Also: an in-cache figure, prefill (several
 * tokens per weight pass), the memory read bandwidth (wasm SIMD sum over the same 1.1 GB), and
 * what those imply for Llama 2 7B tokens per second. A library function: the CLI calls benchGmac.
 */
import { readFileSync } from "node:fs";
import os from "node:os";
import { Arena } from "../src/kernels/arena.js";
import { OP_MEMREAD } from "../src/kernels/pool-worker.js";
import { WasmBackend, type WasmKernels } from "../src/kernels/wasm.js";
import { q8RowBytes } from "../src/kernels/q8.js";

/** Llama 2 7B: multiply-accumulates per token (matrices incl. the output head) and Q8_0 weight bytes. */
export const LLAMA2_7B_MACS_PER_TOKEN = 6.7e9;
export const LLAMA2_7B_Q8_BYTES_PER_TOKEN = 7.16e9;

export interface GmacPoint {
  /** Multiply-accumulates per second, in 1e9. */
  gmacs: number;
  /** Bytes of Q8_0 weights streamed per second, in 1e9. */
  gbs: number;
}

export interface GmacRun {
  threads: number;
  /** Matrix x vector with the weights in cache (a 1 MB matrix repeated). */
  inCache: GmacPoint;
  /** Matrix x vector over the whole working set, in forward-pass order (DRAM-bound). */
  dram: GmacPoint;
  /** DRAM-bound, per shape (rows x cols). */
  shapes: Record<string, GmacPoint>;
  /** Prefill: matmulQ8 with 8 tokens per call over the working set (GMAC/s counts every token). */
  prefill8: GmacPoint;
  /** Memory read bandwidth, GB/s (wasm SIMD sum over the working set). */
  memReadGBs: number;
  /** Llama 2 7B tokens/s implied by `dram` (6.7e9 MACs per token). */
  tokPerSecKernel: number;
  /** Llama 2 7B tokens/s if bound by `memReadGBs` (7.16e9 bytes of Q8_0 weights per token). */
  tokPerSecBandwidth: number;
}

export interface GmacResult {
  cpu: string;
  logicalCpus: number;
  workingSetBytes: number;
  runs: GmacRun[];
}

const SHAPES: [rows: number, cols: number][] = [
  [4096, 4096], [4096, 4096], [4096, 4096], [4096, 4096], // wq wk wv wo
  [11008, 4096], [11008, 4096], // w1 (gate) w3 (up)
  [4096, 11008], // w2 (down)
];
const LAYERS = 5;

export function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m) return m[1]!.trim();
  } catch {
    // not Linux
  }
  return os.cpus()[0]?.model?.trim() || "unknown CPU";
}

interface Mat {
  w: number;
  rows: number;
  cols: number;
}

export async function benchGmac(opts: { threads: number; seconds?: number; log: (line: string) => void }): Promise<GmacResult> {
  const seconds = opts.seconds ?? 2;
  const log = opts.log;
  const nThreads = Math.max(1, Math.floor(opts.threads));
  const cpu = cpuModel();
  log(`CPU: ${cpu} (${os.cpus().length} logical CPUs); kernels: wasm-simd128, 1 and ${nThreads} thread(s)`);

  // Working set: LAYERS x the 7 matrices of a Llama 2 7B layer.
  let matBytes = 0;
  for (const [r, c] of SHAPES) matBytes += r * q8RowBytes(c);
  matBytes *= LAYERS;
  const maxCols = 11008;
  const arena = new Arena(matBytes + (64 << 20), "bench-gmac");
  const backends = [await WasmBackend.create(1)];
  if (nThreads > 1) backends.push(await WasmBackend.create(nThreads));
  const kernels = backends.map((b) => b.bind(arena));
  const runs: GmacRun[] = [];
  try {
    const mats: Mat[] = [];
    const base = arena.alloc(matBytes, 4096);
    let p = base;
    for (let l = 0; l < LAYERS; l++) {
      for (const [rows, cols] of SHAPES) {
        mats.push({ w: p, rows, cols });
        p += rows * q8RowBytes(cols);
      }
    }
    log(`filling ${(matBytes / 1e9).toFixed(2)} GB of Q8_0 weights (${mats.length} matrices)...`);
    fillQ8(arena, base, matBytes);
    const nTokMax = 8;
    const x = arena.alloc(nTokMax * q8RowBytes(maxCols));
    fillQ8(arena, x, Math.ceil((nTokMax * q8RowBytes(maxCols)) / 34) * 34 - 34);
    const out = arena.alloc(nTokMax * 11008 * 4);
    // A hot matrix: 240 x 4096 (1 MB).
    const hot: Mat = { w: base, rows: 240, cols: 4096 };

    for (let bi = 0; bi < backends.length; bi++) {
      const be = backends[bi]!;
      const k = kernels[bi]!;
      const threads = be.threads;
      // warm-up (tiers the wasm code up in every thread)
      timeLoop(() => k.matmulQ8(out, hot.w, x, hot.rows, hot.cols, 1), 0.3);
      const inCache = pointOf(hot.rows * hot.cols, hot.rows * q8RowBytes(hot.cols),
        timeLoop(() => k.matmulQ8(out, hot.w, x, hot.rows, hot.cols, 1), seconds / 2));
      log(`[${threads}T] in cache (${hot.rows}x${hot.cols}, ${(hot.rows * q8RowBytes(hot.cols) / 1e6).toFixed(1)} MB): ${fmt(inCache)}`);

      const dram = cycle(k, mats, x, out, 1, seconds);
      log(`[${threads}T] DRAM (${(matBytes / 1e9).toFixed(2)} GB, forward order): ${fmt(dram.total)}`);
      for (const [shape, pt] of Object.entries(dram.shapes)) log(`[${threads}T]   ${shape}: ${fmt(pt)}`);
      const prefill = cycle(k, mats, x, out, nTokMax, seconds);
      log(`[${threads}T] prefill, ${nTokMax} tokens per weight pass: ${prefill.total.gmacs.toFixed(2)} GMAC/s`);

      const per = Math.floor(matBytes / threads / 64) * 64;
      const memSec = timeLoop(() => be.pool.run(OP_MEMREAD, k.arenaId, [base, per], threads), seconds / 2);
      const memReadGBs = (per * threads) / memSec / 1e9;
      log(`[${threads}T] memory read bandwidth (wasm SIMD sum over ${(matBytes / 1e9).toFixed(2)} GB): ${memReadGBs.toFixed(1)} GB/s`);
      const run: GmacRun = {
        threads,
        inCache,
        dram: dram.total,
        shapes: dram.shapes,
        prefill8: prefill.total,
        memReadGBs,
        tokPerSecKernel: (dram.total.gmacs * 1e9) / LLAMA2_7B_MACS_PER_TOKEN,
        tokPerSecBandwidth: (memReadGBs * 1e9) / LLAMA2_7B_Q8_BYTES_PER_TOKEN,
      };
      log(`[${threads}T] Llama 2 7B Q8_0 implied: ${run.tokPerSecKernel.toFixed(2)} tok/s by these kernels ` +
        `(6.7e9 MAC/token), ${run.tokPerSecBandwidth.toFixed(2)} tok/s memory-bandwidth bound (7.16 GB/token)`);
      runs.push(run);
      be.idle();
    }
  } finally {
    for (const b of backends) await b.close();
  }
  return { cpu, logicalCpus: os.cpus().length, workingSetBytes: matBytes, runs };
}

function fmt(p: GmacPoint): string {
  return `${p.gmacs.toFixed(2)} GMAC/s, ${p.gbs.toFixed(2)} GB/s of weights`;
}

function pointOf(macs: number, bytes: number, secondsPerCall: number): GmacPoint {
  return { gmacs: macs / secondsPerCall / 1e9, gbs: bytes / secondsPerCall / 1e9 };
}

/** Calls f repeatedly for about `seconds`; returns seconds per call. */
function timeLoop(f: () => void, seconds: number): number {
  let n = 0;
  const t0 = performance.now();
  let t = t0;
  do {
    f();
    n++;
    t = performance.now();
  } while (t - t0 < seconds * 1000);
  return (t - t0) / 1000 / n;
}

/** Cycles through all matrices (at least twice after a warm-up pass); totals and per-shape figures. */
function cycle(k: WasmKernels, mats: Mat[], x: number, out: number, nTok: number, seconds: number):
  { total: GmacPoint; shapes: Record<string, GmacPoint> } {
  const per = new Map<string, { macs: number; bytes: number; sec: number }>();
  for (const m of mats) k.matmulQ8(out, m.w, x, m.rows, m.cols, nTok); // warm-up pass
  let macs = 0, bytes = 0, sec = 0, passes = 0;
  const t0 = performance.now();
  while (passes < 2 || performance.now() - t0 < seconds * 1000) {
    for (const m of mats) {
      const a = performance.now();
      k.matmulQ8(out, m.w, x, m.rows, m.cols, nTok);
      const dt = (performance.now() - a) / 1000;
      const key = `${m.rows}x${m.cols}`;
      const e = per.get(key) ?? { macs: 0, bytes: 0, sec: 0 };
      const mm = m.rows * m.cols * nTok, bb = m.rows * q8RowBytes(m.cols);
      e.macs += mm; e.bytes += bb; e.sec += dt;
      per.set(key, e);
      macs += mm; bytes += bb; sec += dt;
    }
    passes++;
  }
  const shapes: Record<string, GmacPoint> = {};
  for (const [key, e] of per) shapes[key] = { gmacs: e.macs / e.sec / 1e9, gbs: e.bytes / e.sec / 1e9 };
  return { total: { gmacs: macs / sec / 1e9, gbs: bytes / sec / 1e9 }, shapes };
}

/** Random Q8_0 blocks (int8 values, sane f16 scales) over `bytes` at p (a multiple of 34 is filled). */
function fillQ8(arena: Arena, p: number, bytes: number): void {
  const u32 = new Uint32Array(arena.memory.buffer, p, Math.floor(bytes / 4));
  let s = 0x9e3779b9;
  for (let i = 0; i < u32.length; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    u32[i] = s;
  }
  const dv = new DataView(arena.memory.buffer);
  for (let o = p; o + 34 <= p + bytes; o += 34) dv.setUint16(o, 0x2000 + (o & 0x3ff), true); // ~0.008..0.016
}

/**
 * Prefill sweep: matmulQ8 with nTok tokens on TinyLlama-1.1B-like shapes (5632x2048, 2048x5632,
 * 4096x4096; weights in cache or L3), best of `reps` short runs per point, GMAC/s counting every
 * token. Returns rows[threads][nTok] = GMAC/s per shape.
 */
export async function benchPrefill(opts: { threads: number; tokens?: number[]; reps?: number; log: (line: string) => void }):
  Promise<Record<number, Record<number, number[]>>> {
  const shapes: [number, number][] = [[5632, 2048], [2048, 5632], [4096, 4096]];
  const tokens = opts.tokens ?? [1, 8, 9, 16, 32];
  const reps = opts.reps ?? 10;
  const maxTok = Math.max(...tokens);
  let bytes = 0;
  for (const [r, c] of shapes) bytes += r * q8RowBytes(c);
  const maxCols = Math.max(...shapes.map((s) => s[1]));
  const arena = new Arena(bytes + maxTok * (q8RowBytes(maxCols) + maxCols * 4) + (16 << 20), "bench-prefill");
  const mats = shapes.map(([rows, cols]) => ({ rows, cols, w: arena.alloc(rows * q8RowBytes(cols), 4096) }));
  for (const m of mats) fillQ8(arena, m.w, m.rows * q8RowBytes(m.cols));
  const x = arena.alloc(maxTok * q8RowBytes(maxCols));
  fillQ8(arena, x, Math.floor((maxTok * q8RowBytes(maxCols)) / 34) * 34);
  const out = arena.alloc(maxTok * maxCols * 4);
  const result: Record<number, Record<number, number[]>> = {};
  const threadCounts = opts.threads > 1 ? [1, Math.floor(opts.threads)] : [1];
  for (const threads of threadCounts) {
    const be = await WasmBackend.create(threads);
    try {
      const k = be.bind(arena);
      for (const m of mats) k.matmulQ8(out, m.w, x, m.rows, m.cols, 8);
      const row: Record<number, number[]> = {};
      for (const nTok of tokens) {
        row[nTok] = mats.map((m) => {
          let best = 0;
          for (let r = 0; r < reps; r++) {
            const sec = timeLoop(() => k.matmulQ8(out, m.w, x, m.rows, m.cols, nTok), 0.06);
            best = Math.max(best, (m.rows * m.cols * nTok) / sec / 1e9);
          }
          return best;
        });
      }
      opts.log(`[${threads}T] prefill GMAC/s (${shapes.map(([r, c]) => `${r}x${c}`).join(" / ")}): ` +
        tokens.map((t) => `nTok ${t}: ${row[t]!.map((g) => g.toFixed(1)).join("/")}`).join("  "));
      result[threads] = row;
      be.idle();
    } finally {
      await be.close();
    }
  }
  return result;
}
