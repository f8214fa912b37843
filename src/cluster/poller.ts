/**
 * Keeps the event loop polling (setImmediate) for a few milliseconds, so that the next frame of a
 * step is seen at once: a sleeping core can take ~1 ms to wake up on a VM, which matters when a
 * sync takes 50 µs.
 *
 * Each turn of the loop costs a setImmediate and a clock reading (~190 bytes of garbage; on Node
 * 20 even performance.now() and Date.now() return a fresh heap number): V8 then scavenges every
 * few ms of polling, 0.3-5 ms each on a loaded 2-core VM (measured with LLAMESH_SYNC_TRACE). So
 * after the first FAST_US of a wait, when the frame awaited is evidently not next door, each turn
 * first spins for about SPIN_US, counting (no clock, no allocation; the count is adapted to the
 * measured length of the turns), before handing back to the loop: ~15x fewer turns and as much
 * less garbage, for at most SPIN_US of added delay on a frame that comes late anyway.
 */
const FAST_US = 200;
const SPIN_US = 10;

export class Poller {
  private until = 0;
  private since = 0;
  private running = false;
  /** Iterations of the spin per turn, adapted so that a slow turn lasts about SPIN_US. */
  private iters = 1000;
  private lastTurn = 0;
  private spun = false;
  private sink = 0;
  private readonly loop = (): void => {
    const now = performance.now();
    if (now >= this.until) {
      this.running = false;
      return;
    }
    if (this.spun) {
      // the last turn spun `iters` times: aim the next one at SPIN_US (the loop's own work included)
      const us = (now - this.lastTurn) * 1000;
      if (us > 0 && us < 1000) this.iters = Math.max(16, Math.min(1 << 20, Math.round((this.iters * SPIN_US) / us)));
    }
    this.spun = now - this.since > FAST_US / 1000;
    this.lastTurn = now;
    if (this.spun) {
      let x = this.sink;
      for (let i = 0; i < this.iters; i++) x = (x + i) | 0;
      this.sink = x;
    }
    setImmediate(this.loop);
  };

  keep(ms: number): void {
    if (ms <= 0) return;
    const now = performance.now();
    this.since = now;
    this.until = Math.max(this.until, now + ms);
    if (this.running) return;
    this.running = true;
    setImmediate(this.loop);
  }
}
