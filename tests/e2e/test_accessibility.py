"""What people with a phone, a screen reader or a keyboard get, checked on every view in both languages.

For each view (pre-join check, a call, the page after leaving, an expired link), at desktop size and at a
360 px wide phone viewport, in English and Dutch, an audit in the page checks:
- nothing is wider than the screen (no sideways scrolling at 360 px);
- every control (button, link, field, select) has an accessible name;
- every piece of visible text has WCAG AA contrast against what is behind it (4.5:1, 3:1 for large text);
- every text the code put on the page shows in the page's language (data-i18n keys match the dictionary).
And the call's controls work from the keyboard alone, announcing their state through aria-pressed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.e2e.conftest import ServeProcess
from tests.e2e.test_browser_call import join, wait_for_media_from, wait_state
from tests.e2e.test_relay_call import make_link

pytestmark = pytest.mark.netns

DESKTOP: ViewportSize = {"width": 1280, "height": 720}
PHONE: ViewportSize = {"width": 360, "height": 740}

AUDIT_JS = """
async () => {
  const { dictionaries } = await import('/static/js/i18n.js');
  const lang = document.documentElement.lang;
  const visible = (el) => {
    if (el.closest('[hidden]')) return false;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || style.display === 'none') return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const rgba = (s) => {
    const m = s.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return [0, 0, 0, 0];
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, below) => {
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + below[i] * (1 - a)).concat([1]);
  };
  // What is behind an element's text: its own and its ancestors' backgrounds, composited. A video or
  // picture behind counts as black (tiles are dark, name labels sit on a dark band).
  const background = (el) => {
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
      const style = getComputedStyle(node);
      const color = rgba(style.backgroundColor);
      if (color[3] > 0) layers.push(color);
      if (color[3] >= 1) break;
      if (node.classList && node.classList.contains('tile')) { layers.push([0, 0, 0, 1]); break; }
      if (!node.parentElement) layers.push([255, 255, 255, 1]);
    }
    let result = layers.pop() || [255, 255, 255, 1];
    while (layers.length) result = over(layers.pop(), result);
    return result;
  };
  const luminance = (c) => {
    const [r, g, b] = c.slice(0, 3).map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const contrast = (a, b) => {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };

  const lowContrast = [];
  for (const el of document.body.querySelectorAll('*')) {
    if (['SCRIPT', 'STYLE', 'NOSCRIPT', 'VIDEO', 'svg'].includes(el.tagName)) continue;
    const text = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
    if (!text || !visible(el) || el.closest(':disabled, [aria-disabled="true"]')) continue;
    const style = getComputedStyle(el);
    let opacity = 1;
    for (let node = el; node; node = node.parentElement) opacity *= Number(getComputedStyle(node).opacity);
    const bg = background(el);
    const fg = over(rgba(style.color).map((v, i) => i === 3 ? v * opacity : v), bg);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const ratio = contrast(fg, bg);
    if (ratio < needed) lowContrast.push({text: text.slice(0, 60), ratio: Math.round(ratio * 100) / 100, needed});
  }

  const unnamed = [];
  const controls = 'button, a[href], input:not([type=hidden]), select, textarea, [role=button], [role=switch]';
  for (const el of document.querySelectorAll(controls)) {
    if (!visible(el)) continue;
    let name = el.getAttribute('aria-label') || '';
    const by = el.getAttribute('aria-labelledby');
    if (!name && by) name = by.split(' ').map(id => document.getElementById(id)?.textContent || '').join(' ');
    if (!name && el.labels) name = [...el.labels].map(l => l.textContent).join(' ');
    if (!name) name = el.textContent || el.getAttribute('title') || el.getAttribute('placeholder') || '';
    if (!name.trim()) unnamed.push(el.outerHTML.slice(0, 120));
  }

  const untranslated = [];
  for (const el of document.querySelectorAll('[data-i18n]')) {
    const key = el.dataset.i18n;
    const want = dictionaries[lang]?.[key];
    if (want === undefined) { untranslated.push({key, missing: true}); continue; }
    if (want.includes('{')) continue;  // filled in with a name or number
    if (el.textContent !== want) untranslated.push({key, shown: el.textContent.slice(0, 60)});
  }

  return {
    lang,
    overflow: document.documentElement.scrollWidth - window.innerWidth,
    lowContrast, unnamed, untranslated,
  };
}
"""


def open_page(browser: Browser, url: str, locale: str, viewport: ViewportSize) -> Page:
    context = browser.new_context(ignore_https_errors=True, locale=locale, viewport=viewport)
    page = context.new_page()
    page.goto(url)
    return page


def audit(page: Page, view: str) -> None:
    report: dict[str, Any] = page.evaluate(AUDIT_JS)
    problems = {key: report[key] for key in ("lowContrast", "unnamed", "untranslated") if report[key]}
    if report["overflow"] > 0:
        problems["overflow"] = report["overflow"]
    assert not problems, f"{view} ({report['lang']}, {page.viewport_size}): {json.dumps(problems, indent=1)}"


LOCALES = [("en-GB", "en"), ("nl-NL", "nl")]
VIEWPORTS = [("desktop", DESKTOP), ("phone", PHONE)]


@pytest.mark.parametrize("locale,lang", LOCALES)
@pytest.mark.parametrize("size,viewport", VIEWPORTS)
def test_every_view_fits_reads_and_names_its_controls(
    serve: ServeProcess, browser: Browser, locale: str, lang: str, size: str, viewport: ViewportSize
) -> None:
    url = make_link(serve)
    me = open_page(browser, url, locale, viewport)
    other = open_page(browser, url, "en-GB", DESKTOP)
    try:
        assert me.evaluate("document.documentElement.lang") == lang
        wait_state(me, "prejoin")
        expect(me.locator("#join")).to_be_enabled()
        audit(me, "pre-join")
        join(other)
        wait_state(other, "in-call")
        join(me)
        wait_state(me, "in-call")
        wait_for_media_from(me, 1)
        audit(me, "call")
        me.click("#leave")
        wait_state(me, "left")
        audit(me, "left")
        me.goto(f"{serve.url}/r/{'A' * 22}")  # a link that does not exist (any more)
        me.wait_for_function("() => window.kijkmee && window.kijkmee.state !== 'prejoin'")
        audit(me, "expired link")
    finally:
        me.context.close()
        other.context.close()


def test_the_call_works_from_the_keyboard_and_says_what_is_on(serve: ServeProcess, browser: Browser) -> None:
    url = make_link(serve)
    me = open_page(browser, url, "en-GB", DESKTOP)
    try:
        # Tab to the join button and press Enter: no mouse anywhere in this test.
        tab_to(me, "join")
        me.keyboard.press("Enter")
        wait_state(me, "in-call")
        tab_to(me, "mute")
        expect(me.locator("#mute")).to_have_attribute("aria-pressed", "false")
        me.keyboard.press("Space")
        expect(me.locator("#mute")).to_have_attribute("aria-pressed", "true")
        # The microphone really is off: the track we send is disabled.
        assert me.evaluate("[...window.kijkmee.pcs.values()].length === 0 && "
                           "document.querySelector('.tile.self video').srcObject.getAudioTracks()"
                           ".every(t => !t.enabled)")
        me.keyboard.press("Enter")
        expect(me.locator("#mute")).to_have_attribute("aria-pressed", "false")
        tab_to(me, "camera")
        me.keyboard.press("Enter")
        expect(me.locator("#camera")).to_have_attribute("aria-pressed", "true")
        tab_to(me, "leave")
        me.keyboard.press("Enter")
        wait_state(me, "left")
        # Focus lands on the new view's heading, so a screen reader reads where the person is now.
        assert me.evaluate("document.activeElement.id") == "left-title"
    finally:
        me.context.close()


def tab_to(page: Page, element_id: str, limit: int = 40) -> None:
    for _ in range(limit):
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"#{element_id} cannot be reached with the Tab key")
