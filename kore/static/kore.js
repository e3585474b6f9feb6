// Kore's course page: its buttons, through Kore's JSON API (the routes scripts use too).
//
// Plain JavaScript, no build step. The server renders the page with what it can show
// without a script; this file enables the buttons, follows syncs with a progress bar and
// pages through their results. Every request carries the page's XSRF token (header
// X-XSRFToken): Kore's hub login (jupyterhub.services.auth.HubOAuth) ignores its login
// cookie on fetch() requests without it. Data from the server is only ever put into the
// page as text (textContent), never as HTML.
(function () {
  "use strict";

  var root = document.getElementById("kore-course");
  if (!root) return;
  document.documentElement.classList.add("kore-js");

  var XSRF = (document.querySelector('meta[name="kore-xsrf"]') || {}).content || "";
  var API = root.dataset.api; // <prefix>api/courses/<course id>/
  var PREFIX = root.dataset.prefix;
  var COURSE_TITLE = root.dataset.courseTitle;
  var PAGE_SIZE = 100;
  var POLL_MS = 1000;
  var POLL_RETRY_MS = 5000;

  // --- the API -------------------------------------------------------------------------

  function ApiError(status, message, data) {
    this.status = status;
    this.message = message;
    this.data = data || null;
  }

  function api(method, url, body) {
    var headers = { "X-XSRFToken": XSRF, Accept: "application/json" };
    var init = { method: method, headers: headers, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(
      function (resp) {
        return resp.text().then(function (text) {
          var data = null;
          try {
            data = text ? JSON.parse(text) : null;
          } catch (e) {
            data = null;
          }
          if (resp.ok) return data;
          var message = (data && data.message) || resp.status + " " + resp.statusText;
          if (resp.status === 403) showSessionProblem(message);
          throw new ApiError(resp.status, message, data);
        });
      },
      function () {
        throw new ApiError(
          0,
          "Kore did not answer. Check your network connection, then try again."
        );
      }
    );
  }

  var session = document.getElementById("kore-session");
  function showSessionProblem(message) {
    session.querySelector(".kore-session-message").textContent = message;
    session.hidden = false;
  }

  // --- small helpers -------------------------------------------------------------------

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      node.setAttribute(name, attrs[name]);
    });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function showAlert(box, message, kind) {
    if (!message) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.className = "kore-alert alert mt-3 alert-" + (kind || "danger");
    box.textContent = message;
    box.hidden = false;
  }

  function errorText(err) {
    if (err instanceof ApiError) return err.message;
    return "Something went wrong in this page: " + err + ". Reload the page.";
  }

  // Run `work` with `buttons` disabled; a second click while it runs does nothing.
  function whileBusy(buttons, work) {
    if (buttons.some(function (b) { return b.dataset.busy === "1"; })) return Promise.resolve();
    buttons.forEach(function (b) {
      b.dataset.busy = "1";
      b.disabled = true;
      b.setAttribute("aria-busy", "true");
    });
    return Promise.resolve()
      .then(work)
      .finally(function () {
        buttons.forEach(function (b) {
          delete b.dataset.busy;
          // A button stays off if the page says so meanwhile (a sync is running).
          b.disabled = b.dataset.keepDisabled === "1";
          b.removeAttribute("aria-busy");
        });
      });
  }

  function duration(seconds) {
    if (seconds < 5) return "a few seconds";
    if (seconds < 60) return Math.round(seconds) + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + Math.round(seconds % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function when(iso) {
    if (!iso) return "";
    var date = new Date(iso);
    return isNaN(date) ? iso : date.toLocaleString();
  }

  function bytes(n) {
    if (n === undefined || n === null) return "";
    var units = ["B", "KB", "MB", "GB", "TB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }

  // The time left, from the rate seen over the last half minute of polls.
  function Estimator() {
    this.samples = [];
  }
  Estimator.prototype.add = function (done, total) {
    var now = Date.now();
    this.samples.push([now, done]);
    while (this.samples.length > 2 && now - this.samples[0][0] > 30000) this.samples.shift();
    var first = this.samples[0];
    var seconds = (now - first[0]) / 1000;
    if (seconds < 1 || done <= first[1] || total <= done) return null;
    return (total - done) / ((done - first[1]) / seconds);
  };

  // --- a grade or roster sync panel ------------------------------------------------------

  var STATUS_ORDER = [
    "failed", "unknown", "sent", "added", "updated", "deactivated", "unchanged", "skipped",
    "not_gradable"
  ];
  // Statuses whose API name is not what a person should read.
  var STATUS_LABELS = {
    not_gradable: "not gradable in the LMS",
    unknown: "unknown (no answer from the LMS)"
  };

  function SyncPanel(section) {
    var self = this;
    this.section = section;
    this.kind = section.dataset.kind;
    this.noun = section.dataset.noun;
    this.runsUrl = section.dataset.runsUrl;
    this.form = section.querySelector(".kore-sync-form");
    this.start = section.querySelector(".kore-start");
    this.retry = section.querySelector(".kore-retry");
    this.alert = section.querySelector(".kore-alert");
    this.runBox = section.querySelector(".kore-run");
    this.heading = section.querySelector(".kore-run-heading");
    this.bar = section.querySelector(".kore-progress");
    this.barFill = this.bar.querySelector(".progress-bar");
    this.progressText = section.querySelector(".kore-progress-text");
    this.live = section.querySelector(".kore-live");
    this.runMessage = section.querySelector(".kore-run-message");
    this.warnings = section.querySelector(".kore-warnings");
    this.results = section.querySelector(".kore-results");
    this.failedOnly = section.querySelector(".kore-failed-only");
    this.prev = section.querySelector(".kore-prev");
    this.next = section.querySelector(".kore-next");
    this.pageStatus = section.querySelector(".kore-page-status");
    this.table = section.querySelector(".kore-results-table");
    this.tbody = this.table.querySelector("tbody");
    this.history = section.querySelector(".kore-history");
    this.run = null;
    this.runUrl = null;
    this.offset = 0;
    this.pollTimer = null;
    this.loadSeq = 0;
    this.lastQuarter = -1;

    this.form.addEventListener("submit", function (event) {
      event.preventDefault();
      self.begin(self.formOptions(), self.start);
    });
    this.retry.addEventListener("click", function () {
      self.begin(self.retryOptions(), self.retry);
    });
    this.failedOnly.addEventListener("change", function () {
      self.offset = 0;
      self.loadResults();
    });
    this.prev.addEventListener("click", function () {
      self.offset = Math.max(0, self.offset - PAGE_SIZE);
      self.loadResults();
    });
    this.next.addEventListener("click", function () {
      self.offset += PAGE_SIZE;
      self.loadResults();
    });
    this.start.disabled = false;
    this.loadLatest();
  }

  SyncPanel.prototype.formOptions = function () {
    if (this.kind !== "grades") return {};
    var missing = this.form.querySelector('input[name="missing"]:checked');
    return {
      missing: missing ? missing.value : "zero",
      resend: this.form.querySelector('input[name="resend"]').checked,
    };
  };

  // A retry is a new sync with the same choice for missing work: the registry knows
  // what the LMS has, so only what was not delivered (or changed since) is sent.
  SyncPanel.prototype.retryOptions = function () {
    if (this.kind !== "grades") return {};
    var options = (this.run && this.run.options) || {};
    return { missing: options.missing || "zero" };
  };

  SyncPanel.prototype.loadLatest = function () {
    var self = this;
    return api("GET", this.runsUrl + "?limit=1")
      .then(
        function (data) {
          var latest = data && data.runs && data.runs[0];
          if (latest) return self.follow(latest.url, false);
        },
        function (err) {
          showAlert(self.alert, errorText(err));
        }
      )
      .finally(function () {
        self.section.dataset.loaded = "1";
      });
  };

  SyncPanel.prototype.begin = function (options, button) {
    var self = this;
    if (this.run && this.run.state === "running") return Promise.resolve();
    return whileBusy([this.start, this.retry], function () {
      showAlert(self.alert, "");
      return api("POST", self.runsUrl, options).then(
        function (started) {
          self.say("The " + self.noun + " started.");
          return self.follow(started.url, true);
        },
        function (err) {
          if (err.status === 409 && err.data && err.data.url) {
            showAlert(
              self.alert,
              "A " + self.noun + " of this course is already running, so no second one was " +
                "started. Its progress is shown below; start another when it has ended.",
              "info"
            );
            return self.follow(err.data.url, true);
          }
          showAlert(self.alert, errorText(err));
        }
      );
    });
  };

  SyncPanel.prototype.follow = function (url, fresh) {
    this.runUrl = url;
    this.estimator = new Estimator();
    this.offset = 0;
    this.lastQuarter = -1;
    this.failedOnly.checked = false;
    this.results.hidden = true;
    this.tbody.textContent = "";
    this.fresh = fresh;
    return this.poll();
  };

  SyncPanel.prototype.poll = function () {
    var self = this;
    var url = this.runUrl;
    clearTimeout(this.pollTimer);
    return api("GET", url + "?limit=1").then(
      function (run) {
        if (url !== self.runUrl) return;
        self.show(run);
        if (run.state === "running") {
          self.pollTimer = setTimeout(function () { self.poll(); }, POLL_MS);
        } else {
          self.ended(run);
        }
      },
      function (err) {
        if (url !== self.runUrl) return;
        showAlert(self.alert, errorText(err));
        // Kore restarting or the network gone: keep trying; a refused login is final.
        if (err.status !== 403 && err.status !== 404) {
          self.pollTimer = setTimeout(function () { self.poll(); }, POLL_RETRY_MS);
        }
      }
    );
  };

  SyncPanel.prototype.show = function (run) {
    this.run = run;
    this.runBox.hidden = false;
    // Which run the panel shows, and its state (for scripts and tests).
    this.section.dataset.runId = run.run_id;
    this.section.dataset.state = run.state;
    var running = run.state === "running";
    var started = "started by " + run.started_by + ", " + when(run.started_at);
    var titles = {
      running: "The " + this.noun + " is running",
      finished: "The " + this.noun + " finished",
      failed: run.message ? "The " + this.noun + " stopped" : "The " + this.noun + " finished with failures",
      interrupted: "The " + this.noun + " was interrupted",
    };
    this.heading.textContent = (titles[run.state] || run.state) + " (" + started + ")";

    var total = run.total || 0;
    var done = run.done || 0;
    var percent = total ? Math.min(100, Math.round((100 * done) / total)) : running ? 0 : 100;
    this.bar.setAttribute("aria-valuenow", String(percent));
    this.bar.setAttribute("aria-valuetext", done + " of " + total + " done, " + (run.failed || 0) + " failed");
    this.barFill.style.width = percent + "%";
    this.barFill.textContent = total ? percent + "%" : "";
    this.barFill.className = "progress-bar" +
      (running ? " progress-bar-striped progress-bar-animated" : "") +
      (!running && (run.failed || run.state === "failed") ? " bg-danger" : "") +
      (run.state === "finished" ? " bg-success" : "");

    var text = total
      ? done + " of " + total + " done"
      : running ? "Preparing…" : run.message ? "Nothing was done" : "Nothing to do";
    text += ", " + (run.failed || 0) + " failed";
    if (running && total) {
      var left = this.estimator.add(done, total);
      text += left === null ? ", estimating the time left…" : ", about " + duration(left) + " left";
    }
    this.progressText.textContent = text + ".";
    if (running && total) {
      var quarter = Math.floor(percent / 25);
      if (quarter > this.lastQuarter && quarter < 4) {
        this.lastQuarter = quarter;
        if (quarter > 0) this.say(this.noun + ": " + percent + "% done.");
      }
    }

    this.runMessage.hidden = !run.message;
    this.runMessage.textContent = run.message || "";
    this.warnings.textContent = "";
    (run.warnings || []).forEach(function (w) {
      this.warnings.appendChild(el("li", {}, w));
    }, this);
    this.warnings.hidden = !(run.warnings || []).length;
    this.retry.hidden = running || !(run.failed || run.state === "failed" || run.state === "interrupted");
    this.start.disabled = running;
    this.start.dataset.keepDisabled = running ? "1" : "";
  };

  SyncPanel.prototype.ended = function (run) {
    var counts = run.counts || {};
    var parts = Object.keys(counts).map(function (s) { return counts[s] + " " + s; });
    if (this.fresh) {
      this.say(
        "The " + this.noun + " ended: " + (parts.join(", ") || "nothing to do") +
          (run.message ? ". " + run.message : ".")
      );
      this.refreshHistory();
    }
    this.start.dataset.keepDisabled = "";
    this.start.disabled = false;
    this.loadResults();
  };

  SyncPanel.prototype.say = function (text) {
    this.live.textContent = text;
  };

  // Results in pages of PAGE_SIZE, failures first: the run's counts per status say how
  // many each status has, so a page is one or two slices of ?status=...&offset=&limit=.
  SyncPanel.prototype.segments = function () {
    var counts = (this.run && this.run.counts) || {};
    if (this.failedOnly.checked) {
      // "unknown" counts with the failures (not confirmed at the LMS).
      return [
        { status: "failed", count: counts.failed || 0 },
        { status: "unknown", count: counts.unknown || 0 }
      ].filter(function (seg) { return seg.count > 0; });
    }
    var statuses = Object.keys(counts).sort(function (a, b) {
      var ia = STATUS_ORDER.indexOf(a), ib = STATUS_ORDER.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || (a < b ? -1 : 1);
    });
    return statuses
      .map(function (s) { return { status: s, count: counts[s] }; })
      .filter(function (seg) { return seg.count > 0; });
  };

  SyncPanel.prototype.loadResults = function () {
    var self = this;
    var seq = ++this.loadSeq;
    var segments = this.segments();
    var total = segments.reduce(function (sum, seg) { return sum + seg.count; }, 0);
    if (this.offset >= total) this.offset = Math.max(0, Math.floor((total - 1) / PAGE_SIZE) * PAGE_SIZE);
    var want = [];
    var start = this.offset, need = PAGE_SIZE, base = 0;
    segments.forEach(function (seg) {
      var end = base + seg.count;
      if (need > 0 && start < end) {
        var offset = start - base;
        var limit = Math.min(need, seg.count - offset);
        want.push(self.runUrl + "?status=" + encodeURIComponent(seg.status) +
          "&offset=" + offset + "&limit=" + limit);
        need -= limit;
        start += limit;
      }
      base = end;
    });
    this.prev.disabled = true;
    this.next.disabled = true;
    return Promise.all(want.map(function (url) { return api("GET", url); })).then(
      function (pages) {
        if (seq !== self.loadSeq) return; // a newer page was asked for meanwhile
        var rows = [];
        pages.forEach(function (p) { rows = rows.concat(p.results || []); });
        self.render(rows, total);
      },
      function (err) {
        if (seq === self.loadSeq) showAlert(self.alert, errorText(err));
      }
    );
  };

  SyncPanel.prototype.render = function (rows, total) {
    var grades = this.kind === "grades";
    var fragment = document.createDocumentFragment();
    rows.forEach(function (r) {
      var failed = r.status === "failed" || r.status === "unknown";
      var tr = el("tr", failed ? { class: "kore-failed" } : {});
      var who = el("th", { scope: "row" }, r.name || r.username);
      if (r.name) who.appendChild(el("span", { class: "kore-username" }, " " + r.username));
      tr.appendChild(who);
      tr.appendChild(el("td", {}, r.lms_user_id));
      tr.appendChild(el("td", {}, r.label || r.item));
      if (grades) {
        var score = "";
        if (r.score_given !== undefined && r.score_given !== null) {
          score = r.score_given + (r.score_maximum !== null && r.score_maximum !== undefined ? " / " + r.score_maximum : "");
        }
        tr.appendChild(el("td", {}, score));
      }
      tr.appendChild(el("td", { class: "kore-status-" + r.status }, STATUS_LABELS[r.status] || r.status));
      tr.appendChild(el("td", {}, r.message));
      fragment.appendChild(tr);
    });
    this.tbody.textContent = "";
    this.tbody.appendChild(fragment);
    this.table.hidden = !rows.length;
    this.results.hidden = false;
    this.section.dataset.results = this.run ? this.run.run_id : "";
    var first = total ? this.offset + 1 : 0;
    var last = this.offset + rows.length;
    this.pageStatus.textContent = total
      ? "Results " + first + "–" + last + " of " + total
      : this.failedOnly.checked ? "Nothing failed." : "No results.";
    this.prev.disabled = this.offset === 0;
    this.next.disabled = last >= total;
  };

  SyncPanel.prototype.refreshHistory = function () {
    var self = this;
    api("GET", this.runsUrl + "?limit=5").then(function (data) {
      var runs = (data && data.runs) || [];
      var table = self.history.querySelector("table");
      if (!table) {
        var empty = self.history.querySelector("p");
        if (empty) empty.remove();
        table = el("table", { class: "table table-sm mt-2" });
        var head = el("tr");
        ["Started", "By", "State", "Done", "Failed", "Details"].forEach(function (h) {
          head.appendChild(el("th", { scope: "col" }, h));
        });
        table.appendChild(el("thead")).appendChild(head);
        table.appendChild(el("tbody"));
        self.history.appendChild(table);
      }
      var body = table.querySelector("tbody");
      body.textContent = "";
      runs.forEach(function (run) {
        var tr = el("tr", run.failed || run.state === "failed" ? { class: "table-danger" } : {});
        tr.appendChild(el("td", {}, when(run.started_at)));
        tr.appendChild(el("td", {}, run.started_by));
        tr.appendChild(el("td", {}, run.state + (run.message ? ": " + run.message : "")));
        tr.appendChild(el("td", {}, run.done + " of " + run.total));
        tr.appendChild(el("td", {}, run.failed));
        var cell = el("td");
        cell.appendChild(el("a", { href: run.url }, "results (JSON)"));
        tr.appendChild(cell);
        body.appendChild(tr);
      });
    }, function () {});
  };

  Array.prototype.forEach.call(document.querySelectorAll(".kore-sync"), function (section) {
    new SyncPanel(section);
  });

  // --- the course settings panel ---------------------------------------------------------
  //
  // The server fills the form with the course's settings (it shows them without this
  // script). Save sends only what changed to the settings API (PATCH <API>settings), which
  // checks and applies it; its refusal (400) is shown next to the setting it names.

  function SettingsPanel(section) {
    var self = this;
    this.section = section;
    this.url = section.dataset.settingsUrl;
    this.form = section.querySelector(".kore-settings-form");
    this.fieldset = section.querySelector(".kore-settings-fields");
    this.save = section.querySelector(".kore-settings-save");
    this.status = section.querySelector(".kore-settings-status");
    this.alert = section.querySelector(".kore-alert");
    this.inputs = Array.prototype.slice.call(this.form.querySelectorAll("input[data-kind]"));
    this.inputs.forEach(function (input) {
      input.addEventListener("input", function () {
        self.clearError(input);
        self.status.textContent = "";
      });
    });
    this.form.addEventListener("submit", function (event) {
      event.preventDefault();
      self.submit();
    });
    this.save.disabled = false;
  }

  // A control's value as the API takes it. A number field sends what was typed when it is
  // no whole number, so that the API's message says what is wrong with it.
  SettingsPanel.prototype.value = function (input) {
    if (input.dataset.kind === "checkbox") return input.checked;
    var text = input.value.trim();
    if (/^-?\d+$/.test(text)) return parseInt(text, 10);
    return text !== "" && isFinite(Number(text)) ? Number(text) : text;
  };

  SettingsPanel.prototype.saved = function (input) {
    var raw = input.dataset.saved;
    if (input.dataset.kind === "checkbox") return raw === "true";
    return /^-?\d+$/.test(raw) ? parseInt(raw, 10) : raw;
  };

  SettingsPanel.prototype.changes = function () {
    var changes = {};
    this.inputs.forEach(function (input) {
      var value = this.value(input);
      if (value !== this.saved(input)) changes[input.name] = value;
    }, this);
    return changes;
  };

  SettingsPanel.prototype.errorBox = function (input) {
    return this.section.querySelector("#" + input.id + "-error");
  };

  SettingsPanel.prototype.clearError = function (input) {
    var box = this.errorBox(input);
    box.hidden = true;
    box.textContent = "";
    input.removeAttribute("aria-invalid");
    input.classList.remove("is-invalid");
    input.setAttribute("aria-describedby", input.id + "-help");
  };

  // The field a refusal is about: the API's messages quote the setting ("name" from the
  // check against the OpenAPI document, 'name' from the course settings' own check).
  SettingsPanel.prototype.fieldOf = function (message, changes) {
    var names = Object.keys(changes);
    for (var i = 0; i < names.length; i++) {
      if (message.indexOf('"' + names[i] + '"') >= 0 || message.indexOf("'" + names[i] + "'") >= 0) {
        return this.form.querySelector('input[name="' + names[i] + '"]');
      }
    }
    return null;
  };

  SettingsPanel.prototype.showSaved = function (settings) {
    this.inputs.forEach(function (input) {
      if (!(input.name in settings)) return;
      var value = settings[input.name];
      if (input.dataset.kind === "checkbox") {
        input.checked = value === true;
        input.dataset.saved = value === true ? "true" : "false";
      } else {
        input.value = String(value);
        input.dataset.saved = String(value);
      }
    });
  };

  SettingsPanel.prototype.submit = function () {
    var self = this;
    if (this.save.dataset.busy === "1") return Promise.resolve();
    this.inputs.forEach(function (input) { self.clearError(input); });
    showAlert(this.alert, "");
    var changes = this.changes();
    if (!Object.keys(changes).length) {
      this.status.className = "kore-settings-status ms-2";
      this.status.textContent = "Nothing to save: no setting changed.";
      return Promise.resolve();
    }
    this.status.className = "kore-settings-status ms-2";
    this.status.textContent = "Saving…";
    this.fieldset.disabled = true;
    this.section.setAttribute("aria-busy", "true");
    return whileBusy([this.save], function () {
      return api("PATCH", self.url, changes).then(
        function (data) {
          self.showSaved((data && data.settings) || {});
          self.status.className = "kore-settings-status ms-2 text-success";
          self.status.textContent = "Saved.";
        },
        function (err) {
          var message = errorText(err);
          var field = err.status === 400 ? self.fieldOf(message, changes) : null;
          self.status.className = "kore-settings-status ms-2 text-danger";
          self.status.textContent = "Not saved: " + message;
          if (field) {
            var box = self.errorBox(field);
            box.textContent = message;
            box.hidden = false;
            field.setAttribute("aria-invalid", "true");
            field.classList.add("is-invalid");
            field.setAttribute("aria-describedby", field.id + "-error " + field.id + "-help");
          } else {
            showAlert(self.alert, message);
          }
          self.failedField = field;
        }
      );
    }).finally(function () {
      self.fieldset.disabled = false;
      self.section.removeAttribute("aria-busy");
      if (self.failedField) self.failedField.focus();
      else if (document.activeElement === document.body) self.save.focus();
      self.failedField = null;
    });
  };

  var settingsSection = document.getElementById("settings-panel");
  if (settingsSection && settingsSection.querySelector(".kore-settings-form")) {
    new SettingsPanel(settingsSection);
  }

  // --- course management (backups, import, reset, delete) ------------------------------

  var confirmDialog = document.getElementById("kore-confirm");

  // Ask before something that cannot be undone. With `typed`, the person types the
  // course title (or its id) before the button works. Resolves true or false.
  function confirmAction(title, lines, okLabel, typed) {
    return new Promise(function (resolve) {
      var dialog = confirmDialog;
      var input = dialog.querySelector("#kore-confirm-input");
      var ok = dialog.querySelector(".kore-confirm-ok");
      var cancel = dialog.querySelector(".kore-confirm-cancel");
      var body = dialog.querySelector("#kore-confirm-body");
      dialog.querySelector("#kore-confirm-title").textContent = title;
      body.textContent = "";
      lines.forEach(function (block) {
        if (Array.isArray(block)) {
          var ul = el("ul");
          block.forEach(function (item) { ul.appendChild(el("li", {}, item)); });
          body.appendChild(ul);
        } else {
          body.appendChild(el("p", {}, block));
        }
      });
      ok.textContent = okLabel;
      dialog.querySelector(".kore-confirm-typed").hidden = !typed;
      dialog.querySelector(".kore-confirm-expected").textContent = typed || "";
      input.value = "";
      function matches() {
        return !typed || input.value.trim() === typed || input.value.trim() === root.dataset.courseId;
      }
      ok.disabled = !matches();
      input.oninput = function () { ok.disabled = !matches(); };
      cancel.onclick = function () { dialog.close("cancel"); };
      dialog.onclose = function () {
        resolve(dialog.returnValue === "ok" && matches() ? input.value.trim() || true : false);
      };
      dialog.returnValue = "";
      dialog.showModal();
      (typed ? input : cancel).focus();
    });
  }

  function listOf(data, key) {
    if (Array.isArray(data)) return data;
    return (data && data[key]) || [];
  }

  function contentsSummary(contents) {
    if (!contents || typeof contents !== "object") return "";
    var parts = [];
    // Plural and singular, as kore/handlers/ui.py's CONTENTS_WORDS: "1 assignment".
    var words = { assignments: "assignment", students: "student", submissions: "submission", files: "file" };
    Object.keys(words).forEach(function (key) {
      var v = contents[key];
      if (v === undefined) return;
      var count = Array.isArray(v) ? v.length : v;
      parts.push(count + " " + (count === 1 ? words[key] : key));
    });
    return parts.join(", ");
  }

  // A backup, reset, deletion or import runs in Kore after its 202: follow its URL until it
  // ends, showing step n of m in `alert`. Resolves with its last entry.
  var OPERATION_WORDS = { backup: "Making a backup", reset: "Resetting the course", delete: "Deleting the course", import: "Importing" };

  function followOperation(op, alert) {
    return new Promise(function (resolve, reject) {
      function show(entry) {
        var steps = entry.steps || [];
        var next = steps[entry.step] ? " (" + steps[entry.step] + ")" : "";
        showAlert(alert, (OPERATION_WORDS[entry.kind] || "Working") + "… step " +
          Math.min(entry.step + 1, steps.length) + " of " + steps.length + next + ".", "info");
        alert.dataset.operationState = entry.state;
      }
      function poll(entry) {
        if (entry.state !== "running") { alert.dataset.operationState = entry.state; resolve(entry); return; }
        show(entry);
        setTimeout(function () {
          api("GET", op.url).then(poll, function (err) {
            if (err.status === 0 || err.status >= 500) {
              setTimeout(function () { poll(entry); }, POLL_RETRY_MS);
            } else {
              reject(err);
            }
          });
        }, POLL_MS);
      }
      poll(op);
    });
  }

  // A 409 names the operation already running: follow it, then say the way is free.
  function followRunning(err, alert) {
    if (err.status !== 409 || !err.data || !err.data.url) return Promise.reject(err);
    return api("GET", err.data.url).then(function (running) {
      return followOperation(running, alert).then(function () {
        showAlert(alert, "Another operation on this course was running (" + running.kind +
          ", started by " + running.started_by + "); it has ended. Try again now.", "warning");
      });
    });
  }

  function BackupsPanel(section) {
    var self = this;
    this.section = section;
    this.alert = section.querySelector(".kore-alert");
    this.live = section.querySelector(".kore-live");
    this.button = section.querySelector(".kore-backup-now");
    this.table = section.querySelector(".kore-backups-table");
    this.empty = section.querySelector(".kore-backups-empty");
    this.button.disabled = false;
    this.button.addEventListener("click", function () {
      whileBusy([self.button], function () {
        showAlert(self.alert, "Making a backup…", "info");
        return api("POST", API + "backups", {}).then(function (op) {
          return followOperation(op, self.alert);
        }).then(function (op) {
          if (op.state !== "finished") {
            var failed = "The backup did not finish: " + (op.message || op.state);
            showAlert(self.alert, failed);
            self.live.textContent = failed;
            return self.load();
          }
          return api("GET", PREFIX + "api/backups/" + encodeURIComponent(op.backup_id)).then(function (entry) {
            var text = "Backup made: " + bytes(entry.size_bytes) + ".";
            showAlert(self.alert, text, "success");
            self.live.textContent = text;
            return self.load();
          });
        }).catch(function (err) {
          return followRunning(err, self.alert).catch(function (e) { showAlert(self.alert, errorText(e)); });
        });
      });
    });
    this.load();
  }

  BackupsPanel.prototype.load = function () {
    var self = this;
    return api("GET", API + "backups").then(function (data) {
      self.render(listOf(data, "backups"));
      importPanel && importPanel.setBackups();
    }, function (err) { showAlert(self.alert, errorText(err)); });
  };

  BackupsPanel.prototype.render = function (backups) {
    var self = this;
    var body = this.table.querySelector("tbody");
    body.textContent = "";
    backups.forEach(function (b) {
      var tr = el("tr", { "data-backup-id": b.backup_id });
      tr.appendChild(el("td", {}, when(b.created_at)));
      tr.appendChild(el("td", {}, b.created_by));
      tr.appendChild(el("td", {}, b.reason));
      tr.appendChild(el("td", {}, bytes(b.size_bytes)));
      tr.appendChild(el("td", {}, contentsSummary(b.contents)));
      var actions = el("td");
      var link = el("a", {
        class: "btn btn-sm btn-outline-primary me-2",
        href: PREFIX + "api/backups/" + encodeURIComponent(b.backup_id) + "/download",
        download: "",
      }, "Download");
      link.appendChild(el("span", { class: "visually-hidden" }, " the backup of " + when(b.created_at)));
      actions.appendChild(link);
      var del = el("button", { type: "button", class: "btn btn-sm btn-outline-danger" }, "Delete");
      del.appendChild(el("span", { class: "visually-hidden" }, " the backup of " + when(b.created_at)));
      del.addEventListener("click", function () { self.remove(b, del); });
      actions.appendChild(del);
      tr.appendChild(actions);
      body.appendChild(tr);
    });
    this.table.hidden = !backups.length;
    this.empty.hidden = !!backups.length;
  };

  BackupsPanel.prototype.remove = function (backup, button) {
    var self = this;
    return confirmAction(
      "Delete the backup of " + when(backup.created_at) + "?",
      ["The backup of " + (backup.title || COURSE_TITLE) + " made " + when(backup.created_at) +
        " by " + backup.created_by + " is deleted for good. The course itself stays as it is."],
      "Delete the backup",
      null
    ).then(function (confirmed) {
      if (!confirmed) { button.focus(); return; }
      return whileBusy([button], function () {
        return api("DELETE", PREFIX + "api/backups/" + encodeURIComponent(backup.backup_id)).then(
          function () {
            showAlert(self.alert, "The backup is deleted.", "success");
            self.live.textContent = "The backup is deleted.";
            return self.load();
          },
          function (err) { showAlert(self.alert, errorText(err)); }
        );
      });
    });
  };

  function ImportPanel(section) {
    var self = this;
    this.section = section;
    this.form = section.querySelector(".kore-import-form");
    this.alert = section.querySelector(".kore-alert");
    this.source = section.querySelector("#import-source");
    this.assignment = section.querySelector("#import-assignment-name");
    this.notebook = section.querySelector("#import-notebook-name");
    this.asAssignment = section.querySelector("#import-as");
    this.button = section.querySelector(".kore-import-start");
    this.contents = { assignments: [] };
    this.button.disabled = false;
    this.source.addEventListener("change", function () { self.loadContents(); });
    Array.prototype.forEach.call(this.form.querySelectorAll('input[name="what"]'), function (r) {
      r.addEventListener("change", function () { self.showFields(); });
    });
    this.assignment.addEventListener("change", function () { self.fillNotebooks(); });
    this.form.addEventListener("submit", function (event) {
      event.preventDefault();
      self.submit();
    });
    this.showFields();
  }

  ImportPanel.prototype.what = function () {
    return this.form.querySelector('input[name="what"]:checked').value;
  };

  ImportPanel.prototype.showFields = function () {
    var what = this.what();
    Array.prototype.forEach.call(this.section.querySelectorAll(".kore-import-assignment"), function (n) {
      n.hidden = what === "course";
    });
    Array.prototype.forEach.call(this.section.querySelectorAll(".kore-import-notebook"), function (n) {
      n.hidden = what !== "notebook";
    });
  };

  ImportPanel.prototype.setBackups = function () {
    var self = this;
    return api("GET", PREFIX + "api/backups").then(function (data) {
      var group = self.source.querySelector(".kore-backup-options");
      var chosen = self.source.value;
      group.textContent = "";
      listOf(data, "backups").forEach(function (b) {
        group.appendChild(el("option", { value: "backup:" + b.backup_id },
          (b.title || b.course_id) + ", " + when(b.created_at) + " (" + b.reason + ")"));
      });
      self.source.value = chosen;
    }, function () {});
  };

  ImportPanel.prototype.sourceRef = function () {
    var value = this.source.value;
    var kind = value.split(":")[0], id = value.slice(kind.length + 1);
    if (kind === "course") return { course_id: id };
    if (kind === "backup") return { backup_id: id };
    return null;
  };

  // Assignments as a list of {name, notebooks: [...]}, whatever shape the route gives.
  function normaliseContents(data) {
    var list = (data && data.assignments) || [];
    if (!Array.isArray(list)) {
      list = Object.keys(list).map(function (name) { return { name: name, notebooks: data.assignments[name] }; });
    }
    return list.map(function (a) {
      if (typeof a === "string") return { name: a, notebooks: [] };
      var notebooks = (a.notebooks || []).map(function (n) { return typeof n === "string" ? n : n.name; });
      return { name: a.name || a.assignment || a.id, notebooks: notebooks };
    });
  }

  ImportPanel.prototype.loadContents = function () {
    var self = this;
    var ref = this.sourceRef();
    this.assignment.textContent = "";
    this.notebook.textContent = "";
    if (!ref) return Promise.resolve();
    var url = ref.course_id
      ? PREFIX + "api/courses/" + encodeURIComponent(ref.course_id) + "/contents"
      : PREFIX + "api/backups/" + encodeURIComponent(ref.backup_id) + "/contents";
    return api("GET", url).then(function (data) {
      self.contents = normaliseContents(data);
      self.contents.forEach(function (a) {
        self.assignment.appendChild(el("option", { value: a.name }, a.name));
      });
      self.fillNotebooks();
      if (!self.contents.length) showAlert(self.alert, "This source has no assignments.", "info");
      else showAlert(self.alert, "");
    }, function (err) { showAlert(self.alert, errorText(err)); });
  };

  ImportPanel.prototype.fillNotebooks = function () {
    var name = this.assignment.value;
    var entry = (this.contents || []).filter(function (a) { return a.name === name; })[0];
    this.notebook.textContent = "";
    (entry ? entry.notebooks : []).forEach(function (nb) {
      this.notebook.appendChild(el("option", { value: nb }, nb));
    }, this);
  };

  ImportPanel.prototype.submit = function () {
    var self = this;
    var ref = this.sourceRef();
    if (!ref) {
      showAlert(this.alert, "Choose a course or a backup to import from.", "warning");
      this.source.focus();
      return;
    }
    var what = this.what();
    var body = { from: ref, what: what, overwrite: this.form.querySelector("#import-overwrite").checked };
    if (what !== "course") {
      if (!this.assignment.value) {
        showAlert(this.alert, "Choose the assignment to import.", "warning");
        this.assignment.focus();
        return;
      }
      body.assignment = this.assignment.value;
    }
    if (what === "notebook") {
      if (!this.notebook.value) {
        showAlert(this.alert, "Choose the notebook to import.", "warning");
        this.notebook.focus();
        return;
      }
      body.notebook = this.notebook.value;
      if (this.asAssignment.value.trim()) body.as_assignment = this.asAssignment.value.trim();
    }
    return whileBusy([this.button], function () {
      showAlert(self.alert, "Importing…", "info");
      return api("POST", API + "import", body).then(function (op) {
        return followOperation(op, self.alert);
      }).then(function (op) {
        self.done(op);
      }, function (err) {
        return followRunning(err, self.alert).catch(function (e) { showAlert(self.alert, errorText(e)); });
      });
    });
  };

  // The end of an import: what it did (its operation's result), or why it did not finish.
  ImportPanel.prototype.done = function (op) {
    if (op.state !== "finished") {
      showAlert(this.alert, "The import did not finish: " + (op.message || op.state));
    } else {
      var result = op.result || {};
      var parts = [];
      if ((result.imported || []).length) parts.push("Imported: " + result.imported.join(", ") + ".");
      if ((result.replaced || []).length) parts.push("Replaced (the old version is kept aside): " + result.replaced.join(", ") + ".");
      if ((result.skipped || []).length) parts.push("Skipped: " + result.skipped.join(", ") + ".");
      showAlert(this.alert, parts.join(" ") || "Nothing to import.", "success");
    }
    auditPanel && auditPanel.load();
  };

  function DangerPanel(section) {
    var self = this;
    this.alert = section.querySelector(".kore-alert");
    this.live = section.querySelector(".kore-live");
    this.reset = section.querySelector(".kore-reset");
    this.del = section.querySelector(".kore-delete");
    this.reset.disabled = false;
    this.del.disabled = false;
    this.reset.addEventListener("click", function () { self.ask("reset"); });
    this.del.addEventListener("click", function () { self.ask("delete"); });
    // An operation running when the page opens (started elsewhere, or before a reload):
    // show its progress and keep the buttons off until it ends.
    api("GET", API + "operations").then(function (data) {
      var running = listOf(data, "operations").filter(function (o) { return o.state === "running"; })[0];
      if (!running) return;
      running.url = API + "operations/" + encodeURIComponent(running.operation_id);
      return whileBusy([self.reset, self.del], function () {
        return followOperation(running, self.alert).then(function (op) {
          if (op.kind === "backup") {
            showAlert(self.alert, "The backup that was running has ended (" + op.state + ").", "info");
            backupsPanel && backupsPanel.load();
          } else if (op.kind === "import") {
            showAlert(self.alert, "The import that was running has ended (" + op.state + ").", "info");
            importPanel && importPanel.done(op);
          } else {
            self.done(op.kind, op);
          }
        });
      });
    }, function () { /* the panels say what fails when used */ });
  }

  var LOST = {
    reset: [
      "every student of the course: their submissions, grades, comments and feedback in the gradebook",
      "the collected, autograded and feedback files of the course",
      "submissions and feedback waiting in the exchange",
      "the students' place in the course on the hub, and the grade and roster sync history",
    ],
    delete: [
      "everything of the course on the hub: assignments, gradebook, submissions, grades and feedback",
      "the course's exchange, its grader account and its groups",
      "the course in Kore and in everyone's course list",
    ],
  };

  DangerPanel.prototype.ask = function (kind) {
    var self = this;
    var button = kind === "reset" ? this.reset : this.del;
    var title = kind === "reset"
      ? "Reset " + COURSE_TITLE + " for a new semester?"
      : "Delete " + COURSE_TITLE + "?";
    var lines = [
      "This removes:",
      LOST[kind],
      kind === "reset"
        ? "The assignments, the course settings and the instructors stay. Kore makes a backup first; you find it under Backups."
        : "Kore makes a backup first; it stays after the course is gone. Opening the activity in the LMS again creates a new, empty course.",
    ];
    return confirmAction(title, lines, kind === "reset" ? "Reset the course" : "Delete the course", COURSE_TITLE)
      .then(function (typed) {
        if (!typed) { button.focus(); return; }
        return whileBusy([self.reset, self.del], function () {
          showAlert(self.alert, (kind === "reset" ? "Resetting" : "Deleting") +
            " the course (a backup is made first)…", "info");
          return api("POST", API + kind, { confirm: typed }).then(function (op) {
            return followOperation(op, self.alert);
          }).then(function (op) {
            self.done(kind, op);
          }).catch(function (err) {
            return followRunning(err, self.alert).catch(function (e) { showAlert(self.alert, errorText(e)); });
          });
        });
      });
  };

  DangerPanel.prototype.done = function (kind, op) {
    var ok = !op || op.state === "finished";
    var text;
    if (!ok) {
      text = "The " + kind + " did not finish (" + (op.message || op.state) + "). Try again: it goes on where it stopped.";
      showAlert(this.alert, text);
    } else if (kind === "reset") {
      text = COURSE_TITLE + " is reset. A backup of what it held is listed under Backups.";
      showAlert(this.alert, text, "success");
      backupsPanel && backupsPanel.load();
      auditPanel && auditPanel.load();
    } else {
      text = COURSE_TITLE + " is deleted; its backup is kept.";
      var main = document.getElementById("kore-course");
      main.textContent = "";
      var box = el("div", { class: "alert alert-success", role: "status" });
      box.appendChild(el("h1", { class: "h3" }, "Course deleted"));
      box.appendChild(el("p", {}, text));
      var back = el("a", { href: PREFIX }, "Back to your courses");
      box.appendChild(back);
      main.appendChild(box);
      back.focus();
    }
    this.live.textContent = text;
  };

  function AuditPanel(details) {
    var self = this;
    this.details = details;
    this.alert = details.querySelector(".kore-alert");
    this.body = details.querySelector("tbody");
    details.addEventListener("toggle", function () { if (details.open) self.load(); });
  }

  AuditPanel.prototype.load = function () {
    var self = this;
    if (!this.details.open) return Promise.resolve();
    return api("GET", API + "audit").then(function (data) {
      self.body.textContent = "";
      listOf(data, "events").forEach(function (e) {
        var tr = el("tr", e.outcome === "failed" || e.outcome === "refused" ? { class: "kore-failed" } : {});
        tr.appendChild(el("td", {}, when(e.at)));
        tr.appendChild(el("td", {}, e.actor));
        tr.appendChild(el("td", {}, e.action));
        tr.appendChild(el("td", {}, e.outcome));
        tr.appendChild(el("td", {}, e.message));
        self.body.appendChild(tr);
      });
    }, function (err) { showAlert(self.alert, errorText(err)); });
  };

  var backupsSection = document.getElementById("backups-panel");
  var importSection = document.getElementById("import-panel");
  var dangerSection = document.getElementById("danger-panel");
  var auditSection = document.getElementById("audit-panel");
  var importPanel = importSection ? new ImportPanel(importSection) : null;
  var auditPanel = auditSection ? new AuditPanel(auditSection) : null;
  var backupsPanel = backupsSection ? new BackupsPanel(backupsSection) : null;
  if (dangerSection) new DangerPanel(dangerSection);
  if (importPanel && !backupsPanel) importPanel.setBackups();
})();
