/**
 * Helper thread of the kernel thread pool (see pool.ts), plus the code that maps one job share to a
 * kernel call, used by the main thread and the workers alike.
 *
 * A worker instantiates the shared compiled kernel module once per arena on that arena's shared
 * WebAssembly.Memory, then loops: spin on the generation counter of the control block, run its
 * share of the job, bump the done counter. After spinning ~SPIN_MS without work, or at once when the
 * main thread asks (backend.idle(), between tokens), it sleeps in Atomics.wait.
 */
import { isMainThread, parentPort, receiveMessageOnPort, workerData, type MessagePort } from "node:worker_threads";

/** Exports of kernels.wasm (src/kernels/assembly/kernels.ts). Pointers are u32 byte offsets. */
export interface KernelExports {
  /** type: ggml id of the weight type; x in its activation type; rows [r0, r1). */
  matmul(type: number, out: number, w: number, x: number, rows: number, cols: number, nTok: number,
    r0: number, r1: number, scratch: number, scratchBytes: number): void;
  /** act: ggml id; n: blocks (Q8_0, Q8_1, Q8_K) or values (F32, F16, BF16). */
  quantizeAct(act: number, dst: number, src: number, n: number): void;
  /** type: ggml id; n: blocks (values for F32, F16, BF16); scratch: QUANTW_SCRATCH_BYTES of this thread's. */
  quantizeWeights(type: number, dst: number, src: number, n: number, scratch: number): void;
  rmsnorm(out: number, x: number, weight: number, n: number, eps: number): void;
  rope(vec: number, h0: number, h1: number, headDim: number, cosSin: number): void;
  storeBf16(dst: number, src: number, n: number): void;
  siluMul(gate: number, up: number, n: number): void;
  attention(out: number, q: number, kCache: number, vCache: number, scratch: number,
    nHeads: number, nKvHeads: number, headDim: number, nPos: number, h0: number, h1: number): void;
  memRead(p: number, bytes: number): number;
}

// Control block layout (Int32 indices); f64 job arguments start at byte ARGS_BYTE.
export const C_GEN = 0;
export const C_DONE = 1;
export const C_OP = 2;
export const C_ARENA = 3;
export const C_SLEEP_REQ = 4;
export const C_SLEEPERS = 5;
export const C_ERR = 6;
export const C_ERR_LEN = 7;
export const C_SHARES = 8;
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

/** How long an idle worker spins before it sleeps. */
export const SPIN_MS = 3;

/** [start, end) of share s of n over `units` units of work. */
export function shareRange(units: number, s: number, n: number): [number, number] {
  return [Math.floor((units * s) / n), Math.floor((units * (s + 1)) / n)];
}

/**
 * Run share `s` of `n` of a job. Every op is split into units [u0, u1) of its own (so that a job can
 * also be handed out in small chunks). Arguments per op (a = args):
 * MATMUL: type out w x rows cols nTok scratchBase scratchPerThread (units: groups of 4 rows)
 * QUANT: act dst src nUnits dstBytesPerUnit srcBytesPerUnit (units: blocks, or values for float types)
 * QWEIGHTS: type dst src nUnits dstBytesPerUnit srcBytesPerUnit scratchBase scratchPerThread
 * SILU/BF16: a b n (units: 32 values)
 * ATTN: out q k v scratch nHeads nKvHeads headDim nPos (units: heads); MEMREAD: ptr bytesPerShare
 */
