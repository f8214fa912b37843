/**
 * Chat templates of Llama 3.1 and Qwen3, from a Hugging Face folder and from a GGUF file's
 * tokenizer.chat_template, rendered as transformers' apply_chat_template(messages,
 * add_generation_prompt=..., tokenize=False) renders them. The expected strings are written out
 * from the models' documented prompt formats (Meta's Llama 3.1 model card "prompt format"; Qwen3's
 * ChatML with <think> blocks); the expected ids are transformers' apply_chat_template(...,
 * tokenize=True) for the same messages.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { LlameshError } from "../../src/core/errors.js";
import { applyChatTemplate, loadChat, ChatTemplate, type ChatMessage } from "../../src/model/chat.js";
import { loadTokenizerForSync } from "../../src/model/open-tokenizer.js";
import { tokenizerSpecFromFolder, writeTokenizerGguf } from "../../src/synthetic/gguf-writer.js";
import { SHARED_MODELS, tempDir } from "../helpers/models.js";

const LLAMA3 = path.join(SHARED_MODELS, "tokenizers", "llama3.1");
const QWEN3 = path.join(SHARED_MODELS, "tokenizers", "qwen3");
const skipOf = (dir: string): string | false =>
  fs.existsSync(path.join(dir, "tokenizer_config.json")) ? false : `${dir}/tokenizer_config.json is absent (the shared test models are not on this machine)`;
const skipLlama = skipOf(LLAMA3);
const skipQwen = skipOf(QWEN3);

/**
 * The chat template published with meta-llama/Llama-3.1-8B-Instruct (tokenizer_config.json; the
 * same text as llama.cpp's models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja). The shared
 * llama3.1 folder carries the shorter Llama 3.0 template instead, tested further down.
 */
const LLAMA31_TEMPLATE = [
  "{{- bos_token }}",
  "{%- if custom_tools is defined %}",
  "    {%- set tools = custom_tools %}",
  "{%- endif %}",
  "{%- if not tools_in_user_message is defined %}",
  "    {%- set tools_in_user_message = true %}",
  "{%- endif %}",
  "{%- if not date_string is defined %}",
  "    {%- set date_string = \"26 Jul 2024\" %}",
  "{%- endif %}",
  "{%- if not tools is defined %}",
  "    {%- set tools = none %}",
  "{%- endif %}",
  "",
  "{#- This block extracts the system message, so we can slot it into the right place. #}",
  "{%- if messages[0]['role'] == 'system' %}",
  "    {%- set system_message = messages[0]['content']|trim %}",
  "    {%- set messages = messages[1:] %}",
  "{%- else %}",
  "    {%- set system_message = \"\" %}",
  "{%- endif %}",
  "",
  "{#- System message + builtin tools #}",
  "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}",
  "{%- if builtin_tools is defined or tools is not none %}",
  "    {{- \"Environment: ipython\\n\" }}",
  "{%- endif %}",
  "{%- if builtin_tools is defined %}",
  "    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \") + \"\\n\\n\"}}",
  "{%- endif %}",
  "{{- \"Cutting Knowledge Date: December 2023\\n\" }}",
  "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}",
  "{%- if tools is not none and not tools_in_user_message %}",
  "    {{- \"You have access to the following functions. To call a function, please respond with JSON for a function call.\" }}",
  "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}",
  "    {{- \"Do not use variables.\\n\\n\" }}",
  "    {%- for t in tools %}",
  "        {{- t | tojson(indent=4) }}",
  "        {{- \"\\n\\n\" }}",
  "    {%- endfor %}",
  "{%- endif %}",
  "{{- system_message }}",
  "{{- \"<|eot_id|>\" }}",
  "",
  "{#- Custom tools are passed in a user message with some extra guidance #}",
  "{%- if tools_in_user_message and not tools is none %}",
  "    {#- Extract the first user message so we can plug it in here #}",
  "    {%- if messages | length != 0 %}",
  "        {%- set first_user_message = messages[0]['content']|trim %}",
  "        {%- set messages = messages[1:] %}",
  "    {%- else %}",
  "        {{- raise_exception(\"Cannot put tools in the first user message when there's no first user message!\") }}",
  "{%- endif %}",
  "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}",
  "    {{- \"Given the following functions, please respond with a JSON for a function call \" }}",
  "    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}",
  "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}",
  "    {{- \"Do not use variables.\\n\\n\" }}",
  "    {%- for t in tools %}",
  "        {{- t | tojson(indent=4) }}",
  "        {{- \"\\n\\n\" }}",
  "    {%- endfor %}",
  "    {{- first_user_message + \"<|eot_id|>\"}}",
  "{%- endif %}",
  "",
  "{%- for message in messages %}",
  "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}",
  "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}",
  "    {%- elif 'tool_calls' in message %}",
  "        {%- if not message.tool_calls|length == 1 %}",
  "            {{- raise_exception(\"This model only supports single tool-calls at once!\") }}",
  "        {%- endif %}",
  "        {%- set tool_call = message.tool_calls[0].function %}",
  "        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}",
  "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}",
  "            {{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}",
  "            {%- for arg_name, arg_val in tool_call.arguments | items %}",
  "                {{- arg_name + '=\"' + arg_val + '\"' }}",
  "                {%- if not loop.last %}",
  "                    {{- \", \" }}",
  "                {%- endif %}",
  "                {%- endfor %}",
  "            {{- \")\" }}",
  "        {%- else  %}",
  "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}",
  "            {{- '{\"name\": \"' + tool_call.name + '\", ' }}",
  "            {{- '\"parameters\": ' }}",
  "            {{- tool_call.arguments | tojson }}",
  "            {{- \"}\" }}",
  "        {%- endif %}",
  "        {%- if builtin_tools is defined %}",
  "            {#- This means we're in ipython mode #}",
  "            {{- \"<|eom_id|>\" }}",
  "        {%- else %}",
  "            {{- \"<|eot_id|>\" }}",
  "        {%- endif %}",
  "    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}",
  "        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}",
  "        {%- if message.content is mapping or message.content is iterable %}",
  "            {{- message.content | tojson }}",
  "        {%- else %}",
  "            {{- message.content }}",
  "        {%- endif %}",
  "        {{- \"<|eot_id|>\" }}",
  "    {%- endif %}",
  "{%- endfor %}",
  "{%- if add_generation_prompt %}",
  "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}",
  "{%- endif %}",
  "",
].join("\n");

