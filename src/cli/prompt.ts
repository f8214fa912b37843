/**
 * Where `bin/client` takes its prompt from: `-i TEXT`, `-i -` (stdin, to its end) or `-f FILE`
 * (llama.cpp's flag). As llama.cpp does for -f, one trailing newline is dropped from a file or
 * stdin: editors and `echo` end the text with one that the user did not mean as part of it.
 */
import * as fs from "node:fs";
import { LlameshError } from "../core/errors.js";

export type PromptSource = { from: "text"; text: string } | { from: "stdin" } | { from: "file"; file: string };

/** The source that -i and -f name; one of them is required. */
export function promptSource(prompt: string | undefined, file: string | undefined, command: string): PromptSource {
  if (prompt !== undefined && file !== undefined) throw new LlameshError(`${command}: give the prompt once: -i <prompt> or -f <file>, not both`);
  if (file !== undefined) return file === "-" ? { from: "stdin" } : { from: "file", file };
  if (prompt === undefined) throw new LlameshError(`${command}: missing -i <prompt> (the text to continue; -i - reads it from stdin, -f FILE from a file)`);
  return prompt === "-" ? { from: "stdin" } : { from: "text", text: prompt };
}

export interface PromptInput extends AsyncIterable<Buffer | string> {
  isTTY?: boolean;
}

export async function readPrompt(src: PromptSource, command: string, stdin: PromptInput, log: (line: string) => void): Promise<string> {
  switch (src.from) {
    case "text":
      return src.text;
    case "file": {
      let st: fs.Stats;
      try {
        st = fs.statSync(src.file);
      } catch {
        throw new LlameshError(`${command}: --file ${src.file}: file not found (expected a text file holding the prompt)`);
      }
      if (st.isDirectory()) throw new LlameshError(`${command}: --file ${src.file}: is a folder, expected a text file holding the prompt`);
      return dropFinalNewline(utf8(fs.readFileSync(src.file), `${command}: --file ${src.file}`));
    }
    case "stdin": {
      if (stdin.isTTY) log("Reading the prompt from stdin (end it with Ctrl-D)...");
      const chunks: Buffer[] = [];
      try {
        for await (const c of stdin) chunks.push(typeof c === "string" ? Buffer.from(c) : c);
      } catch (e) {
        throw new LlameshError(`${command}: -i -: cannot read stdin (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
      }
      return dropFinalNewline(utf8(Buffer.concat(chunks), `${command}: -i - (stdin)`));
    }
  }
}

function utf8(bytes: Buffer, what: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new LlameshError(`${what}: not valid UTF-8 text`);
  }
}

function dropFinalNewline(text: string): string {
  return text.replace(/\r?\n$/, "");
}
