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
import { WasmBackend, loadKernelBuild, type KernelBuild, type WasmKernels } from "../src/kernels/wasm.js";
import { q8RowBytes } from "../src/kernels/q8.js";
import { enableRevectorize } from "../src/kernels/revec.js";
import { actTypeOf, fileTypeOf, rowBytes, typeInfo, type MatmulType, type TensorType } from "../src/kernels/formats.js";

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

// ---------------------------------------------------------------------------------------------
// Every tensor type

/** Bytes of one 7B-shaped layer set, per type (the working set is LAYERS of them, fewer for floats). */
function layersFor(type: TensorType): number {
  return type === "F32" ? 1 : type === "F16" || type === "BF16" ? 2 : LAYERS;
}

/** Offsets of f16 scale fields per block (kept sane in random blocks; see test/kernels/type-helpers.ts). */
const SCALE_FIELDS: Partial<Record<TensorType, number[]>> = {
  Q4_0: [0], Q5_0: [0], Q8_0: [0], IQ4_NL: [0], Q4_1: [0, 2], Q5_1: [0, 2],
  Q2_K: [80, 82], Q3_K: [108], Q4_K: [0, 2], Q5_K: [0, 2], Q6_K: [208],
};

/** Random weights of `type` over `bytes` at p: random bits, sane f16 scales (or small float values). */
function fillType(arena: Arena, type: TensorType, p: number, bytes: number): void {
  const u32 = new Uint32Array(arena.memory.buffer, p, Math.floor(bytes / 4));
  let s = 0x9e3779b9;
  const mask = type === "F16" ? 0x37ff37ff : type === "BF16" ? 0x3e7f3e7f : type === "F32" ? 0x3e7fffff : 0xffffffff;
  for (let i = 0; i < u32.length; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    u32[i] = (s & mask) >>> 0;
  }
  const fields = SCALE_FIELDS[type];
  if (!fields) return;
  const { blockBytes } = typeInfo(type);
  const dv = new DataView(arena.memory.buffer);
  for (let o = p; o + blockBytes <= p + bytes; o += blockBytes) for (const f of fields) dv.setUint16(o + f, 0x2000 + (o & 0x3ff), true);
}

export interface TypeFigures {
  type: MatmulType;
  /** Build label (A/B runs) */
  build: string;
  threads: number;
  /** Matrix x vector over the working set (DRAM-bound), best and median of the passes. */
  decodeBest: GmacPoint;
  decodeMedian: GmacPoint;
  /** Matrix x 8 tokens over the working set, best and median. */
  prefillBest: GmacPoint;
  prefillMedian: GmacPoint;
}

/**
 * Per tensor type: matrix x vector (decode) and matrix x 8 tokens (prefill) over LAYERS x the
 * Llama 2 7B layer shapes in that type (a working set far above the last-level cache), at 1 and
 * `threads` threads. With several builds (A/B), passes alternate between them in this process and
 * each figure is the best and the median of `reps` passes.
 */