/** A folder with the shared tokenizer files; `template` replaces tokenizer_config.json's chat_template. */
function folderWith(src: string, template?: string | object, extra: Record<string, string> = {}): string {
  const dir = tempDir("llamesh-chat-");
  fs.copyFileSync(path.join(src, "tokenizer.json"), path.join(dir, "tokenizer.json"));
  const cfg = JSON.parse(fs.readFileSync(path.join(src, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
  if (template !== undefined) cfg["chat_template"] = template;
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(cfg));
  for (const [name, text] of Object.entries(extra)) fs.writeFileSync(path.join(dir, name), text);
  return dir;
}

/** The same model as a vocabulary-only GGUF (tokenizer.chat_template from the folder). */
function ggufOf(dir: string, vocabSize: number): string {
  const file = path.join(tempDir(), "model.gguf");
  writeTokenizerGguf(file, tokenizerSpecFromFolder(dir), vocabSize);
  return file;
}

const SYS_USER: ChatMessage[] = [
  { role: "system", content: "You are a helpful assistant." },
  { role: "user", content: "What is 2+2?" },
];
const MULTI: ChatMessage[] = [
  { role: "system", content: "  Be brief.  " },
  { role: "user", content: "Hi there" },
  { role: "assistant", content: "<think>\nThe user greets.\n</think>\n\nHello! How can I help?" },
  { role: "user", content: "Tell me a joke." },
];

// Llama 3.1: a system header always, with the knowledge cutoff and the template's default date
// ("Today Date: 26 Jul 2024" unless date_string is passed); contents trimmed; <|eot_id|> per turn.
const L31_SYSTEM = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
const L31_ASSISTANT = "<|start_header_id|>assistant<|end_header_id|>\n\n";
const l31Turn = (role: string, text: string): string => `<|start_header_id|>${role}<|end_header_id|>\n\n${text}<|eot_id|>`;

test("Llama 3.1's published template renders the documented prompt format, folder and GGUF", { skip: skipLlama }, () => {
  const dir = folderWith(LLAMA3, LLAMA31_TEMPLATE);
  const file = ggufOf(dir, 128256);
  for (const model of [dir, file]) {
    const chat = loadChat(model)!;
    assert.ok(chat instanceof ChatTemplate, model);
    assert.equal(
      chat.render(SYS_USER),
      L31_SYSTEM + "You are a helpful assistant.<|eot_id|>" + l31Turn("user", "What is 2+2?") + L31_ASSISTANT,
      model,
    );
    assert.equal(chat.render(SYS_USER, { addGenerationPrompt: false }), L31_SYSTEM + "You are a helpful assistant.<|eot_id|>" + l31Turn("user", "What is 2+2?"));
    // no system message: the system header still comes, empty after the dates
    assert.equal(chat.render([{ role: "user", content: "Hello!" }]), L31_SYSTEM + "<|eot_id|>" + l31Turn("user", "Hello!") + L31_ASSISTANT);
    // multi-turn: the assistant turn is kept verbatim (trimmed), the system message trimmed
    assert.equal(
      chat.render(MULTI),
      L31_SYSTEM + "Be brief.<|eot_id|>" + l31Turn("user", "Hi there") +
        l31Turn("assistant", "<think>\nThe user greets.\n</think>\n\nHello! How can I help?") + l31Turn("user", "Tell me a joke.") + L31_ASSISTANT,
    );
    // the date is a template variable, as with transformers' apply_chat_template(..., date_string=...)
    assert.match(chat.render(SYS_USER, { variables: { date_string: "01 Dec 2025" } }), /\nToday Date: 01 Dec 2025\n\n/);
  }
  // encoded without adding special tokens: the template's own <|begin_of_text|> is the one BOS
  // (transformers' apply_chat_template(tokenize=True) gives these ids)
  const want = [128000, 128006, 9125, 128007, 271, 38766, 1303, 33025, 2696, 25, 6790, 220, 2366, 18, 198, 15724, 2696, 25, 220, 1627, 10263, 220,
    2366, 19, 271, 3513, 10015, 13, 128009, 128006, 882, 128007, 271, 13347, 128009, 128006, 78191, 128007, 271];
  const messages: ChatMessage[] = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }];
  for (const model of [dir, file]) {
    const ids = loadTokenizerForSync(model).encode(applyChatTemplate(model, messages), false);
    assert.deepEqual(ids, want, model);
  }
});

