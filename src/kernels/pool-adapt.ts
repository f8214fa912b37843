import { PACE_STRIDE } from "./pool-worker.js";

/**
 * Whether the pool's helper threads are worth it right now (pool.ts). With another program busy
 * on the machine, one of our threads shares a core with it: the chunks keep the split fair, but
 * the main thread may be the one sharing (then the serial work between jobs runs at half speed),
 * and a worker preempted inside a chunk stalls the job until it runs again. One thread alone then
 * gets a core to itself (the scheduler moves it once the workers sleep) and is faster.
 *
 * So the pool measures instead of guessing: jobs with a key (one per matmul shape) are timed in
 * epochs of EPOCH jobs (PROBE_EPOCH for a probe); most epochs run in the chosen mode (all threads,
 * or the main thread alone), and now and then one runs in the other ("a probe"). A probe whose
 * jobs took less time than the chosen mode's recent times for the same keys (an average per key)
 * by MARGIN switches the mode. On all threads, a probe of the main thread alone comes on evidence
 * of load, read from the pool's per-thread pace counters (pool-worker.ts PACE_STRIDE) at each
 * epoch's end: a thread that ran far fewer chunks than the busiest one (LAG: it was preempted; on
 * a quiet machine the threads split every job evenly), or an epoch that took longer than the
 * fastest thread would alone at its own pace (the main thread's time per chunk x chunks, scaled by
 * how much faster the fastest thread ran). A quiet machine's prompt then pays no probe at all (a
 * probe alone costs 8 jobs at 1.5-1.9x). After an evidence probe that lost, the next one waits for
 * twice as many epochs of evidence (up to MAX_EVIDENCE), so that a quiet machine's occasional
 * outlier (another process running for a moment) is not probed every time. Besides the evidence,
 * probes come on a schedule whose wait grows (up to MAX_PROBE epochs, about a second of decode),
 * CLEAR_WAIT x after a clear outcome (beyond CLEAR either way), 2x after a narrow one: a busy
 * machine rarely flips back to the losing mode, and load the counters do not show is still found.
 * LLAMESH_POOL_TRACE=1 prints every epoch's figures.
 */
const EPOCH = 16;
/**
 * The first epoch is as short as a probe: under load every job before the first probe runs on all
 * threads, the slow mode (a 9-token 1.1B prompt is 155 matmuls); 8 jobs still see every shape of a
 * layer, which is what the probe compares against.
 */
const FIRST_EPOCH = 8;
/** A probe is shorter: a layer's matmuls (every shape of it) is enough to compare. */
const PROBE_EPOCH = 8;
/**
 * Without evidence of load, the first probe on the schedule comes this late: past a 9-token 1.1B
 * prompt (about 10 epochs), within the first decode tokens. After a switch the schedule restarts
 * at 1 (the clear or narrow factor applies).
 */
const FIRST_PROBE = 16;
const MAX_PROBE = 192;
/** A probe must beat the chosen mode by this factor: on a shared VM epochs vary by 10% and more (at 0.95 a quiet run switched 4-12 times in 32 tokens; at 0.85 the prompt under load rarely switched in time). */
const MARGIN = 0.9;
const ALPHA = 0.25;
/** A probe this much faster (or slower: 1 / CLEAR) than the chosen mode is a clear outcome (quiet: 1.5-1.9 for the main thread alone; one busy program: 0.4-0.75). */
const CLEAR = 0.75;
/**
 * After a clear outcome the wait to the next probe on the schedule grows this much (a narrow one:
 * 2x); new load later is still found within 16 epochs (under 2 decode tokens), sooner when an
 * epoch shows it.
 */
const CLEAR_WAIT = 16;
/**
 * Evidence of a preempted thread: over an epoch on all threads, a thread ran fewer than LAG x the
 * chunks of the busiest one. Measured, 1.1B Q8_0, 2 threads (pool2 traces): quiet, the worker ran
 * 0.48-0.59x the main thread's chunks in the first epoch (it wakes late) and 0.7-1.0x after; with
 * one busy program pinned to a core, 0.15-0.18x in the first epoch, mostly 0.15-0.45x after.
 */
