import { test } from "node:test";
import assert from "node:assert/strict";
import { TextStream } from "../../src/engine/text-stream.js";
import { loadTokenizer } from "../../src/model/tokenizer.js";
import { LLAMA2_TOKENIZER, skipUnless } from "../helpers/models.js";

test("streaming prints whole characters when one spans several byte tokens", { skip: skipUnless(LLAMA2_TOKENIZER) }, async () => {
  const tok = await loadTokenizer(LLAMA2_TOKENIZER);
  const text = "naïve café 😀 Привет 🦙!";
  const ids = tok.encode(text, false);
  const stream = new TextStream(tok);
  const pieces = ids.map((id) => stream.push(id));
  // some tokens were bytes of an unfinished character and printed nothing yet
  assert.ok(pieces.some((p) => p === ""), "expected byte-fallback tokens that complete later");
  for (const p of pieces) assert.ok(!p.includes("\uFFFD"), `a piece printed a broken character: ${JSON.stringify(p)}`);
  assert.equal(pieces.join("") + stream.end(), " " + text);
});

test("a sequence cut inside a character ends with a replacement character, not silence", { skip: skipUnless(LLAMA2_TOKENIZER) }, async () => {
  const tok = await loadTokenizer(LLAMA2_TOKENIZER);
  const ids = tok.encode("🦙", false);
  const stream = new TextStream(tok);
  const out = ids.slice(0, -1).map((id) => stream.push(id)).join("") + stream.end();
  assert.ok(out.endsWith("\uFFFD"));
});
