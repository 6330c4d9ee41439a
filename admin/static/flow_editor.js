// Flow editor: validate the YAML as the manager types (debounced), and the simulator chat pane.
(function () {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json" },
      body: JSON.stringify(body),
    }).then((response) => response.json().then((data) => ({ ok: response.ok, data })));
  }

  function item(text, className) {
    const li = document.createElement("li");
    li.textContent = text;
    if (className) li.className = className;
    return li;
  }

  const source = document.getElementById("flow-source");
  const list = document.getElementById("flow-problems");
  if (source && list) {
    let timer = null;
    source.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        post(source.dataset.validateUrl, { name: source.dataset.flowName, source: source.value }).then(({ ok, data }) => {
          list.replaceChildren();
          if (!ok) return list.append(item(data.message || "validation failed", "bad"));
          if (!data.problems.length) return list.append(item("No problems.", "ok"));
          data.problems.forEach((p) => list.append(item(`line ${p.line || "?"}: ${p.message}` + (p.path ? ` (${p.path})` : ""))));
        });
      }, 400);
    });
  }

  const pane = document.getElementById("simulator");
  if (!pane) return;
  const thread = document.getElementById("sim-thread");
  const form = document.getElementById("sim-form");
  let state = null;

  function say(text, direction) {
    const li = item(text, "msg " + direction);
    thread.append(li);
    li.scrollIntoView({ block: "nearest" });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const message = form.elements.message.value;
    if (!message.trim()) return;
    say(message, "in");
    form.elements.message.value = "";
    post(pane.dataset.simulateUrl, { message, state, locale: form.elements.locale.value }).then(({ ok, data }) => {
      if (!ok) return say(data.message || "the simulator refused this message", "out error");
      state = data.state;
      data.replies.forEach((reply) => say(reply.text, "out"));
      if (!data.replies.length) say("(silent: mode " + data.state.mode + ")", "out meta");
      if (data.commands.length) say("→ " + data.commands.join(", ") + " (not applied)", "out meta");
    });
  });
  document.getElementById("sim-reset").addEventListener("click", () => {
    state = null;
    thread.replaceChildren();
  });
})();
