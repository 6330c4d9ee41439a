"""Text in and out of email: the debtor's own words from a reply (quotes, history and signature dropped), the
visible text of an HTML mail, bodies and headers in whatever charset the sender's client used, and the safe HTML
alternative of an outgoing plain-text message."""

from __future__ import annotations

import re
from email.message import EmailMessage, Message
from html import escape
from html.parser import HTMLParser

# "On Mon, 23 Nov 2026, Cobrabot <...> wrote:" / "El lun, 23 nov 2026, Cobrabot <...> escribió:"
ATTRIBUTION = re.compile(r"^(on|el)\s.*\s(wrote|escribió|escribio):$", re.IGNORECASE)
# Outlook and forwards quote the history without ">" below one of these lines.
HISTORY_SEPARATOR = re.compile(
    r"^(-{2,}\s*(original message|mensaje original|forwarded message|mensaje reenviado)\s*-{2,}|_{10,})$",
    re.IGNORECASE,
)
# 8-bit bytes under an ASCII label are a lie: UTF-8 when they read as UTF-8, else windows-1252.
ASCII_LABELS = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968", "us"})
# C1 control characters never occur in written text. Where they appear, the sender meant windows-1252 and labelled
# it ISO-8859-1 (Outlook does, for "€", "“", "”" and "–"); browsers read that label as windows-1252 too (WHATWG).
C1_CONTROLS = re.compile("[\x80-\x9f]")
URL = re.compile(r"https?://[^\s<>\"']+")
URL_TRAILING_PUNCTUATION = ".,;:!?)]}»”’"
HTML_DOCUMENT = """<!DOCTYPE html>
<html{lang}>
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: Arial, Helvetica, sans-serif; font-size: 15px; line-height: 1.5; color: #222222">
{body}
</body>
</html>
"""
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")


def body_text(message: EmailMessage) -> str:
    """What the sender wrote: the plain-text body, else the HTML one's visible text, without the quoted history."""
    plain = message.get_body(preferencelist=("plain",))
    if plain is not None:
        return reply_text(part_text(plain))
    html = message.get_body(preferencelist=("html",))
    if html is not None:
        return reply_text(html_to_text(part_text(html)))
    return ""


def reply_text(text: str) -> str:
    """The sender's own words: quoted lines, the history below an attribution line and the signature are dropped."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    kept: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line == "--" or HISTORY_SEPARATOR.match(line.strip()):
            break
        attribution = _attribution_lines(lines, index)
        if attribution:
            index += attribution
            if not _quoted_next(lines, index):
                break  # the history follows unquoted: nothing below is the sender's
            continue  # quoted history: answers written between the quotes are kept
        if not line.lstrip().startswith(">"):
            kept.append(line)
        index += 1
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


def _attribution_lines(lines: list[str], index: int) -> int:
    """1 or 2 when an "On ... wrote:" line (mail clients wrap long ones) starts at index, else 0."""
    first = lines[index].strip()
    if ATTRIBUTION.match(first):
        return 1
    if index + 1 < len(lines) and ATTRIBUTION.match(f"{first} {lines[index + 1].strip()}"):
        return 2
    return 0


def _quoted_next(lines: list[str], index: int) -> bool:
    following = next((line for line in lines[index:] if line.strip()), "")
    return following.lstrip().startswith(">")


class _HtmlText(HTMLParser):
    """Visible text of an HTML mail, one line per block; quoted replies (<blockquote>) and styles are skipped."""

    SKIP = frozenset({"blockquote", "head", "script", "style", "template", "title"})
    BLOCKS = frozenset({"br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "p", "table", "tr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCKS and not self.skipping:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        elif tag in self.BLOCKS and not self.skipping:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.chunks.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = (line.strip() for line in "".join(parser.chunks).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def opening(text: str, length: int) -> str:
    """The first non-empty line, cut after a whole word to at most `length` characters plus an ellipsis."""
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(first_line) <= length:
        return first_line
    # One character more than fits: when it is a space the last word is whole and stays.
    return first_line[: length + 1].rsplit(" ", 1)[0].rstrip(" ,.;:") + "…"


def part_text(part: Message) -> str:
    """A text part's content decoded with its declared charset, read the way mail clients read it."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    return decode_text(payload, part.get_content_charset())


def decode_text(payload: bytes, charset: str | None) -> str:
    label = (charset or "us-ascii").strip().lower()
    candidates = ("utf-8", "cp1252") if label in ASCII_LABELS else (label,)
    for codec in candidates:
        try:
            return windows_1252_controls(payload.decode(codec))
        except LookupError:  # a charset Python does not know: keep what can be read
            return payload.decode("utf-8", "replace")
        except UnicodeDecodeError:
            continue
    return payload.decode(candidates[-1], "replace")


def windows_1252_controls(text: str) -> str:
    """C1 control characters read as the windows-1252 characters they stand for ("\x80" -> "€")."""
    return C1_CONTROLS.sub(lambda match: match.group().encode("latin-1").decode("cp1252", "replace"), text)


def raw_header_text(message: Message, name: str) -> str | None:
    """A header sent as raw 8-bit bytes instead of RFC 2047 encoded words (old clients do), decoded as UTF-8 or
    else windows-1252; None when the header is absent or has no such bytes."""
    raw = next((str(value) for key, value in message.raw_items() if key.lower() == name.lower()), None)
    if raw is None or not _has_surrogates(raw):
        return None
    # The bytes parser keeps each non-ASCII byte as a lone surrogate; surrogateescape gives the bytes back.
    return " ".join(decode_text(raw.encode("utf-8", "surrogateescape"), "us-ascii").split())


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in text)


def text_to_html(text: str, *, link_prefix: str, locale: str | None = None) -> str:
    """The HTML alternative of a plain-text message: every character escaped, blank lines make paragraphs, line
    breaks stay, and only links under our own public URL are clickable (no images, no tracking, no other hosts)."""
    normalized = text.replace("\r\n", "\n").strip()
    paragraphs = [part for part in re.split(r"\n[ \t]*\n", normalized) if part.strip()]
    body = "\n".join(
        '<p style="margin: 0 0 1em 0">' + "<br>\n".join(_line_html(line, link_prefix) for line in part.split("\n"))
        + "</p>"
        for part in paragraphs
    )  # fmt: skip
    lang = f' lang="{locale}"' if locale and LANGUAGE_TAG.fullmatch(locale) else ""
    return HTML_DOCUMENT.format(lang=lang, body=body)


def _line_html(line: str, link_prefix: str) -> str:
    pieces: list[str] = []
    position = 0
    for match in URL.finditer(line):
        url = match.group().rstrip(URL_TRAILING_PUNCTUATION)
        end = match.start() + len(url)
        pieces.append(escape(line[position : match.start()]))
        if is_own_url(url, link_prefix):
            pieces.append(f'<a href="{escape(url)}">{escape(url)}</a>')
        else:
            pieces.append(escape(url))
        position = end
    pieces.append(escape(line[position:]))
    return "".join(pieces)


def is_own_url(url: str, prefix: str) -> bool:
    """True for the prefix itself or a path, query or fragment below it ("https://a.example" does not cover
    "https://a.example.evil.com")."""
    prefix = prefix.rstrip("/")
    return bool(prefix) and (url == prefix or url.startswith((f"{prefix}/", f"{prefix}?", f"{prefix}#")))
