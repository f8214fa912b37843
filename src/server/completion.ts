/**
 * POST /v1/completions and /v1/chat/completions: the request checked and tokenized, a job for the
 * scheduler, and its tokens written as they are made: server-sent events with "stream": true
 * (the headers go out at once, each token's text as its own event), else one JSON answer.
 * A client that goes away cancels its job (queued or running) before the next step.
 */
import * as crypto from "node:crypto";
import type * as http from "node:http";
import type { LoadedModel } from "../engine/open.js";
import { Sampler } from "../engine/sampler.js";
import { TextStream } from "../engine/text-stream.js";
import { applyChatTemplate } from "../model/chat.js";
import { LlameshError } from "../core/errors.js";
import { badRequest, HttpError, readJson } from "./limits.js";
import { messagesOf, params, promptOf, type Params } from "./params.js";
import { QueueFull, type JobResult, type Scheduler } from "./scheduler.js";
import { StopFilter } from "./stop-filter.js";
import type { PromptEncoder } from "./tokenize.js";

export interface CompletionContext {
  model: LoadedModel;
  modelName: string;
  scheduler: Scheduler;
  encoder: PromptEncoder;
  maxBodyBytes: number;
  log?: (line: string) => void;
}

/** The prompt's token ids: the chat template's text (it writes its own BOS) or the prompt with BOS. */
async function promptIds(ctx: CompletionContext, body: Record<string, unknown>, chat: boolean): Promise<number[]> {
  if (!chat) return ctx.encoder.encode(promptOf(body), true);
  const messages = messagesOf(body);
  let text: string;
  try {
    text = applyChatTemplate(ctx.model.dir, messages);
  } catch (e) {
    if (e instanceof LlameshError) throw badRequest(`this model has no usable chat template: ${e.message}`);
    throw e;
  }
  return ctx.encoder.encode(text, false);
}

function usageOf(r: { promptTokens: number; cachedTokens: number; tokens: number }): Record<string, unknown> {
  return { prompt_tokens: r.promptTokens, completion_tokens: r.tokens, total_tokens: r.promptTokens + r.tokens, prompt_tokens_details: { cached_tokens: r.cachedTokens } };
}

/** Writes one request's answer: events as text comes, or the whole JSON at the end. */
class Answer {
  readonly id: string;
  readonly created = Math.floor(Date.now() / 1000);
  text = "";
  private first = true;

  constructor(private readonly res: http.ServerResponse, private readonly chat: boolean, private readonly p: Params, private readonly model: string) {
    this.id = `${chat ? "chatcmpl" : "cmpl"}-${crypto.randomBytes(12).toString("hex")}`;
  }

