/**
 * Keeps the event loop polling (setImmediate) for a few milliseconds, so that the next frame of a
 * step is seen at once: a sleeping core can take ~1 ms to wake up on a VM, which matters when a
 * sync takes 50 µs.
 */
export class Poller {
  private until = 0;
  private running = false;

  keep(ms: number): void {
    if (ms <= 0) return;
    this.until = Math.max(this.until, performance.now() + ms);
    if (this.running) return;
    this.running = true;
    const loop = (): void => {
      if (performance.now() < this.until) setImmediate(loop);
      else this.running = false;
    };
    setImmediate(loop);
  }
}
