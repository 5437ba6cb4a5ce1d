// Dutch and English texts for every string the client shows, and the code that puts them on the page.
//
// Static HTML marks translatable text with attributes, so the pages stay readable without JS tricks:
//   data-i18n="key"             → element.textContent
//   data-i18n-aria-label="key"  → aria-label   (icon-like buttons, regions)
//   data-i18n-title="key"       → title
//   data-i18n-placeholder="key" → placeholder
// Texts may contain {name}; it is filled from the element's data-i18n-name attribute (never HTML).
//
// The language is Dutch when the first of the browser's languages that we support is Dutch, English
// otherwise; a choice made with button#lang is remembered in localStorage under `kijkmee.lang`.

export const STORAGE_KEY = 'kijkmee.lang';
export const LANGUAGES = ['nl', 'en'];

const messagesEn = {
  'msg.permission-denied':
    'Your browser is not allowing this page to use your camera and microphone. To allow it on a computer, click the camera or lock icon in the address bar at the top of the window and choose "Allow"; on a phone, tap the lock or "aA" icon next to the web address and allow the camera and microphone (on an iPhone you may also need Settings > Safari > Camera). Then reload this page. You can also join without them, but the others may not see or hear you.',
  'msg.no-device':
    "We couldn't find a camera or microphone. Check that it is connected and switched on, then reload this page. You can still join the call, but the others may not see or hear you.",
  'msg.device-in-use':
    'Your camera or microphone is being used by another app, for example another video-calling program or, on a phone, a call that is still going on. Close that app or end that call, then reload this page.',
  'msg.insecure-context':
    "Your browser doesn't allow the camera and microphone on this page. Open the link exactly as you received it (it starts with https://), or use an up-to-date browser such as Firefox, Chrome, Edge or Safari.",
  'msg.room-full':
    'This call already has three people, which is the most a call can have. Try again later, or ask one of them to start a new call with you.',
  'msg.connection-failed':
    "We couldn't connect you to someone in the call. This can happen on strict company or public Wi-Fi networks. We're trying again; if it keeps failing, try another network, such as your mobile data.",
  'msg.server-unreachable':
    "We can't reach kijkmee right now. Check your internet connection; we'll keep trying for a moment, or you can try again yourself.",
  'msg.bad-room': "This call link doesn't work. Check that you copied the whole link, or ask for a new one.",
  'msg.rate-limited': 'Too many attempts in a short time. Please wait a minute, then try again.',
  'msg.generic': 'Something went wrong. Please reload the page and try again.',
  'msg.share-failed': "Sharing your screen didn't work. Your browser or device may not allow it.",
};

const messagesNl = {
  'msg.permission-denied':
    "Je browser geeft deze pagina geen toegang tot je camera en microfoon. Op een computer klik je bovenin het venster in de adresbalk op het camera- of slotjesicoon en kies je 'Toestaan'; op een telefoon tik je op het slotje of 'aA' naast het webadres en sta je camera en microfoon toe (op een iPhone soms ook via Instellingen > Safari > Camera). Laad daarna deze pagina opnieuw. Je kunt ook zonder deelnemen, maar de anderen zien of horen je dan misschien niet.",
  'msg.no-device':
    'We konden geen camera of microfoon vinden. Controleer of die is aangesloten en aan staat, en laad deze pagina opnieuw. Je kunt toch deelnemen, maar de anderen zien of horen je dan misschien niet.',
  'msg.device-in-use':
    'Je camera of microfoon wordt al door een ander programma gebruikt, bijvoorbeeld een ander videobelprogramma of, op een telefoon, een gesprek dat nog loopt. Sluit dat programma of beëindig dat gesprek, en laad deze pagina opnieuw.',
  'msg.insecure-context':
    'Je browser staat de camera en microfoon op deze pagina niet toe. Open de link precies zoals je die hebt gekregen (hij begint met https://), of gebruik een recente browser zoals Firefox, Chrome, Edge of Safari.',
  'msg.room-full':
    'Aan dit gesprek doen al drie mensen mee, en meer kan niet. Probeer het later nog eens, of vraag een van hen om een nieuw gesprek met je te starten.',
  'msg.connection-failed':
    'Het lukt niet om je te verbinden met iemand in het gesprek. Dat kan gebeuren op streng beveiligde bedrijfsnetwerken of openbare wifi. We proberen het opnieuw; lukt het niet, gebruik dan een ander netwerk, bijvoorbeeld je mobiele data.',
  'msg.server-unreachable':
    'We kunnen kijkmee nu niet bereiken. Controleer je internetverbinding; we blijven het nog even proberen, of je kunt het zelf opnieuw proberen.',
  'msg.bad-room': 'Deze gesprekslink werkt niet. Controleer of je de hele link hebt gekopieerd, of vraag om een nieuwe.',
  'msg.rate-limited': 'Te veel pogingen in korte tijd. Wacht een minuut en probeer het dan opnieuw.',
  'msg.generic': 'Er ging iets mis. Laad de pagina opnieuw en probeer het nog eens.',
  'msg.share-failed': 'Je scherm delen lukte niet. Je browser of apparaat staat het misschien niet toe.',
};

