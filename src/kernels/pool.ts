/**
 * Thread pool for the WASM kernels: `threads - 1` worker_threads plus the main thread, all running
 * the same compiled WebAssembly.Module, instantiated once per arena on the arena's shared memory.
 *
 * A job (op + f64 args) is written into a SharedArrayBuffer control block and published by one
 * claim word (pool-worker.ts claimWord), then a generation bump (in that order: a worker woken by
 * the generation claims at once). Every thread, the main one
 * included, then takes chunks of the job from the claim word until none is left (the fastest take
 * the most; a thread preempted by another program holds up only its chunk). The main thread then
 * spins about a chunk's time and sleeps until the last chunk is done. Workers spin on the
 * generation, and sleep in Atomics.wait after SPIN_MS without work or right after idle(); waking
 * one costs 50-800 µs, which is why they spin within a token. While the main thread alone is
 * faster (another program busy, pool-adapt.ts), jobs run there and the workers sleep. Matmuls
 * go further: workers write their chunks into shadows of their own and commit them, so that once
 * no chunk is left to claim the main thread takes over any chunk still not committed (its thread
 * was preempted) instead of waiting out the preemption (pool-worker.ts CHUNK_FREE). Worker
 * errors (wasm traps included) are copied into the control block and rethrown on the main thread.
 * Workers are unref()'d: a forgotten close() never keeps the process alive.
 */
import { MessageChannel, Worker, type MessagePort } from "node:worker_threads";
import {
  ARGS_BYTE, CHUNK_FREE, CONTROL_BYTES, C_ACKS, C_ARENA, C_BCAST, C_CLAIM, C_DONE, C_ERR, C_ERR_LEN, C_GEN, C_JOBGEN,
  C_MAIN_WAITING, C_OP, C_SLEEPERS, C_SLEEP_REQ, C_SNAP, ERR_BYTE, MATMUL_SHADOW, MAX_CHUNKS, N_ARGS, OP_BIND, OP_MATMUL,
  OP_MEMREAD, OP_STOP, PACE_STRIDE, chunkState, chunkTaker, claimWord, runShare, takeChunks, takeOver,
  type ChunkTaker, type KernelExports,
} from "./pool-worker.js";
import { ModeProbe } from "./pool-adapt.js";

/**
 * Once no chunk of a shadowed matmul is left to claim, the main thread waits this many of its own
 * chunk times (plus 10 µs) for the other threads' chunks, then runs the rest itself (takeOver).
 */
const TAKEOVER_AFTER = 1.5;

/** A worker that has not finished its share after this long is considered dead. */
const HANG_MS = 120_000;

export class ThreadPool {
  private readonly ctrl: Int32Array;
  private readonly args: Float64Array;
  private readonly errBytes: Uint8Array;
  private readonly pace: Float64Array;
  private readonly states: Int32Array;
  private readonly taker: ChunkTaker;
  /** Chunks of the last published job (every one is claimed once; see C_SNAP). */
  private lastChunks = 0;
  /** Chunks the main thread took over from a late worker (for benchmarks and tests). */
  takeovers = 0;
  /** Chunk times the main thread waits before it takes chunks over (tests set 0: every late chunk). */
  takeoverAfter = TAKEOVER_AFTER;
  /** Per arena id, the main thread's instance (undefined once unregistered). */
  private readonly instances: (KernelExports | undefined)[] = [];
  private messages = 0;
  private closed = false;
  private busy = false;

  private constructor(
    readonly module: WebAssembly.Module,
    readonly threads: number,
    control: SharedArrayBuffer,
    private readonly workers: Worker[],
    private readonly ports: MessagePort[],
    pace: SharedArrayBuffer,
    states: SharedArrayBuffer,
    adaptive: boolean,
  ) {
    this.pace = new Float64Array(pace);
    this.states = new Int32Array(states);
    this.probe = new ModeProbe(adaptive && threads > 1 && process.env["LLAMESH_POOL_ADAPT"] !== "0", this.pace);
    this.ctrl = new Int32Array(control);
    this.args = new Float64Array(control, ARGS_BYTE, N_ARGS);
    this.errBytes = new Uint8Array(control, ERR_BYTE, CONTROL_BYTES - ERR_BYTE);
    this.taker = chunkTaker(this.ctrl, this.args, this.errBytes, this.states, this.instances, [], 0, this.pace);
  }

