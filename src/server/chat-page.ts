/**
 * The chat page at GET /: one static HTML file with its script inline, no build step and nothing
 * fetched from elsewhere. It keeps the conversation in the page, sends it to
 * /v1/chat/completions with "stream": true, and shows the answer as its events arrive; a system
 * prompt, temperature, top_p, max_tokens, an API key (kept in localStorage) and a stop button that
 * aborts the request (the server then frees the slot). It talks to whatever the server runs:
 * one machine or a cluster.
 */
export const CHAT_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>llamesh chat</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0; display: flex; height: 100vh; color: #222; }
  aside { width: 250px; padding: 12px; background: #f4f4f6; border-right: 1px solid #ddd; overflow: auto; }
  aside label { display: block; margin: 10px 0 2px; font-size: 13px; color: #555; }
  aside input, aside textarea { width: 100%; box-sizing: border-box; font: inherit; }
  main { flex: 1; display: flex; flex-direction: column; min-width: 0; }
  #log { flex: 1; overflow: auto; padding: 16px; }
  .msg { margin: 0 0 12px; white-space: pre-wrap; }
  .msg b { display: block; font-size: 12px; color: #777; }
  .user { color: #124; } .error { color: #a00; }
  form { display: flex; gap: 8px; padding: 12px; border-top: 1px solid #ddd; }
  #input { flex: 1; font: inherit; min-height: 2.5em; }
  #status { font-size: 12px; color: #777; padding: 0 12px 6px; }
</style>
</head>
<body>
<aside>
  <div><b>llamesh</b> <span id="model"></span></div>
  <label for="system">System prompt</label><textarea id="system" rows="4"></textarea>
  <label for="temperature">Temperature</label><input id="temperature" type="number" min="0" max="2" step="0.1" value="0.7">
  <label for="top_p">top_p</label><input id="top_p" type="number" min="0" max="1" step="0.05" value="0.95">
  <label for="max_tokens">max_tokens</label><input id="max_tokens" type="number" min="1" step="1" value="256">
  <label for="apikey">API key (if the server needs one)</label><input id="apikey" type="password" autocomplete="off">
  <p><button id="clear" type="button">New chat</button></p>
</aside>
<main>
  <div id="log"></div>
  <div id="status"></div>
  <form id="form"><textarea id="input" placeholder="Message (Enter sends, Shift+Enter: new line)"></textarea>
    <button id="send" type="submit">Send</button><button id="stop" type="button" disabled>Stop</button></form>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const history = [];
let controller = null;
$("apikey").value = localStorage.getItem("llamesh-api-key") || "";
$("apikey").onchange = () => localStorage.setItem("llamesh-api-key", $("apikey").value);
const headers = () => {
  const h = { "content-type": "application/json" };
  if ($("apikey").value) h.authorization = "Bearer " + $("apikey").value;
  return h;
};
fetch("v1/models", { headers: headers() }).then((r) => r.json()).then((j) => { $("model").textContent = j.data ? j.data[0].id : ""; }).catch(() => {});
function add(role, text) {
  const d = document.createElement("div");
  d.className = "msg " + role;
  const b = document.createElement("b");
  b.textContent = role;
  const t = document.createElement("span");
  t.className = "text";
  t.textContent = text;
  d.append(b, t);
  $("log").append(d);
  return t;
}
async function send(text) {
  history.push({ role: "user", content: text });
  add("user", text);
  const out = add("assistant", "");
  const messages = ($("system").value.trim() ? [{ role: "system", content: $("system").value }] : []).concat(history);
  const body = { messages, stream: true, stream_options: { include_usage: true },
    temperature: Number($("temperature").value), top_p: Number($("top_p").value), max_tokens: Number($("max_tokens").value) };
  controller = new AbortController();
  $("stop").disabled = false; $("send").disabled = true;
  $("status").textContent = "waiting...";
  let answer = "";
  try {
    const r = await fetch("v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal });
    if (!r.ok) {
      const j = await r.json().catch(() => ({}));
      throw new Error((j.error && j.error.message) || r.status + " " + r.statusText);
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\\n\\n")) >= 0) {
        const ev = buf.slice(0, i); buf = buf.slice(i + 2);
        if (!ev.startsWith("data: ") || ev === "data: [DONE]") continue;
        const j = JSON.parse(ev.slice(6));
        if (j.error) throw new Error(j.error.message);
        const c = j.choices && j.choices[0];
        if (c && c.delta && c.delta.content) { answer += c.delta.content; out.textContent = answer; $("status").textContent = "answering..."; }
        if (j.usage) $("status").textContent = j.usage.completion_tokens + " tokens (" + j.usage.prompt_tokens + " prompt, " + j.usage.prompt_tokens_details.cached_tokens + " cached)";
      }
    }
  } catch (e) {
    if (e.name === "AbortError") $("status").textContent = "stopped";
    else { out.parentNode.classList.add("error"); out.textContent = answer + (answer ? "\\n" : "") + "error: " + e.message; $("status").textContent = ""; }
  } finally {
    history.push({ role: "assistant", content: answer });
    controller = null;
    $("stop").disabled = true; $("send").disabled = false;
    out.parentNode.dataset.done = "1";
  }
}
$("form").onsubmit = (e) => {
  e.preventDefault();
  const text = $("input").value;
  if (!text.trim() || controller) return;
  $("input").value = "";
  send(text);
};
$("input").onkeydown = (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); } };
$("stop").onclick = () => controller && controller.abort();
$("clear").onclick = () => { history.length = 0; $("log").textContent = ""; $("status").textContent = ""; };
</script>
</body>
</html>
`;
