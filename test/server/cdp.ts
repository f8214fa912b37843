/**
 * Headless Chromium driven by hand over the DevTools protocol, no dependency: Chromium started
 * with --remote-debugging-pipe reads commands from fd 3 and writes replies and events to fd 4,
 * each a JSON message ended by a NUL byte. Enough for a test: open a page, evaluate expressions.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { tempDir } from "../helpers/models.js";

/** The Chromium binary on the PATH, or null. */
export function findChromium(): string | null {
  for (const b of ["chromium", "chromium-browser", "google-chrome"]) {
    const r = spawnSync("sh", ["-c", `command -v ${b}`], { encoding: "utf8" });
    if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
  }
  return null;
}

interface Reply {
  id?: number;
  result?: Record<string, unknown>;
  error?: { message: string };
}

export class Browser {
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  private buf = "";
  private session = "";

  private constructor(private readonly child: ChildProcess) {
    const out = child.stdio[4] as Readable;
    out.setEncoding("utf8");
    out.on("data", (d: string) => this.receive(d));
    child.on("exit", () => {
      for (const w of this.waiting.values()) w.reject(new Error("chromium exited"));
    });
  }

  static async launch(bin: string): Promise<Browser> {
    const child = spawn(bin, ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--remote-debugging-pipe", `--user-data-dir=${tempDir("llamesh-chromium-")}`, "about:blank"], {
      stdio: ["ignore", "ignore", "ignore", "pipe", "pipe"],
    });
    return new Browser(child);
  }

  private receive(d: string): void {
    this.buf += d;
    let i: number;
    while ((i = this.buf.indexOf("\0")) >= 0) {
      const msg = JSON.parse(this.buf.slice(0, i)) as Reply;
      this.buf = this.buf.slice(i + 1);
      const w = msg.id !== undefined ? this.waiting.get(msg.id) : undefined;
      if (!w) continue; // an event
      this.waiting.delete(msg.id!);
      if (msg.error) w.reject(new Error(msg.error.message));
      else w.resolve(msg.result ?? {});
    }
  }

  send(method: string, params: Record<string, unknown> = {}, session = this.session): Promise<Record<string, unknown>> {
    const id = this.next++;
    const msg = JSON.stringify({ id, method, params, ...(session ? { sessionId: session } : {}) });
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      (this.child.stdio[3] as Writable).write(msg + "\0");
    });
  }

  /** Open `url` in a new tab and wait until it has loaded; later calls evaluate in it. */
  async open(url: string): Promise<void> {
    const { targetId } = (await this.send("Target.createTarget", { url: "about:blank" }, "")) as { targetId: string };
    const { sessionId } = (await this.send("Target.attachToTarget", { targetId, flatten: true }, "")) as { sessionId: string };
    this.session = sessionId;
    await this.send("Page.navigate", { url });
    for (let i = 0; i < 200 && (await this.eval("document.readyState")) !== "complete"; i++) await new Promise((r) => setTimeout(r, 25));
  }

  /** The value of a JavaScript expression in the page (promises awaited). */
  async eval(expression: string): Promise<unknown> {
    const r = (await this.send("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true })) as { result: { value?: unknown }; exceptionDetails?: { text: string; exception?: { description?: string } } };
    if (r.exceptionDetails) throw new Error(`in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value;
  }

  async close(): Promise<void> {
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
    if (this.child.exitCode === null) this.child.kill("SIGKILL");
  }
}
