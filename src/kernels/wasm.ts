/**
 * WebAssembly SIMD128 kernels (compiled from src/kernels/assembly/kernels.ts into the committed
 * src/kernels/kernels.wasm) run on a thread pool (pool.ts). Use createBackend(): it falls back to
 * the TypeScript reference kernels where WebAssembly SIMD is missing.
 *
 * Scratch: bind(arena) allocates backend.scratchBytes (threads x WASM_SCRATCH_BYTES_PER_THREAD)
 * in the arena, each thread's own: the widened activations of matmul (one token needs
 * matmulScratchBytes(type, cols), at most 4 * cols + 64 bytes; prefill widens as many tokens at a
 * time as fit, at least two, else it runs token by token) and quantizeWeights' level buffers
 * (QUANTW_SCRATCH_BYTES). An arena without that room is an error (the loaders plan every arena
 * with it, engine/layout.ts).
 */
import { readFile } from "node:fs/promises";
import { LlameshError } from "../core/errors.js";
import type { Arena } from "./arena.js";
import { ATTENTION_ENTRY_BYTES, ATTENTION_ENTRY_WORDS, type KernelBackend, type Kernels, type Ptr } from "./kernels.js";
import { actTypeOf, rowBytes, typeInfo, type ActType, type MatmulType, type TensorType } from "./formats.js";
import { ReferenceBackend } from "./reference.js";
import { enableRevectorize, revectorizing } from "./revec.js";
import { ThreadPool } from "./pool.js";
import {
  MATMUL_SHADOW, OP_ATTN, OP_ATTN_STEPS, OP_BF16, OP_MATMUL, OP_QUANT, OP_QWEIGHTS, OP_REPACK, OP_SILU, matmulChunkRowsMax, type KernelExports,
} from "./pool-worker.js";

/** Per-thread scratch: matmul's widened activations (i16 values + f32 scales of a chunk of tokens). */
export const WASM_SCRATCH_BYTES_PER_THREAD = 384 * 1024;
/**
 * Per worker thread (not the main one): the shadow its one-token matmul chunks are written to
 * before their commit, so that the main thread can take over a preempted worker's chunk
 * (pool-worker.ts CHUNK_FREE; several-token matmuls write directly, see dispatchMatmul). 1 MiB
 * holds a chunk of 262,144 rows; a job whose chunks do not fit runs without.
 */
export const WASM_SHADOW_BYTES_PER_WORKER = 1 << 20;
/** LLAMESH_POOL_TAKEOVER=0: no shadows, no takeovers (A/B). */
const TAKEOVER = process.env["LLAMESH_POOL_TAKEOVER"] !== "0";
/**
 * LLAMESH_REPACK=0: never repack loaded matrices (Kernels.repackWeights; A/B). Otherwise the
 * relaxed build repacks Q4_0 into Q4_0x4 (assembly/q4x4.ts): its decode kernel has no transposes
 * (measured in the README's Speed section).
 */
const REPACK = process.env["LLAMESH_REPACK"] !== "0";
/** Scratch quantizeWeights uses per thread (level buffers, assembly/quantw.ts). */
export const QUANTW_SCRATCH_BYTES = 2624;

/**
 * Scratch bytes matmul needs per thread for one token of `cols` (assembly/matmul.ts, q8.ts):
 * widened blocks of 96 (Q8_0), 112 (other 32-value types, plus 112; Q4_0x4 160), 592 bytes (K-quants, plus 512),
 * or the token as f32 (F16, BF16) plus a 64-byte slot. The slack after the blocks holds the relaxed
 * decode loops' constants and per-row scale vectors (assembly/relaxed.ts).
 */
export function matmulScratchBytes(type: MatmulType, cols: number): number {
  switch (type) {
    case "Q8_0": return (cols / 32) * 96;
    case "F32": return 64;
    case "F16": case "BF16": return 64 + 4 * cols;
    case "Q2_K": case "Q3_K": case "Q4_K": case "Q5_K": case "Q6_K": return (cols / 256) * 592 + 512;
    case "Q4_0x4": return (cols / 32) * 160 + 112; // assembly/q4x4.ts widenQ4_0Bcast (the i16 decode)
    default: return (cols / 32) * 112 + 112;
  }
}


