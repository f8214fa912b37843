/**
 * Whether the pool's helper threads are worth it right now (pool.ts). With another program busy
 * on the machine, one of our threads shares a core with it: the chunks keep the split fair, but
 * the main thread may be the one sharing (then the serial work between jobs runs at half speed),
 * and a worker preempted inside a chunk stalls the job until it runs again. One thread alone then
 * gets a core to itself (the scheduler moves it once the workers sleep) and is faster.
 *
 * So the pool measures instead of guessing: jobs with a key (one per matmul shape) are timed in
 * epochs of EPOCH jobs (PROBE_EPOCH for a probe); most epochs run in the chosen mode (all threads, or the main thread
 * alone), and now and then one runs in the other ("a probe"). A probe whose jobs took less time
 * than the chosen mode's recent times for the same keys (an average per key) switches the mode;
 * a probe that loses doubles the wait before the next (up to MAX_PROBE epochs, about a second of
 * decode), so on a quiet machine probing costs about 1%. An epoch on all threads that took longer
 * than the main thread alone would have at its own pace (its time per chunk x chunks, which the
 * pool passes along) brings the next probe forward to the next epoch: a short prompt (stories260K's
 * 81 tokens are 35 matmuls) is mostly run alone once another program is found busy.
 */
const EPOCH = 16;
/** A probe is shorter: a layer's matmuls (every shape of it) is enough to compare. */
const PROBE_EPOCH = 8;
/** The first probe comes right after the first epoch: a prompt is a few epochs long. */
const FIRST_PROBE = 1;
const MAX_PROBE = 192;
/** A probe must beat the chosen mode by this factor: on a shared VM, epochs vary by 10% and more (at 0.95, a quiet run switched 8-12 times in 32 tokens); a busy core costs far more. */
const MARGIN = 0.85;
const ALPHA = 0.25;

export class ModeProbe {
  /** Chosen mode: false = all threads, true = the main thread alone. */
  private chosen = false;
  /** Mode of the running epoch. */
  private current = false;
  private jobs = 0;
  private epochs = 0;
  private probeEvery = FIRST_PROBE;
  private nextProbe = FIRST_PROBE;
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

  constructor(readonly enabled: boolean) {}

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
    if (++this.jobs >= (this.current !== this.chosen ? PROBE_EPOCH : EPOCH)) this.endEpoch();
  }

  private endEpoch(): void {
    this.jobs = 0;
    this.epochs++;
    if (this.current) this.soloEpochs++;
    if (this.current !== this.chosen) {
      if (this.sumChosen > 0 && this.sumProbe < this.sumChosen * MARGIN) {
        this.chosen = this.current;
        this.switches++;
        this.probeEvery = FIRST_PROBE * 2;
      } else {
        this.probeEvery = Math.min(MAX_PROBE, this.probeEvery * 2);
      }
      this.nextProbe = this.epochs + this.probeEvery;
      this.sumProbe = this.sumChosen = 0;
    } else if (this.sumAloneEstimate > 0 && this.sumAll > this.sumAloneEstimate) {
      this.nextProbe = this.epochs;
    }
    this.sumAll = this.sumAloneEstimate = 0;
    this.current = this.epochs >= this.nextProbe ? !this.chosen : this.chosen;
  }
}
