/**
 * Chat formatting: renders the model's own chat template (a Jinja template) with
 * @huggingface/jinja, as transformers' apply_chat_template(messages, add_generation_prompt,
 * tokenize=False) does, so a chat model sees its prompt in the format it was trained on.
 *
 * Where the template comes from:
 * - a Hugging Face folder: chat_template.jinja when present (transformers prefers it), else
 *   tokenizer_config.json "chat_template" (a string, or a list of {name, template} of which
 *   transformers uses "default");
 * - a .gguf file: metadata tokenizer.chat_template.
 *
 * What the template sees, as in transformers: messages, add_generation_prompt, tools and documents
 * (null), the special tokens (bos_token, eos_token, unk_token, pad_token, ... as text; a folder's
 * from tokenizer_config.json, a GGUF file's from its token ids), and any extra variables
 * (e.g. enable_thinking for Qwen3). raise_exception and strftime_now are built into the library.
 * The rendered text carries its own BOS when the template writes one (Llama 3 writes
 * <|begin_of_text|>): encode it with addBos false, as transformers encodes it without adding
 * special tokens.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Template } from "@huggingface/jinja";
import { readJsonFile } from "./config.js";
import { LlameshError } from "../core/errors.js";
import { chatTemplateFromGguf, readGgufMetadata, specialTokenText, type GgufMetadata } from "./gguf-tokenizer.js";

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

export interface ChatRenderOptions {
  /** End with the header of the assistant's turn (transformers' add_generation_prompt); default true. */
  addGenerationPrompt?: boolean;
  /** More template variables, as apply_chat_template's keyword arguments (e.g. { enable_thinking: false }). */
  variables?: Readonly<Record<string, unknown>>;
}

/** The special-token variables a template sees (names as in transformers' special_tokens_map). */
const SPECIAL_TOKEN_NAMES = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"] as const;

/** A model's chat template, compiled. */
export class ChatTemplate {
  private readonly compiled: Template;

  /**
   * @param template the Jinja source
   * @param file where it came from, for error messages (tokenizer_config.json, chat_template.jinja or the .gguf)
   * @param specialTokens bos_token, eos_token, ... as text (absent ones are left undefined, as transformers does)
   */
  constructor(
    readonly template: string,
    readonly file: string,
    readonly specialTokens: Readonly<Record<string, string>> = {},
  ) {
    try {
      this.compiled = new Template(template);
    } catch (e) {
      throw new LlameshError(`${file}: chat_template does not parse (${firstLine(e)})`);
    }
  }

  /** The prompt text for `messages`; with addGenerationPrompt (the default) it ends where the answer starts. */
  render(messages: readonly ChatMessage[], opts: ChatRenderOptions = {}): string {
    try {
      return this.compiled.render({
        ...this.specialTokens,
        ...opts.variables,
        messages: messages.map((m) => ({ ...m })),
        tools: null,
        documents: null,
        add_generation_prompt: opts.addGenerationPrompt ?? true,
      });
    } catch (e) {
      throw new LlameshError(`${this.file}: chat_template failed to render (${firstLine(e)})`);
    }
  }
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split("\n")[0]!;
}

function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  return undefined;
}

/** A .gguf path (by name, or an existing regular file): the same rule as the engine's. */
export function isGgufPath(p: string): boolean {
  return p.endsWith(".gguf") || (fs.existsSync(p) && fs.statSync(p).isFile());
}

