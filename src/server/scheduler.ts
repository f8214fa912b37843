/**
 * Slots and continuous batching. The model holds `slots` KV regions; each running request owns
 * one. Every step is one forwardBatch over the next token of every decoding sequence plus chunks
 * of waiting prompts (up to the model's batch of tokens), so each weight is streamed once for all
 * of them; sequences join and leave between steps. The engine gives a row the same logits whatever
 * else the step carries, so a request's greedy text is the same alone or batched.
 *
 * Between steps the loop yields to the event loop (setImmediate): a step is the longest the HTTP
 * side ever waits, so tokens are written as they are made, /health answers while every slot is
 * busy, and a client that went away is dropped before the next step.
 *
 * Prompt reuse: a slot remembers the tokens its KV region holds after its request ends. A new
 * request takes the free slot sharing the longest prefix with its prompt (the next turn of a chat
 * finds its previous turn there) and computes only the rest; on a cluster the coordinator keeps
 * the same per-slot history, so replay after a lost worker still has every position.
 */
import type { LoadedModel } from "../engine/open.js";
import type { SequenceChunk } from "../engine/forward.js";
import type { Sampler } from "../engine/sampler.js";

export interface JobRequest {
  prompt: readonly number[];
  /** Tokens to generate at most (the caller caps it by the context). */
  maxTokens: number;
  sampler: Sampler;
  /** Called with each generated token (not end-of-sequence ones); returning true stops the job there (a stop string). */
  onToken: (id: number) => boolean;
  /** Called once the job has a slot (its queue time ends). */
  onStart?: () => void;
}

export type JobStop = "length" | "eos" | "stopped" | "cancelled";

export interface JobResult {
  tokens: number[];
  stop: JobStop;
  promptTokens: number;
  /** Prompt tokens found in the slot's KV region (not computed again). */
  cachedTokens: number;
  queueMs: number;
  /** Time from taking a slot to the first generated token. */
  firstTokenMs: number;
  totalMs: number;
}

/** The queue is full: answer 503 with Retry-After. */
export class QueueFull extends Error {
  constructor(readonly retryAfterS: number) {
    super("every slot is busy and the queue is full: retry later");
  }
}

interface Job {
  req: JobRequest;
  resolve: (r: JobResult) => void;
  reject: (e: unknown) => void;
  cancelled: boolean;
  queuedAt: number;
  startedAt: number;
  firstAt: number;
  slot: Slot | null;
  cached: number;
  /** Prompt tokens in the KV region so far (cached ones included). */
  fed: number;
  out: number[];
}

interface Slot {
  index: number;
  /** The tokens at positions 0.. of this slot's KV region. */
  held: number[];
  job: Job | null;
  /** When its last job ended (least recently used slots are taken first among equals). */
  freedAt: number;
}

export interface SchedulerStats {
  slots: number;
  busy: number;
  queued: number;
  steps: number;
  stepMs: number;
  promptTokens: number;
  cachedTokens: number;
  generatedTokens: number;
  /** Generated tokens per second over the last 10 s. */
  recentTokPerS: number;
}

export interface SchedulerOptions {
  /** Requests waiting for a slot before new ones get QueueFull (default 32). */
  maxQueue?: number;
  log?: (line: string) => void;
}

/** Tokens a step leaves for prompts (serve keeps slots below the batch, so there is always room). */
function promptBudget(batch: number, decoding: number): number {
  return Math.max(0, batch - decoding);
}

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

export class Scheduler {
  private readonly slots: Slot[];
  private readonly queue: Job[] = [];
  private running = false;
  private readonly maxQueue: number;
  private readonly counters = { steps: 0, stepMs: 0, promptTokens: 0, cachedTokens: 0, generatedTokens: 0 };
  /** Generated-token counts per second of the last 10 s (at most 11 records), for recentTokPerS. */
  private readonly recent: { t: number; n: number }[] = [];
  /** Mean time a job held its slot (ms), for Retry-After. */
  private meanJobMs = 1000;

  constructor(private readonly model: LoadedModel, private readonly eosIds: readonly number[], private readonly opts: SchedulerOptions = {}) {
    this.slots = Array.from({ length: model.slots }, (_, index) => ({ index, held: [], job: null, freedAt: 0 }));
    this.maxQueue = opts.maxQueue ?? 32;
  }

  /** Queue a job; throws QueueFull when maxQueue jobs are already waiting. `cancel()` ends it (queued or running) before the next step. */
  submit(req: JobRequest): { done: Promise<JobResult>; cancel: () => void } {
    const free = this.slots.filter((s) => s.job === null).length;
    if (this.queue.length - free >= this.maxQueue) {
      throw new QueueFull(Math.max(1, Math.min(60, Math.ceil((this.meanJobMs * (this.queue.length + 1)) / this.slots.length / 1000))));
    }
    let job!: Job;
    const done = new Promise<JobResult>((resolve, reject) => {
      job = { req, resolve, reject, cancelled: false, queuedAt: performance.now(), startedAt: 0, firstAt: 0, slot: null, cached: 0, fed: 0, out: [] };
    });
    this.queue.push(job);
    this.kick();
    return {
      done,
      cancel: () => {
        if (job.cancelled) return;
        job.cancelled = true;
        const i = this.queue.indexOf(job);
        if (i >= 0) {
          this.queue.splice(i, 1);
          this.finish(job, "cancelled");
        }
      },
    };
  }

