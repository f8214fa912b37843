/**
 * Helper thread of the kernel thread pool (see pool.ts), plus the code that maps one chunk of a job
 * to a kernel call and takes chunks from the claim word, used by the main thread and the workers
 * alike.
 *
 * A worker instantiates the shared compiled kernel module once per arena on that arena's shared
 * WebAssembly.Memory, then loops: spin on the generation counter of the control block, take and
 * run chunks until none is left (bumping the done counter after each), or acknowledge a broadcast
 * (bind, stop). After spinning ~SPIN_MS without work, or at once when the main thread asks
 * (backend.idle(), between tokens), it sleeps in Atomics.wait.
 */
import { isMainThread, parentPort, receiveMessageOnPort, workerData, type MessagePort } from "node:worker_threads";

/** Exports of kernels.wasm (src/kernels/assembly/kernels.ts). Pointers are u32 byte offsets. */
export interface KernelExports {
  /** The types whose matmuls accumulate fused, a mask: 1 Q8_0, 2 Q4_0 (assembly/q8.ts); p: 64 bytes of scratch. */
  fusedTypes(p: number): number;
  /** type: ggml id of the weight type; x in its activation type; rows [r0, r1). */
  matmul(type: number, out: number, w: number, x: number, rows: number, cols: number, nTok: number,
    r0: number, r1: number, scratch: number, scratchBytes: number, reuse: number): void;
  /** act: ggml id; n: blocks (Q8_0, Q8_1, Q8_K) or values (F32, F16, BF16). */
  quantizeAct(act: number, dst: number, src: number, n: number): void;
  /** type: ggml id; n: blocks (values for F32, F16, BF16); scratch: QUANTW_SCRATCH_BYTES of this thread's. */
  quantizeWeights(type: number, dst: number, src: number, n: number, scratch: number): void;
  rmsnorm(out: number, x: number, weight: number, n: number, eps: number): void;
  rope(vec: number, h0: number, h1: number, headDim: number, cosSin: number): void;
  storeBf16(dst: number, src: number, n: number): void;
  siluMul(gate: number, up: number, n: number): void;
  attentionSteps(table: number, u0: number, u1: number, scratch: number, nHeads: number, nKvHeads: number, headDim: number): void;
  attention(out: number, q: number, kCache: number, vCache: number, scratch: number,
    nHeads: number, nKvHeads: number, headDim: number, nPos: number, h0: number, h1: number): void;
  memRead(p: number, bytes: number): number;
  /** Rows [0, rows) of Q4_0 at w (nb blocks each, rows % 4 == 0) into Q4_0x4 in place; scratch: 72 x nb bytes (missing in older builds). */
  repackQ4_0x4?(w: number, rows: number, nb: number, scratch: number): void;
}

// Control block layout (Int32 indices); f64 job arguments start at byte ARGS_BYTE.
/** Job generation: bumped once per job; idle workers spin on it, then sleep on it. */
export const C_GEN = 0;
/** Chunks of the current job finished (by whichever thread). */
export const C_DONE = 1;
export const C_OP = 2;
export const C_ARENA = 3;
export const C_SLEEP_REQ = 4;
/** Workers asleep on C_GEN (the main thread notifies only then). */
export const C_SLEEPERS = 5;
export const C_ERR = 6;
export const C_ERR_LEN = 7;
/** The claim word of the current job: claimWord(gen, chunks, next chunk); see claimWord. */
export const C_CLAIM = 8;
/** Broadcast jobs (bind, stop) published so far; each worker acks every one in C_ACKS. */
export const C_BCAST = 9;
export const C_ACKS = 10;
/** 1 while the main thread sleeps on C_DONE (the worker finishing the last chunk notifies it). */
export const C_MAIN_WAITING = 11;
/** Full generation of the job whose fields are in the block (a chunk's commit compares it: chunk states). */
export const C_JOBGEN = 12;
/**
 * Valid claims whose thread has copied the job's fields (op, arena, arguments) to its own: the
 * main thread writes the next job's fields only once every claim of the last one has, since a
 * chunk taken over (see takeChunks) leaves its thread running after the job has ended.
 */