export async function benchTypes(opts: {
  threads: number;
  types: MatmulType[];
  reps?: number;
  builds?: { name: string; module?: WebAssembly.Module; build?: KernelBuild }[];
  threadCounts?: number[];
  log: (line: string) => void;
}): Promise<TypeFigures[]> {
  const reps = opts.reps ?? 7;
  const builds = opts.builds ?? [{ name: "current" }];
  const counts = opts.threadCounts ?? (opts.threads > 1 ? [1, Math.floor(opts.threads)] : [1]);
  const results: TypeFigures[] = [];
  const nTokPrefill = 8;
  for (const type of opts.types) {
    // Q4_0x4: Q4_0 weights repacked by the first backend (every build of the runs must read it)
    const file = fileTypeOf(type);
    const layers = layersFor(file);
    const act = actTypeOf(type);
    let matBytes = 0;
    for (const [r, c] of SHAPES) matBytes += r * rowBytes(type, c);
    matBytes *= layers;
    const maxCols = 11008;
    const arena = new Arena(matBytes + nTokPrefill * (rowBytes(act, maxCols) + maxCols * 4) + (48 << 20), `bench-${type}`);
    const base = arena.alloc(matBytes, 4096);
    const mats: Mat[] = [];
    let p = base;
    for (let l = 0; l < layers; l++) {
      for (const [rows, cols] of SHAPES) {
        mats.push({ w: p, rows, cols });
        p += rows * rowBytes(type, cols);
      }
    }
    fillType(arena, file, base, matBytes);
    const xf = arena.alloc(nTokPrefill * maxCols * 4);
    const f = arena.f32(xf, nTokPrefill * maxCols);
    for (let i = 0; i < f.length; i++) f[i] = Math.sin(i * 0.37) * (1 + (i % 7));
    const x = arena.alloc(nTokPrefill * rowBytes(act, maxCols));
    const out = arena.alloc(nTokPrefill * 11008 * 4);
    const runs: { build: string; threads: number; be: WasmBackend; k: WasmKernels; dec: number[]; pre: number[] }[] = [];
    for (const b of builds) {
      for (const t of counts) {
        const be = await WasmBackend.create(t, { module: b.module, build: b.build });
        runs.push({ build: b.name, threads: t, be, k: be.bind(arena), dec: [], pre: [] });
      }
    }
    try {
      if (file !== type) {
        for (const m of mats) {
          if (runs[0]!.k.repackWeights(file, m.w, m.rows, m.cols) !== type) throw new Error(`bench gmac: these kernels do not repack ${file} into ${type} (the relaxed build does)`);
        }
      }
      runs[0]!.k.quantizeAct(act, x, xf, nTokPrefill * maxCols);
      let macs = 0, bytes = 0;
      for (const m of mats) {
        macs += m.rows * m.cols;
        bytes += m.rows * rowBytes(type, m.cols);
      }
      const pass = (k: WasmKernels, nTok: number): number => {
        const t0 = performance.now();
        for (const m of mats) k.matmul(type, out, m.w, x, m.rows, m.cols, nTok);
        return (performance.now() - t0) / 1000;
      };
      for (const r of runs) {
        pass(r.k, 1); // warm-up (tiers the code up in every thread)
        pass(r.k, nTokPrefill);
      }
      for (let i = 0; i < reps; i++) {
        for (const r of runs) r.dec.push(pass(r.k, 1));
        for (const r of runs) r.pre.push(pass(r.k, nTokPrefill));
      }
      const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
      for (const r of runs) {
        const pt = (sec: number, nTok: number): GmacPoint => ({ gmacs: (macs * nTok) / sec / 1e9, gbs: bytes / sec / 1e9 });
        const fig: TypeFigures = {
          type, build: r.build, threads: r.threads,
          decodeBest: pt(Math.min(...r.dec), 1), decodeMedian: pt(median(r.dec), 1),
          prefillBest: pt(Math.min(...r.pre), nTokPrefill), prefillMedian: pt(median(r.pre), nTokPrefill),
        };
        results.push(fig);
        opts.log(`${type.padEnd(6)} ${builds.length > 1 ? r.build.padEnd(8) + " " : ""}[${r.threads}T] ` +
          `decode ${fig.decodeBest.gmacs.toFixed(2)} GMAC/s ${fig.decodeBest.gbs.toFixed(2)} GB/s (median ${fig.decodeMedian.gmacs.toFixed(2)}), ` +
          `prefill x${nTokPrefill} ${fig.prefillBest.gmacs.toFixed(2)} GMAC/s (median ${fig.prefillMedian.gmacs.toFixed(2)}); ` +
          `${(bytes / 1e9).toFixed(2)} GB, ${(bytes / macs).toFixed(4)} B/weight`);
      }
    } finally {
      for (const r of runs) {
        r.be.release(arena);
        await r.be.close();
      }
    }
  }
  return results;
}

/** Compile another kernels.wasm (A/B runs). */
export async function compileKernels(file: string): Promise<WebAssembly.Module> {
  enableRevectorize(); // as loadKernelBuild does: V8 reads the flag when it compiles
  return WebAssembly.compile(readFileSync(file));
}

// ---------------------------------------------------------------------------------------------
// The matrices of a real GGUF file

/**
 * Every matrix product of a forward pass over the weights of a GGUF file as they are stored (per
 * layer attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down, then output), with the
 * activation quantization before each: the kernels' share of a token, without attention, norms
 * or anything else. Reports ms per step and tokens/s for nTok = 1 (decode) and a prompt of
 * `promptTokens`, best and median of `reps` alternating runs.
 */
