"""The web client's shape: no function in ``clients/web/js/`` is longer than 100 lines.

Measured without a JavaScript parser (none is installed at test time, and the client has no build
step): comments, string and template text and regular-expression literals are blanked, then every
``{`` that opens a function body (``function``, a method, an arrow function) is matched to its
``}``.  A function's length runs from the line of its head to the line of its closing brace; a
function inside another counts in both.  An arrow function with an expression body (no braces)
is measured only as part of the function around it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB_JS = ROOT / "clients" / "web" / "js"
LONGEST = 100

# A "/" after one of these starts a regular expression; after anything else it divides.
REGEX_AFTER_CHARS = set("(,=:[!&|?{};+-*%<>~^")
REGEX_AFTER_WORDS = {"return", "typeof", "case", "do", "else", "in", "of", "new", "delete", "void", "throw", "instanceof", "yield", "await"}
# `word (...) {` is a method unless the word is one of these.
NOT_METHODS = {"if", "for", "while", "switch", "catch", "with", "function", "return"}
IDENTIFIER = r"[A-Za-z_$][\w$]*"


@dataclass(frozen=True)
class Function:
    name: str
    first: int  # line numbers, from 1
    last: int

    @property
    def lines(self) -> int:
        return self.last - self.first + 1


def code_only(source: str) -> str:
    """``source`` with comments, string and template text and regex literals turned to spaces
    (newlines kept, so offsets and line numbers stay); the code of ``${...}`` stays."""
    out = list(source)

    def blank(start: int, end: int) -> None:
        out[start:end] = [c if c == "\n" else " " for c in source[start:end]]

    templates: list[int] = []  # brace depth inside each open ${...}
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c == "`" or (c == "}" and templates and templates[-1] == 0):
            if c == "}":
                templates.pop()
            end = _template_text_end(source, i + 1)
            blank(i + 1, end)
            if source.startswith("${", end):
                templates.append(0)
                i = end + 2
            else:
                i = end + 1
            continue
        if c in "{}" and templates:
            templates[-1] += 1 if c == "{" else -1
        if source.startswith("//", i):
            end = source.find("\n", i)
            end = n if end < 0 else end
        elif source.startswith("/*", i):
            end = source.index("*/", i + 2) + 2
        elif c in "'\"":
            end = _quoted_end(source, i)
        elif c == "/" and _starts_regex("".join(out[:i])):
            end = _regex_end(source, i)
        else:
            i += 1
            continue
        blank(i, end)
        i = end
    return "".join(out)


def _template_text_end(source: str, i: int) -> int:
    """The offset of the closing backtick or of the ``${`` that ends template text from ``i``."""
    while source[i] != "`" and not source.startswith("${", i):
        i += 2 if source[i] == "\\" else 1
    return i


def _quoted_end(source: str, i: int) -> int:
    quote, i = source[i], i + 1
    while source[i] != quote:
        if source[i] == "\n":
            raise ValueError(f"unterminated string at offset {i}")
        i += 2 if source[i] == "\\" else 1
    return i + 1


def _starts_regex(before: str) -> bool:
    stripped = before.rstrip()
    if not stripped:
        return True
    word = re.search(r"[\w$]+$", stripped)
    if word:
        return word.group() in REGEX_AFTER_WORDS
    return stripped[-1] in REGEX_AFTER_CHARS


def _regex_end(source: str, i: int) -> int:
    i += 1
    in_class = False
    while in_class or source[i] != "/":
        if source[i] == "\n":
            raise ValueError(f"unterminated regular expression at offset {i}")
        if source[i] == "\\":
            i += 1
        elif source[i] == "[":
            in_class = True
        elif source[i] == "]":
            in_class = False
        i += 1
    i += 1
    while i < len(source) and (source[i].isalnum() or source[i] == "_"):
        i += 1  # flags
    return i


def _pairs(code: str, open_: str, close: str) -> dict[int, int]:
    """The offset of each ``open_``'s matching ``close`` (and of each ``close``'s ``open_``)."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for i, c in enumerate(code):
        if c == open_:
            stack.append(i)
        elif c == close:
            if not stack:
                raise ValueError(f"unmatched {close!r} at offset {i}")
            start = stack.pop()
            pairs[start], pairs[i] = i, start
    if stack:
        raise ValueError(f"unmatched {open_!r} at offset {stack[-1]}")
    return pairs