export const C_SNAP = 13;
export const ARGS_BYTE = 64;
export const N_ARGS = 16;
export const ERR_BYTE = 256;
export const CONTROL_BYTES = 4096;

export const OP_BIND = 1;
export const OP_STOP = 2;
export const OP_MATMUL = 4;
export const OP_QUANT = 5;
export const OP_ATTN = 6;
export const OP_SILU = 7;
export const OP_BF16 = 9;
export const OP_MEMREAD = 11;
export const OP_QWEIGHTS = 12;
export const OP_ATTN_STEPS = 13;
export const OP_REPACK = 14;

/**
 * Per-thread pace, in a SharedArrayBuffer of its own (f64, one cache line per thread): at
 * [thread * PACE_STRIDE] the wall-clock ms the thread spent taking and running chunks, at + 1 the
 * chunks it ran, both cumulative (each thread writes only its own; pool-adapt.ts reads them per
 * epoch to find the fastest thread).
 */
export const PACE_STRIDE = 8;

/** How long an idle worker spins before it sleeps. */
export const SPIN_MS = 3;

/**
 * Most chunks one job is cut into. The claim word packs 10 bits of generation, 11 of chunk count
 * and 11 of next chunk; a chunk past the end is claimed at most once per thread and job (a thread
 * stops claiming then), so MAX_CHUNKS + threads stays below 2^11.
 */
export const MAX_CHUNKS = 1024;

/**
 * The claim word: taking a chunk is one Atomics.add on it, whose old value says which chunk of how
 * many was taken. The chunk count inside the word (not read from elsewhere) makes every add a
 * claim on the job current at that instant, even by a thread that slept through several jobs: its
 * chunk is valid if below the count, and the job's fields stay put until every valid chunk is done.
 */
export function claimWord(gen: number, chunks: number): number {
  return (((gen & 0x3ff) << 22) | (chunks << 11)) | 0;
}
export function claimChunks(word: number): number {
  return (word >>> 11) & 0x7ff;
}
export function claimNext(word: number): number {
  return word & 0x7ff;
}

/**
 * Chunk states of the current job (an Int32Array of MAX_CHUNKS, shared), for matmuls whose
 * workers write into their shadow (MATMUL_SHADOW): (job generation << 2) | CHUNK_*. The main
 * thread sets every chunk to FREE before publishing the job. A worker that finished a chunk in
 * its shadow commits it with one compareExchange FREE -> COMMIT, then copies it to the output;
 * the main thread, once no chunk is left to claim and a worker's chunk is late (its thread
 * preempted by another program), takes it over with compareExchange FREE -> TAKEN and runs it
 * itself. Exactly one thread writes each chunk's output, and a thread preempted inside a chunk
 * delays the job by about a chunk's time instead of its whole time slice (milliseconds).
 */
export const CHUNK_FREE = 0;
export const CHUNK_COMMIT = 1;
export const CHUNK_MAIN = 2;
export const CHUNK_TAKEN = 3;
export function chunkState(jobGen: number, state: number): number {
  return ((jobGen << 2) | state) | 0;
}
/**
 * MATMUL's arguments 9 and 10: the shadow base (0: none, the workers write the output as every
 * other op does) and bytes per worker thread (worker i's shadow at base + (i - 1) * bytes). A
 * worker's chunk of rows [r0, r1) goes there packed: token t's rows at t * (r1 - r0) (the
 * kernel's out stride is its `rows` argument, so the chunk runs as is with out = shadow - 4 r0).
 */
export const MATMUL_SHADOW = 9;

/** [start, end) of share s of n over `units` units of work. */
export function shareRange(units: number, s: number, n: number): [number, number] {
  return [Math.floor((units * s) / n), Math.floor((units * (s + 1)) / n)];
}

