/*
 * Bulk study upload: multi-select, folder pick, drag-and-drop of folders, and an
 * upload progress bar. Plain JavaScript, no libraries (the portal serves no CDN code).
 *
 * Files are sent in several requests of at most `data-max-files` files or
 * `data-request-bytes` bytes (a larger single file goes alone), all into one upload
 * batch: the first answer names the batch, later requests add to it, and the last
 * says `finish`. A request that fails is retried once; if it still fails, its files
 * are listed as not sent and the others go on. Without JavaScript the form posts
 * every chosen file in one request and the server answers with the report page.
 */
(function () {
  "use strict";

  const form = document.getElementById("bulk-form");
  if (!form || !window.FormData || !window.XMLHttpRequest) {
    return;
  }
  const zone = document.getElementById("bulk-drop-zone");
  const filesInput = document.getElementById("bulk-files");
  const folderInput = document.getElementById("bulk-folder");
  const summary = document.getElementById("bulk-summary");
  const clearButton = document.getElementById("bulk-clear");
  const acceptOther = document.getElementById("id_accept_other_patient");
  const submit = document.getElementById("bulk-submit");
  const progressBox = document.getElementById("bulk-progress");
  const progressBar = document.getElementById("bulk-progressbar");
  const bar = document.getElementById("bulk-bar");
  const statusText = document.getElementById("bulk-status");
  const percentText = document.getElementById("bulk-percent");
  const countsText = document.getElementById("bulk-counts");
  const errorBox = document.getElementById("bulk-errors");
  const token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const maxFiles = parseInt(form.dataset.maxFiles, 10) || 100;
  const maxBytes = parseInt(form.dataset.requestBytes, 10) || 64 * 1024 * 1024;

  // [{file: File, path: "folder/sub/name.dcm"}]
  let selected = [];
  let busy = false;

  function formatBytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(0) + " KB";
    if (n < 1024 * 1024 * 1024) return (n / 1024 / 1024).toFixed(1) + " MB";
    return (n / 1024 / 1024 / 1024).toFixed(2) + " GB";
  }

  // Hidden files and OS clutter (.DS_Store, __MACOSX, Thumbs.db) are not part of a study.
  function isClutter(path) {
    const parts = path.split("/");
    const last = parts[parts.length - 1];
    return parts.some(function (p) { return p.startsWith(".") || p === "__MACOSX"; }) ||
      last === "Thumbs.db" || last === "desktop.ini" || last === "DICOMDIR";
  }

  function add(items) {
    items.forEach(function (item) {
      if (!isClutter(item.path)) selected.push(item);
    });
    render();
  }

  function render() {
    const bytes = selected.reduce(function (sum, item) { return sum + item.file.size; }, 0);
    summary.textContent = selected.length
      ? selected.length + (selected.length === 1 ? " file" : " files") + " selected · " + formatBytes(bytes)
      : "";
    clearButton.classList.toggle("d-none", !selected.length || busy);
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.classList.remove("d-none");
  }

  function fromInput(input) {
    const items = Array.prototype.map.call(input.files, function (file) {
      return {file: file, path: file.webkitRelativePath || file.name};
    });
    // The selection lives in `selected`; clearing the input lets the same folder be picked again.
    input.value = "";
    return items;
  }

  filesInput.addEventListener("change", function () { add(fromInput(filesInput)); });
  folderInput.addEventListener("change", function () { add(fromInput(folderInput)); });
  clearButton.addEventListener("click", function () { selected = []; render(); });

  // --- Drag and drop, folders included (DataTransferItem.webkitGetAsEntry) ----------
  function readEntries(reader) {
    return new Promise(function (resolve, reject) { reader.readEntries(resolve, reject); });
  }

  function entryFile(entry) {
    return new Promise(function (resolve, reject) { entry.file(resolve, reject); });
  }

  async function walk(entry, prefix, out) {
    if (entry.isFile) {
      out.push({file: await entryFile(entry), path: prefix + entry.name});
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      // readEntries returns at most ~100 entries per call; call it until it returns none.
      for (;;) {
        const batch = await readEntries(reader);
        if (!batch.length) break;
        for (const child of batch) {
          await walk(child, prefix + entry.name + "/", out);
        }
      }
    }
  }

  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (event) {
      event.preventDefault();
      if (!busy) zone.classList.add("dragover");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function () { zone.classList.remove("dragover"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    if (busy) return;
    const transfer = event.dataTransfer;
    // Entries must be taken while the event runs; the list is emptied once it returns.
    const entries = Array.prototype.map.call(transfer.items || [], function (item) {
      return item.kind === "file" && item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
    }).filter(Boolean);
    if (!entries.length) {
      add(Array.prototype.map.call(transfer.files, function (file) { return {file: file, path: file.name}; }));
      return;
    }
    summary.textContent = "Reading the dropped folders…";
    const out = [];
    Promise.all(entries.map(function (entry) { return walk(entry, "", out); }))
      .then(function () { add(out); })
      .catch(function (error) { showError("Could not read the dropped files: " + error); render(); });
  });

  // --- Sending -------------------------------------------------------------------
  function chunk(items) {
    const chunks = [];
    let current = [];
    let bytes = 0;
    items.forEach(function (item) {
      if (current.length && (current.length >= maxFiles || bytes + item.file.size > maxBytes)) {
        chunks.push(current);
        current = [];
        bytes = 0;
      }
      current.push(item);
      bytes += item.file.size;
    });
    if (current.length) chunks.push(current);
    return chunks;
  }

  function setProgress(fraction, text) {
    const percent = Math.min(100, Math.round(fraction * 100));
    bar.style.width = percent + "%";
    progressBar.setAttribute("aria-valuenow", String(percent));
    percentText.textContent = percent + "%";
    if (text) statusText.textContent = text;
  }

  function send(items, batchId, last, onProgress) {
    return new Promise(function (resolve, reject) {
      const data = new FormData();
      data.append("csrfmiddlewaretoken", token);
      if (batchId) data.append("batch", batchId);
      if (acceptOther.checked) data.append("accept_other_patient", "on");
      if (last) data.append("finish", "on");
      items.forEach(function (item) {
        data.append("files", item.file, item.file.name);
        // Browsers strip folders from the multipart file name; the path travels beside it.
        data.append("paths", item.path);
      });
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-CSRFToken", token);
      xhr.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      });
      xhr.upload.addEventListener("load", function () { onProgress(1, true); });
      xhr.addEventListener("load", function () {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        if (xhr.status >= 200 && xhr.status < 300 && body) {
          resolve(body);
        } else {
          const reason = body && body.errors ? body.errors.join(" ") : "the server answered " + xhr.status;
          reject(new Error(reason));
        }
      });
      xhr.addEventListener("error", function () { reject(new Error("the connection failed")); });
      xhr.addEventListener("abort", function () { reject(new Error("the upload was cancelled")); });
      xhr.send(data);
    });
  }

  async function upload() {
    // Folder order is whatever the file system returns; send (and report) slices by path,
    // with numbers compared as numbers (IM2 before IM10).
    const byPath = new Intl.Collator(undefined, {numeric: true});
    selected.sort(function (a, b) { return byPath.compare(a.path, b.path); });
    const chunks = chunk(selected);
    const total = selected.reduce(function (sum, item) { return sum + item.file.size; }, 0) || 1;
    let sentBytes = 0;
    let batchId = "";
    let reportUrl = "";
    let last = null;
    const notSent = [];
    progressBox.classList.remove("d-none");
    errorBox.classList.add("d-none");

    for (let index = 0; index < chunks.length; index++) {
      const items = chunks[index];
      const bytes = items.reduce(function (sum, item) { return sum + item.file.size; }, 0);
      const isLast = index === chunks.length - 1;
      const label = chunks.length > 1 ? " (part " + (index + 1) + " of " + chunks.length + ")" : "";
      let answer = null;
      for (let attempt = 1; attempt <= 2 && !answer; attempt++) {
        try {
          answer = await send(items, batchId, isLast, function (fraction, uploaded) {
            setProgress((sentBytes + fraction * bytes) / total,
              uploaded ? "Checking and storing the files" + label + "…" : "Uploading" + label + "…");
          });
        } catch (error) {
          if (attempt === 2) {
            items.forEach(function (item) { notSent.push(item.path + ": " + error.message); });
          }
        }
      }
      sentBytes += bytes;
      setProgress(sentBytes / total);
      if (answer) {
        last = answer;
        batchId = answer.batch;
        reportUrl = answer.report_url;
        countsText.textContent = answer.accepted + " accepted · " + answer.rejected + " rejected · " +
          answer.duplicates + " duplicates skipped";
      }
    }
    // The last part failed: close the batch so its report is final.
    if (batchId && notSent.length && chunks.length) {
      try { await send([], batchId, true, function () {}); } catch (e) { /* the report still shows what arrived */ }
    }
    setProgress(1, last ? "Upload finished." : "Nothing could be uploaded.");
    bar.classList.remove("progress-bar-animated");
    if (notSent.length) {
      showError(notSent.length + " file(s) could not be sent; upload them again: " + notSent.slice(0, 20).join("; ") +
        (notSent.length > 20 ? "; …" : ""));
      if (reportUrl) {
        const link = document.createElement("a");
        link.href = reportUrl;
        link.className = "alert-link d-block mt-2";
        link.textContent = "See the report of what was uploaded";
        errorBox.appendChild(link);
      }
      return;
    }
    if (reportUrl) window.location.assign(reportUrl);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (busy) return;
    if (!selected.length) {
      showError("Choose or drop at least one file, folder or .zip archive.");
      return;
    }
    busy = true;
    submit.disabled = true;
    submit.innerHTML = '<span class="spinner-border spinner-border-sm me-1"></span>Uploading…';
    filesInput.disabled = folderInput.disabled = true;
    render();
    upload().finally(function () {
      busy = false;
      selected = [];
      submit.disabled = false;
      submit.innerHTML = '<i class="bi bi-upload me-1"></i>Upload';
      filesInput.disabled = folderInput.disabled = false;
      render();
    });
  });
})();
