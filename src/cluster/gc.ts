/**
 * V8's young-generation collector on a cluster node: on the main thread.
 *
 * By default V8 scavenges (collects the young generation) with helper threads and sweeps array
 * buffers in the background. On a worker, which keeps its core busy (its compute, then polling
 * for the next frame, poller.ts), those helpers have no idle core to run on, and the main thread
 * waits for them: measured on a 2-core VM (Node 20, the bench:cluster model, 2 workers on
 * loopback), a scavenge stopped a worker 3.5-4.5 ms (median) with the helpers, 0.19 ms with
 * --no-parallel-scavenge --no-concurrent-array-buffer-sweeping (either flag alone: still ~4 ms),
 * the same work. A scavenge in the middle of a sync makes every other member wait for it.
 *
 * Those two flags are read at each scavenge, so setting them at run time is safe. (Not so
 * --single-threaded-gc, as fast here: set after start-up it leaves the heap's concurrent marker
 * half configured, and V8 aborts at the next full collection: tried.) A V8 flag is the
 * process's, set once; LLAMESH_PARALLEL_GC=1 keeps V8's defaults (to measure the difference).
 */
import * as v8 from "node:v8";

let done = false;

/** Scavenge on the main thread from now on (once; a no-op with LLAMESH_PARALLEL_GC=1). Returns whether it does. */
export function mainThreadScavenges(): boolean {
  if (process.env["LLAMESH_PARALLEL_GC"] === "1") return false;
  if (!done) for (const f of ["--no-parallel-scavenge", "--no-concurrent-array-buffer-sweeping"]) v8.setFlagsFromString(f);
  done = true;
  return true;
}
