/**
 * What the server accepts and how long it waits: request bodies up to a size (413 beyond it, told
 * by Content-Length before anything is read when the client sends one), headers and bodies within
 * a time, idle keep-alive connections closed. Errors carry their HTTP status.
 */
import type * as http from "node:http";

/** A request that cannot be served as sent: its status, message and OpenAI error type. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = status >= 500 ? "server_error" : "invalid_request_error",
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const badRequest = (message: string): HttpError => new HttpError(400, message);

export interface Limits {
  /** Largest request body, in bytes (default 1 MB). */
  maxBodyBytes: number;
  /** Time to receive a request's headers (default 10 s). */
  headersTimeoutMs: number;
  /** Time to receive a whole request, body included (default 30 s). */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this (default 5 s). */
  keepAliveTimeoutMs: number;
}

export const DEFAULT_LIMITS: Limits = { maxBodyBytes: 1 << 20, headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, keepAliveTimeoutMs: 5_000 };

/** Apply the timeouts to a server (Node closes what exceeds them: 408 or a closed socket). */
export function applyTimeouts(server: http.Server, l: Limits): void {
  server.headersTimeout = l.headersTimeoutMs;
  server.requestTimeout = l.requestTimeoutMs;
  server.keepAliveTimeout = l.keepAliveTimeoutMs;
}

/** The body as a JSON object: 413 past `limit` bytes, 400 when it is not a JSON object. */
export async function readJson(req: http.IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const declared = Number(req.headers["content-length"] ?? NaN);
  if (declared > limit) {
    req.resume(); // drain, so the 413 reaches a client still sending
    throw new HttpError(413, `request body of ${declared} bytes is over the limit of ${limit} bytes`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > limit) {
      req.resume();
      throw new HttpError(413, `request body over the limit of ${limit} bytes`);
    }
    chunks.push(c as Buffer);
  }
  let v: unknown;
  try {
    v = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw badRequest("the request body is not valid JSON");
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw badRequest("the request body must be a JSON object");
  return v as Record<string, unknown>;
}