const LAG = 0.35;
/**
 * The first epoch's evidence must be stronger (one busy program: 0.10-0.18x; quiet, when the
 * worker woke late: down to 0.28x), and its time alone is none: the probe after it compares with
 * its times, which the warm-up makes 1.3-1.5x the steady ones (a quiet run that probed on it went
 * alone for the whole prompt).
 */
const FIRST_LAG = 0.2;
/** An epoch's chunk counts say something from this many chunks per thread on. */
const MIN_LAG_CHUNKS = 4;
/** Most epochs of evidence an evidence probe waits for (it doubles after each that lost). */
const MAX_EVIDENCE = 8;
const TRACE = process.env["LLAMESH_POOL_TRACE"] === "1";
/** A thread's pace over an epoch counts from this many chunks on. */
const MIN_PACE_CHUNKS = 4;

/** What the pace counters say about the last epoch. */
interface Pace {
  /** How much faster than the main thread the fastest thread ran chunks (chunks per ms; 1 if unknown). */
  fastestOverMain: number;
  /** Fewest chunks any thread ran over most any thread ran (1 if too few to say). */
  leastOverMost: number;
}

export class ModeProbe {
  /** Chosen mode: false = all threads, true = the main thread alone. */
  private chosen = false;
  /** Mode of the running epoch. */
  private current = false;
  private jobs = 0;
  private epochs = 0;
  private probeEvery = FIRST_PROBE;
  private nextProbe = FIRST_PROBE;
  /** Epochs of evidence of load since the last probe, and how many bring the next one forward. */
  private evidence = 0;
  private evidenceNeed = 1;
  /** The running probe came on evidence (not on the schedule). */
  private byEvidence = false;
  private sumProbe = 0;
  private sumChosen = 0;
  /** This epoch (all threads, chosen): job times, and the main thread's estimate of them alone. */
  private sumAll = 0;
  private sumAloneEstimate = 0;
  /** Per key: average ms per job [all threads, alone] (NaN: not seen yet). */
  private readonly avg = new Map<number, [number, number]>();
  /** Epochs run alone and probes that switched the mode (for benchmarks and tests). */
  soloEpochs = 0;
  switches = 0;

  /** The pace counters at the last epoch's end (pool-worker.ts PACE_STRIDE layout). */
  private readonly paceSeen: Float64Array;

  /** pace: the pool's per-thread pace counters (omitted in tests: every thread as fast as the main one). */
  constructor(readonly enabled: boolean, private readonly pace?: Float64Array) {
    this.paceSeen = new Float64Array(pace?.length ?? 0);
  }

  /**
   * The pace counters since the last call. With another program on one core, the main thread may
   * be the one sharing it: its own pace then overstates what it would take alone, once the
   * scheduler has moved it (hence the fastest thread's). A thread preempted between its chunks
   * takes fewer of them (hence the chunk counts).
   */
  private readPace(): Pace {
    const p = this.pace;
    if (!p) return { fastestOverMain: 1, leastOverMost: 1 };
    const seen = this.paceSeen;
    let main = 0, fastest = 0, least = Infinity, most = 0;
    for (let i = 0; i < p.length; i += PACE_STRIDE) {
      const ms = p[i]! - seen[i]!, chunks = p[i + 1]! - seen[i + 1]!;
      seen[i] = p[i]!;
      seen[i + 1] = p[i + 1]!;
      const rate = chunks >= MIN_PACE_CHUNKS && ms > 0 ? chunks / ms : 0;
      if (i === 0) main = rate;
      fastest = Math.max(fastest, rate);
      least = Math.min(least, chunks);
      most = Math.max(most, chunks);
    }
    const threads = p.length / PACE_STRIDE;
    return {
      fastestOverMain: main > 0 ? fastest / main : 1,
      leastOverMost: threads > 1 && most >= MIN_LAG_CHUNKS * threads ? least / most : 1,
    };
  }

