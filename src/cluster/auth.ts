/**
 * Authentication of clients and workers (and of workers to each other in a mesh) by a shared
 * secret: `--secret-file FILE` on every machine, or LLAMESH_SECRET. Mutual challenge-response,
 * so the secret never crosses the network and a recorded exchange cannot be replayed:
 *
 *   client -> HELLO {fingerprint, nonce: cn}                   (PEER {session, rank, nonce} alike)
 *   worker -> AUTH_CHALLENGE {nonce: wn, proof: H("worker", cn, wn)}
 *   client -> AUTH {proof: H("client", cn, wn)}                 the client checked the worker's proof
 *   worker -> HELLO_OK (PEER_OK), or ERROR "authentication failed" and the connection closes
 *
 * with H = HMAC-SHA256(secret, "llamesh-auth-v1|role|cn|wn") and fresh 128-bit nonces on both
 * sides. A worker without a secret answers HELLO_OK at once; a client with a secret refuses it
 * (it would hand its prompt to anyone who answers). With a secret the links are also encrypted
 * (secure.ts: TLS keyed from the secret), and this exchange runs inside the tunnel.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import { LlameshError } from "../core/errors.js";
import { jsonOf, WorkerError, type Connection, type Reply } from "./connection.js";
import { MSG } from "./protocol.js";

/** Shortest secret accepted, in bytes. */
export const MIN_SECRET_BYTES = 16;

/** The secret from a file (trailing newline ignored), else from $LLAMESH_SECRET, else null. */
export function loadSecret(file: string | undefined, env: NodeJS.ProcessEnv = process.env, flag = "--secret-file"): Buffer | null {
  let text: string;
  let what: string;
  if (file !== undefined) {
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (e) {
      throw new LlameshError(`${flag} ${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    }
    what = `${flag} ${file}`;
  } else if (env["LLAMESH_SECRET"] !== undefined) {
    text = env["LLAMESH_SECRET"];
    what = "LLAMESH_SECRET";
  } else {
    return null;
  }
  const secret = Buffer.from(text.replace(/\r?\n$/, ""), "utf8");
  if (secret.length < MIN_SECRET_BYTES) {
    throw new LlameshError(`${what}: the secret is ${secret.length} bytes, expected at least ${MIN_SECRET_BYTES} (e.g. the output of: openssl rand -hex 32)`);
  }
  return secret;
}

export function newNonce(): string {
  return crypto.randomBytes(16).toString("hex");
}

export function isNonce(v: unknown): v is string {
  return typeof v === "string" && /^[0-9a-f]{32}$/.test(v);
}

/** What the side `role` sends to prove it knows the secret. */
export function authProof(secret: Buffer, role: "client" | "worker", clientNonce: string, workerNonce: string): string {
  return crypto.createHmac("sha256", secret).update(`llamesh-auth-v1|${role}|${clientNonce}|${workerNonce}`).digest("hex");
}

/** Constant-time comparison of a received proof with the expected one. */
export function proofMatches(secret: Buffer, role: "client" | "worker", clientNonce: string, workerNonce: string, got: unknown): boolean {
  if (typeof got !== "string" || !/^[0-9a-f]{64}$/.test(got)) return false;
  return crypto.timingSafeEqual(Buffer.from(got, "hex"), Buffer.from(authProof(secret, role, clientNonce, workerNonce), "hex"));
}

/**
 * Open a session on `conn` with `type` (HELLO or PEER) and its JSON body, authenticating both
 * ways when the worker asks for it; returns the worker's answer to the opening message.
 */
export async function openSession(conn: Connection, type: number, body: Record<string, unknown>, secret: Buffer | null): Promise<Reply> {
  const cn = newNonce();
  let r: Reply;
  try {
    r = await conn.requestJson(type, { ...body, nonce: cn });
  } catch (e) {
    // a plain connection to a worker that encrypts (secure.ts): say which side must change
    if (e instanceof WorkerError && e.code === "needs-secret") {
      throw new LlameshError(secret
        ? `worker ${conn.label} encrypts its links: this side must too (drop --no-encryption)`
        : `worker ${conn.label} requires a shared secret: give this side the same one (--secret-file FILE or LLAMESH_SECRET)`);
    }
    throw e;
  }
  if (r.type !== MSG.AUTH_CHALLENGE) {
    if (secret) {
      throw new LlameshError(`worker ${conn.label} does not ask for the shared secret: start it with --secret-file too (a client with a secret talks only to workers that prove they know it)`);
    }
    return r;
  }
  if (!secret) throw new LlameshError(`worker ${conn.label} requires a shared secret: give this side the same one (--secret-file FILE or LLAMESH_SECRET)`);
  const j = jsonOf(r, MSG.AUTH_CHALLENGE, `worker ${conn.label}`);
  if (!isNonce(j["nonce"]) || !proofMatches(secret, "worker", cn, j["nonce"], j["proof"])) {
    throw new LlameshError(`worker ${conn.label} does not know the shared secret (its proof is wrong): check --secret-file on both sides`);
  }
  return conn.requestJson(MSG.AUTH, { proof: authProof(secret, "client", cn, j["nonce"]) });
}
