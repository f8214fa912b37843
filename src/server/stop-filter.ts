/**
 * Text of a generation, with stop strings: `push` returns what can be sent now, holding back an
 * end that might still become a stop string; `stopped` says a stop string was met (the text
 * before it is all that is sent).
 */
export class StopFilter {
  private pending = "";
  private done = false;
  private readonly hold: number;

  constructor(private readonly stops: readonly string[]) {
    this.hold = Math.max(0, ...stops.map((s) => s.length - 1));
  }

  get stopped(): boolean {
    return this.done;
  }

  push(text: string): string {
    if (this.done) return "";
    this.pending += text;
    let cut = -1;
    for (const s of this.stops) {
      const i = this.pending.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.done = true;
      const out = this.pending.slice(0, cut);
      this.pending = "";
      return out;
    }
    const keep = Math.min(this.hold, this.pending.length);
    const out = this.pending.slice(0, this.pending.length - keep);
    this.pending = this.pending.slice(this.pending.length - keep);
    return out;
  }

  end(): string {
    const out = this.done ? "" : this.pending;
    this.pending = "";
    return out;
  }
}