def _head(code: str, brace: int, parens: dict[int, int]) -> tuple[int, str] | None:
    """Where the function whose body opens at ``brace`` starts, and its name; None when the brace
    opens something else (a block, an object, a class body)."""
    before = code[:brace].rstrip()
    if before.endswith("=>"):
        params = before[:-2].rstrip()
        start = parens[len(params) - 1] if params.endswith(")") else re.search(r"[\w$]+$", params).start()
        return start, _assigned_to(code[:start]) or "(arrow)"
    if not before.endswith(")"):
        return None
    start = parens[len(before) - 1]
    prefix = code[:start].rstrip()
    function = re.search(rf"\bfunction\s*\*?\s*({IDENTIFIER})?$", prefix)
    if function:
        return function.start(), function.group(1) or _assigned_to(prefix[: function.start()]) or "(function)"
    method = re.search(rf"{IDENTIFIER}$", prefix)
    if method and method.group() not in NOT_METHODS:
        return method.start(), method.group()
    return None


def _assigned_to(before: str) -> str | None:
    """The name an anonymous function is given (``name = `` or ``name: `` before it)."""
    named = re.search(rf"({IDENTIFIER})\s*[:=]\s*(async\s*)?$", before)
    return named.group(1) if named else None


def functions(source: str) -> list[Function]:
    """Every function in ``source`` with its first and last line."""
    code = code_only(source)
    braces, parens = _pairs(code, "{", "}"), _pairs(code, "(", ")")
    found = []
    for offset, c in enumerate(code):
        if c != "{":
            continue
        head = _head(code, offset, parens)
        if head:
            start, name = head
            found.append(Function(name, code.count("\n", 0, start) + 1, code.count("\n", 0, braces[offset]) + 1))
    return found


SAMPLE = """\
// function commented(a) { {
export function one(a, b = "}") {
  const re = /[}{]+\\/}/g, half = a / 2, text = `${a} } ${ { b }.b } {`;
  return re.test(text) ? half : 0;
}

class Thing extends Base {
  constructor() {
    super();
    this.items = { a: 1 };
  }

  async load(x) {
    const each = (item) => {
      if (item) {
        return item;
      }
    };
    return x.map(each).filter(y => { return y; });
  }
}
/* } */ const outer = async () => {
  const inner = function () { return '{'; };
};
"""


def test_the_measure_finds_each_function_and_ignores_braces_in_text() -> None:
    found = [(f.name, f.first, f.last) for f in functions(SAMPLE)]
    assert found == [
        ("one", 2, 5), ("constructor", 8, 11), ("load", 13, 20), ("each", 14, 18), ("(arrow)", 19, 19),
        ("outer", 22, 24), ("inner", 23, 23),
    ]


def test_the_measure_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError):
        functions("function broken() { if (x) { }\n")
    with pytest.raises(ValueError):
        functions("const s = 'no end\n';\n")


def web_functions() -> dict[str, list[Function]]:
    return {path.name: functions(path.read_text()) for path in sorted(WEB_JS.glob("*.js"))}


def test_the_measure_reads_every_module_of_the_web_client() -> None:
    names = {name: {f.name for f in found} for name, found in web_functions().items()}
    assert {"app.js", "api.js", "sfu-client.js"} <= set(names)
    assert {"connect", "reconnect", "rejoin", "publish", "_receive"} <= names["sfu-client.js"]
    assert {"api", "refresh", "login"} <= names["api.js"]


def test_no_function_in_the_web_client_is_longer_than_100_lines() -> None:
    long = [f"{name}:{f.first} {f.name} ({f.lines} lines)" for name, found in web_functions().items() for f in found if f.lines > LONGEST]
    assert long == [], f"functions longer than {LONGEST} lines: {long}"