/**
 * Run chunk `s` of `n` of a job on thread `thread` (0: the main thread; it picks the thread's own
 * scratch). `again`: this thread's previous chunk was of the same job, so what that chunk left in
 * the thread's scratch is still this job's (a matmul keeps its expanded activations: reuse). Every op is split into units [u0, u1) of its own. Arguments per op (a = args):
 * MATMUL: type out w x rows cols nTok scratchBase scratchPerThread shadowBase shadowPerWorker (units: groups of 4 rows; MATMUL_SHADOW)
 * QUANT: act dst src nUnits dstBytesPerUnit srcBytesPerUnit (units: blocks, or values for float types)
 * QWEIGHTS: type dst src nUnits dstBytesPerUnit srcBytesPerUnit scratchBase scratchPerThread
 * SILU/BF16: a b n (units: 32 values)
 * ATTN: out q k v scratch nHeads nKvHeads headDim nPos (units: heads); MEMREAD: ptr bytesPerShare
 * ATTN_STEPS: table nTok scratchBase scratchPerThread nHeads nKvHeads headDim (units: tokens x heads)
 */
export function runShare(k: KernelExports, op: number, a: Float64Array, s: number, n: number, thread: number, again = false, shadow = false): void {
  switch (op) {
    case OP_MATMUL: {
      const rows = a[4]!;
      const [r0, r1] = matmulChunkRows(rows, s, n);
      if (r1 <= r0) return;
      const scratch = a[7]! + thread * a[8]!;
      if (shadow) {
        // out = shadow - 4 r0 wraps below 0 as an i32; every address the kernel forms is out + 4 (t (r1 - r0) + r), r >= r0
        const base = a[MATMUL_SHADOW]! + (thread - 1) * a[MATMUL_SHADOW + 1]!;
        k.matmul(a[0]!, (base - r0 * 4) | 0, a[2]!, a[3]!, r1 - r0, a[5]!, a[6]!, r0, r1, scratch, a[8]!, again ? 1 : 0);
      } else {
        k.matmul(a[0]!, a[1]!, a[2]!, a[3]!, rows, a[5]!, a[6]!, r0, r1, scratch, a[8]!, again ? 1 : 0);
      }
      return;
    }
    case OP_QUANT: {
      const [u0, u1] = shareRange(a[3]!, s, n);
      if (u1 > u0) k.quantizeAct(a[0]!, a[1]! + u0 * a[4]!, a[2]! + u0 * a[5]!, u1 - u0);
      return;
    }
    case OP_QWEIGHTS: {
      const [u0, u1] = shareRange(a[3]!, s, n);
      if (u1 > u0) k.quantizeWeights(a[0]!, a[1]! + u0 * a[4]!, a[2]! + u0 * a[5]!, u1 - u0, a[6]! + thread * a[7]!);
      return;
    }
    case OP_REPACK: {
      // a: w, groups of four rows, nb, bytes per group, scratch base, scratch bytes per thread
      const [g0, g1] = shareRange(a[1]!, s, n);
      if (g1 > g0 && k.repackQ4_0x4) k.repackQ4_0x4(a[0]! + g0 * a[3]!, (g1 - g0) * 4, a[2]!, a[4]! + thread * a[5]!);
      return;
    }
    case OP_SILU:
    case OP_BF16: {
      const total = a[2]!;
      const [c0, c1] = shareRange(Math.ceil(total / 32), s, n);
      const i0 = c0 * 32, i1 = Math.min(total, c1 * 32);
      if (i1 <= i0) return;
      if (op === OP_SILU) k.siluMul(a[0]! + i0 * 4, a[1]! + i0 * 4, i1 - i0);
      else k.storeBf16(a[0]! + i0 * 2, a[1]! + i0 * 4, i1 - i0);
      return;
    }
    case OP_ATTN: {
      const [h0, h1] = shareRange(a[5]!, s, n);
      if (h1 > h0) k.attention(a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!, a[6]!, a[7]!, a[8]!, h0, h1);
      return;
    }
    case OP_ATTN_STEPS: {
      const [u0, u1] = shareRange(a[1]! * a[4]!, s, n);
      if (u1 > u0) k.attentionSteps(a[0]!, u0, u1, a[2]! + thread * a[3]!, a[4]!, a[5]!, a[6]!);
      return;
    }
    case OP_MEMREAD: {
      k.memRead(a[0]! + s * a[1]!, a[1]!);
      return;
    }
    default:
      throw new Error(`kernel pool: unknown op ${op}`);
  }
}