/** The template text of a folder and the file it came from, without compiling it; null when there is none. */
export function folderChatTemplate(dir: string): { template: string; file: string; config: Record<string, unknown> | null } | null {
  const configFile = path.join(dir, "tokenizer_config.json");
  const config = fs.existsSync(configFile) ? readJsonFile(configFile) : null;
  const jinjaFile = path.join(dir, "chat_template.jinja");
  if (fs.existsSync(jinjaFile)) {
    let text: string;
    try {
      text = fs.readFileSync(jinjaFile, "utf8");
    } catch (e) {
      throw new LlameshError(`${jinjaFile}: cannot read (${firstLine(e)})`);
    }
    if (text.trim() !== "") return { template: text, file: jinjaFile, config };
  }
  if (config === null) return null;
  let template = config["chat_template"];
  if (Array.isArray(template)) {
    // the list form: [{name, template}]; transformers uses "default" (without tools)
    const named = template.filter((t): t is { name?: unknown; template?: unknown } => typeof t === "object" && t !== null);
    const chosen = named.find((t) => t.name === "default");
    if (chosen === undefined) {
      const names = named.map((t) => JSON.stringify(t.name)).join(", ");
      throw new LlameshError(`${configFile}: chat_template is a list of templates (${names}) without one named "default"`);
    }
    template = chosen.template;
  }
  if (template === undefined || template === null) return null;
  if (typeof template !== "string") throw new LlameshError(`${configFile}: chat_template is not a string (expected a Jinja template)`);
  if (template.trim() === "") return null;
  return { template, file: configFile, config };
}

/** The chat template of a GGUF file's metadata, or null. */
export function chatFromGguf(g: GgufMetadata): ChatTemplate | null {
  const template = chatTemplateFromGguf(g);
  if (template === null) return null;
  const special: Record<string, string> = {};
  const keys: Record<string, string> = {
    bos_token: "tokenizer.ggml.bos_token_id",
    eos_token: "tokenizer.ggml.eos_token_id",
    unk_token: "tokenizer.ggml.unknown_token_id",
    sep_token: "tokenizer.ggml.seperator_token_id",
    pad_token: "tokenizer.ggml.padding_token_id",
    mask_token: "tokenizer.ggml.mask_token_id",
  };
  for (const [name, key] of Object.entries(keys)) {
    const t = specialTokenText(g, key);
    if (t !== undefined) special[name] = t;
  }
  return new ChatTemplate(template, g.file, special);
}

const cache = new Map<string, { stamp: string; chat: ChatTemplate | null }>();

function stampOf(p: string, gguf: boolean): string {
  try {
    const files = gguf ? [p] : [path.join(p, "chat_template.jinja"), path.join(p, "tokenizer_config.json")];
    return files.map((f) => (fs.existsSync(f) ? `${fs.statSync(f).mtimeMs}:${fs.statSync(f).size}` : "-")).join("|");
  } catch {
    return String(Math.random()); // unreadable: never cached, the load below reports it
  }
}

/**
 * The chat template of a Hugging Face folder or a .gguf file, or null when the model has none.
 * Cached per path until the file changes (a GGUF's metadata is read once, not per request).
 */
export function loadChat(modelPath: string): ChatTemplate | null {
  const gguf = isGgufPath(modelPath);
  const key = path.resolve(modelPath);
  const stamp = stampOf(modelPath, gguf);
  const hit = cache.get(key);
  if (hit !== undefined && hit.stamp === stamp) return hit.chat;
  let chat: ChatTemplate | null;
  if (gguf) {
    chat = chatFromGguf(readGgufMetadata(modelPath));
  } else {
    if (!fs.existsSync(modelPath)) throw new LlameshError(`${modelPath}: no such directory (expected a model folder or a .gguf file)`);
    const found = folderChatTemplate(modelPath);
    if (found === null) {
      chat = null;
    } else {
      const special: Record<string, string> = {};
      for (const name of SPECIAL_TOKEN_NAMES) {
        const t = tokenText(found.config?.[name]);
        if (t !== undefined) special[name] = t;
      }
      chat = new ChatTemplate(found.template, found.file, special);
    }
  }
  cache.set(key, { stamp, chat });
  return chat;
}

/**
 * The prompt text for `messages` with the model's template (ending where the assistant's answer
 * starts unless addGenerationPrompt is false). A model without a template is a LlameshError.
 */
export function applyChatTemplate(modelPath: string, messages: readonly ChatMessage[], opts: ChatRenderOptions = {}): string {
  const chat = loadChat(modelPath);
  if (chat === null) {
    const where = isGgufPath(modelPath) ? `${modelPath}: no metadata tokenizer.chat_template` : `${path.join(modelPath, "tokenizer_config.json")}: no "chat_template"`;
    throw new LlameshError(`${where} (--chat needs a chat model's template)`);
  }
  return chat.render(messages, opts);
}