test("the shared llama3.1 folder's own template (the Llama 3.0 format) renders as transformers does", { skip: skipLlama }, () => {
  const file = ggufOf(LLAMA3, 128256);
  for (const model of [LLAMA3, file]) {
    assert.equal(
      applyChatTemplate(model, SYS_USER),
      "<|begin_of_text|>" + l31Turn("system", "You are a helpful assistant.") + l31Turn("user", "What is 2+2?") + L31_ASSISTANT,
      model,
    );
    assert.equal(applyChatTemplate(model, [{ role: "user", content: "Hello!" }], { addGenerationPrompt: false }), "<|begin_of_text|>" + l31Turn("user", "Hello!"));
    assert.equal(
      applyChatTemplate(model, MULTI),
      "<|begin_of_text|>" + l31Turn("system", "Be brief.") + l31Turn("user", "Hi there") +
        l31Turn("assistant", "<think>\nThe user greets.\n</think>\n\nHello! How can I help?") + l31Turn("user", "Tell me a joke.") + L31_ASSISTANT,
    );
    const ids = loadTokenizerForSync(model).encode(applyChatTemplate(model, SYS_USER), false);
    // transformers' apply_chat_template(SYS_USER, add_generation_prompt=True, tokenize=True)
    assert.deepEqual(ids, [128000, 128006, 9125, 128007, 271, 2675, 527, 264, 11190, 18328, 13, 128009, 128006, 882, 128007, 271, 3923, 374, 220, 17, 10, 17, 30,
      128009, 128006, 78191, 128007, 271]);
    assert.equal(ids.filter((i) => i === 128000).length, 1, "one BOS");
  }
});

// Qwen3: ChatML. No BOS. Earlier assistant turns lose their <think> block; the generation prompt is
// "<|im_start|>assistant\n", plus an empty think block when enable_thinking=False.
const q = (role: string, text: string): string => `<|im_start|>${role}\n${text}<|im_end|>\n`;