// The pre-join check (prejoin.js): devices, microphone level, in-app browsers, the network check and the
// extra join field. Brand names (WhatsApp…) and the menu symbols ⋮ and ⋯ are the same in both languages.
const prejoinEn = {
  'msg.overconstrained':
    "Your camera or microphone couldn't be started with the settings this page asks for (a camera or microphone chosen earlier may not be there any more). Choose another one in the lists below the picture, or reload this page. You can still join the call, but the others may not see or hear you.",
  'prejoin.camera-label': 'Camera',
  'prejoin.mic-label': 'Microphone',
  'prejoin.camera-n': 'Camera {name}',
  'prejoin.mic-n': 'Microphone {name}',
  'prejoin.no-camera': 'No camera found',
  'prejoin.no-mic': 'No microphone found',
  'prejoin.level-label': 'Microphone level',
  'prejoin.level-hint': 'Say something: the bar moves when your microphone hears you.',
  'prejoin.phone-label': 'Your phone number (optional)',
  'prejoin.phone-hint': 'Only the organiser of this call sees it. It is stored encrypted.',
  'prejoin.phone-invalid':
    "This doesn't look like a phone number. Use digits (with + - ( ) or spaces if you like), or leave it empty.",

  'inapp.title': 'Open this page in your browser',
  'inapp.text':
    "You opened this link inside {name}. Video calls often don't work there: the app may block your camera or microphone.",
  'inapp.steps-whatsapp-android': 'Tap ⋮ at the top right, then "Open in Chrome" (or "Open in browser").',
  'inapp.steps-whatsapp-ios': 'Tap ⋯ or the compass icon, then "Open in Safari".',
  'inapp.steps-facebook-android': 'Tap ⋮ at the top right, then "Open in external browser" (or "Open in Chrome").',
  'inapp.steps-facebook-ios': 'Tap ⋯ at the top or bottom right, then "Open in external browser" (or "Open in Safari").',
  'inapp.steps-messenger-android': 'Tap ⋮ at the top right, then "Open in external browser" (or "Open in Chrome").',
  'inapp.steps-messenger-ios': 'Tap ⋯ at the top or bottom right, then "Open in external browser" (or "Open in Safari").',
  'inapp.steps-instagram-android': 'Tap ⋮ at the top right, then "Open in Chrome" (or "Open in external browser").',
  'inapp.steps-instagram-ios': 'Tap ⋯ at the top right, then "Open in external browser".',
  'inapp.steps-linkedin-android': 'Tap ⋮ at the top right, then "Open in browser".',
  'inapp.steps-linkedin-ios': 'Tap ⋯ at the top right, then "Open in Safari".',
  'inapp.copy-hint': 'Or copy the link and paste it into the address bar of Chrome, Safari or another browser.',
  'inapp.copy': 'Copy link',
  'inapp.copied': 'Link copied. Now open your browser and paste it into the address bar.',
  'inapp.copy-failed': "Copying didn't work. Press and hold the link below to copy it.",
  'inapp.link-label': 'Link to this call',

  'netcheck.title': 'Network check',
  'netcheck.udp': 'Fast route (UDP)',
  'netcheck.tcp': 'Backup route (TCP)',
  'netcheck.tls': 'Secure web route (TLS)',
  'netcheck.checking': 'Checking…',
  'netcheck.ok': 'Works',
  'netcheck.fail': 'Blocked',
  'netcheck.verdict-checking': 'Checking whether your network can reach our server…',
  'netcheck.verdict-good': 'All good: your network can reach our server in every way.',
  'netcheck.verdict-partial':
    'Your network blocks some connections. Your call can still go through our server, and it stays encrypted.',
  'netcheck.verdict-blocked':
    "We can't reach our server from this network, so the call may fail. If it doesn't connect, try another network, such as your mobile data.",
  'netcheck.verdict-unavailable': "The network check isn't available right now. You can still join the call.",
  'netcheck.again': 'Check again',
};