/** Rows [r0, r1) of MATMUL chunk s of n over `rows` rows (whole groups of 4 rows). */
export function matmulChunkRows(rows: number, s: number, n: number): [number, number] {
  const [g0, g1] = shareRange(Math.ceil(rows / 4), s, n);
  return [g0 * 4, Math.min(rows, g1 * 4)];
}

/** Most rows any MATMUL chunk of n over `rows` rows has (its shadow holds that many per token). */
export function matmulChunkRowsMax(rows: number, n: number): number {
  return Math.min(rows, Math.ceil(Math.ceil(rows / 4) / n) * 4);
}

interface WorkerInit {
  llameshKernelPool: true;
  module: WebAssembly.Module;
  control: SharedArrayBuffer;
  pace: SharedArrayBuffer;
  states: SharedArrayBuffer;
  port: MessagePort;
  index: number; // thread index (1..threads-1): its scratch and its name in errors
}

/** Record the first error of a job (the main thread rethrows it once every chunk is done). */
export function recordError(ctrl: Int32Array, errBytes: Uint8Array, thread: number, e: unknown): void {
  if (Atomics.compareExchange(ctrl, C_ERR, 0, thread + 1) !== 0) return;
  const text = `kernel thread ${thread}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`;
  const bytes = new TextEncoder().encode(text).subarray(0, errBytes.length);
  errBytes.set(bytes);
  Atomics.store(ctrl, C_ERR_LEN, bytes.length);
}

/** What a thread needs to take chunks: the shared blocks, and its instances (and their memory, for commits). */
export interface ChunkTaker {
  ctrl: Int32Array;
  args: Float64Array;
  errBytes: Uint8Array;
  /** Chunk states (see CHUNK_FREE). */
  states: Int32Array;
  instances: readonly (KernelExports | undefined)[];
  /** Per arena id, its memory as f32 (workers: a shadow chunk's commit copies with it). */
  views: readonly (Float32Array | undefined)[];
  thread: number;
  pace?: Float64Array;
  /** The job's fields as this thread copied them at its last valid claim. */
  snap: Float64Array;
  /** Generation of the job of this thread's last chunk (its scratch holds that job's activations). */
  lastJob: number;
}

export function chunkTaker(ctrl: Int32Array, args: Float64Array, errBytes: Uint8Array, states: Int32Array,
  instances: readonly (KernelExports | undefined)[], views: readonly (Float32Array | undefined)[], thread: number, pace?: Float64Array): ChunkTaker {
  return { ctrl, args, errBytes, states, instances, views, thread, pace, snap: new Float64Array(N_ARGS), lastJob: Number.NaN };
}

/** Copy a worker's finished shadow chunk of rows [r0, r1) to the job's output. */
function commitShadow(view: Float32Array, a: Float64Array, thread: number, r0: number, r1: number): void {
  const rows = a[4]!, nTok = a[6]!, width = r1 - r0;
  const src = (a[MATMUL_SHADOW]! + (thread - 1) * a[MATMUL_SHADOW + 1]!) / 4;
  const out = a[1]! / 4 + r0;
  for (let t = 0; t < nTok; t++) view.copyWithin(out + t * rows, src + t * width, src + (t + 1) * width);
}

