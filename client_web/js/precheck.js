// Pure decisions of the pre-join check, kept apart from the DOM so they can be tested on their own:
// which in-app browser a user agent is, which relay URL belongs to which transport, what the
// connectivity results mean for a person, which fields the join form shows, and whether a typed phone
// number will be accepted. No DOM, no network, no storage here.
//
// The user agent is read in the browser only, to pick the right advice: it is never sent or logged.

/** In-app browsers we give "open in your browser" advice for; their embedded views often block the
 *  camera or microphone, or lack WebRTC altogether. Most specific first (Instagram's and Messenger's
 *  agents carry Facebook's markers too). */
const IN_APP = [
  { app: 'instagram', test: /\bInstagram\b/i },
  { app: 'messenger', test: /MessengerForiOS|MessengerLite|Orca-Android|FB_IAB\/MESSENGER/i },
  { app: 'facebook', test: /FBAN\/|FBAV\/|FB_IAB\/|FBIOS|FB4A/ },
  { app: 'linkedin', test: /LinkedInApp/i },
  { app: 'whatsapp', test: /WhatsApp/i },
];

/** Names people know the apps by: the same in Dutch and English. */
export const APP_NAMES = {
  instagram: 'Instagram',
  messenger: 'Messenger',
  facebook: 'Facebook',
  linkedin: 'LinkedIn',
  whatsapp: 'WhatsApp',
};

/** 'instagram' | 'messenger' | 'facebook' | 'linkedin' | 'whatsapp' for an in-app browser, else null. */
export function detectInAppBrowser(userAgent) {
  const ua = String(userAgent ?? '');
  for (const { app, test } of IN_APP) {
    if (test.test(ua)) return app;
  }
  return null;
}

/** 'ios' or 'android' (their menus differ: "…" versus "⋮"), 'other' otherwise. */
export function platformOf(userAgent) {
  const ua = String(userAgent ?? '');
  if (/iPhone|iPad|iPod/.test(ua)) return 'ios';
  if (/Android/.test(ua)) return 'android';
  return 'other';
}

/** The i18n key of the step-by-step advice for `app` on `platform` (android's advice for 'other'). */
export function inAppStepsKey(app, platform) {
  return `inapp.steps-${app}-${platform === 'ios' ? 'ios' : 'android'}`;
}

// ------------------------------------------------------------------------------ connectivity

/** The transports the connectivity check tries, in the order they are shown. */
export const TRANSPORTS = ['udp', 'tcp', 'tls'];

/** 'udp' | 'tcp' | 'tls' of a turn:/turns: URL, or null for anything else (stun:, typos). */
export function transportOfUrl(url) {
  const text = String(url ?? '').trim();
  const match = /^(turns?):[^?]+(?:\?(.*))?$/i.exec(text);
  if (!match) return null;
  if (match[1].toLowerCase() === 'turns') return 'tls';
  const transport = /(?:^|&)transport=(udp|tcp)(?:&|$)/i.exec(match[2] ?? '');
  // RFC 7065: a turn: URL without a transport parameter means UDP.
  return transport ? transport[1].toLowerCase() : 'udp';
}

/**
 * Per transport, the RTCIceServer list holding only that transport's URLs (with the credentials of
 * the server entry they came from); transports without any URL are left out.
 */
export function serversByTransport(iceServers) {
  const out = {};
  for (const server of Array.isArray(iceServers) ? iceServers : []) {
    if (!server || typeof server !== 'object') continue;
    for (const url of [].concat(server.urls ?? [])) {
      const transport = transportOfUrl(url);
      if (!transport) continue;
      const entry = { urls: [url] };
      if (typeof server.username === 'string') entry.username = server.username;
      if (typeof server.credential === 'string') entry.credential = server.credential;
      (out[transport] ??= []).push(entry);
    }
  }
  return out;
}

/**
 * What the per-transport results ('ok' | 'fail', or 'absent' when the server offers no URL for it)
 * mean for a person:
 *   'good'        every offered transport reaches our relay;
 *   'partial'     some do, some don't: calls go through the ones that work (still encrypted);
 *   'blocked'     none does: calls may fail on strict networks;
 *   'unavailable' nothing was offered, so there was nothing to try.
 */
export function connectivityVerdict(results) {
  const offered = TRANSPORTS.map((transport) => results?.[transport] ?? 'absent').filter((r) => r !== 'absent');
  if (offered.length === 0) return 'unavailable';
  const ok = offered.filter((r) => r === 'ok').length;
  if (ok === offered.length) return 'good';
  return ok > 0 ? 'partial' : 'blocked';
}

// ------------------------------------------------------------------------------ join form

/** Which fields the join form shows for a room's `ask` option (GET /r/<room>/status). */
export function askFields(ask) {
  switch (ask) {
    case 'none':
      return { name: false, phone: false };
    case 'phone':
      return { name: false, phone: true };
    case 'name+phone':
      return { name: true, phone: true };
    default: // 'name', and whatever a newer server may say: the name field, as before
      return { name: true, phone: false };
  }
}

// The server's rule (signaling/validation.py PHONE_RE), so a typo is caught in the form instead of
// failing the join.
const PHONE_RE = /^\+?\(?[0-9][0-9 ()./-]{3,30}$/;

/** True when `value` is empty (the field is optional) or a phone number the server will accept. */
export function phoneAcceptable(value) {
  const text = String(value ?? '').trim();
  return text === '' || PHONE_RE.test(text);
}