  get epochCount(): number {
    return this.epochs;
  }

  /** Run the next job on the main thread alone? */
  get solo(): boolean {
    return this.enabled && this.current;
  }

  /**
   * A keyed job of the current mode took `ms`; on all threads, `aloneMs` estimates it on the main
   * thread alone (NaN if unknown).
   */
  record(key: number, ms: number, aloneMs = Number.NaN): void {
    if (!this.enabled) return;
    if (!this.current && !this.chosen && !Number.isNaN(aloneMs)) {
      this.sumAll += ms;
      this.sumAloneEstimate += aloneMs;
    }
    let a = this.avg.get(key);
    if (a === undefined) this.avg.set(key, (a = [Number.NaN, Number.NaN]));
    const i = this.current ? 1 : 0;
    if (this.current !== this.chosen) {
      const other = a[1 - i]!;
      if (!Number.isNaN(other)) {
        this.sumProbe += ms;
        this.sumChosen += other;
      }
    }
    a[i] = Number.isNaN(a[i]!) ? ms : a[i]! + ALPHA * (ms - a[i]!);
    if (++this.jobs >= (this.current !== this.chosen ? PROBE_EPOCH : this.epochs === 0 ? FIRST_EPOCH : EPOCH)) this.endEpoch();
  }

  private endEpoch(): void {
    const { fastestOverMain: fast, leastOverMost: lag } = this.readPace();
    if (TRACE) process.stderr.write(`epoch ${this.epochs} ${this.current ? "solo" : "all"}${this.current !== this.chosen ? " probe" : ""}: all/est ${(this.sumAll / this.sumAloneEstimate).toFixed(2)} fast ${fast.toFixed(2)} all/estfast ${(this.sumAll * fast / this.sumAloneEstimate).toFixed(2)} least/most ${lag.toFixed(2)} probe/chosen ${(this.sumProbe / this.sumChosen).toFixed(2)}\n`);
    this.jobs = 0;
    this.epochs++;
    if (this.current) this.soloEpochs++;
    if (this.current !== this.chosen) {
      const ratio = this.sumChosen > 0 ? this.sumProbe / this.sumChosen : 1;
      // The clearer the outcome, the longer until the next probe: a busy machine flips back to a
      // losing mode less, and noise (narrow outcomes) is re-checked soon.
      const clear = ratio < CLEAR || ratio > 1 / CLEAR;
      if (ratio < MARGIN) {
        this.chosen = this.current;
        this.switches++;
        this.probeEvery = clear ? CLEAR_WAIT : 2;
        this.evidenceNeed = 1;
      } else {
        this.probeEvery = Math.min(MAX_PROBE, this.probeEvery * (clear ? CLEAR_WAIT : 2));
        if (this.byEvidence) this.evidenceNeed = Math.min(MAX_EVIDENCE, this.evidenceNeed * 2);
      }
      this.nextProbe = this.epochs + this.probeEvery;
      this.sumProbe = this.sumChosen = 0;
      this.evidence = 0;
      this.byEvidence = false;
    } else if (!this.chosen) {
      // On all threads: a preempted thread, or slower than the fastest thread's own pace would be
      // alone, is evidence of load; enough of it brings the probe forward to the next epoch.
      const first = this.epochs === 1;
      const slow = !first && this.sumAloneEstimate > 0 && this.sumAll * fast > this.sumAloneEstimate;
      if ((lag < (first ? FIRST_LAG : LAG) || slow) && ++this.evidence >= this.evidenceNeed && this.nextProbe > this.epochs) {
        this.nextProbe = this.epochs;
        this.byEvidence = true;
      }
    }
    this.sumAll = this.sumAloneEstimate = 0;
    this.current = this.epochs >= this.nextProbe ? !this.chosen : this.chosen;
  }
}
