/**
 * API keys: with `--api-key` (or LLAMESH_API_KEY) every API request must carry
 * `Authorization: Bearer <key>`; /health and the chat page itself stay open (the page asks for the
 * key and sends it with its requests). Keys are compared in constant time.
 */
import * as crypto from "node:crypto";
import type * as http from "node:http";
import { HttpError } from "./limits.js";

const digest = (s: string): Buffer => crypto.createHash("sha256").update(s).digest();

/** A check for `key` (null: no key, every request passes). Throws 401 for a missing or wrong key. */
export function apiKeyCheck(key: string | null): (req: http.IncomingMessage) => void {
  if (key === null) return () => undefined;
  const want = digest(key);
  return (req) => {
    const h = req.headers["authorization"] ?? "";
    const m = /^Bearer\s+(.+)$/i.exec(h);
    if (!m) throw new HttpError(401, "missing API key: send Authorization: Bearer <key>", "authentication_error", { "www-authenticate": "Bearer" });
    if (!crypto.timingSafeEqual(digest(m[1]!.trim()), want)) throw new HttpError(401, "invalid API key", "authentication_error", { "www-authenticate": "Bearer" });
  };
}