  private get object(): string {
    return this.chat ? (this.p.stream ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  }

  private event(choices: unknown[], extra: Record<string, unknown> = {}): void {
    this.res.write(`data: ${JSON.stringify({ id: this.id, object: this.object, created: this.created, model: this.model, choices, ...extra })}\n\n`);
  }

  private chunk(delta: string, finish: string | null): void {
    const d = this.first && this.chat ? { role: "assistant", content: delta } : delta || !this.chat ? { content: delta } : {};
    this.first = false;
    this.event([this.chat ? { index: 0, delta: d, logprobs: null, finish_reason: finish } : { index: 0, text: delta, logprobs: null, finish_reason: finish }]);
  }

  start(): void {
    if (!this.p.stream) return;
    this.res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
    this.res.flushHeaders();
  }

  emit(t: string): void {
    if (!t) return;
    this.text += t;
    if (this.p.stream && !this.res.destroyed) this.chunk(t, null);
  }

  end(finish: "stop" | "length", usage: Record<string, unknown>): void {
    if (this.p.stream) {
      if (this.first && this.chat) this.chunk("", null);
      this.chunk("", finish);
      if (this.p.includeUsage) this.event([], { usage });
      this.res.end("data: [DONE]\n\n");
      return;
    }
    const choice = this.chat
      ? { index: 0, message: { role: "assistant", content: this.text }, logprobs: null, finish_reason: finish }
      : { index: 0, text: this.text, logprobs: null, finish_reason: finish };
    const body = JSON.stringify({ id: this.id, object: this.object, created: this.created, model: this.model, choices: [choice], usage });
    this.res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    this.res.end(body);
  }
}

/** Serve one completion request; resolves once it is answered (or its client has gone). */
export async function complete(ctx: CompletionContext, req: http.IncomingMessage, res: http.ServerResponse, chat: boolean): Promise<void> {
  // watched from the start: a client may leave while its prompt is read or tokenized
  let left = false;
  let onLeave = (): void => undefined;
  res.on("close", () => {
    if (res.writableFinished) return;
    left = true;
    onLeave();
  });
  const body = await readJson(req, ctx.maxBodyBytes);
  const p = params(body, chat);
  const ids = await promptIds(ctx, body, chat);
  const seqLen = ctx.model.seqLen;
  if (ids.length === 0) throw badRequest("the prompt encodes to no tokens");
  if (ids.length >= seqLen) throw badRequest(`the prompt is ${ids.length} tokens but the context holds ${seqLen} (with room for at least one new token)`);
  const maxTokens = Math.min(p.maxTokens, seqLen - ids.length);
  const answer = new Answer(res, chat, p, ctx.modelName);
  if (maxTokens === 0) {
    answer.start();
    return answer.end("length", usageOf({ promptTokens: ids.length, cachedTokens: 0, tokens: 0 }));
  }
  const stream = new TextStream(ctx.model.tokenizer);
  const filter = new StopFilter(p.stop);
  let job: ReturnType<Scheduler["submit"]>;
  let made = 0;
  let goneAt = -1;
  try {
    job = ctx.scheduler.submit({
      prompt: ids,
      maxTokens,
      sampler: new Sampler({ temperature: p.temperature, topP: p.topP, topK: p.topK, seed: p.seed }),
      onToken: (tok) => {
        made++;
        answer.emit(filter.push(stream.push(tok)));
        return filter.stopped;
      },
    });
  } catch (e) {
    if (e instanceof QueueFull) throw new HttpError(503, e.message, "unavailable_error", { "retry-after": String(e.retryAfterS) });
    throw e;
  }
  onLeave = () => {
    goneAt = made;
    job.cancel();
  };
  if (left) onLeave();
  answer.start();
  // a failed step (a cluster with no worker left) fails the request, not the server
  const r = await job.done.catch((e: unknown) => {
    throw new HttpError(503, `the model failed: ${e instanceof Error ? e.message : String(e)}`, "unavailable_error", { "retry-after": "5" });
  });
  finishAnswer(ctx, req, answer, filter, stream, r, goneAt);
}

/** Log the request and write the end of its answer; `goneAt`: tokens made when the client went away (-1: it stayed). */
function finishAnswer(ctx: CompletionContext, req: http.IncomingMessage, answer: Answer, filter: StopFilter, stream: TextStream, r: JobResult, goneAt: number): void {
  const gone = r.stop === "cancelled";
  ctx.log?.(
    `${req.method} ${req.url}: ${r.promptTokens} prompt tokens (${r.cachedTokens} cached), ${r.tokens.length} generated (${r.stop}); queued ${(r.queueMs / 1000).toFixed(2)} s, ` +
      `first token ${(r.firstTokenMs / 1000).toFixed(2)} s, total ${(r.totalMs / 1000).toFixed(2)} s${goneAt >= 0 ? `, client gone after ${goneAt} tokens` : ""}`,
  );
  if (gone) return;
  answer.emit(filter.push(stream.end()));
  answer.emit(filter.end());
  const finish = r.stop === "eos" || r.stop === "stopped" || filter.stopped ? "stop" : "length";
  answer.end(finish, usageOf({ promptTokens: r.promptTokens, cachedTokens: r.cachedTokens, tokens: r.tokens.length }));
}