const prejoinNl = {
  'msg.overconstrained':
    'Je camera of microfoon kon niet starten met de instellingen die deze pagina vraagt (misschien is een eerder gekozen camera of microfoon er niet meer). Kies een andere in de lijsten onder het beeld, of laad deze pagina opnieuw. Je kunt toch deelnemen, maar de anderen zien of horen je dan misschien niet.',
  'prejoin.camera-label': 'Camera',
  'prejoin.mic-label': 'Microfoon',
  'prejoin.camera-n': 'Camera {name}',
  'prejoin.mic-n': 'Microfoon {name}',
  'prejoin.no-camera': 'Geen camera gevonden',
  'prejoin.no-mic': 'Geen microfoon gevonden',
  'prejoin.level-label': 'Microfoonniveau',
  'prejoin.level-hint': 'Zeg iets: de balk beweegt als je microfoon je hoort.',
  'prejoin.phone-label': 'Je telefoonnummer (niet verplicht)',
  'prejoin.phone-hint': 'Alleen de organisator van dit gesprek ziet het. Het wordt versleuteld opgeslagen.',
  'prejoin.phone-invalid':
    'Dit lijkt geen telefoonnummer. Gebruik cijfers (eventueel met + - ( ) of spaties), of laat het leeg.',

  'inapp.title': 'Open deze pagina in je browser',
  'inapp.text':
    'Je hebt deze link in {name} geopend. Videobellen werkt daar vaak niet: de app kan je camera of microfoon blokkeren.',
  'inapp.steps-whatsapp-android': 'Tik rechtsboven op ⋮ en kies "Openen in Chrome" (of "Openen in browser").',
  'inapp.steps-whatsapp-ios': 'Tik op ⋯ of op het kompasicoon en kies "Open in Safari".',
  'inapp.steps-facebook-android': 'Tik rechtsboven op ⋮ en kies "Openen in externe browser" (of "Openen in Chrome").',
  'inapp.steps-facebook-ios': 'Tik rechtsboven of rechtsonder op ⋯ en kies "Openen in externe browser" (of "Open in Safari").',
  'inapp.steps-messenger-android': 'Tik rechtsboven op ⋮ en kies "Openen in externe browser" (of "Openen in Chrome").',
  'inapp.steps-messenger-ios': 'Tik rechtsboven of rechtsonder op ⋯ en kies "Openen in externe browser" (of "Open in Safari").',
  'inapp.steps-instagram-android': 'Tik rechtsboven op ⋮ en kies "Openen in Chrome" (of "Openen in externe browser").',
  'inapp.steps-instagram-ios': 'Tik rechtsboven op ⋯ en kies "Openen in externe browser".',
  'inapp.steps-linkedin-android': 'Tik rechtsboven op ⋮ en kies "Openen in browser".',
  'inapp.steps-linkedin-ios': 'Tik rechtsboven op ⋯ en kies "Open in Safari".',
  'inapp.copy-hint': 'Of kopieer de link en plak hem in de adresbalk van Chrome, Safari of een andere browser.',
  'inapp.copy': 'Link kopiëren',
  'inapp.copied': 'Link gekopieerd. Open nu je browser en plak hem in de adresbalk.',
  'inapp.copy-failed': 'Kopiëren lukte niet. Houd de link hieronder ingedrukt om hem te kopiëren.',
  'inapp.link-label': 'Link naar dit gesprek',

  'netcheck.title': 'Netwerkcontrole',
  'netcheck.udp': 'Snelle route (UDP)',
  'netcheck.tcp': 'Reserveroute (TCP)',
  'netcheck.tls': 'Beveiligde webroute (TLS)',
  'netcheck.checking': 'Bezig…',
  'netcheck.ok': 'Werkt',
  'netcheck.fail': 'Geblokkeerd',
  'netcheck.verdict-checking': 'We controleren of je netwerk onze server kan bereiken…',
  'netcheck.verdict-good': 'Alles in orde: je netwerk kan onze server op alle manieren bereiken.',
  'netcheck.verdict-partial':
    'Je netwerk blokkeert sommige verbindingen. Je gesprek kan nog steeds via onze server lopen, en het blijft versleuteld.',
  'netcheck.verdict-blocked':
    'We kunnen onze server vanaf dit netwerk niet bereiken, dus het gesprek kan mislukken. Lukt het niet, probeer dan een ander netwerk, bijvoorbeeld je mobiele data.',
  'netcheck.verdict-unavailable': 'De netwerkcontrole is nu niet beschikbaar. Je kunt wel deelnemen aan het gesprek.',
  'netcheck.again': 'Opnieuw controleren',
};

