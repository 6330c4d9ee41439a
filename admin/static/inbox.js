// Live refresh without a page reload: the inbox table and the open conversation's thread, every 5 seconds.
(function () {
  "use strict";
  var PERIOD = 5000;

  function getJSON(url, onData) {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (data) { if (data) { onData(data); } })
      .catch(function () { /* offline for a moment: the next tick tries again */ });
  }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function inboxRow(item, linkBase) {
    var tr = document.createElement("tr");
    tr.dataset.id = item.id;
    if (item.overdue) { tr.className = "overdue"; }
    var link = document.createElement("a");
    link.href = linkBase.replace(/0$/, String(item.id));
    link.textContent = item.debtor_name;
    cell(tr, "").appendChild(link);
    cell(tr, item.channel);
    cell(tr, item.reason || "—");
    cell(tr, item.waiting);
    cell(tr, item.overdue ? "overdue" : "on time");
    cell(tr, item.assigned_agent_name || "unassigned");
    return tr;
  }

  var seen = null;  // conversation ids already shown; null until the first poll

  function pollInbox() {
    getJSON("/admin/inbox.json", function (data) {
      var items = data.conversations;
      var ids = items.map(function (item) { return item.id; });
      var fresh = seen === null ? [] : ids.filter(function (id) { return seen.indexOf(id) < 0; });
      seen = ids;
      var badge = document.getElementById("inbox-count");
      if (badge) {
        var waiting = items.filter(function (item) { return !item.assigned_agent_id; }).length;
        badge.textContent = String(waiting);
        badge.hidden = waiting === 0;
      }
      if (fresh.length) {
        var notice = document.getElementById("new-handoffs");
        if (notice) { notice.textContent = fresh.length + " new handoff(s)"; notice.hidden = false; }
        document.title = "(" + fresh.length + " new) " + document.title.replace(/^\(\d+ new\) /, "");
      }
      var table = document.querySelector("table.inbox");
      var body = document.getElementById("inbox-rows");
      if (!table || !body) { return; }
      body.replaceChildren.apply(body, items.map(function (item) {
        return inboxRow(item, table.dataset.conversationUrl);
      }));
      if (!items.length) {
        var tr = document.createElement("tr");
        tr.className = "empty";
        cell(tr, "Nobody is waiting for a person.").colSpan = 6;
        body.appendChild(tr);
      }
    });
  }

  function messageItem(message) {
    var li = document.createElement("li");
    li.className = "msg " + message.direction;
    li.dataset.id = message.id;
    var body = document.createElement("p");
    body.className = "body";
    body.textContent = message.body;
    li.appendChild(body);
    message.media.forEach(function (url) {
      var link = document.createElement("a");
      link.className = "media";
      link.href = url;
      link.rel = "noopener noreferrer";
      link.target = "_blank";
      link.textContent = url;
      li.appendChild(link);
    });
    var when = document.createElement("span");
    when.className = "when";
    when.textContent = message.created_at.slice(0, 16).replace("T", " ") +
      (message.sent_by_agent_id ? " · agent " + message.sent_by_agent_id : "") +
      (message.direction === "out" ? " · " + message.delivery_status : "");
    li.appendChild(when);
    return li;
  }

  function pollThread(thread) {
    var url = thread.dataset.poll + "?after=" + encodeURIComponent(thread.dataset.after || "0");
    getJSON(url, function (data) {
      data.messages.forEach(function (message) {
        thread.appendChild(messageItem(message));
        thread.dataset.after = String(message.id);
      });
      if (data.messages.length) { thread.scrollTop = thread.scrollHeight; }
    });
  }

  var canned = document.getElementById("canned");
  var replyText = document.getElementById("reply-text");
  if (canned && replyText) {
    canned.addEventListener("change", function () {
      if (canned.value) { replyText.value = canned.value; replyText.focus(); }
    });
  }

  var thread = document.getElementById("thread");
  if (thread) { thread.scrollTop = thread.scrollHeight; }
  pollInbox();
  setInterval(function () {
    pollInbox();
    if (thread) { pollThread(thread); }
  }, PERIOD);
})();
