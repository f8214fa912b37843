/**
 * A completion request's parameters, checked: what llamesh does with each OpenAI field, and a 400
 * naming the field for what it does not do (n > 1, logprobs, penalties, tools, ...): a client
 * relying on one of those learns it at once instead of getting a silently different answer.
 */
import type { ChatMessage } from "../model/chat.js";
import { badRequest } from "./limits.js";

export interface Params {
  /** As asked (the server caps it by the context left after the prompt). */
  maxTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  stop: string[];
  stream: boolean;
  /** stream_options.include_usage: a last chunk with the usage and no choices. */
  includeUsage: boolean;
}

type Body = Record<string, unknown>;

function num(body: Body, key: string, def: number, min: number, max: number, int = false): number {
  const v = body[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max || (int && !Number.isInteger(v))) {
    throw badRequest(`${key}: expected ${int ? "an integer" : "a number"} between ${min} and ${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

const absent = (v: unknown): boolean => v === undefined || v === null;

/** Fields llamesh does not implement: each rejected, naming it, unless it asks for the default. */
function rejectUnsupported(body: Body, chat: boolean): void {
  const n = body["n"];
  if (!absent(n) && n !== 1) throw badRequest(`n: only 1 choice per request is supported, got ${JSON.stringify(n)} (send several requests instead)`);
  const bestOf = body["best_of"];
  if (!absent(bestOf) && bestOf !== 1) throw badRequest(`best_of: only 1 is supported, got ${JSON.stringify(bestOf)}`);
  const lp = body["logprobs"];
  if (!absent(lp) && lp !== false) throw badRequest(`logprobs: not supported by llamesh, got ${JSON.stringify(lp)} (omit it${chat ? " or send false" : ""})`);
  if (!absent(body["top_logprobs"])) throw badRequest("top_logprobs: not supported by llamesh (omit it)");
  for (const k of ["presence_penalty", "frequency_penalty"]) {
    const v = body[k];
    if (!absent(v) && v !== 0) throw badRequest(`${k}: not supported by llamesh, got ${JSON.stringify(v)} (omit it or send 0)`);
  }
  const bias = body["logit_bias"];
  if (!absent(bias) && !(typeof bias === "object" && Object.keys(bias as object).length === 0)) throw badRequest("logit_bias: not supported by llamesh (omit it)");
  if (body["echo"] === true) throw badRequest("echo: not supported by llamesh (omit it)");
  if (typeof body["suffix"] === "string" && body["suffix"] !== "") throw badRequest("suffix: not supported by llamesh (omit it)");
  for (const k of ["tools", "functions", "tool_choice", "function_call"]) {
    const v = body[k];
    if (!absent(v) && !(Array.isArray(v) && v.length === 0) && v !== "none") throw badRequest(`${k}: tool calls are not supported by llamesh (omit it)`);
  }
  const rf = body["response_format"] as { type?: unknown } | null | undefined;
  if (!absent(rf) && !(typeof rf === "object" && rf!.type === "text")) throw badRequest(`response_format: only {"type": "text"} is supported`);
}

function stopOf(body: Body): string[] {
  const s = body["stop"];
  let stop: string[] = [];
  if (typeof s === "string") stop = [s];
  else if (Array.isArray(s) && s.length <= 4 && s.every((x) => typeof x === "string")) stop = s as string[];
  else if (!absent(s)) throw badRequest(`stop: expected a string or a list of up to 4 strings, got ${JSON.stringify(s)}`);
  return stop.filter((x) => x.length > 0);
}

export function params(body: Body, chat: boolean): Params {
  rejectUnsupported(body, chat);
  const stream = body["stream"];
  if (!absent(stream) && typeof stream !== "boolean") throw badRequest(`stream: expected true or false, got ${JSON.stringify(stream)}`);
  const so = body["stream_options"];
  if (!absent(so) && (typeof so !== "object" || Array.isArray(so))) throw badRequest(`stream_options: expected an object, got ${JSON.stringify(so)}`);
  const iu = absent(so) ? undefined : (so as Body)["include_usage"];
  if (!absent(iu) && typeof iu !== "boolean") throw badRequest(`stream_options.include_usage: expected true or false, got ${JSON.stringify(iu)}`);
  if (!absent(so) && stream !== true) throw badRequest("stream_options: only allowed with stream: true");
  // chat clients send max_completion_tokens now (max_tokens is deprecated there)
  const maxKey = chat && !absent(body["max_completion_tokens"]) ? "max_completion_tokens" : "max_tokens";
  return {
    maxTokens: num(body, maxKey, 256, 0, 1_000_000, true),
    temperature: num(body, "temperature", 1, 0, 100),
    topP: num(body, "top_p", 1, 0, 1),
    topK: num(body, "top_k", 0, 0, 1_000_000, true),
    seed: num(body, "seed", Date.now() % 2147483647, 0, Number.MAX_SAFE_INTEGER, true),
    stop: stopOf(body),
    stream: stream === true,
    includeUsage: iu === true,
  };
}

/** The prompt of /v1/completions: a string (or a list of one string, as some clients send). */
export function promptOf(body: Body): string {
  const p = body["prompt"];
  if (typeof p === "string") return p;
  if (Array.isArray(p) && p.length === 1 && typeof p[0] === "string") return p[0];
  throw badRequest(Array.isArray(p) ? "prompt: expected a string (one prompt per request: lists of several prompts or of token ids are not supported)" : "prompt: expected a string");
}

/** The messages of /v1/chat/completions; content as a string or a list of text parts. */
export function messagesOf(body: Body): ChatMessage[] {
  const m = body["messages"];
  if (!Array.isArray(m) || m.length === 0) throw badRequest("messages: expected a non-empty list of {role, content}");
  return m.map((x, i) => {
    const o = x as Body | null;
    const role = o && typeof o === "object" ? o["role"] : undefined;
    const content = o && typeof o === "object" ? textOf(o["content"]) : null;
    if (content === null || !["system", "user", "assistant"].includes(role as string)) {
      throw badRequest(`messages[${i}]: expected {role: "system" | "user" | "assistant", content: string}`);
    }
    return { role: role as ChatMessage["role"], content };
  });
}

/** A content string, or OpenAI's list of parts when every part is text. */
function textOf(c: unknown): string | null {
  if (typeof c === "string") return c;
  if (Array.isArray(c) && c.every((p) => p && typeof p === "object" && (p as Body)["type"] === "text" && typeof (p as Body)["text"] === "string")) {
    return c.map((p) => (p as Body)["text"] as string).join("");
  }
  return null;
}
