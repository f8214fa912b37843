/**
 * Prompts to token ids without stalling the other requests: a short text is encoded at once on
 * the main thread (well under a millisecond), a long one in a worker thread holding its own copy
 * of the tokenizer, so steps and /health go on while it is encoded (a 1 MB prompt takes seconds).
 */
import { Worker } from "node:worker_threads";
import type { Tokenizer } from "../model/tokenizer-types.js";

/** Texts up to this many characters are encoded on the main thread. */
export const INLINE_CHARS = 4096;

export class PromptEncoder {
  private worker: Worker | null = null;
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (ids: number[]) => void; reject: (e: Error) => void }>();

  constructor(private readonly tokenizer: Tokenizer, private readonly modelPath: string) {}

  async encode(text: string, addBos: boolean): Promise<number[]> {
    if (text.length <= INLINE_CHARS) return this.tokenizer.encode(text, addBos);
    const w = this.start();
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      w.ref();
      w.postMessage({ id, text, addBos });
    });
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL("./tokenize-worker.js", import.meta.url), { workerData: { path: this.modelPath } });
    w.on("message", (m: { id: number; ids?: number[]; error?: string }) => {
      const p = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (this.waiting.size === 0) w.unref();
      if (m.ids) p?.resolve(m.ids);
      else p?.reject(new Error(`tokenizer: ${m.error}`));
    });
    w.on("error", (e) => this.fail(e));
    w.on("exit", () => this.fail(new Error("tokenizer thread exited")));
    w.unref();
    this.worker = w;
    return w;
  }

  private fail(e: Error): void {
    this.worker = null;
    for (const p of this.waiting.values()) p.reject(e);
    this.waiting.clear();
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
  }
}
