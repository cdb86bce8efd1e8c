// dartserve's page: picks a model, streams a generation from POST /v1/images:generate
// (newline-delimited JSON, one GenerateImageResponse per line) and shows every preview as it
// arrives. Plain JavaScript, no build step, no network access beyond this server.
'use strict';

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('form'), model: $('model'), cls: $('class'), classField: $('class-field'),
  prompt: $('prompt'), promptField: $('prompt-field'), seed: $('seed'), guidance: $('guidance'),
  guidanceValue: $('guidance-value'), count: $('count'), cadence: $('cadence'),
  token: $('token'), tokenField: $('token-field'), generate: $('generate'), cancel: $('cancel'),
  message: $('message'), status: $('status'), run: $('run'), runState: $('run-state'),
  runInfo: $('run-info'), cards: $('cards'), gallery: $('gallery'), galleryEmpty: $('gallery-empty'),
};
let models = [];
let current = null;  // the run in progress
// What the page measured, per run (read by the browser tests).
window.dartserve = {runs: []};

ui.token.value = localStorage.getItem('dartserve-token') || '';
ui.token.addEventListener('change', () => {
  localStorage.setItem('dartserve-token', ui.token.value);
  loadModels();
});

function authHeaders(extra) {
  const headers = Object.assign({}, extra);
  if (ui.token.value) headers.Authorization = 'Bearer ' + ui.token.value;
  return headers;
}

// An API call's JSON; throws with the server's message (and asks for a token on 401).
async function api(path, options) {
  const response = await fetch(path, Object.assign({headers: authHeaders()}, options));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    if (response.status === 401) ui.tokenField.hidden = false;
    throw new Error(body.message || ('HTTP ' + response.status));
  }
  return body;
}

function showMessage(text) { ui.message.textContent = text || ''; }

async function loadModels() {
  try {
    models = (await api('/v1/models')).models || [];
  } catch (e) {
    showMessage('Models: ' + e.message);
    return;
  }
  showMessage('');
  ui.model.replaceChildren(...models.map((m) => {
    const option = new Option(`${m.name} (${m.conditioning}, ${m.imageSize}px)`, m.name);
    option.selected = m.isDefault;
    return option;
  }));
  onModelChange();
}

function selectedModel() { return models.find((m) => m.name === ui.model.value); }

function onModelChange() {
  const m = selectedModel();
  if (!m) return;
  const isClass = m.conditioning === 'class';
  ui.classField.hidden = !isClass;
  ui.promptField.hidden = m.conditioning !== 'text';
  ui.cls.replaceChildren(...(m.classNames || []).map((name, i) => new Option(name, i)));
  if (isClass && !(m.classNames || []).length) {
    ui.cls.replaceChildren(...Array.from({length: m.numClasses}, (_, i) => new Option(i, i)));
  }
  // The model's example prompts: the first as the placeholder, all as buttons that fill the box.
  const examples = m.conditioning === 'text' ? (m.examplePrompts || []) : [];
  if (examples.length) ui.prompt.placeholder = examples[0];
  const box = $('examples');
  box.hidden = !examples.length;
  box.replaceChildren(...examples.map((text) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = text;
    button.addEventListener('click', () => { ui.prompt.value = text; });
    return button;
  }));
  ui.guidance.value = m.defaultGuidanceScale;
  ui.guidanceValue.textContent = ui.guidance.value;
  ui.cadence.max = m.progressSteps;
}
ui.model.addEventListener('change', onModelChange);
ui.guidance.addEventListener('input', () => { ui.guidanceValue.textContent = ui.guidance.value; });
$('random-seed').addEventListener('click', () => {
  ui.seed.value = Math.floor(Math.random() * 2 ** 31);
});

function makeCard(index) {
  const card = document.createElement('div');
  card.className = 'card';
  card.dataset.state = 'queued';
  card.dataset.previews = '0';
  card.innerHTML = '<img alt=""><div class="bar"><div></div></div><span class="label">queued</span>' +
      '<span class="timings"></span>';
  card.querySelector('img').alt = 'image ' + (index + 1);
  return card;
}

function setCardState(card, state, label) {
  card.dataset.state = state;
  card.className = 'card ' + state;
  card.querySelector('.label').textContent = label;
}

