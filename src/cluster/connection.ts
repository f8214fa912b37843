/**
 * The client end of a worker connection (the client's, and a worker's link to a lower-ranked
 * peer): numbered requests, replies matched by id, back-pressure on large writes, PARTIAL frames
 * handed to whoever reduces the step's sums. An ERROR reply rejects with a LlameshError naming the
 * worker.
 */
import type * as net from "node:net";
import { LlameshError } from "../core/errors.js";
import { connectSocket, linkSecurity, type LinkSecurity } from "./secure.js";
import { oneLine } from "./limits.js";
import { encodeFrame, FrameReader, MSG, MSG_NAMES, parseJson, type Frame } from "./protocol.js";

/** An ERROR reply from a worker: its message (naming the worker) and its code. */
export class WorkerError extends LlameshError {
  constructor(message: string, readonly code: string) {
    super(message);
  }
}

export interface Reply {
  type: number;
  body: Buffer;
}

/** Byte counters of one connection (frames included). */
export interface Traffic {
  sent: number;
  received: number;
}

export class Connection {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  /** A request without a reply after this long fails (the worker hangs or the link is down). */
  requestTimeoutMs = 120_000;
  private readonly reader = new FrameReader();
  private closedErr: Error | null = null;
  readonly traffic: Traffic = { sent: 0, received: 0 };
  /** Frames that answer no request (PARTIAL frames of a step). */
  onUnsolicited: ((f: Frame) => void) | null = null;
  /** Called once when the connection fails or closes. */
  onClosed: ((e: Error) => void) | null = null;

  private constructor(readonly socket: net.Socket, readonly label: string) {
    socket.setNoDelay(true);
    socket.on("data", (d: Buffer) => {
      this.traffic.received += d.length;
      let frames: Frame[];
      try {
        frames = this.reader.push(d);
      } catch (e) {
        this.fail(new LlameshError(`worker ${label}: ${(e as Error).message}`));
        socket.destroy();
        return;
      }
      for (const f of frames) {
        if (f.type === MSG.PARTIAL) {
          try {
            this.onUnsolicited?.(f);
          } catch (e) {
            // a malformed frame: this peer cannot be trusted any more
            this.kill(new LlameshError(`worker ${label}: ${(e as Error).message}`));
            return;
          }
          continue;
        }
        const p = this.pending.get(f.id);
        if (!p) continue;
        this.pending.delete(f.id);
        clearTimeout(p.timer);
        if (f.type === MSG.ERROR) {
          // the remote's text, as one bounded line: no escape sequences or forged lines reach a terminal
          let msg = "sent an unreadable error reply";
          let code = "";
          try {
            const j = JSON.parse(f.body.toString("utf8")) as { message?: unknown; code?: unknown };
            if (typeof j.message === "string") msg = oneLine(j.message);
            code = typeof j.code === "string" ? oneLine(j.code, 32) : "";
          } catch {
            /* not JSON: not shown */
          }
          p.reject(new WorkerError(`worker ${label}: ${msg}`, code));
        } else {
          p.resolve({ type: f.type, body: f.body });
        }
      }
    });
    socket.on("error", (e) => this.fail(new LlameshError(`worker ${label}: ${linkError(e)}`)));
    socket.on("close", () => this.fail(new LlameshError(`worker ${label}: connection closed`)));
  }

  /** Connect to host:port, encrypted when `sec` says so (secure.ts). */
  static async connect(host: string, port: number, timeoutMs = 10_000, sec: LinkSecurity = linkSecurity(null)): Promise<Connection> {
    const label = `${host}:${port}`;
    return new Connection(await connectSocket(host, port, timeoutMs, sec, label), label);
  }

  /** The error that closed this connection, if it is closed. */
  get error(): Error | null {
    return this.closedErr;
  }

  /** Give up on this worker (it hangs): every pending request fails with `e`, the socket closes. */
  kill(e: Error): void {
    this.fail(e);
    this.socket.destroy();
  }

  /** Every byte written so far has left this process's buffers (a buffer written may be reused). */
  get idle(): boolean {
    return this.socket.writableLength === 0;
  }

  /** Write a frame without waiting (small, latency-bound frames of a step). */
  write(frame: Buffer): void {
    if (this.closedErr) throw this.closedErr;
    this.traffic.sent += frame.length;
    this.socket.write(frame);
  }

  private fail(e: Error): void {
    if (!this.closedErr) {
      this.closedErr = e;
      this.onClosed?.(e);
    }
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(e);
    }
    this.pending.clear();
  }

  /** Send a request and wait for its reply (at most `timeoutMs`, default requestTimeoutMs). */
  request(type: number, body: Uint8Array | string, timeoutMs = this.requestTimeoutMs): Promise<Reply> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    const id = this.nextId++;
    const p = new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new LlameshError(`worker ${this.label}: no reply to ${MSG_NAMES[type] ?? type} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      timer.unref();
      this.pending.set(id, { resolve, reject, timer });
    });
    const frame = encodeFrame(type, id, body);
    this.traffic.sent += frame.length;
    this.socket.write(frame);
    return p;
  }

  requestJson(type: number, value: unknown): Promise<Reply> {
    return this.request(type, JSON.stringify(value));
  }

  /** Send a frame that gets no reply, waiting for the socket to drain when its buffer is full. */
  async send(type: number, body: Uint8Array): Promise<void> {
    if (this.closedErr) throw this.closedErr;
    const frame = encodeFrame(type, 0, body);
    this.traffic.sent += frame.length;
    if (!this.socket.write(frame)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = (): void => {
          this.socket.off("close", onClose);
          resolve();
        };
        const onClose = (): void => {
          this.socket.off("drain", onDrain);
          reject(this.closedErr ?? new LlameshError(`worker ${this.label}: connection closed`));
        };
        this.socket.once("drain", onDrain);
        this.socket.once("close", onClose);
      });
    }
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }
}

export function jsonOf(r: Reply, expect: number, what: string): Record<string, unknown> {
  if (r.type !== expect) throw new LlameshError(`${what}: unexpected reply ${MSG_NAMES[r.type] ?? r.type} (expected ${MSG_NAMES[expect]})`);
  return parseJson(r.body, what);
}

/**
 * A socket error as one line. An encrypted record that fails its check (AEAD: a changed byte)
 * says so plainly: the link was tampered with or is broken, and nothing from it was used.
 */
export function linkError(e: Error): string {
  const code = (e as NodeJS.ErrnoException).code ?? "";
  if (/BAD_RECORD_MAC|DECRYPTION_FAILED|DECRYPT_ERROR|BAD_DECRYPT|INTEGRITY/i.test(`${code} ${e.message}`)) {
    return `the encrypted link failed its integrity check (a record was changed in flight: a tampering relay or a broken network; nothing from it was used) [${code || "TLS"}]`;
  }
  return oneLine(e.message);
}