// Calls one can't be in (any more): the full, expired and ended views of the call page.
const endViewsEn = {
  'full.title': 'This call is full',
  'full.text':
    'Everyone this call has room for is already in it. Try again in a little while, or ask the person who invited you for a new link.',
  'full.retry': 'Try again',
  'end.devices-off': 'Your camera and microphone are off.',
  'expired.title': "This link doesn't work any more",
  'expired.text':
    "The call may have ended, or the link has expired or isn't complete. Check that you have the whole link, or ask the person who sent it to you for a new one.",
  'expired.devices': 'We did not turn on your camera or microphone.',
  'ended.title': 'The call has ended',
  'ended.text': 'The organiser ended this call for everyone. Your camera and microphone are off now.',
  'ended.next': 'You can close this page.',
};

const endViewsNl = {
  'full.title': 'Dit gesprek is vol',
  'full.text':
    'Er is geen plek meer in dit gesprek. Probeer het over een tijdje opnieuw, of vraag degene die je uitnodigde om een nieuwe link.',
  'full.retry': 'Opnieuw proberen',
  'end.devices-off': 'Je camera en microfoon staan uit.',
  'expired.title': 'Deze link werkt niet meer',
  'expired.text':
    'Misschien is het gesprek afgelopen, of is de link verlopen of niet helemaal compleet. Controleer of je de hele link hebt, of vraag degene die hem stuurde om een nieuwe.',
  'expired.devices': 'We hebben je camera en microfoon niet aangezet.',
  'ended.title': 'Het gesprek is beëindigd',
  'ended.text': 'De organisator heeft het gesprek voor iedereen beëindigd. Je camera en microfoon staan nu uit.',
  'ended.next': 'Je kunt deze pagina sluiten.',
};

