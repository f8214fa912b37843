/**
 * Keeps the event loop polling (setImmediate) for a few milliseconds, so that the next frame of a
 * step is seen at once: a core that goes idle can take a long time to wake up on a VM (the guest's
 * haltpoll gives up after ~200 µs and halts), which matters when a sync takes 50 µs.
 *
 * What polling costs is garbage: every setImmediate is a new Immediate object (~190 bytes with
 * Node's bookkeeping), one per turn of the event loop, a turn every ~0.6 µs. Polling at that rate
 * through a whole token filled V8's young generation ~6 times per token on a worker, and each
 * scavenge stopped it 0.2 ms (4 ms with V8's helper threads on a busy 2-core machine, see
 * gc.ts). The frames a poll waits for come soon after it starts (a sync's partial sums ~0.1 ms
 * later) or not for a while (the next token's STEP, ~1 ms): so the loop turns at full rate for
 * FAST_US after each keep(), and after that sleeps SLOW_TURN_US in each turn (Atomics.wait: no
 * garbage, and the core is free for someone else meanwhile; a clock-watching spin would not do:
 * performance.now() allocates) before the next, which cuts the garbage of a long poll ~50 times
 * at the price of seeing a late frame up to ~SLOW_TURN_US + Linux's 50 µs timer slack later.
 */
const FAST_US = 300;
const SLOW_TURN_US = 10;
/** What the slow turns wait on (nobody notifies it: each wait times out). */
const nap = new Int32Array(new SharedArrayBuffer(4));

export class Poller {
  private until = 0;
  private fastUntil = 0;
  private running = false;
  /** Turns of the event loop made (a test counts them). */
  turns = 0;
  private readonly loop = (): void => {
    this.turns++;
    const now = performance.now();
    if (now >= this.until) {
      this.running = false;
      return;
    }
    if (now >= this.fastUntil) Atomics.wait(nap, 0, 0, SLOW_TURN_US / 1000);
    setImmediate(this.loop);
  };

  keep(ms: number): void {
    if (ms <= 0) return;
    const now = performance.now();
    this.until = Math.max(this.until, now + ms);
    this.fastUntil = Math.max(this.fastUntil, now + FAST_US / 1000);
    if (this.running) return;
    this.running = true;
    setImmediate(this.loop);
  }
}