export async function benchGgufMatmuls(opts: { file: string; threads: number; reps?: number; promptTokens?: number; log: (line: string) => void }): Promise<void> {
  const { readGguf } = await import("../src/gguf/reader.js");
  const fs = await import("node:fs");
  const g = readGguf(opts.file);
  const reps = opts.reps ?? 5, nPrompt = opts.promptTokens ?? 9;
  const names: string[] = [];
  for (let l = 0; g.tensors.has(`blk.${l}.attn_q.weight`); l++) {
    for (const t of ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]) names.push(`blk.${l}.${t}.weight`);
  }
  names.push(g.tensors.has("output.weight") ? "output.weight" : "token_embd.weight");
  let total = 0, maxCols = 0, macs = 0;
  const byType = new Map<string, number>();
  for (const n of names) {
    const t = g.tensors.get(n)!;
    total += Math.ceil(t.nbytes / 64) * 64;
    maxCols = Math.max(maxCols, t.dims[0]!);
    macs += t.dims[0]! * t.dims[1]!;
    byType.set(t.type, (byType.get(t.type) ?? 0) + t.dims[0]! * t.dims[1]!);
  }
  const be = await WasmBackend.create(opts.threads);
  const arena = new Arena(total + nPrompt * maxCols * 8 + 2 * nPrompt * 32768 * 4 + be.scratchBytes + (16 << 20), "bench-gguf");
  const k = be.bind(arena);
  const fd = fs.openSync(opts.file, "r");
  const mats: { type: TensorType; w: number; rows: number; cols: number }[] = [];
  try {
    for (const n of names) {
      const t = g.tensors.get(n)!;
      const w = arena.alloc(t.nbytes);
      fs.readSync(fd, arena.u8(w, t.nbytes), 0, t.nbytes, t.offset);
      mats.push({ type: t.type as TensorType, w, rows: t.dims[1]!, cols: t.dims[0]! });
    }
  } finally {
    fs.closeSync(fd);
  }
  const xf = arena.alloc(nPrompt * maxCols * 4);
  const f = arena.f32(xf, nPrompt * maxCols);
  for (let i = 0; i < f.length; i++) f[i] = Math.sin(i * 0.37) * (1 + (i % 7));
  const xq = arena.alloc(nPrompt * maxCols * 4 + 4096);
  const out = arena.alloc(nPrompt * 32768 * 4 * 2);
  const step = (nTok: number): number => {
    const t0 = performance.now();
    for (const m of mats) {
      k.quantizeAct(actTypeOf(m.type), xq, xf, nTok * m.cols);
      k.matmul(m.type, out, m.w, xq, m.rows, m.cols, nTok);
    }
    be.idle();
    return performance.now() - t0;
  };
  step(1); step(nPrompt);
  const dec: number[] = [], pre: number[] = [];
  for (let i = 0; i < reps; i++) {
    dec.push(step(1));
    pre.push(step(nPrompt));
  }
  const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const mix = [...byType].map(([t, m]) => `${t} ${((100 * m) / macs).toFixed(0)}%`).join(", ");
  opts.log(`${opts.file}: ${mats.length} matrices, ${(total / 1e9).toFixed(2)} GB, ${(macs / 1e9).toFixed(2)} GMAC per token (${mix}), ${opts.threads} threads`);
  opts.log(`  decode: best ${Math.min(...dec).toFixed(1)} ms/token (${(1000 / Math.min(...dec)).toFixed(1)} tok/s, ${(macs / Math.min(...dec) / 1e6).toFixed(1)} GMAC/s), median ${med(dec).toFixed(1)} ms`);
  opts.log(`  prompt of ${nPrompt}: best ${Math.min(...pre).toFixed(1)} ms (${((1000 * nPrompt) / Math.min(...pre)).toFixed(1)} tok/s, ${((macs * nPrompt) / Math.min(...pre) / 1e6).toFixed(1)} GMAC/s), median ${med(pre).toFixed(1)} ms`);
  be.release(arena);
  await be.close();
}

/**
 * One matrix of `type` (rows x cols, random weights with sane scales) in cache: matmul with nTok
 * tokens repeated, best and median GMAC/s of `reps` timed runs (~0.2e9 MACs each).
 */
export async function benchHot(opts: { type: TensorType; rows: number; cols: number; nTok: number; reps?: number; threads?: number; build?: KernelBuild; module?: WebAssembly.Module; log: (line: string) => void }): Promise<{ best: number; median: number }> {
  const { type, rows, cols, nTok } = opts;
  const act = actTypeOf(type);
  const arena = new Arena(rows * rowBytes(type, cols) + nTok * (cols * 4 + rowBytes(act, cols)) + nTok * rows * 4 + (16 << 20), "bench-hot");
  const module = opts.module ?? (opts.build ? await loadKernelBuild(opts.build) : undefined);
  if (opts.build && !module) throw new Error(`benchHot: this engine does not run the ${opts.build} build`);
  const be = await WasmBackend.create(opts.threads ?? 1, { module });
  const k = be.bind(arena);
  const w = arena.alloc(rows * rowBytes(type, cols));
  fillType(arena, type, w, rows * rowBytes(type, cols));
  const xf = arena.alloc(nTok * cols * 4);
  const f = arena.f32(xf, nTok * cols);
  for (let i = 0; i < f.length; i++) f[i] = Math.sin(i);
  const x = arena.alloc(nTok * rowBytes(act, cols));
  const out = arena.alloc(nTok * rows * 4);
  k.quantizeAct(act, x, xf, nTok * cols);
  const n = Math.max(1, Math.round(2e8 / (rows * cols * nTok)));
  const run = (): number => {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) k.matmul(type, out, w, x, rows, cols, nTok);
    return (performance.now() - t0) / 1000 / n;
  };
  for (let i = 0; i < 3; i++) run();
  const ts: number[] = [];
  for (let i = 0; i < (opts.reps ?? 9); i++) ts.push(run());
  ts.sort((a, b) => a - b);
  const g = (t: number): number => (rows * cols * nTok) / t / 1e9;
  const r = { best: g(ts[0]!), median: g(ts[ts.length >> 1]!) };
  opts.log(`${type} ${rows}x${cols} x${nTok} [${be.name}]: best ${r.best.toFixed(2)}, median ${r.median.toFixed(2)} GMAC/s`);
  be.release(arena);
  await be.close();
  return r;
}