/** The dictionaries. Every key exists in both (checked by checkDictionaries()). */
export const dictionaries = {
  en: {
    'lang.switch': 'Nederlands',
    'lang.switch-label': 'Switch the language to Dutch',
    'brand.home': 'kijkmee, home page',
    'message.close': 'Close message',

    'home.title': 'Video calls without the fuss',
    'home.page-title': 'kijkmee: private video calls',
    'home.intro':
      'Start a private video call for up to three people. No account and no app: share the link and talk.',
    'home.start': 'Start a call',
    'home.starting': 'Creating your call…',
    'home.link-label': 'Your call link',
    'home.link-hint': 'Send this link to the people you want to call. Anyone who has the link can join.',
    'home.copy': 'Copy link',
    'home.copied': 'Link copied.',
    'home.copy-failed': "Copying didn't work. Select the link and copy it yourself.",
    'home.join': 'Join the call',
    'home.privacy':
      "Whenever possible, the call goes straight between your devices, and it is always encrypted. We don't record calls.",

    'room.page-title': 'Video call · kijkmee',
    'prejoin.title': 'Ready to join?',
    'prejoin.preview-label': 'Your camera picture',
    'prejoin.checking': 'Checking your camera and microphone…',
    'prejoin.no-preview': 'No camera picture',
    'prejoin.name-label': 'Your name (optional)',
    'prejoin.name-hint': 'The others in the call see this name. Leave it empty to appear as "Guest".',
    'prejoin.join': 'Join the call',
    'prejoin.joining': 'Joining…',
    'prejoin.retry': 'Try again',

    'call.title': 'In the call',
    'call.tiles-label': 'Participants',
    'call.waiting': 'Waiting for others. Send them the link of this page to invite them.',
    'call.controls': 'Call controls',
    'call.mute': 'Mute',
    'call.mute-label': 'Mute microphone',
    'call.camera': 'Camera off',
    'call.camera-label': 'Camera off: stop sending your picture',
    'call.leave': 'Leave',
    'call.leave-label': 'Leave the call',
    'call.you': 'You',
    'call.you-named': '{name} (you)',
    guest: 'Guest',
    'tile.connecting': 'Connecting…',
    'tile.failed': 'No connection',
    'tile.away': 'Reconnecting…',
    'call.sound-on': 'Tap to hear the others',
    'tile.no-video': 'No camera picture',
    'tile.camera-off': 'Your camera is off',
    // In-call controls and what the tiles show (incall.js)
    'call.share': 'Share screen',
    'call.share-label': 'Share your screen with the others',
    'call.devices': 'Devices',
    'call.devices-label': 'Choose your camera and microphone',
    'devices.title': 'Camera and microphone',
    'devices.camera': 'Camera',
    'devices.microphone': 'Microphone',
    'devices.unnamed-camera': 'Camera {name}',
    'devices.unnamed-microphone': 'Microphone {name}',
    'devices.none': 'None found',
    'tile.sharing': 'You are sharing your screen',
    'route.direct': 'direct',
    'route.relay': 'via relay, still encrypted',
    'route.direct-title': 'Your connection with this person goes straight between your devices.',
    'route.relay-title':
      'No direct path was found, so your connection with this person goes through our relay server. It stays encrypted: the relay cannot see or hear the call.',
    'quality.good': 'Connection: good',
    'quality.fair': 'Connection: fair',
    'quality.poor': 'Connection: poor',
    'verify.button': 'Verify',
    'verify.title': 'Verification code',
    'verify.pending': 'The code appears once you are connected.',
    'verify.explain':
      'Read this code aloud to each other. The same code on both screens means the call is encrypted between the two of you with nobody in between. Different codes: someone may be listening in, so hang up.',

    'left.title': 'You left the call',
    'left.text': 'Your camera and microphone are off now.',
    'left.rejoin': 'Rejoin',
    'left.new': 'Start a new call',

    ...messagesEn,
    ...prejoinEn,
    ...endViewsEn,
  },
  nl: {
    'lang.switch': 'English',
    'lang.switch-label': 'Wissel de taal naar Engels',
    'brand.home': 'kijkmee, startpagina',
    'message.close': 'Melding sluiten',

    'home.title': 'Videobellen zonder gedoe',
    'home.page-title': 'kijkmee: privé videobellen',
    'home.intro':
      'Start een privé videogesprek met maximaal drie personen. Geen account en geen app: deel de link en praat.',
    'home.start': 'Start een gesprek',
    'home.starting': 'Je gesprek wordt gemaakt…',
    'home.link-label': 'Link naar je gesprek',
    'home.link-hint': 'Stuur deze link naar de mensen die je wilt bellen. Iedereen die de link heeft, kan meedoen.',
    'home.copy': 'Link kopiëren',
    'home.copied': 'Link gekopieerd.',
    'home.copy-failed': 'Kopiëren lukte niet. Selecteer de link en kopieer hem zelf.',
    'home.join': 'Naar het gesprek',
    'home.privacy':
      'Waar het kan, loopt het gesprek rechtstreeks tussen jullie apparaten, en het is altijd versleuteld. We nemen gesprekken niet op.',

    'room.page-title': 'Videogesprek · kijkmee',
    'prejoin.title': 'Klaar om mee te doen?',
    'prejoin.preview-label': 'Je camerabeeld',
    'prejoin.checking': 'Je camera en microfoon worden gecontroleerd…',
    'prejoin.no-preview': 'Geen camerabeeld',
    'prejoin.name-label': 'Je naam (niet verplicht)',
    'prejoin.name-hint': 'De anderen in het gesprek zien deze naam. Laat het leeg om als "Gast" mee te doen.',
    'prejoin.join': 'Deelnemen',
    'prejoin.joining': 'Bezig met deelnemen…',
    'prejoin.retry': 'Opnieuw proberen',

    'call.title': 'In gesprek',
    'call.tiles-label': 'Deelnemers',
    'call.waiting': 'Wachten op anderen. Stuur ze de link van deze pagina om ze uit te nodigen.',
    'call.controls': 'Gespreksknoppen',
    'call.mute': 'Dempen',
    'call.mute-label': 'Microfoon dempen',
    'call.camera': 'Camera uit',
    'call.camera-label': 'Camera uit: stuur geen beeld',
    'call.leave': 'Ophangen',
    'call.leave-label': 'Ophangen: het gesprek verlaten',
    'call.you': 'Jij',
    'call.you-named': '{name} (jij)',
    guest: 'Gast',
    'tile.connecting': 'Verbinden…',
    'tile.failed': 'Geen verbinding',
    'tile.away': 'Opnieuw verbinden…',
    'call.sound-on': 'Tik om de anderen te horen',
    'tile.no-video': 'Geen camerabeeld',
    'tile.camera-off': 'Je camera staat uit',
    // In-call controls and what the tiles show (incall.js)
    'call.share': 'Scherm delen',
    'call.share-label': 'Deel je scherm met de anderen',
    'call.devices': 'Apparaten',
    'call.devices-label': 'Kies je camera en microfoon',
    'devices.title': 'Camera en microfoon',
    'devices.camera': 'Camera',
    'devices.microphone': 'Microfoon',
    'devices.unnamed-camera': 'Camera {name}',
    'devices.unnamed-microphone': 'Microfoon {name}',
    'devices.none': 'Geen gevonden',
    'tile.sharing': 'Je deelt je scherm',
    'route.direct': 'direct',
    'route.relay': 'via relay, nog steeds versleuteld',
    'route.direct-title': 'Je verbinding met deze persoon loopt rechtstreeks tussen jullie apparaten.',
    'route.relay-title':
      'Er is geen directe weg gevonden, dus je verbinding met deze persoon loopt via onze relayserver. Hij blijft versleuteld: de relay kan het gesprek niet zien of horen.',
    'quality.good': 'Verbinding: goed',
    'quality.fair': 'Verbinding: matig',
    'quality.poor': 'Verbinding: slecht',
    'verify.button': 'Controleer',
    'verify.title': 'Controlecode',
    'verify.pending': 'De code verschijnt zodra jullie verbonden zijn.',
    'verify.explain':
      'Lees deze code aan elkaar voor. Staat op beide schermen dezelfde code, dan is het gesprek versleuteld tussen jullie tweeën en zit er niemand tussen. Verschillen de codes, dan luistert misschien iemand mee: hang op.',

    'left.title': 'Je hebt het gesprek verlaten',
    'left.text': 'Je camera en microfoon staan nu uit.',
    'left.rejoin': 'Opnieuw deelnemen',
    'left.new': 'Nieuw gesprek starten',

    ...messagesNl,
    ...prejoinNl,
    ...endViewsNl,
  },
};

