import { formatBytes } from "../core/format.js";

/** A one-line progress bar on stderr when it is a terminal; silent otherwise (logs stay clean). */
export class ProgressBar {
  private lastDraw = 0;
  private readonly tty: boolean;
  private readonly start = performance.now();

  constructor(private readonly label: string, private readonly stream: NodeJS.WriteStream = process.stderr) {
    this.tty = Boolean(stream.isTTY);
  }

  update(done: number, total: number): void {
    if (!this.tty) return;
    const now = performance.now();
    if (now - this.lastDraw < 100 && done < total) return;
    this.lastDraw = now;
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const width = 30;
    const filled = Math.round(frac * width);
    const secs = (now - this.start) / 1000;
    const rate = secs > 0 ? done / secs : 0;
    // an estimate only once there is something to estimate from
    const eta = rate > 0 && done < total && secs >= 1 ? ` ETA ${Math.ceil((total - done) / rate)} s` : "";
    this.stream.write(
      `\r${this.label} [${"#".repeat(filled)}${" ".repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ` +
        `${formatBytes(done)} / ${formatBytes(total)}${eta}   `,
    );
  }

  done(): void {
    if (this.tty) this.stream.write("\r\x1b[K");
  }
}
