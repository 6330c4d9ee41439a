// Web chat for the debtor portal: posts the debtor's text, shows the bot's replies. No dependencies.
(function () {
  "use strict";
  var form = document.getElementById("chat-form");
  var input = document.getElementById("chat-input");
  var thread = document.getElementById("thread");

  function say(who, text) {
    var item = document.createElement("li");
    item.className = who;
    item.textContent = text;
    thread.appendChild(item);
    item.scrollIntoView({ block: "end" });
  }

  function messageId() {
    return Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
  }

  // Messages an agent sends while the page is open arrive through polling.
  var lastSeen = 0;
  function poll() {
    fetch(form.dataset.messages + "?after=" + lastSeen)
      .then(function (response) { return response.ok ? response.json() : { messages: [] }; })
      .then(function (body) {
        body.messages.forEach(function (message) { lastSeen = message.id; say("bot", message.text); });
      })
      .catch(function () { /* offline for a moment: the next poll catches up */ });
  }
  setInterval(poll, 5000);

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) { return; }
    say("debtor", text);
    input.value = "";
    fetch(form.dataset.endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text: text, id: messageId() })
    })
      .then(function (response) { return response.json(); })
      .then(function (body) {
        if (body.replies) { body.replies.forEach(function (reply) { say("bot", reply.text); }); }
        else if (body.message) { say("error", body.message); }
      })
      .catch(function () { say("error", "…"); });
  });
})();