/** Keys missing from one of the dictionaries; empty when both are complete. */
export function checkDictionaries() {
  const missing = [];
  for (const a of LANGUAGES) {
    for (const b of LANGUAGES) {
      for (const key of Object.keys(dictionaries[a])) {
        if (!(key in dictionaries[b])) missing.push(`${b}:${key}`);
      }
    }
  }
  return [...new Set(missing)];
}

/**
 * Pick the language: a remembered valid choice wins; otherwise the first browser language we support
 * decides (so "de, nl" gives Dutch and "en-GB, nl" gives English); nothing supported gives English.
 */
export function pickLanguage(languages = [], stored = null) {
  if (LANGUAGES.includes(stored)) return stored;
  for (const tag of languages || []) {
    const lower = String(tag).toLowerCase();
    if (lower.startsWith('nl')) return 'nl';
    if (lower.startsWith('en')) return 'en';
  }
  return 'en';
}

let current = 'en';
const listeners = new Set();

export function getLang() {
  return current;
}

/** Translate `key` in the current language; English, then the key itself, are the fallbacks. */
export function t(key, vars = {}) {
  const text = dictionaries[current][key] ?? dictionaries.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

// localStorage can throw (blocked storage, sandboxed embeds); the language choice is a nicety, so a
// failure must never stop the call page.
function readStored() {
  try {
    return globalThis.localStorage?.getItem(STORAGE_KEY) ?? null;
  } catch {
    return null;
  }
}

function writeStored(lang) {
  try {
    globalThis.localStorage?.setItem(STORAGE_KEY, lang);
  } catch {
    /* not remembered; still switched for this page */
  }
}

const ATTRIBUTES = [
  ['i18nAriaLabel', 'aria-label'],
  ['i18nTitle', 'title'],
  ['i18nPlaceholder', 'placeholder'],
];

/** Apply the current language to `root` and everything under it that carries data-i18n* attributes. */
export function applyTranslations(root = document) {
  const nodes = [];
  if (root.nodeType === 1) nodes.push(root);
  nodes.push(...root.querySelectorAll('[data-i18n], [data-i18n-aria-label], [data-i18n-title], [data-i18n-placeholder]'));
  // Only what differs is written: the page's HTML is in English already, and rewriting every text
  // would make the browser restyle and lay out the whole page again while the call is starting.
  for (const el of nodes) {
    const vars = el.dataset.i18nName !== undefined ? { name: el.dataset.i18nName } : {};
    if (el.dataset.i18n) {
      const text = t(el.dataset.i18n, vars);
      if (el.textContent !== text) el.textContent = text;
    }
    for (const [prop, attr] of ATTRIBUTES) {
      if (!el.dataset[prop]) continue;
      const value = t(el.dataset[prop], vars);
      if (el.getAttribute(attr) !== value) el.setAttribute(attr, value);
    }
  }
}

/** Switch language, re-translate the page, remember the choice and tell listeners. */
export function setLang(lang, { remember = true } = {}) {
  if (!LANGUAGES.includes(lang)) return;
  current = lang;
  if (remember) writeStored(lang);
  if (typeof document !== 'undefined') {
    document.documentElement.lang = lang;
    applyTranslations(document);
    const titleKey = document.documentElement.dataset.i18nTitleKey;
    if (titleKey) document.title = t(titleKey);
    // The switch button names the *other* language in that language, so screen readers should
    // pronounce it as such.
    const button = document.getElementById('lang');
    if (button) button.lang = lang === 'nl' ? 'en' : 'nl';
  }
  for (const fn of listeners) fn(lang);
}

/** Call `fn(lang)` after every language switch (for text that is built in code). */
export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Pick the language for this visit, translate the page and wire button#lang. */
export function initI18n() {
  const languages = globalThis.navigator?.languages?.length
    ? globalThis.navigator.languages
    : [globalThis.navigator?.language].filter(Boolean);
  // Not remembered: only an explicit click on button#lang is a choice worth keeping.
  setLang(pickLanguage(languages, readStored()), { remember: false });
  const button = typeof document !== 'undefined' ? document.getElementById('lang') : null;
  if (button) {
    button.addEventListener('click', () => setLang(current === 'nl' ? 'en' : 'nl'));
  }
  return current;
}