function setRunState(run, state, label) {
  run.state = state;
  ui.runState.textContent = label;
  ui.runState.className = 'state ' + state;
  ui.run.dataset.state = state;
}

function describe(run) {
  const m = run.model;
  if (run.body.classId !== undefined) return (m.classNames || [])[run.body.classId] || 'class ' + run.body.classId;
  return run.body.prompt !== undefined ? `"${run.body.prompt}"` : 'unconditional';
}

function addToGallery(run, result, dataUrl) {
  const shot = document.createElement('div');
  shot.className = 'shot';
  const name = `dartserve-${run.model.name}-${result.seed}.png`;
  shot.innerHTML = '<img alt=""><span class="caption"></span><a>Download</a>';
  shot.querySelector('img').src = dataUrl;
  shot.querySelector('img').alt = describe(run);
  shot.querySelector('.caption').textContent = `${describe(run)} · seed ${result.seed}`;
  const link = shot.querySelector('a');
  link.href = dataUrl;
  link.download = name;
  ui.gallery.prepend(shot);
  ui.galleryEmpty.hidden = true;
}

// Applies one event of the stream to the run's cards.
function onEvent(run, event, receivedAt) {
  if (event.accepted) {
    const a = event.accepted;
    run.accepted = a;
    run.stats.acceptedMs = receivedAt - run.stats.sentAt;
    ui.runInfo.textContent = `${a.requestId} · seed ${a.seed} · ${a.totalSteps} steps · ` +
        (a.queuePosition ? `${a.queuePosition} waiting ahead` : 'no queue');
    setRunState(run, 'queued', a.queuePosition ? `Queued (position ${a.queuePosition + 1})` : 'Starting');
  } else if (event.progress) {
    const p = event.progress;
    const card = run.cards[p.imageIndex];
    if (run.state === 'queued') setRunState(run, 'running', 'Generating');
    if (card.dataset.state !== 'running') setCardState(card, 'running', '');
    card.querySelector('.bar > div').style.width = (100 * p.step / p.totalSteps) + '%';
    card.querySelector('.label').textContent = `step ${p.step} / ${p.totalSteps}`;
    if (p.previewPng) {
      const img = card.querySelector('img');
      img.src = 'data:image/png;base64,' + p.previewPng;
      card.dataset.previews = String(Number(card.dataset.previews) + 1);
      if (run.stats.firstPreviewReceivedMs === undefined) {
        run.stats.firstPreviewReceivedMs = receivedAt - run.stats.sentAt;
        run.stats.firstPreviewStep = p.step;
        // Shown once decoded and painted (the next frame).
        img.decode().catch(() => {}).then(() => requestAnimationFrame(() => {
          const now = performance.now();
          run.stats.firstPreviewShownMs = now - run.stats.sentAt;
          // From the server finishing the step to the page showing it (one host's clock).
          if (p.stepDoneUnixSeconds) {
            run.stats.firstPreviewAfterStepMs =
                performance.timeOrigin + now - 1000 * p.stepDoneUnixSeconds;
          }
        }));
      }
    }
  } else if (event.result) {
    const r = event.result;
    const card = run.cards[r.imageIndex];
    const dataUrl = 'data:image/png;base64,' + r.png;
    const img = card.querySelector('img');
    img.src = dataUrl;
    card.dataset.width = r.width;
    card.dataset.height = r.height;
    card.dataset.previewsBeforeResult = card.dataset.previews;
    card.querySelector('.bar > div').style.width = '100%';
    setCardState(card, 'done', `done · seed ${r.seed}`);
    const t = r.timings || {};
    card.querySelector('.timings').textContent =
        `queue ${(t.queueSeconds || 0).toFixed(2)} s · compute ${(t.computeSeconds || 0).toFixed(2)} s`;
    run.stats.results.push({index: r.imageIndex, width: r.width, height: r.height,
      queueSeconds: t.queueSeconds, computeSeconds: t.computeSeconds,
      receivedMs: receivedAt - run.stats.sentAt});
    addToGallery(run, r, dataUrl);
  } else if (event.error) {
    run.error = event.error;
  }
}