/** Count one chunk of n done, waking the main thread if it sleeps on the last one. */
function chunkDone(ctrl: Int32Array, n: number): void {
  if (Atomics.add(ctrl, C_DONE, 1) + 1 === n && Atomics.load(ctrl, C_MAIN_WAITING) !== 0) {
    Atomics.notify(ctrl, C_DONE);
  }
}

/**
 * Take chunks of the current job until none is left, running each (the main thread and the workers
 * alike): the fastest thread takes the most, and a thread preempted by another program holds up
 * only the chunk it is in (with a shadow, not even that: the main thread takes it over, see
 * CHUNK_FREE). Returns the number of chunks this thread ran.
 */
export function takeChunks(tk: ChunkTaker): number {
  const { ctrl, thread, pace, snap, states } = tk;
  let ran = 0;
  let t0 = 0;
  for (;;) {
    const w = Atomics.add(ctrl, C_CLAIM, 1);
    const n = claimChunks(w), c = claimNext(w);
    if (c >= n) {
      if (ran > 0 && pace) {
        pace[thread * PACE_STRIDE] += performance.now() - t0;
        pace[thread * PACE_STRIDE + 1] += ran;
      }
      return ran;
    }
    if (ran === 0) t0 = performance.now();
    // A valid claim: the job's fields are this job's until every claim of it has copied them (C_SNAP).
    const op = ctrl[C_OP]!, arena = ctrl[C_ARENA]!, job = ctrl[C_JOBGEN]!;
    snap.set(tk.args);
    if (Atomics.add(ctrl, C_SNAP, 1) + 1 === n && Atomics.load(ctrl, C_MAIN_WAITING) !== 0) Atomics.notify(ctrl, C_SNAP);
    const shadowed = op === OP_MATMUL && snap[MATMUL_SHADOW]! > 0;
    const again = job === tk.lastJob;
    tk.lastJob = job;
    let error: unknown = undefined;
    try {
      const k = tk.instances[arena];
      if (!k) throw new Error(`arena ${arena} not bound in this thread`);
      runShare(k, op, snap, c, n, thread, again, shadowed && thread > 0);
    } catch (e) {
      error = e ?? new Error("unknown error");
    }
    ran++;
    if (shadowed && thread > 0) {
      // Commit, unless the main thread took the chunk over (then this thread's work is dropped).
      if (Atomics.compareExchange(states, c, chunkState(job, CHUNK_FREE), chunkState(job, CHUNK_COMMIT)) !== chunkState(job, CHUNK_FREE)) continue;
      if (error === undefined) {
        const view = tk.views[arena];
        const [r0, r1] = matmulChunkRows(snap[4]!, c, n);
        if (view && r1 > r0) commitShadow(view, snap, thread, r0, r1);
        else if (!view) error = new Error(`arena ${arena}: no memory view in this thread`);
      }
    } else if (shadowed) {
      Atomics.store(states, c, chunkState(job, CHUNK_MAIN));
    }
    if (error !== undefined) recordError(ctrl, tk.errBytes, thread, error);
    chunkDone(ctrl, n);
  }
}

/**
 * The main thread, once no chunk of a shadowed job is left to claim: run every chunk no thread
 * has committed yet itself (the threads that claimed them were preempted, or are slow). Returns
 * how many it ran.
 */
export function takeOver(tk: ChunkTaker, k: KernelExports, n: number): number {
  const { ctrl, states, snap } = tk;
  const job = ctrl[C_JOBGEN]!;
  const free = chunkState(job, CHUNK_FREE), taken = chunkState(job, CHUNK_TAKEN);
  snap.set(tk.args);
  let ran = 0;
  for (let c = 0; c < n; c++) {
    if (Atomics.load(ctrl, C_DONE) >= n) break;
    if (Atomics.load(states, c) !== free || Atomics.compareExchange(states, c, free, taken) !== free) continue;
    try {
      runShare(k, ctrl[C_OP]!, snap, c, n, 0, tk.lastJob === job);
    } catch (e) {
      recordError(ctrl, tk.errBytes, 0, e);
    }
    tk.lastJob = job;
    ran++;
    chunkDone(ctrl, n);
  }
  return ran;
}