  /** Start `threads - 1` workers (threads >= 1) and wait until they run. */
  static async create(module: WebAssembly.Module, threads: number, adaptive = true): Promise<ThreadPool> {
    const control = new SharedArrayBuffer(CONTROL_BYTES);
    const pace = new SharedArrayBuffer(Math.max(1, threads) * PACE_STRIDE * 8);
    const states = new SharedArrayBuffer(MAX_CHUNKS * 4);
    const workers: Worker[] = [];
    const ports: MessagePort[] = [];
    const url = new URL("./pool-worker.js", import.meta.url);
    const started: Promise<void>[] = [];
    for (let i = 1; i < threads; i++) {
      const { port1, port2 } = new MessageChannel();
      const w = new Worker(url, {
        workerData: { llameshKernelPool: true, module, control, pace, states, port: port2, index: i },
        transferList: [port2],
      });
      started.push(new Promise<void>((resolve, reject) => {
        w.once("message", () => resolve()); // "ready", posted once the job loop is about to start
        w.once("error", reject);
      }));
      w.on("error", () => {}); // surfaced through the control block or as a hang timeout
      workers.push(w);
      ports.push(port1);
    }
    try {
      await Promise.all(started);
      // Only now: an unref'd worker would not keep the process alive while we wait for it.
      for (const w of workers) w.unref();
      for (const p of ports) p.unref();
    } catch (e) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw e;
    }
    return new ThreadPool(module, threads, control, workers, ports, pace, states, adaptive);
  }

  /** Instantiate the kernels on `memory` in every thread; returns the main thread's exports. */
  register(memory: WebAssembly.Memory): { id: number; exports: KernelExports } {
    const exports = new WebAssembly.Instance(this.module, { env: { memory } }).exports as unknown as KernelExports;
    const id = this.instances.length;
    this.instances.push(exports);
    this.post(id, memory);
    return { id, exports };
  }

  /**
   * Drop every thread's instance on arena `id`, so that nothing keeps its memory alive (a
   * long-lived worker serves session after session). Kernels bound to it fail afterwards.
   */
  unregister(id: number): void {
    if (this.instances[id] === undefined || this.closed) return;
    this.instances[id] = undefined;
    this.post(id, null);
  }

  /** Arenas currently registered. */
  get registered(): number {
    return this.instances.filter((x) => x !== undefined).length;
  }

  private post(id: number, memory: WebAssembly.Memory | null): void {
    if (this.workers.length === 0) return;
    const seq = ++this.messages;
    for (const p of this.ports) p.postMessage({ seq, id, memory });
    this.run(OP_BIND, id, [seq], 1);
  }

  /**
   * Run `op` on arena `id` cut into `chunks` chunks (1..MAX_CHUNKS), which every thread, this one
   * included, takes from a shared counter. Returns when every chunk is done; rethrows the first
   * error. BIND and STOP are broadcasts instead: every worker handles them once.
   */
  run(op: number, id: number, args: ArrayLike<number>, chunks: number, key = -1): void {
    if (this.closed) throw new Error("kernel thread pool is closed");
    if (this.busy) throw new Error("kernel thread pool: re-entrant dispatch");
    const broadcast = op === OP_BIND || op === OP_STOP;
    const k = this.instances[id];
    if (k === undefined && !broadcast) throw new Error(`kernel thread pool: arena ${id} was released`);
    const n = Math.min(MAX_CHUNKS, Math.max(1, Math.floor(chunks)));
    // Every claim of the last job has copied its fields (a worker whose chunk was taken over may
    // still run it, but from its own copy): only now may they change.
    if (this.lastChunks > 0 && Atomics.load(this.ctrl, C_SNAP) < this.lastChunks) this.await(C_SNAP, this.lastChunks, op, 0.05);
    if ((n <= 1 || this.workers.length === 0 || this.probe.solo) && !broadcast) {
      const t0 = performance.now();
      for (let i = 0; i < args.length; i++) this.args[i] = args[i]!;
      // one chunk: the same result as any cut (MEMREAD's arguments are per chunk, so it runs them all)
      if (op === OP_MEMREAD) for (let c = 0; c < n; c++) runShare(k!, op, this.args, c, n, 0);
      else runShare(k!, op, this.args, 0, 1, 0);
      if (key >= 0 && n > 1) this.probe.record(key, performance.now() - t0);
      return;
    }
    const ctrl = this.ctrl;
    this.busy = true;
    try {
      const gen = Atomics.load(ctrl, C_GEN) + 1;
      // (all of them: a shadow left from an earlier matmul would tell the workers to use it)
      for (let i = 0; i < N_ARGS; i++) this.args[i] = i < args.length ? args[i]! : 0;
      ctrl[C_OP] = op;
      ctrl[C_ARENA] = id;
      ctrl[C_JOBGEN] = gen;
      const shadowed = op === OP_MATMUL && this.args[MATMUL_SHADOW]! > 0;
      if (shadowed) this.states.fill(chunkState(gen, CHUNK_FREE), 0, n);
      Atomics.store(ctrl, C_DONE, 0);
      Atomics.store(ctrl, C_ACKS, 0);
      Atomics.store(ctrl, C_SNAP, 0);
      this.lastChunks = broadcast ? 0 : n;
      if (broadcast) Atomics.add(ctrl, C_BCAST, 1);
      // The claim word before the generation: a worker that sees the new generation claims at
      // once, and found the previous job's spent word when it was stored second (it then skipped
      // the job, which the main thread ran alone: 10% of quiet decode). From the claim word on,
      // any thread may take a chunk; the generation is what wakes the idle ones.
      Atomics.store(ctrl, C_CLAIM, claimWord(gen, broadcast ? 0 : n));
      Atomics.store(ctrl, C_GEN, gen);
      if (Atomics.load(ctrl, C_SLEEPERS) > 0) Atomics.notify(ctrl, C_GEN);
      const t0 = performance.now();
      if (broadcast) {
        this.await(C_ACKS, this.workers.length, op, 0);
      } else {
        let ran = takeChunks(this.taker);
        // Spin about as long as a chunk takes (the other threads' last chunks are at most that far
        // from done unless their thread was preempted), then sleep: a waiting thread that yields
        // its core lets the scheduler run the preempted one there. With shadows, a chunk still
        // not committed after that is run here instead (takeOver): the job no longer waits for a
        // preempted thread to be scheduled again.
        const perChunk = ran > 0 ? (performance.now() - t0) / ran : 0.2;
        if (shadowed && this.spinFor(C_DONE, n, this.takeoverAfter * perChunk + (this.takeoverAfter > 0 ? 0.01 : 0))) {
          const took = takeOver(this.taker, k!, n);
          this.takeovers += took;
          ran += took;
        }
        this.await(C_DONE, n, op, Math.min(2, 0.02 + 1.5 * perChunk));
        if (key >= 0) this.probe.record(key, performance.now() - t0, ran > 0 ? perChunk * n : Number.NaN);
      }
      if (Atomics.load(ctrl, C_ERR) !== 0) {
        const len = Atomics.load(ctrl, C_ERR_LEN);
        const msg = new TextDecoder().decode(this.errBytes.slice(0, len));
        Atomics.store(ctrl, C_ERR, 0);
        throw new Error(msg);
      }
    } finally {
      this.busy = false;
    }
  }

  /** Spin until ctrl[slot] reaches `target` or `ms` passed; true if it has not reached it. */
  private spinFor(slot: number, target: number, ms: number): boolean {
    const ctrl = this.ctrl;
    if (Atomics.load(ctrl, slot) >= target) return false;
    const t0 = performance.now();
    for (let i = 0; ; i++) {
      if (Atomics.load(ctrl, slot) >= target) return false;
      if ((i & 63) === 63 && performance.now() - t0 > ms) return true;
    }
  }

  /** Wait until ctrl[slot] reaches `target`: spin for `spinMs`, then sleep on it (notified). */
  private await(slot: number, target: number, op: number, spinMs: number): void {
    const ctrl = this.ctrl;
    if (Atomics.load(ctrl, slot) >= target) return;
    const t0 = performance.now();
    for (let i = 0; ; i++) {
      if (Atomics.load(ctrl, slot) >= target) return;
      if ((i & 63) === 63 && performance.now() - t0 > spinMs) break;
    }
    this.sleeps++;
    Atomics.store(ctrl, C_MAIN_WAITING, 1);
    try {
      for (;;) {
        const v = Atomics.load(ctrl, slot);
        if (v >= target) return;
        Atomics.wait(ctrl, slot, v, 50);
        if (performance.now() - t0 > HANG_MS) {
          this.closed = true;
          throw new Error(`kernel thread pool: a worker did not finish op ${op} within ${HANG_MS / 1000} s`);
        }
      }
    } finally {
      Atomics.store(ctrl, C_MAIN_WAITING, 0);
    }
  }

  /** Times the main thread went to sleep waiting for the other threads (for benchmarks). */
  sleeps = 0;
  /** Decides when the helpers are worth it (pool-adapt.ts); off with LLAMESH_POOL_ADAPT=0. */
  readonly probe: ModeProbe;

  /** Let the workers sleep now (between tokens) instead of spinning for SPIN_MS. */
  idle(): void {
    Atomics.add(this.ctrl, C_SLEEP_REQ, 1);
  }

  async close(): Promise<void> {
    if (process.env["LLAMESH_POOL_DEBUG"]) {
      const p = this.probe;
      process.stderr.write(`pool: ${p.switches} switches, ${p.soloEpochs} of ${p.epochCount} epochs alone, main slept ${this.sleeps} times, took over ${this.takeovers} chunks\n`);
    }
    if (this.closed && this.workers.length === 0) return;
    if (!this.closed && this.workers.length > 0) {
      try {
        this.run(OP_STOP, 0, [], 1);
      } catch {
        // terminate below anyway
      }
    }
    this.closed = true;
    for (const p of this.ports) p.close();
    await Promise.all(this.workers.splice(0).map((w) => w.terminate()));
  }
}

