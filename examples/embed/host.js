// The example page's own script: show the call, mirror its events, wire our buttons (docs/embedding.md).
// Kijkmee comes from https://<your kijkmee server>/embed.js, loaded before this file.
(function () {
  'use strict';

  var box = document.getElementById('call');
  var status = document.getElementById('call-status');
  var events = document.getElementById('events');

  var call = Kijkmee.embed(box, {
    url: box.dataset.callUrl,
    title: 'Video appointment with Example Shop',
    readyTimeoutMs: Number(box.dataset.readyTimeoutMs) || undefined,
  });

  // What a person on this page reads; the events carry no names or addresses, only ids and counts.
  var STATUS = {
    ready: 'The call is ready: press "Join the call" inside it.',
    joined: 'You are in the call.',
    'participant-joined': 'Someone joined the call.',
    'participant-left': 'Someone left the call.',
    left: 'You left the call.',
    'room-full': 'The call is full right now.',
    expired: 'This appointment link no longer works. Please book a new appointment.',
    ended: 'The appointment has ended. Thank you!',
    error: 'Something went wrong with the call.',
  };

  call.on('*', function (data, name) {
    var item = document.createElement('li');
    item.dataset.event = name;
    item.textContent = name + ' ' + JSON.stringify(data);
    events.appendChild(item);
    if (STATUS[name]) status.textContent = STATUS[name];
  });

  var buttons = document.querySelectorAll('[data-command]');
  for (var i = 0; i < buttons.length; i += 1) {
    buttons[i].addEventListener('click', function (event) {
      call.send(event.currentTarget.dataset.command);
    });
  }
})();
