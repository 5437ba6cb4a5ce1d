// The home page: "Start a call" asks the server for a new room and shows its link to share.

import { initI18n, t } from './i18n.js';

const $ = (id) => document.getElementById(id);
const els = {
  start: $('start-call'),
  message: $('message'),
  box: $('link-box'),
  url: $('room-url'),
  copy: $('copy-link'),
  copyStatus: $('copy-status'),
  link: $('room-link'),
};

function showMessage(code) {
  els.message.dataset.code = code;
  els.message.dataset.i18n = `msg.${code}`;
  els.message.textContent = t(`msg.${code}`);
  els.message.hidden = false;
}

function clearMessage() {
  els.message.dataset.code = '';
  delete els.message.dataset.i18n;
  els.message.textContent = '';
  els.message.hidden = true;
}

function setText(el, key) {
  el.dataset.i18n = key;
  el.textContent = t(key);
}

// Only accept a link to a room on our own origin: the page must never send people elsewhere, even if
// a proxy in front of the server rewrote the answer.
function roomUrlFrom(data) {
  const roomId = typeof data?.room_id === 'string' ? data.room_id : '';
  if (!/^[A-Za-z0-9_-]{22,64}$/.test(roomId)) return null;
  const expected = new URL(`/r/${roomId}`, window.location.origin);
  if (typeof data.url === 'string') {
    try {
      const given = new URL(data.url, window.location.origin);
      if ((given.protocol === 'https:' || given.protocol === 'http:') && given.pathname === expected.pathname) {
        return given.href;
      }
    } catch {
      /* fall back to the link we can build ourselves */
    }
  }
  return expected.href;
}

async function startCall() {
  clearMessage();
  els.start.disabled = true;
  setText(els.start, 'home.starting');
  try {
    let response;
    try {
      response = await fetch('/rooms', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: '{}',
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch {
      showMessage('server-unreachable');
      return;
    }
    if (response.status === 429) {
      showMessage('rate-limited');
      return;
    }
    if (!response.ok) {
      showMessage('generic');
      return;
    }
    const url = roomUrlFrom(await response.json().catch(() => null));
    if (!url) {
      showMessage('generic');
      return;
    }
    els.url.value = url;
    els.link.href = url;
    els.copyStatus.textContent = '';
    delete els.copyStatus.dataset.i18n;
    els.box.hidden = false;
    els.url.focus();
    els.url.select();
  } finally {
    els.start.disabled = false;
    setText(els.start, 'home.start');
  }
}

async function copyLink() {
  const url = els.url.value;
  let copied = false;
  try {
    await navigator.clipboard.writeText(url);
    copied = true;
  } catch {
    // Older browsers or a denied clipboard permission: the selection-based way still works often.
    els.url.focus();
    els.url.select();
    try {
      copied = document.execCommand('copy');
    } catch {
      copied = false;
    }
  }
  setText(els.copyStatus, copied ? 'home.copied' : 'home.copy-failed');
}

initI18n();
els.start.addEventListener('click', startCall);
els.copy.addEventListener('click', copyLink);
// Clicking into the read-only field selects the whole link, ready to copy by hand.
els.url.addEventListener('focus', () => els.url.select());
