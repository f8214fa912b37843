/**
 * The chat page in headless Chromium (Debian's package; scripts/install-chromium.sh installs it,
 * the test skips saying so without it), against stories260K with a chat template: the page
 * loads, a message typed and sent is answered with the generation loop's greedy text, which
 * appears piece by piece while it streams; the stop button ends an answer and frees the slot.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel } from "../../src/engine/open.js";
import { applyChatTemplate } from "../../src/model/chat.js";
import { STORIES, skipUnless } from "../helpers/models.js";
import { Browser, findChromium } from "./cdp.js";
import { chatDir, reference, serve, until } from "./helpers.js";

const chromium = findChromium();
const skip = skipUnless(STORIES) || (chromium === null ? "chromium is not installed (scripts/install-chromium.sh installs Debian's chromium package)" : false);
const backend = await createBackend({ threads: 1 });
after(() => backend.close());

/** The last assistant message's text and whether its answer has ended. */
const lastAnswer = "(() => { const m = [...document.querySelectorAll('.msg.assistant')].at(-1); return m ? { text: m.querySelector('.text').textContent, done: m.dataset.done === '1' } : null; })()";

test("the chat page sends a message and shows the streamed answer; stop ends an answer", { skip }, async () => {
  const dir = chatDir();
  const model = await openModel(dir, { backend, maxSeqLen: 512, slots: 2 });
  const ref = await openModel(dir, { backend, maxSeqLen: 512 });
  const s = await serve(model);
  const browser = await Browser.launch(chromium!);
  try {
    await browser.open(`${s.base}/`);
    assert.equal(await browser.eval("document.title"), "llamesh chat");
    await browser.eval(`document.getElementById('temperature').value = '0'; document.getElementById('max_tokens').value = '200'`);
    await browser.eval(`document.getElementById('input').value = 'Once upon a time'; document.getElementById('form').requestSubmit()`);
    const seen = new Set<number>();
    type Answer = { text: string; done: boolean } | null;
    let answer = null as Answer;
    for (let i = 0; i < 1000; i++) {
      answer = (await browser.eval(lastAnswer)) as Answer;
      if (answer) seen.add(answer.text.length);
      if (answer?.done) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    assert.ok(answer !== null && answer.done, "the answer ended");
    const want = await reference(ref, ref.tokenizer.encode(applyChatTemplate(dir, [{ role: "user", content: "Once upon a time" }]), false), 200);
    assert.equal(answer.text, want.text);
    assert.ok(seen.size >= 3, `the answer grew while it streamed (lengths seen: ${[...seen].join(", ")})`);
    assert.match(String(await browser.eval("document.getElementById('status').textContent")), /^\d+ tokens \(\d+ prompt, \d+ cached\)$/);

    // stop: a long answer cut short, the slot freed
    s.logs.length = 0;
    await browser.eval(`document.getElementById('max_tokens').value = '400'; document.getElementById('input').value = 'The little dog'; document.getElementById('form').requestSubmit()`);
    for (let i = 0; i < 500 && !((await browser.eval(lastAnswer)) as { text: string }).text; i++) await new Promise((r) => setTimeout(r, 2));
    await browser.eval("document.getElementById('stop').click()");
    await until(() => s.logs.some((l) => /cancelled/.test(l)), "the stopped request's log line");
    assert.equal(await browser.eval("document.getElementById('status').textContent"), "stopped");
    const h = (await (await fetch(`${s.base}/health`)).json()) as { slots_busy: number };
    assert.equal(h.slots_busy, 0);
  } finally {
    await browser.close();
    await s.close();
  }
});