function finishRun(run) {
  const e = run.error;
  const state = !e ? 'done' : e.code === 'CANCELLED' ? 'cancelled' : 'failed';
  const label = !e ? 'Done' : e.code === 'CANCELLED' ? 'Cancelled' : 'Failed: ' + e.message;
  setRunState(run, state, label);
  for (const card of run.cards) {
    if (card.dataset.state !== 'done') setCardState(card, state, state);
  }
  if (e && state === 'failed') showMessage(e.message);
  run.stats.endedMs = performance.now() - run.stats.sentAt;
  run.stats.state = state;
  if (current === run) current = null;
  ui.generate.disabled = false;
  ui.cancel.disabled = true;
}

async function generate(event) {
  event.preventDefault();
  const m = selectedModel();
  if (!m || current) return;
  const n = Math.max(1, Math.min(16, Number(ui.count.value) || 1));
  const body = {
    requestId: 'web-' + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 8),
    model: m.name, numImages: n, guidanceScale: Number(ui.guidance.value),
    preview: {everyNSteps: Math.max(0, Number(ui.cadence.value) || 0)},
  };
  if (ui.seed.value !== '') body.seed = String(ui.seed.value);
  if (m.conditioning === 'class') body.classId = Number(ui.cls.value);
  if (m.conditioning === 'text') body.prompt = ui.prompt.value;

  const run = {body, model: m, cards: [], state: '', controller: new AbortController(),
    stats: {requestId: body.requestId, images: n, sentAt: performance.now(), results: []}};
  window.dartserve.runs.push(run.stats);
  current = run;
  showMessage('');
  ui.generate.disabled = true;
  ui.cancel.disabled = false;
  ui.run.hidden = false;
  ui.runInfo.textContent = body.requestId;
  run.cards = Array.from({length: n}, (_, i) => makeCard(i));
  ui.cards.replaceChildren(...run.cards);
  setRunState(run, 'queued', 'Sending');
  try {
    const response = await fetch('/v1/images:generate', {method: 'POST', signal: run.controller.signal,
      headers: authHeaders({'Content-Type': 'application/json'}), body: JSON.stringify(body)});
    if (!response.ok) {
      const error = await response.json().catch(() => ({code: 'UNKNOWN', message: 'HTTP ' + response.status}));
      if (response.status === 401) ui.tokenField.hidden = false;
      run.error = error;
    } else {
      await readLines(response, (line, at) => onEvent(run, JSON.parse(line), at));
    }
  } catch (e) {
    run.error = run.error || {code: e.name === 'AbortError' ? 'CANCELLED' : 'UNAVAILABLE', message: e.message};
  }
  finishRun(run);
}

// Calls `onLine(line, receivedAt)` for each line of the body as it arrives.
async function readLines(response, onLine) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    const at = performance.now();
    buffered += decoder.decode(value, {stream: true});
    let newline;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (line.trim()) onLine(line, at);
    }
  }
  if (buffered.trim()) onLine(buffered, performance.now());
}

async function cancel() {
  const run = current;
  if (!run) return;
  ui.cancel.disabled = true;
  try {
    await api(`/v1/requests/${encodeURIComponent(run.body.requestId)}:cancel`, {method: 'POST'});
  } catch (e) {
    // Not in flight (yet, or any more): closing the stream cancels whatever is left.
    run.controller.abort();
  }
}

async function refreshStatus() {
  try {
    const info = await api('/v1/info');
    ui.status.className = 'status' + (info.draining ? ' draining' : '');
    ui.status.innerHTML = '<span class="dot"></span>';
    ui.status.append(`${info.draining ? 'draining · ' : ''}${info.requestsWaiting} waiting · ` +
        `${info.requestsRunning} running · v${info.version}`);
    ui.status.dataset.waiting = info.requestsWaiting;
    ui.status.dataset.running = info.requestsRunning;
  } catch (e) {
    ui.status.className = 'status down';
    ui.status.innerHTML = '<span class="dot"></span>';
    ui.status.append('offline: ' + e.message);
  }
}

ui.form.addEventListener('submit', generate);
ui.cancel.addEventListener('click', cancel);
loadModels();
refreshStatus();
setInterval(() => { if (!document.hidden) refreshStatus(); }, 2000);
