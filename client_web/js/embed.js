/*
 * kijkmee embed script: show a kijkmee call inside your own site (docs/embedding.md).
 *
 *   <div id="call" style="height: 600px"></div>
 *   <script src="https://call.example.nl/embed.js"></script>
 *   <script>
 *     var call = Kijkmee.embed('#call', { url: 'https://call.example.nl/r/<room id>' });
 *     call.on('joined', function (data) { console.log('in the call with', data.participants); });
 *     call.mute();
 *   </script>
 *
 * A classic script without dependencies; it defines only `window.Kijkmee`. It makes the iframe (with the
 * camera, microphone, screen-sharing, autoplay and fullscreen permissions a call needs) and talks to the
 * call page with postMessage: messages are sent to the call's own origin only, and taken only from that
 * origin *and* that iframe. Your page's origin goes to the call page in the URL fragment (which is never
 * sent to a server); the call page talks back only when the room lists your origin (embed_origins).
 *
 * Events (call.on(name, fn); fn(data, name); name '*' for all):
 *   ready                {state}              the call page is loaded and listens to commands
 *   joined               {peerId, participants}
 *   participant-joined   {peerId, participants}
 *   participant-left     {peerId, participants}
 *   media-changed        {muted, cameraOff}   after a button or a command
 *   left                 {}                   the person left (button or `leave` command)
 *   room-full            {}
 *   expired              {}                   the link no longer works
 *   ended                {}                   the room was ended (DELETE /api/v1/rooms/<id>)
 *   error                {code}               e.g. permission-denied, server-unreachable; `not-loaded`
 *                                             when no `ready` came within readyTimeoutMs
 * Peer ids are random per join; no event carries a name or an address.
 *
 * Commands: call.mute(), call.unmute(), call.cameraOff(), call.cameraOn(), call.leave(), or
 * call.send('mute' | 'unmute' | 'camera-off' | 'camera-on' | 'leave'). Sent before `ready`, they wait
 * for it.
 */
(function () {
  'use strict';

  if (window.Kijkmee && typeof window.Kijkmee.embed === 'function') return; // loaded twice

  var PROTOCOL_VERSION = 1;
  var ALLOW = 'camera; microphone; display-capture; autoplay; fullscreen';
  var COMMANDS = ['mute', 'unmute', 'camera-off', 'camera-on', 'leave'];
  var ROOM_PATH = /^\/r\/[A-Za-z0-9_-]{22,64}\/?$/;
  var READY_TIMEOUT_MS = 20000;

  function report(error) {
    // A listener's exception must not stop the others, nor hide: rethrow it on its own.
    setTimeout(function () {
      throw error;
    }, 0);
  }

  /**
   * Show the call at options.url in `container` (an element or a CSS selector).
   * Options: url (required: https://<kijkmee>/r/<room id>), title (the iframe's accessible name,
   * default "Video call"), readyTimeoutMs (default 20000).
   */
  function embed(container, options) {
    var element = typeof container === 'string' ? document.querySelector(container) : container;
    if (!element || typeof element.appendChild !== 'function') {
      throw new TypeError('Kijkmee.embed: container must be an element or a CSS selector that finds one');
    }
    options = options || {};
    var url = new URL(String(options.url || ''), window.location.href);
    if (url.protocol !== 'https:' || !ROOM_PATH.test(url.pathname)) {
      throw new TypeError('Kijkmee.embed: url must be a kijkmee call link, https://…/r/<room id>');
    }
    var callOrigin = url.origin;
    url.search = '';
    url.hash = 'embed=' + encodeURIComponent(window.location.origin);

    var iframe = document.createElement('iframe');
    iframe.setAttribute('allow', ALLOW);
    iframe.setAttribute('title', options.title || 'Video call');
    // Only our origin goes along as the referrer (kijkmee knows it from embed_origins anyway), never
    // the path of your page.
    iframe.referrerPolicy = 'origin';
    iframe.style.border = '0';
    iframe.style.width = '100%';
    iframe.style.height = '100%';
    iframe.style.display = 'block';
    iframe.src = url.href;

    var listeners = {};
    var queued = [];
    var ready = false;
    var destroyed = false;
    var handle;

    function emit(name, data) {
      var fns = (listeners[name] || []).concat(listeners['*'] || []);
      for (var i = 0; i < fns.length; i += 1) {
        try {
          fns[i].call(handle, data, name);
        } catch (error) {
          report(error);
        }
      }
    }

    function post(command) {
      iframe.contentWindow.postMessage({ kijkmee: PROTOCOL_VERSION, command: command }, callOrigin);
    }

    function onMessage(event) {
      // Only the call page in *this* iframe, at the call's origin: not another frame, not another site.
      if (destroyed || event.origin !== callOrigin || event.source !== iframe.contentWindow) return;
      var message = event.data;
      if (!message || typeof message !== 'object' || message.kijkmee !== PROTOCOL_VERSION) return;
      if (typeof message.event !== 'string') return;
      var data = message.data && typeof message.data === 'object' ? message.data : {};
      if (message.event === 'ready') {
        ready = true;
        clearTimeout(timer);
        handle.state = data.state;
        var waiting = queued.splice(0);
        for (var i = 0; i < waiting.length; i += 1) post(waiting[i]);
      }
      emit(message.event, data);
    }

    var timer = setTimeout(function () {
      if (!ready && !destroyed) emit('error', { code: 'not-loaded' });
    }, options.readyTimeoutMs > 0 ? options.readyTimeoutMs : READY_TIMEOUT_MS);

    handle = {
      iframe: iframe,
      origin: callOrigin,
      state: null,
      /** Call fn(data, name) for event `name` ('*': every event). */
      on: function (name, fn) {
        if (typeof fn !== 'function') throw new TypeError('Kijkmee: on(name, fn) needs a function');
        (listeners[name] = listeners[name] || []).push(fn);
        return handle;
      },
      off: function (name, fn) {
        listeners[name] = (listeners[name] || []).filter(function (f) {
          return f !== fn;
        });
        return handle;
      },
      /** Send one command; before `ready` it waits for it. */
      send: function (command) {
        if (COMMANDS.indexOf(command) < 0) throw new TypeError('Kijkmee: unknown command ' + command);
        if (destroyed) return handle;
        if (ready) post(command);
        else queued.push(command);
        return handle;
      },
      mute: function () {
        return handle.send('mute');
      },
      unmute: function () {
        return handle.send('unmute');
      },
      cameraOff: function () {
        return handle.send('camera-off');
      },
      cameraOn: function () {
        return handle.send('camera-on');
      },
      leave: function () {
        return handle.send('leave');
      },
      /** Remove the iframe (the call page frees the seat as it closes) and stop listening. */
      destroy: function () {
        destroyed = true;
        clearTimeout(timer);
        window.removeEventListener('message', onMessage);
        if (iframe.parentNode) iframe.parentNode.removeChild(iframe);
        listeners = {};
      },
    };

    window.addEventListener('message', onMessage);
    element.appendChild(iframe);
    return handle;
  }

  window.Kijkmee = { embed: embed, version: PROTOCOL_VERSION, commands: COMMANDS.slice() };
})();
