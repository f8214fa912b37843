/**
 * A diagnostic, off unless LLAMESH_SYNC_TRACE=FILE is set in a worker's (or client's) environment:
 * the wall-clock time of every sync (compute done, sum in hand), of every V8 collection (perf_hooks
 * "gc" entries) and, per step, the thread's scheduler counters (/proc/thread-self/schedstat: time
 * on a core, time waiting for one). Written as CSV at exit. bench/csv-analysis.ts --trace lines
 * the traces of several processes up (one clock: performance.timeOrigin + now(), the epoch in ms)
 * to tell what stalls a slow sync: a collection, the scheduler (another process had the core) or
 * neither. Recording is into preallocated arrays: tracing adds no garbage to the hot path.
 */
import * as fs from "node:fs";
import { PerformanceObserver, type PerformanceEntry } from "node:perf_hooks";

const MAX_SYNCS = 1 << 18;
const MAX_STEPS = 1 << 14;
const MAX_GCS = 1 << 14;

class SyncTrace {
  private readonly syncs = new Float64Array(MAX_SYNCS * 5);
  private readonly arrivals = new Float64Array(MAX_SYNCS * 3);
  private nArrivals = 0;
  private nSyncs = 0;
  private readonly steps = new Float64Array(MAX_STEPS * 5);
  private nSteps = 0;
  private readonly gcs = new Float64Array(MAX_GCS * 3);
  private nGcs = 0;
  private readonly origin = performance.timeOrigin;

  constructor(private readonly file: string) {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) this.gc(e);
    }).observe({ entryTypes: ["gc"] });
    process.on("exit", () => this.write());
  }

  private gc(e: PerformanceEntry): void {
    if (this.nGcs >= MAX_GCS) return;
    const i = 3 * this.nGcs++;
    this.gcs[i] = this.origin + e.startTime;
    this.gcs[i + 1] = e.duration;
    this.gcs[i + 2] = ((e as unknown as { detail?: { kind?: number } }).detail?.kind) ?? 0;
  }

  /** Sync `seq` of step `step`: compute finished at `enter` (performance.now()), own part written at `sent`, the sum in hand at `exit`. */
  sync(step: number, seq: number, enter: number, sent: number, exit: number): void {
    if (this.nSyncs >= MAX_SYNCS) return;
    const i = 5 * this.nSyncs++;
    this.syncs[i] = step;
    this.syncs[i + 1] = seq;
    this.syncs[i + 2] = this.origin + enter;
    this.syncs[i + 3] = this.origin + exit;
    this.syncs[i + 4] = this.origin + sent;
  }

  /** A peer's partial sum of (step, seq) was handed to the reduce now. */
  arrival(step: number, seq: number): void {
    if (this.nArrivals >= MAX_SYNCS) return;
    const i = 3 * this.nArrivals++;
    this.arrivals[i] = step;
    this.arrivals[i + 1] = seq;
    this.arrivals[i + 2] = this.origin + performance.now();
  }

  /** At the start (begin = 1) and end (0) of a step: the thread's time on a core and waiting for one (ns). */
  step(step: number, begin: boolean): void {
    if (this.nSteps >= MAX_STEPS) return;
    let run = NaN, wait = NaN;
    try {
      const f = fs.readFileSync("/proc/thread-self/schedstat", "latin1").split(" ");
      run = Number(f[0]);
      wait = Number(f[1]);
    } catch {
      /* not Linux */
    }
    const i = 5 * this.nSteps++;
    this.steps[i] = step;
    this.steps[i + 1] = begin ? 1 : 0;
    this.steps[i + 2] = this.origin + performance.now();
    this.steps[i + 3] = run;
    this.steps[i + 4] = wait;
  }

  private write(): void {
    const out: string[] = ["kind,a,b,t,x,y"];
    for (let i = 0; i < this.nSyncs; i++) out.push(`sync,${this.syncs[5 * i]},${this.syncs[5 * i + 1]},${this.syncs[5 * i + 2]!.toFixed(3)},${this.syncs[5 * i + 3]!.toFixed(3)},${this.syncs[5 * i + 4]!.toFixed(3)}`);
    for (let i = 0; i < this.nArrivals; i++) out.push(`arr,${this.arrivals[3 * i]},${this.arrivals[3 * i + 1]},${this.arrivals[3 * i + 2]!.toFixed(3)},,`);
    for (let i = 0; i < this.nSteps; i++) out.push(`step,${this.steps[5 * i]},${this.steps[5 * i + 1]},${this.steps[5 * i + 2]!.toFixed(3)},${this.steps[5 * i + 3]},${this.steps[5 * i + 4]}`);
    for (let i = 0; i < this.nGcs; i++) out.push(`gc,${this.gcs[3 * i + 2]},,${this.gcs[3 * i]!.toFixed(3)},${this.gcs[3 * i + 1]!.toFixed(3)},`);
    fs.writeFileSync(this.file.replace("%p", String(process.pid)), out.join("\n") + "\n");
  }
}

const file = process.env["LLAMESH_SYNC_TRACE"];
/** The process's trace, or null (the default: nothing recorded). "%p" in the file name is the pid. */
export const syncTrace: SyncTrace | null = file ? new SyncTrace(file) : null;