/** Wait (spin SPIN_MS, or less after a sleep request, then sleep) until the generation moves on. */
function waitForJob(ctrl: Int32Array, last: number, state: { sleepReq: number }): number {
  let g = Atomics.load(ctrl, C_GEN);
  if (g !== last) return g;
  let spinStart = performance.now();
  for (let i = 0; ; i++) {
    g = Atomics.load(ctrl, C_GEN);
    if (g !== last) return g;
    if ((i & 255) !== 255) continue;
    const req = Atomics.load(ctrl, C_SLEEP_REQ);
    if (req !== state.sleepReq || performance.now() - spinStart > SPIN_MS) {
      state.sleepReq = req;
      Atomics.add(ctrl, C_SLEEPERS, 1);
      Atomics.wait(ctrl, C_GEN, last);
      Atomics.sub(ctrl, C_SLEEPERS, 1);
      spinStart = performance.now();
    }
  }
}

/** Apply the (un)bind messages posted before this broadcast, in order, up to number `upTo`. */
function applyBinds(init: WorkerInit, instances: (KernelExports | undefined)[], views: (Float32Array | undefined)[], applied: number, upTo: number): number {
  const t0 = performance.now();
  while (applied < upTo) {
    const msg = receiveMessageOnPort(init.port);
    if (msg) {
      const m = msg.message as { seq: number; id: number; memory: WebAssembly.Memory | null };
      if (m.memory) {
        instances[m.id] = new WebAssembly.Instance(init.module, { env: { memory: m.memory } }).exports as unknown as KernelExports;
        views[m.id] = new Float32Array(m.memory.buffer);
      } else {
        instances[m.id] = undefined;
        views[m.id] = undefined;
      }
      applied = m.seq;
    } else if (performance.now() - t0 > 10_000) {
      throw new Error(`arena message ${upTo} never arrived`);
    }
  }
  return applied;
}

function workerMain(init: WorkerInit): void {
  const ctrl = new Int32Array(init.control);
  const args = new Float64Array(init.control, ARGS_BYTE, N_ARGS);
  const errBytes = new Uint8Array(init.control, ERR_BYTE, CONTROL_BYTES - ERR_BYTE);
  const pace = new Float64Array(init.pace);
  const instances: (KernelExports | undefined)[] = [];
  const views: (Float32Array | undefined)[] = [];
  let applied = 0; // sequence number of the last (un)bind message applied
  const thread = init.index;
  const taker = chunkTaker(ctrl, args, errBytes, new Int32Array(init.states), instances, views, thread, pace);
  // The pool dispatches nothing before every worker said "ready", so these are still 0.
  let last = Atomics.load(ctrl, C_GEN);
  let bcast = Atomics.load(ctrl, C_BCAST);
  const state = { sleepReq: Atomics.load(ctrl, C_SLEEP_REQ) };
  parentPort?.postMessage("ready");

  for (;;) {
    last = waitForJob(ctrl, last, state);
    const b = Atomics.load(ctrl, C_BCAST);
    if (b !== bcast) {
      // A broadcast: the main thread waits for every worker's ack, so its fields are stable.
      bcast = b;
      const op = ctrl[C_OP]!;
      try {
        if (op === OP_BIND) applied = applyBinds(init, instances, views, applied, args[0]!);
      } catch (e) {
        recordError(ctrl, errBytes, thread, e);
      }
      Atomics.add(ctrl, C_ACKS, 1);
      if (Atomics.load(ctrl, C_MAIN_WAITING) !== 0) Atomics.notify(ctrl, C_ACKS);
      if (op === OP_STOP) break;
      continue;
    }
    takeChunks(taker);
  }
  init.port.close();
}

if (!isMainThread && (workerData as WorkerInit | undefined)?.llameshKernelPool) {
  workerMain(workerData as WorkerInit);
  parentPort?.close();
}