export function runShare(k: KernelExports, op: number, a: Float64Array, s: number, n: number): void {
  switch (op) {
    case OP_MATMUL: {
      const rows = a[4]!;
      const [g0, g1] = shareRange(Math.ceil(rows / 4), s, n);
      const r0 = g0 * 4, r1 = Math.min(rows, g1 * 4);
      if (r1 > r0) k.matmul(a[0]!, a[1]!, a[2]!, a[3]!, rows, a[5]!, a[6]!, r0, r1, a[7]! + s * a[8]!, a[8]!);
      return;
    }
    case OP_QUANT: {
      const [u0, u1] = shareRange(a[3]!, s, n);
      if (u1 > u0) k.quantizeAct(a[0]!, a[1]! + u0 * a[4]!, a[2]! + u0 * a[5]!, u1 - u0);
      return;
    }
    case OP_QWEIGHTS: {
      const [u0, u1] = shareRange(a[3]!, s, n);
      if (u1 > u0) k.quantizeWeights(a[0]!, a[1]! + u0 * a[4]!, a[2]! + u0 * a[5]!, u1 - u0, a[6]! + s * a[7]!);
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
    case OP_MEMREAD: {
      k.memRead(a[0]! + s * a[1]!, a[1]!);
      return;
    }
    default:
      throw new Error(`kernel pool: unknown op ${op}`);
  }
}

interface WorkerInit {
  llameshKernelPool: true;
  module: WebAssembly.Module;
  control: SharedArrayBuffer;
  port: MessagePort;
  index: number; // share index (1..threads-1)
}

function workerMain(init: WorkerInit): void {
  const ctrl = new Int32Array(init.control);
  const args = new Float64Array(init.control, ARGS_BYTE, N_ARGS);
  const errBytes = new Uint8Array(init.control, ERR_BYTE, CONTROL_BYTES - ERR_BYTE);
  const instances: KernelExports[] = [];
  let applied = 0; // sequence number of the last (un)bind message applied
  const share = init.index;
  // The pool dispatches nothing before every worker said "ready", so the generation is still 0.
  let last = Atomics.load(ctrl, C_GEN);
  let lastSleepReq = Atomics.load(ctrl, C_SLEEP_REQ);
  parentPort?.postMessage("ready");
  const encoder = new TextEncoder();

  for (;;) {
    // Wait for the next job: spin, then sleep.
    let g = Atomics.load(ctrl, C_GEN);
    if (g === last) {
      let spinStart = performance.now();
      let i = 0;
      for (;;) {
        g = Atomics.load(ctrl, C_GEN);
        if (g !== last) break;
        if ((++i & 255) !== 0) continue;
        const req = Atomics.load(ctrl, C_SLEEP_REQ);
        if (req !== lastSleepReq || performance.now() - spinStart > SPIN_MS) {
          lastSleepReq = req;
          Atomics.add(ctrl, C_SLEEPERS, 1);
          Atomics.wait(ctrl, C_GEN, last);
          Atomics.sub(ctrl, C_SLEEPERS, 1);
          spinStart = performance.now();
        }
      }
    }
    last = g;
    const op = ctrl[C_OP]!;
    try {
      if (op === OP_BIND) {
        // apply the (un)bind messages posted before this op, in order, up to number args[0]
        const upTo = args[0]!;
        const t0 = performance.now();
        while (applied < upTo) {
          const msg = receiveMessageOnPort(init.port);
          if (msg) {
            const m = msg.message as { seq: number; id: number; memory: WebAssembly.Memory | null };
            if (m.memory) instances[m.id] = new WebAssembly.Instance(init.module, { env: { memory: m.memory } }).exports as unknown as KernelExports;
            else delete instances[m.id];
            applied = m.seq;
          } else if (performance.now() - t0 > 10_000) {
            throw new Error(`arena message ${upTo} never arrived`);
          }
        }
      } else if (op !== OP_STOP && share < ctrl[C_SHARES]!) {
        const k = instances[ctrl[C_ARENA]!];
        if (!k) throw new Error(`arena ${ctrl[C_ARENA]} not bound in this thread`);
        runShare(k, op, args, share, ctrl[C_SHARES]!);
      }
    } catch (e) {
      // First error wins; the main thread rethrows it once every thread has finished.
      if (Atomics.compareExchange(ctrl, C_ERR, 0, share) === 0) {
        const text = `kernel thread ${share}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`;
        const bytes = encoder.encode(text).subarray(0, errBytes.length);
        errBytes.set(bytes);
        Atomics.store(ctrl, C_ERR_LEN, bytes.length);
      }
    }
    Atomics.add(ctrl, C_DONE, 1);
    if (op === OP_STOP) break;
  }
  init.port.close();
}

if (!isMainThread && (workerData as WorkerInit | undefined)?.llameshKernelPool) {
  workerMain(workerData as WorkerInit);
  parentPort?.close();
}