test("Qwen3's template renders ChatML with its thinking rules, folder and GGUF", { skip: skipQwen }, () => {
  const file = ggufOf(QWEN3, 151936);
  for (const model of [QWEN3, file]) {
    const chat = loadChat(model)!;
    assert.equal(chat.render(SYS_USER), q("system", "You are a helpful assistant.") + q("user", "What is 2+2?") + "<|im_start|>assistant\n", model);
    assert.equal(chat.render(SYS_USER, { addGenerationPrompt: false }), q("system", "You are a helpful assistant.") + q("user", "What is 2+2?"));
    assert.equal(chat.render([{ role: "user", content: "Hello!" }]), q("user", "Hello!") + "<|im_start|>assistant\n");
    assert.equal(
      chat.render([{ role: "user", content: "Hello!" }], { variables: { enable_thinking: false } }),
      q("user", "Hello!") + "<|im_start|>assistant\n<think>\n\n</think>\n\n",
    );
    // the system message is not trimmed; the earlier assistant turn drops its reasoning
    assert.equal(
      chat.render(MULTI),
      q("system", "  Be brief.  ") + q("user", "Hi there") + q("assistant", "Hello! How can I help?") + q("user", "Tell me a joke.") + "<|im_start|>assistant\n",
    );
    // an assistant turn after the last user message keeps its reasoning
    assert.equal(
      chat.render([{ role: "user", content: "2+2?" }, { role: "assistant", content: "<think>\nSimple sum.\n</think>\n\n4" }], { addGenerationPrompt: false }),
      q("user", "2+2?") + q("assistant", "<think>\nSimple sum.\n</think>\n\n4"),
    );
    // transformers' apply_chat_template([{user: Hi}], add_generation_prompt=True, tokenize=True)
    const ids = loadTokenizerForSync(model).encode(chat.render([{ role: "user", content: "Hi" }]), false);
    assert.deepEqual(ids, [151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198], model);
  }
});

test("chat_template.jinja wins over tokenizer_config.json, as in transformers; the list form uses \"default\"", { skip: skipQwen }, () => {
  const jinja = folderWith(QWEN3, "from config {{ messages[0].content }}", { "chat_template.jinja": "from jinja {{ messages[0].content }}" });
  assert.equal(applyChatTemplate(jinja, [{ role: "user", content: "x" }]), "from jinja x");
  const list = folderWith(QWEN3, [{ name: "tool_use", template: "tools" }, { name: "default", template: "plain {{ eos_token }}" }]);
  assert.equal(applyChatTemplate(list, [{ role: "user", content: "x" }]), "plain <|im_end|>");
  // special tokens absent from tokenizer_config.json (Qwen's bos_token is null) stay undefined
  const vars = folderWith(QWEN3, "[{{ bos_token is defined }}][{{ pad_token }}][{{ add_generation_prompt }}][{{ tools is none }}]");
  assert.equal(applyChatTemplate(vars, [{ role: "user", content: "x" }]), "[false][<|endoftext|>][true][true]");
});

test("missing and broken chat templates are one-line errors naming the file", { skip: skipQwen }, () => {
  const check = (fn: () => unknown, ...fragments: string[]): void =>
    assert.throws(fn, (e: unknown) => {
      assert.ok(e instanceof LlameshError, String(e));
      for (const f of fragments) assert.ok(e.message.includes(f), `${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
      assert.ok(!e.message.includes("\n"), e.message);
      return true;
    });
  const none = folderWith(QWEN3, "");
  assert.equal(loadChat(none), null);
  check(() => applyChatTemplate(none, [{ role: "user", content: "x" }]), path.join(none, "tokenizer_config.json"), 'no "chat_template"');
  const list = folderWith(QWEN3, [{ name: "tool_use", template: "x" }]);
  check(() => loadChat(list), path.join(list, "tokenizer_config.json"), '"tool_use"', '"default"');
  const bad = folderWith(QWEN3, "{% if %}");
  check(() => loadChat(bad), path.join(bad, "tokenizer_config.json"), "does not parse");
  const raising = folderWith(QWEN3, "{{ raise_exception('roles must alternate') }}");
  check(() => applyChatTemplate(raising, [{ role: "user", content: "x" }]), "chat_template failed to render", "roles must alternate");
  // a GGUF file without tokenizer.chat_template
  const file = path.join(tempDir(), "plain.gguf");
  writeTokenizerGguf(file, { model: "gpt2", pre: "qwen2", pieces: ["a", "b", "ab"], types: [1, 1, 1], merges: ["a b"], bos: null, eos: null });
  assert.equal(loadChat(file), null);
  check(() => applyChatTemplate(file, [{ role: "user", content: "x" }]), file, "tokenizer.chat_template");
  check(() => loadChat(path.join(tempDir(), "absent-dir")), "absent-dir", "no such directory");
});
