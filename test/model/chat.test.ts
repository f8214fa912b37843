/** --chat: the model's own chat template, rendered with @huggingface/jinja. */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { applyChatTemplate } from "../../src/model/chat.js";
import { LlameshError } from "../../src/core/errors.js";
import { loadTokenizer } from "../../src/model/tokenizer.js";
import { runCli } from "../helpers/cli.js";
import { LLAMA2_TOKENIZER, skipUnless, tempDir, tinyModel, tinyShape } from "../helpers/models.js";

/** The template published with meta-llama/Llama-2-7b-chat-hf. */
const LLAMA2_CHAT_TEMPLATE =
  "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}" +
  "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}" +
  "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}" +
  "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

function chatFolder(withTemplate: boolean): string {
  const dir = tempDir();
  for (const f of ["tokenizer.json", "tokenizer.model"]) fs.copyFileSync(path.join(LLAMA2_TOKENIZER, f), path.join(dir, f));
  const cfg = JSON.parse(fs.readFileSync(path.join(LLAMA2_TOKENIZER, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
  if (withTemplate) cfg["chat_template"] = LLAMA2_CHAT_TEMPLATE;
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(cfg));
  return dir;
}

const skip = skipUnless(LLAMA2_TOKENIZER);

test("the Llama 2 chat template renders [INST] and <<SYS>> and encodes with exactly one BOS", { skip }, async () => {
  const dir = chatFolder(true);
  const text = applyChatTemplate(dir, [
    { role: "system", content: "Be brief." },
    { role: "user", content: " Why is the sky blue? " },
  ]);
  // (strip() applies to the whole content, so the user text keeps its leading space after <</SYS>>, as in transformers)
  assert.equal(text, "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Why is the sky blue? [/INST]");
  for (const prefer of ["tokenizer.json", "tokenizer.model"] as const) {
    const tok = await loadTokenizer(dir, { prefer });
    const ids = tok.encode(text, false);
    assert.equal(ids[0], 1, `${prefer}: BOS first`);
    assert.equal(ids.filter((i) => i === 1).length, 1, `${prefer}: one BOS`);
    assert.deepEqual(ids.slice(1), tok.encode(text.slice(3), false), `${prefer}: the rest is the text after <s>`);
  }
});

test("a template error and a missing template are one-line errors naming tokenizer_config.json", { skip }, () => {
  const dir = chatFolder(true);
  assert.throws(() => applyChatTemplate(dir, [{ role: "assistant", content: "x" }]), (e: unknown) =>
    e instanceof LlameshError && /tokenizer_config\.json: chat_template failed to render \(Conversation roles must alternate/.test(e.message));
  assert.throws(() => applyChatTemplate(chatFolder(false), [{ role: "user", content: "x" }]), /tokenizer_config\.json: no "chat_template"/);
});

test("bin/client --chat feeds the formatted prompt to the model", { skip }, async () => {
  // a tiny random model with the real Llama 2 vocabulary and a chat template
  const dir = tinyModel(tinyShape({ vocabSize: 32000 }));
  for (const f of ["tokenizer.json", "tokenizer.model", "tokenizer_config.json"]) fs.copyFileSync(path.join(chatFolder(true), f), path.join(dir, f));
  const r = await runCli("client", [dir, "--chat", "--system", "Be brief.", "-i", "Hi", "-n", "2", "--temperature", "0"]);
  assert.equal(r.code, 0, r.stderr);
  const expected = (await loadTokenizer(dir)).encode(applyChatTemplate(dir, [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }]), false);
  assert.match(r.stderr, new RegExp(`Prompt: ${expected.length} tokens; generating up to 2`));
  const bad = await runCli("client", [dir, "--system", "x", "-i", "Hi", "-n", "2"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--system needs --chat/);
});