  stats(): SchedulerStats {
    const now = performance.now();
    this.forgetOld(now);
    const n = this.recent.reduce((s, r) => s + r.n, 0);
    const span = this.recent.length > 0 ? Math.max(1000, now - this.recent[0]!.t) : 1000;
    return { slots: this.slots.length, busy: this.slots.filter((s) => s.job).length, queued: this.queue.length, ...this.counters, recentTokPerS: (n * 1000) / span };
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    setImmediate(() => void this.loop());
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        this.admit();
        const active = this.slots.filter((s) => s.job !== null);
        if (active.length === 0) break;
        await this.step(active);
        // let the HTTP side write the tokens, answer /health and notice clients that left
        await new Promise<void>((r) => setImmediate(r));
      }
    } finally {
      this.running = false;
    }
    if (this.queue.length > 0) this.kick();
  }

  /** Give free slots to queued jobs, each the free slot holding the longest prefix of its prompt. */
  private admit(): void {
    for (const s of this.slots) if (s.job?.cancelled) this.release(s, "cancelled");
    while (this.queue.length > 0) {
      const free = this.slots.filter((s) => s.job === null);
      if (free.length === 0) return;
      const job = this.queue.shift()!;
      const p = job.req.prompt;
      // at least the last prompt token is computed: its logits give the first new token
      const reuse = (s: Slot): number => Math.min(commonPrefix(s.held, p), p.length - 1);
      const slot = free.reduce((best, s) => (reuse(s) > reuse(best) || (reuse(s) === reuse(best) && s.freedAt < best.freedAt) ? s : best));
      job.cached = job.fed = reuse(slot);
      slot.held.length = job.cached;
      slot.job = job;
      job.slot = slot;
      job.startedAt = performance.now();
      job.req.onStart?.();
    }
  }

  /** One forward pass over every active slot: a token of each decoding one, prompt chunks in the room left. */
  private async step(active: Slot[]): Promise<void> {
    const decoding = active.filter((s) => s.job!.fed === s.job!.req.prompt.length);
    let budget = promptBudget(this.model.batch, decoding.length);
    const chunks: SequenceChunk[] = decoding.map((s) => ({ slot: s.index, pos: s.held.length, tokens: [s.job!.out[s.job!.out.length - 1]!] }));
    const who: Slot[] = [...decoding];
    for (const s of active) {
      const j = s.job!;
      if (j.fed === j.req.prompt.length || budget === 0) continue;
      const take = Math.min(budget, j.req.prompt.length - j.fed);
      chunks.push({ slot: s.index, pos: j.fed, tokens: j.req.prompt.slice(j.fed, j.fed + take) });
      who.push(s);
      budget -= take;
    }
    const t0 = performance.now();
    let logits: Float32Array[];
    try {
      logits = await this.model.forwardBatch(chunks);
    } catch (e) {
      // the step failed (a cluster with no worker left): its jobs fail; the slots' caches are unknown
      for (const s of who) {
        const j = s.job!;
        s.held.length = 0;
        s.job = null;
        j.reject(e);
      }
      return;
    }
    this.counters.steps++;
    this.counters.stepMs += performance.now() - t0;
    let made = 0;
    who.forEach((s, i) => {
      const j = s.job!;
      s.held.push(...chunks[i]!.tokens);
      if (j.fed < j.req.prompt.length) {
        j.fed += chunks[i]!.tokens.length;
        if (j.fed < j.req.prompt.length) return; // mid-prompt: no token yet
      }
      made++;
      this.next(s, j.req.sampler.sample(logits[i]!));
    });
    this.countRecent(made);
  }

  /** A slot's next token: end the job (end of sequence, budget, stop string, context) or keep it for the next step. */
  private next(s: Slot, tok: number): void {
    const j = s.job!;
    if (j.firstAt === 0) j.firstAt = performance.now();
    if (this.eosIds.includes(tok)) return this.release(s, "eos");
    if (j.cancelled) return this.release(s, "cancelled");
    j.out.push(tok);
    this.counters.generatedTokens++;
    let stop: boolean;
    try {
      stop = j.req.onToken(tok);
    } catch (e) {
      // the request's writer failed (its socket, say): end that job, not the loop serving the others
      this.opts.log?.(`a request's token handler failed: ${e instanceof Error ? e.message : String(e)}`);
      return this.release(s, "cancelled");
    }
    if (stop) return this.release(s, "stopped");
    // the next step would feed this token at position held.length
    if (j.out.length >= j.req.maxTokens || s.held.length >= this.model.seqLen) return this.release(s, "length");
  }

  private release(s: Slot, stop: JobStop): void {
    const j = s.job!;
    s.job = null;
    s.freedAt = performance.now();
    this.meanJobMs = 0.8 * this.meanJobMs + 0.2 * (s.freedAt - j.startedAt);
    this.finish(j, stop);
  }

  private finish(j: Job, stop: JobStop): void {
    const now = performance.now();
    this.counters.promptTokens += j.slot ? j.req.prompt.length : 0;
    this.counters.cachedTokens += j.cached;
    j.resolve({
      tokens: j.out,
      stop,
      promptTokens: j.req.prompt.length,
      cachedTokens: j.cached,
      queueMs: (j.startedAt || now) - j.queuedAt,
      firstTokenMs: j.firstAt ? j.firstAt - j.startedAt : 0,
      totalMs: now - j.queuedAt,
    });
  }

  private countRecent(n: number): void {
    if (n === 0) return;
    const t = performance.now();
    const last = this.recent[this.recent.length - 1];
    if (last && t - last.t < 1000) last.n += n;
    else this.recent.push({ t, n });
    // dropped here too, not only when /metrics asks: a server nobody scrapes kept one record per busy second
    this.forgetOld(t);
  }

  private forgetOld(now: number): void {
    while (this.recent.length > 0 && this.recent[0]!.t < now - 10_000) this.recent.shift();
  }
}
