/**
 * Chat formatting: renders the model's own chat template (tokenizer_config.json "chat_template",
 * a Jinja template) with @huggingface/jinja, as transformers' apply_chat_template does, so a chat
 * model (e.g. Llama-2-7b-chat-hf) sees its prompt in the format it was trained on.
 */
import * as path from "node:path";
import { Template } from "@huggingface/jinja";
import { readJsonFile } from "./config.js";
import { LlameshError } from "../core/errors.js";

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

function tokenText(v: unknown): string {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  return "";
}

/** The prompt text for `messages`, ending where the assistant's answer starts. */
export function applyChatTemplate(modelDir: string, messages: ChatMessage[]): string {
  const file = path.join(modelDir, "tokenizer_config.json");
  const cfg = readJsonFile(file);
  let template = cfg["chat_template"];
  if (Array.isArray(template)) {
    // the list form: [{name, template}], "default" is the chat one
    const named = template as { name?: unknown; template?: unknown }[];
    template = (named.find((t) => t.name === "default") ?? named[0])?.template;
  }
  if (typeof template !== "string" || template.trim() === "") {
    throw new LlameshError(`${file}: no "chat_template" (--chat needs a chat model's template)`);
  }
  let compiled: Template;
  try {
    compiled = new Template(template);
  } catch (e) {
    throw new LlameshError(`${file}: chat_template does not parse (${(e as Error).message})`);
  }
  try {
    return compiled.render({
      messages,
      bos_token: tokenText(cfg["bos_token"]),
      eos_token: tokenText(cfg["eos_token"]),
      add_generation_prompt: true, // (raise_exception is built into @huggingface/jinja)
    });
  } catch (e) {
    throw new LlameshError(`${file}: chat_template failed to render (${(e as Error).message})`);
  }
}