// Below these amounts of work a kernel runs on the main thread alone (dispatch ~0.3-1 µs).
const MIN_SPLIT_MACS = 1 << 16;
const MIN_SPLIT_ATTN = 1 << 15;
const MIN_SPLIT_SILU = 1 << 13;
const MIN_SPLIT_ELEM = 1 << 16;
const MIN_SPLIT_QUANT_VALUES = 1 << 14;
/** quantizeAct id of quantizeQ8's formula (assembly/quant.ts). */
const Q8_0_LEGACY = 0x108;
const MIN_SPLIT_QWEIGHT_VALUES = 1 << 12;
/**
 * A split job is cut into chunks the threads take from a shared counter (pool.ts): up to
 * CHUNKS_PER_THREAD per thread, each at least half the op's split threshold (MIN_CHUNK_MACS for
 * matmul: ~10-20 µs). Two, not four: every chunk restarts its row streams (decode's eight
 * streams per chunk get shorter with more chunks) and, for several tokens, its pass over every
 * token (matmul's reuse keeps a thread's expanded activations across its chunks). In-process A/B,
 * 2 threads, Node 24: decode on the 7B shapes from DRAM (1.5 GB), 4 -> 2 per thread: Q4_0 23.9-24.7
 * -> 25.7-25.9 GB/s best, Q4_K 20.5 -> 21.7, Q8_0 25.8 -> 26.5 (1 per thread: Q4_0 22.8); the
 * 1.1B 8-token step 85.3-87.8 -> 84.3 ms (1 per thread 82.5-83.6). Two keep a preempted thread's
 * stall to a quarter of a job, and the pool's load evidence (pool-adapt.ts) still sees 32 chunks
 * per thread and epoch.
 *
 * Matmuls of several tokens (prompt batches) take one chunk per thread (PREFILL_CHUNKS_PER_THREAD):
 * each chunk costs a pass over the batch's activations. Quiet 9-token prompt on the 1.1B Q8_0
 * shape, 2 threads, Node 20.20.2, 8 alternating runs each, both without shadows (tok/s, median):
 * two per thread 38.1, one 40.1, the pool before issue 11 40.5 (AMD EPYC, 2026-12-03). A
 * preempted worker then holds half a prompt job (they run without takeovers, see dispatchMatmul),
 * but under load the pool runs the prompt's jobs on the main thread alone (pool-adapt.ts).
 */
const CHUNKS_PER_THREAD = 2;
const PREFILL_CHUNKS_PER_THREAD = 1;
const MIN_CHUNK_MACS = 1 << 17;

/** (module (func (result v128) (v128.const i32x4 0 0 0 0))) */
const SIMD_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b,
  0x03, 0x02, 0x01, 0x00,
  0x0a, 0x16, 0x01, 0x14, 0x00, 0xfd, 0x0c, ...new Array<number>(16).fill(0), 0x0b,
]);

export function wasmSimdSupported(): boolean {
  try {
    return typeof SharedArrayBuffer === "function" && WebAssembly.validate(SIMD_PROBE);
  } catch {
    return false;
  }
}

/** The two builds of the kernels (scripts/build-wasm.mjs): plain SIMD128, and SIMD128 + relaxed SIMD. */
export type KernelBuild = "simd128" | "relaxed";
const BUILD_FILES: Record<KernelBuild, string> = { simd128: "kernels.wasm", relaxed: "kernels-relaxed.wasm" };

const modulePromises = new Map<KernelBuild, Promise<WebAssembly.Module | undefined>>();
const moduleBuilds = new WeakMap<WebAssembly.Module, KernelBuild>();

/** The build of a module loaded by loadKernelModule (undefined for modules from elsewhere). */
export function buildOf(module: WebAssembly.Module): KernelBuild | undefined {
  return moduleBuilds.get(module);
}

/** Read a build's .wasm (located relative to this file, in src/ or dist/src/). */
async function readBuild(build: KernelBuild): Promise<Uint8Array<ArrayBuffer>> {
  const file = BUILD_FILES[build];
  const candidates = [new URL(`./${file}`, import.meta.url), new URL(`../../../src/kernels/${file}`, import.meta.url)];
  let lastErr: unknown;
  for (const url of candidates) {
    try {
      return new Uint8Array(await readFile(url));
    } catch (e) {
      lastErr = e;
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
  }
  throw new Error(`${file} not found (looked at ${candidates.map((u) => u.pathname).join(", ")}): ${String(lastErr)}`);
}

/**
 * Compile one build once per process; undefined if this engine does not validate it (relaxed SIMD
 * on Node 20 without --experimental-wasm-relaxed-simd).
 */
export function loadKernelBuild(build: KernelBuild): Promise<WebAssembly.Module | undefined> {
  let p = modulePromises.get(build);
  if (!p) {
    p = (async () => {
      enableRevectorize(); // V8 reads the flag when it compiles, so before the first module
      const bytes = await readBuild(build);
      if (build !== "simd128" && !WebAssembly.validate(bytes)) return undefined;
      const m = await WebAssembly.compile(bytes);
      moduleBuilds.set(m, build);
      return m;
    })();
    modulePromises.set(build, p);
  }
  return p;
}

/** The builds this engine runs, best first. */
export async function availableBuilds(): Promise<KernelBuild[]> {
  const out: KernelBuild[] = [];
  if (await loadKernelBuild("relaxed")) out.push("relaxed");
  out.push("simd128");
  return out;
}

/**
 * The module the backends use: env LLAMESH_WASM=simd128|relaxed forces a build (relaxed where this
 * engine cannot run it is an error); otherwise relaxed where WebAssembly.validate accepts it
 * (its dot products: prefill 2-3x faster), else SIMD128.
 */
export async function loadKernelModule(): Promise<WebAssembly.Module> {
  const forced = process.env.LLAMESH_WASM;
  if (forced !== undefined && forced !== "") {
    if (forced !== "simd128" && forced !== "relaxed") {
      throw new LlameshError(`LLAMESH_WASM=${JSON.stringify(forced)}: expected simd128 or relaxed`);
    }
    const m = await loadKernelBuild(forced);
    if (!m) throw new LlameshError(`LLAMESH_WASM=relaxed: this JavaScript engine does not validate relaxed SIMD (Node 22+, or Node 20 with --experimental-wasm-relaxed-simd)`);
    return m;
  }
  return (await loadKernelBuild("relaxed")) ?? (await loadKernelBuild("simd128"))!;
}

const warmed = new WeakSet<WebAssembly.Module>();

/**
 * Run every kernel a few times on a small private memory so V8 tiers the module up from Liftoff to
 * TurboFan now (compiled in the background, shared by every instance of the module, workers
 * included) rather than during the first forward pass (the first prompt matmuls ran 3-5x slower).
 * Once per process, a few ms.
 */
export function warmUpKernels(module: WebAssembly.Module): void {
  if (warmed.has(module)) return;
  warmed.add(module);
  const memory = new WebAssembly.Memory({ initial: 32, maximum: 32, shared: true });
  const k = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as KernelExports;
  // Layout (bytes): w 64 rows x 1024 cols (up to 210 bytes per 256 values: 54 KiB) at 64K, x (4
  // tokens, any activation type) at 160K, out at 176K, f32 vectors at 192K/208K/224K, scratch at
  // 256K (96K), KV at 384K/448K.
  const w = 65536, x = 163840, out = 180224, a = 196608, b = 212992, c = 229376, scratch = 262144;
  const kc = 393216, vc = 458752;
  // (48: Q4_0x4, which only the relaxed build multiplies; the SIMD128 build traps on it)
  const types = [0, 1, 30, 8, 2, 3, 6, 7, 10, 11, 12, 13, 14, 20, ...(buildOf(module) === "relaxed" ? [48] : [])];
  for (let i = 0; i < 40; i++) {
    for (const t of types) {
      k.matmul(t, out, w, x, 64, 1024, 1, 0, 64, scratch, 98304, 0);
      if (i < 20) k.matmul(t, out, w, x, 64, 1024, 3, 0, 64, scratch, 98304, 0);
    }
    k.quantizeAct(8, x, a, 1024 / 32);
    k.quantizeAct(15, x, a, 1024 / 256);
    // (runs once per matrix at load, a few hundred long calls: tiered up first like the rest)
    k.repackQ4_0x4?.(w, 64, 32, scratch);
    k.rmsnorm(b, a, c, 1024, 1e-5);
    k.rope(b, 0, 16, 64, c);
    k.siluMul(a, b, 1024);
    k.storeBf16(kc, a, 1024);
    k.attention(b, a, kc, vc, scratch, 8, 2, 64, 32, 0, 8);
  }
}

export async function createBackend(opts: { threads: number; log?: (line: string) => void; forceReference?: boolean }): Promise<KernelBackend> {
  if (opts.forceReference) return new ReferenceBackend();
  if (!wasmSimdSupported()) {
    opts.log?.("WebAssembly SIMD unavailable: using the TypeScript kernels (slow)");
    return new ReferenceBackend();
  }
  return WasmBackend.create(opts.threads);
}

export class WasmBackend implements KernelBackend {
  readonly name: string;

  private constructor(readonly pool: ThreadPool, readonly threads: number, private readonly alwaysSplit: boolean, private readonly build: KernelBuild | undefined) {
    this.name = `wasm-${build ?? "custom"}${revectorizing() ? "+revec" : ""} x${threads} thread${threads === 1 ? "" : "s"}`;
  }

  /**
   * alwaysSplit (for tests): spread every splittable kernel over all threads, however small.
   * module (for A/B benchmarks and tests): another build of the kernels with the same exports
 * (loadKernelBuild, or a module compiled elsewhere); default loadKernelModule(). build: which
 * build a module compiled elsewhere is (A/B runs of relaxed builds repack as the relaxed build).
   */
  static async create(threads: number, opts: { alwaysSplit?: boolean; module?: WebAssembly.Module; build?: KernelBuild } = {}): Promise<WasmBackend> {
    const n = Math.max(1, Math.floor(threads) || 1);
    const module = opts.module ?? await loadKernelModule();
    warmUpKernels(module);
    // alwaysSplit (tests) keeps every job on all threads: no switching to the main thread alone
    return new WasmBackend(await ThreadPool.create(module, n, !opts.alwaysSplit), n, opts.alwaysSplit ?? false, buildOf(module) ?? opts.build);
  }

  private readonly ids = new Map<WebAssembly.Memory, number>();

  get scratchBytes(): number {
    return this.threads * WASM_SCRATCH_BYTES_PER_THREAD + (this.threads - 1) * WASM_SHADOW_BYTES_PER_WORKER;
  }

  bind(arena: Arena): WasmKernels {
    if (arena.size - Math.ceil(arena.used / 64) * 64 < this.scratchBytes) {
      throw new RangeError(`arena ${arena.label}: no room for the kernels' scratch (${this.scratchBytes} bytes, ${this.threads} threads); plan the arena with backend.scratchBytes`);
    }
    const scratch = arena.alloc(this.scratchBytes, 64);
    const { id, exports } = this.pool.register(arena.memory);
    this.ids.set(arena.memory, id);
    const shadow = this.threads > 1 && TAKEOVER ? scratch + this.threads * WASM_SCRATCH_BYTES_PER_THREAD : 0;
    const repack = REPACK && this.build === "relaxed";
    return new WasmKernels(arena, this.pool, id, exports, this.threads, scratch, WASM_SCRATCH_BYTES_PER_THREAD, this.alwaysSplit ? 0 : 1, shadow, repack);
  }

  release(arena: Arena): void {
    const id = this.ids.get(arena.memory);
    if (id === undefined) return;
    this.ids.delete(arena.memory);
    this.pool.unregister(id);
  }

  get boundArenas(): number {
    return this.ids.size;
  }

  idle(): void {
    this.pool.idle();
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

export class WasmKernels implements Kernels {
  private readonly size: number;
  private readonly args = new Float64Array(16);

  constructor(
    readonly arena: Arena,
    private readonly pool: ThreadPool,
    readonly arenaId: number,
    private readonly k: KernelExports,
    readonly threads: number,
    /** Base of the per-thread matmul scratch (0 if none) and bytes per thread. */
    readonly scratch: number,
    readonly scratchBytes: number,
    /** Multiplies the MIN_SPLIT_* thresholds (0: always split). */
    private readonly splitScale = 1,
    /** Base of the workers' matmul shadows (WASM_SHADOW_BYTES_PER_WORKER each; 0: none). */
    private readonly shadow = 0,
    /** repackWeights rearranges Q4_0 into Q4_0x4 (the relaxed build, whose kernels multiply it). */
    private readonly repack = false,
  ) {
    this.size = arena.memory.buffer.byteLength;
    this.words = new Uint32Array(arena.memory.buffer);
    // (a build from before fusedTypes, as A/B benchmarks load, rounds twice)
    const mask = scratch !== 0 && typeof k.fusedTypes === "function" ? k.fusedTypes(scratch) : 0;
    this.fusedTypes = (["Q8_0", "Q4_0"] as const).filter((_, i) => (mask >> i) & 1);
  }

  readonly fusedTypes: readonly TensorType[];
  /** The arena as u32 words (attentionSteps reads its table; one view, no garbage per call). */
  private readonly words: Uint32Array;

  // The names are constants and the tensor type comes apart (typed): a template string built on
  // every call was the largest source of garbage per token (young-generation scavenges that stall
  // the pool and a cluster's syncs), for a message only an error ever reads.
  private check(name: string, ptr: number, bytes: number, type?: string): void {
    if (!(Number.isInteger(ptr) && ptr >= 0 && ptr + bytes <= this.size)) {
      throw new RangeError(`${withType(name, type)}: range [${ptr}, ${ptr + bytes}) outside arena ${this.arena.label} (${this.size} bytes)`);
    }
  }

  private count(name: string, n: number, multiple = 1, type?: string): void {
    if (!(Number.isInteger(n) && n >= 0 && n % multiple === 0 && n < 2 ** 32)) {
      throw new RangeError(`${withType(name, type)}: bad size ${n}${multiple > 1 ? ` (must be a multiple of ${multiple})` : ""}`);
    }
  }

  /** Chunks for a job of `units` units and `work` in all, each chunk at least `minChunk` of it. */
  private chunks(units: number, work: number, minChunk: number, perThread = CHUNKS_PER_THREAD): number {
    const cap = Math.min(units, this.threads * perThread);
    if (this.splitScale === 0) return cap;
    return Math.max(1, Math.min(cap, Math.max(this.threads, Math.floor(work / minChunk))));
  }

  private dispatch(op: number, shares: number, ...a: number[]): void {
    const args = this.args;
    for (let i = 0; i < a.length; i++) args[i] = a[i]!;
    this.pool.run(op, this.arenaId, args.subarray(0, a.length), shares);
  }

  /** A matmul, with its shape as the key under which the pool times it (pool-adapt.ts). */
  private dispatchMatmul(chunks: number, type: number, out: Ptr, w: Ptr, x: Ptr, rows: number, cols: number, nTok: number): void {
    const a = this.args;
    a[0] = type; a[1] = out; a[2] = w; a[3] = x; a[4] = rows; a[5] = cols; a[6] = nTok; a[7] = this.scratch; a[8] = this.scratchBytes;
    // Shadows (and so takeovers) for one-token matmuls only: with them, the quiet 9-token prompt
    // of the 1.1B Q8_0 shape ran at 37.1-37.8 tok/s against 40.8-41.7 without (Node 20.20.2, 2
    // threads, AMD EPYC, 5 alternating runs each; one shadowed run, at 20.8, ran alone and is left
    // out). Node 24 showed no difference, and the kernels alone, in-process, run as fast into a
    // shadow: the cause was not found. A prompt's jobs are few and long, so a takeover would redo
    // milliseconds anyway; under load the pool runs them alone.
    const fits = this.shadow > 0 && nTok === 1 && matmulChunkRowsMax(rows, chunks) * 4 <= WASM_SHADOW_BYTES_PER_WORKER;
    a[MATMUL_SHADOW] = fits ? this.shadow : 0;
    a[MATMUL_SHADOW + 1] = WASM_SHADOW_BYTES_PER_WORKER;
    this.pool.run(OP_MATMUL, this.arenaId, a.subarray(0, MATMUL_SHADOW + 2), chunks, ((rows * 65536 + cols / 32) * 64 + Math.min(nTok, 63)) * 64 + type);
  }

  quantizeAct(act: ActType, dst: Ptr, src: Ptr, n: number): void {
    const info = typeInfo(act);
    this.count("quantizeAct", n, info.blockValues, act);
    const units = n / info.blockValues;
    this.check("quantizeAct dst", dst, units * info.blockBytes, act);
    this.check("quantizeAct src", src, n * 4, act);
    if (this.threads > 1 && n >= MIN_SPLIT_QUANT_VALUES * this.splitScale) {
      this.dispatch(OP_QUANT, this.chunks(units, n, MIN_SPLIT_QUANT_VALUES / 2), info.ggmlId, dst, src, units, info.blockBytes, info.blockValues * 4);
    } else {
      this.k.quantizeAct(info.ggmlId, dst, src, units);
    }
  }

  matmul(type: MatmulType, out: Ptr, w: Ptr, x: Ptr, rows: number, cols: number, nTok: number): void {
    const info = typeInfo(type);
    if (type === "Q4_0x4" && !this.repack) throw new RangeError("matmul Q4_0x4: these kernels do not multiply that layout (the relaxed build does)");
    this.count("matmul rows", rows, type === "Q4_0x4" ? 4 : 1, type);
    this.count("matmul cols", cols, info.blockValues, type);
    this.count("matmul nTok", nTok, 1, type);
    const need = matmulScratchBytes(type, cols);
    if (need > this.scratchBytes) {
      throw new RangeError(`matmul ${type}: rows of ${cols} values need ${need} bytes of scratch per thread, more than the ${this.scratchBytes} there are`);
    }
    this.check("matmul out", out, rows * nTok * 4, type);
    this.check("matmul w", w, rows * rowBytes(type, cols), type);
    this.check("matmul x", x, nTok * rowBytes(actTypeOf(type), cols), type);
    const macs = rows * cols * nTok;
    if (this.threads > 1 && rows >= 8 * this.splitScale && macs >= MIN_SPLIT_MACS * this.splitScale) {
      this.dispatchMatmul(this.chunks(Math.ceil(rows / 4), macs, MIN_CHUNK_MACS, nTok > 1 ? PREFILL_CHUNKS_PER_THREAD : CHUNKS_PER_THREAD), info.ggmlId, out, w, x, rows, cols, nTok);
    } else {
      this.k.matmul(info.ggmlId, out, w, x, rows, cols, nTok, 0, rows, this.scratch, this.scratchBytes, 0);
    }
  }

  repackWeights(type: TensorType, w: Ptr, rows: number, cols: number): MatmulType {
    if (!this.repack || type !== "Q4_0" || rows % 4 !== 0 || rows === 0 || !this.k.repackQ4_0x4 || (cols / 32) * 72 > this.scratchBytes) return type;
    this.count("repackWeights cols", cols, 32, type);
    this.check("repackWeights w", w, rows * rowBytes(type, cols), type);
    // split by groups of four rows over the threads (the 7B shape's 3.8 GB: 453-487 ms on two)
    const groups = rows / 4, nb = cols / 32;
    if (this.threads > 1 && rows * cols >= MIN_SPLIT_QWEIGHT_VALUES * 64 * this.splitScale) {
      this.dispatch(OP_REPACK, this.chunks(groups, rows * cols, MIN_SPLIT_QWEIGHT_VALUES * 32), w, groups, nb, 4 * rowBytes(type, cols), this.scratch, this.scratchBytes);
    } else {
      this.k.repackQ4_0x4(w, rows, nb, this.scratch);
    }
    return "Q4_0x4";
  }

  quantizeWeights(type: TensorType, dst: Ptr, src: Ptr, n: number): void {
    const info = typeInfo(type);
    this.count("quantizeWeights", n, info.blockValues, type);
    const units = n / info.blockValues;
    this.check("quantizeWeights dst", dst, units * info.blockBytes, type);
    this.check("quantizeWeights src", src, n * 4, type);
    if (this.threads > 1 && n >= MIN_SPLIT_QWEIGHT_VALUES * this.splitScale) {
      this.dispatch(OP_QWEIGHTS, this.chunks(units, n, MIN_SPLIT_QWEIGHT_VALUES / 2), info.ggmlId, dst, src, units, info.blockBytes, info.blockValues * 4, this.scratch, this.scratchBytes);
    } else {
      this.k.quantizeWeights(info.ggmlId, dst, src, units, this.scratch);
    }
  }

  quantizeQ8(dst: Ptr, src: Ptr, n: number): void {
    this.count("quantizeQ8", n, 32);
    const nb = n / 32;
    this.check("quantizeQ8 dst", dst, nb * 34);
    this.check("quantizeQ8 src", src, n * 4);
    if (this.threads > 1 && n >= MIN_SPLIT_QUANT_VALUES * this.splitScale) this.dispatch(OP_QUANT, this.chunks(nb, n, MIN_SPLIT_QUANT_VALUES / 2), Q8_0_LEGACY, dst, src, nb, 34, 128);
    else this.k.quantizeAct(Q8_0_LEGACY, dst, src, nb);
  }

  matmulQ8(out: Ptr, w: Ptr, x: Ptr, rows: number, cols: number, nTok: number): void {
    this.matmul("Q8_0", out, w, x, rows, cols, nTok);
  }

  rmsnorm(out: Ptr, x: Ptr, weight: Ptr, n: number, eps: number): void {
    this.count("rmsnorm", n);
    this.check("rmsnorm out", out, n * 4);
    this.check("rmsnorm x", x, n * 4);
    this.check("rmsnorm weight", weight, n * 4);
    this.k.rmsnorm(out, x, weight, n, eps);
  }

  rope(vec: Ptr, nHeads: number, headDim: number, cosSin: Ptr): void {
    this.count("rope nHeads", nHeads);
    this.count("rope headDim", headDim, 2);
    this.check("rope vec", vec, nHeads * headDim * 4);
    this.check("rope cosSin", cosSin, headDim * 4);
    this.k.rope(vec, 0, nHeads, headDim, cosSin);
  }

  storeBf16(dst: Ptr, src: Ptr, n: number): void {
    this.count("storeBf16", n);
    this.check("storeBf16 dst", dst, n * 2);
    this.check("storeBf16 src", src, n * 4);
    if (this.threads > 1 && n >= MIN_SPLIT_ELEM * this.splitScale) this.dispatch(OP_BF16, this.chunks(Math.ceil(n / 32), n, MIN_SPLIT_ELEM / 2), dst, src, n);
    else this.k.storeBf16(dst, src, n);
  }

  attention(out: Ptr, q: Ptr, kCache: Ptr, vCache: Ptr, scratch: Ptr,
    nHeads: number, nKvHeads: number, headDim: number, nPos: number): void {
    this.count("attention nHeads", nHeads);
    this.count("attention nKvHeads", nKvHeads);
    this.count("attention headDim", headDim);
    this.count("attention nPos", nPos);
    if (nKvHeads === 0 || nHeads % nKvHeads !== 0) throw new RangeError(`attention: nHeads ${nHeads} not a multiple of nKvHeads ${nKvHeads}`);
    if (nPos === 0) throw new RangeError("attention: nPos must be >= 1");
    const kvBytes = nPos * nKvHeads * headDim * 2;
    this.check("attention out", out, nHeads * headDim * 4);
    this.check("attention q", q, nHeads * headDim * 4);
    this.check("attention kCache", kCache, kvBytes);
    this.check("attention vCache", vCache, kvBytes);
    this.check("attention scratch", scratch, nHeads * nPos * 4);
    if (this.threads > 1 && nHeads > 1 && nHeads * nPos * headDim >= MIN_SPLIT_ATTN * this.splitScale) {
      this.dispatch(OP_ATTN, this.chunks(nHeads, nHeads * nPos * headDim, MIN_SPLIT_ATTN / 2), out, q, kCache, vCache, scratch, nHeads, nKvHeads, headDim, nPos);
    } else {
      this.k.attention(out, q, kCache, vCache, scratch, nHeads, nKvHeads, headDim, nPos, 0, nHeads);
    }
  }

  attentionSteps(table: Ptr, n: number, scratch: Ptr, scratchPerThread: number, nHeads: number, nKvHeads: number, headDim: number): void {
    this.count("attentionSteps n", n);
    if (!(Number.isInteger(n) && n >= 1)) throw new RangeError(`attentionSteps: ${n} tokens, expected at least 1`);
    if (nKvHeads === 0 || nHeads % nKvHeads !== 0) throw new RangeError(`attentionSteps: nHeads ${nHeads} not a multiple of nKvHeads ${nKvHeads}`);
    this.check("attentionSteps table", table, n * ATTENTION_ENTRY_BYTES);
    this.check("attentionSteps scratch", scratch, scratchPerThread * this.threads);
    // every entry as attention() checks its operands (the table is the caller's memory)
    if (table % 4 !== 0) throw new RangeError(`attentionSteps: table at ${table} is not 4-aligned`);
    const e = this.words;
    const e0 = table >> 2;
    let work = 0;
    for (let t = 0; t < n; t++) {
      const et = e0 + t * ATTENTION_ENTRY_WORDS;
      const nPos = e[et + 4]!;
      if (nPos === 0) throw new RangeError(`attentionSteps: token ${t}: nPos must be >= 1`);
      if (nHeads * nPos * 4 > scratchPerThread) throw new RangeError(`attentionSteps: token ${t}: ${nPos} positions need ${nHeads * nPos * 4} bytes of scratch per thread, more than ${scratchPerThread}`);
      const kvBytes = nPos * nKvHeads * headDim * 2;
      this.check("attentionSteps out", e[et]!, nHeads * headDim * 4);
      this.check("attentionSteps q", e[et + 1]!, nHeads * headDim * 4);
      this.check("attentionSteps kCache", e[et + 2]!, kvBytes);
      this.check("attentionSteps vCache", e[et + 3]!, kvBytes);
      work += nHeads * nPos * headDim;
    }
    if (this.threads > 1 && n * nHeads > 1 && work >= MIN_SPLIT_ATTN * this.splitScale) {
      this.dispatch(OP_ATTN_STEPS, this.chunks(n * nHeads, work, MIN_SPLIT_ATTN / 2), table, n, scratch, scratchPerThread, nHeads, nKvHeads, headDim);
    } else {
      this.k.attentionSteps(table, 0, n * nHeads, scratch, nHeads, nKvHeads, headDim);
    }
  }

  siluMul(gate: Ptr, up: Ptr, n: number): void {
    this.count("siluMul", n);
    this.check("siluMul gate", gate, n * 4);
    this.check("siluMul up", up, n * 4);
    if (this.threads > 1 && n >= MIN_SPLIT_SILU * this.splitScale) this.dispatch(OP_SILU, this.chunks(Math.ceil(n / 32), n, MIN_SPLIT_SILU / 2), gate, up, n);
    else this.k.siluMul(gate, up, n);
  }
}

/** "matmul out" with type Q4_K -> "matmul Q4_K out" (the op, then the type, then the operand). */
function withType(name: string, type: string | undefined): string {
  if (type === undefined) return name;
  const i = name.indexOf(" ");
  return i < 0 ? `${name} ${type}` : `${name.slice(0, i)} ${type}${name.slice(i)}`;
}
