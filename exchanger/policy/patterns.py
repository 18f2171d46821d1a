"""Patterns: how a policy's claim rules and grant entries match strings.

A plain string matches exactly; `match:REGEX` is an RE2 expression that must
match the whole value. The expression is wrapped in a non-capturing group and
full-matched, so an alternation such as `main|dev` never matches `main-evil`.
Every expression is checked when the config loads (a bad one is a config
error), and compiled for matching the first time it is needed: a compiled RE2
program costs about 12 KB, and with the policy index most of 10,000 policies'
patterns are only ever matched inside an RE2 set.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import re2

REGEX_PREFIX = "match:"

#: Claims GitHub treats case-insensitively; exact comparison ignores ASCII case.
CASE_INSENSITIVE_CLAIMS = frozenset({"repository", "repository_owner", "actor", "environment"})

#: How every pattern is compiled (policy_index builds its RE2 sets alike).
OPTIONS = re2.Options()
OPTIONS.log_errors = False
OPTIONS.max_mem = 8 << 20


class PatternError(ValueError):
    """A pattern or template that cannot be compiled; the message names it."""


def ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only: GitHub's names fold ASCII, nothing else."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def is_text(value: str) -> bool:
    """Whether `value` is valid Unicode text (encodable as UTF-8: no lone surrogates)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def claim_text(value: Any) -> str | None:
    """The text a claim value is compared as, or None when it can never match.

    Strings as sent; booleans as `true`/`false`; integers as decimal digits.
    Floats, lists, objects and null never match.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return None


class Regex:
    """An RE2 expression for full matching, checked, and compiled when first matched.

    `pattern` is the expression as compiled (wrapped in a group). Immutable in
    effect, so one object serves every policy that repeats the expression.
    """

    __slots__ = ("__weakref__", "_compiled", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._compiled: Any = None

    def fullmatch(self, text: str) -> Any:
        """The match, or None; text RE2 cannot take (a lone surrogate) matches nothing."""
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = re2.compile(self.pattern, OPTIONS)
        try:
            return compiled.fullmatch(text)
        except UnicodeEncodeError:  # not valid UTF-8: a caller's bytes, never a match
            return None

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"


#: The `Regex` of each expression still in use (one object however many policies repeat it).
_REGEXES: weakref.WeakValueDictionary[str, Regex] = weakref.WeakValueDictionary()


def compile_regex(expression: str) -> Regex:
    """Check an RE2 expression for full matching, anchored as one group.

    The expression is compiled on its own first: an unbalanced `)` could
    otherwise close the wrapper, e.g. `main)|(.*` → `(?:main)|(.*)`. Both
    compilations only check it; `Regex` compiles again when first matched.
    """
    regex = _REGEXES.get(expression)
    if regex is not None:
        return regex
    wrapped = f"(?:{expression})"
    try:
        re2.compile(expression, OPTIONS)
        re2.compile(wrapped, OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise PatternError(f"invalid RE2 pattern {expression!r}: {detail}") from None
    regex = _REGEXES[expression] = Regex(wrapped)
    return regex


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Pattern:
    """One compiled pattern: exact text (case-folded when `fold`) or an RE2 regex."""

    source: str
    exact: str | None
    regex: Regex | None
    fold: bool

    @classmethod
    def compile(cls, source: str, *, fold: bool) -> Pattern:
        """Parse an entry as written: `match:` makes it a regex.

        Patterns are immutable, so the policies that repeat an entry (the one
        organisation's id, `refs/heads/main`) share one object while any uses it.
        """
        key = (source, fold)
        pattern = _PATTERNS.get(key)
        if pattern is None:
            pattern = cls.build(source, is_regex=source.startswith(REGEX_PREFIX), fold=fold)
            _PATTERNS[key] = pattern
        return pattern

    @classmethod
    def build(cls, source: str, *, is_regex: bool, fold: bool) -> Pattern:
        """Compile `source` as the kind decided by the config, never by its text.

        A rendered template must not turn into a regex because a claim value
        happened to start with `match:`.
        """
        if is_regex:
            return cls(source, None, compile_regex(source[len(REGEX_PREFIX) :]), fold)
        return cls(source, ascii_lower(source) if fold else source, None, fold)

    def matches(self, text: str) -> bool:
        """Exact entries compare folded when `fold`; regexes see the text as given."""
        if self.exact is not None:
            return (ascii_lower(text) if self.fold else text) == self.exact
        return self.regex is not None and self.regex.fullmatch(text) is not None


def template_value(value: Any) -> str | None:
    """What `${claim}` becomes: strings as they are, integers as digits, else nothing.

    A string that is not valid Unicode text (a lone surrogate) renders nothing: it
    could never name a GitHub object, and RE2 could not even take it.
    """
    if isinstance(value, str):
        return value if is_text(value) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_REST = _NAME_START | frozenset("0123456789-.")


@dataclass(frozen=True, slots=True)
class Template:
    """A grant string with `${claim}` placeholders, parsed once."""

    source: str
    literals: tuple[str, ...]
    claims: tuple[str, ...]

    @classmethod
    def parse(cls, source: str) -> Template:
        literals: list[str] = []
        claims: list[str] = []
        rest = source
        while (start := rest.find("${")) >= 0:
            end = rest.find("}", start)
            name = rest[start + 2 : end] if end > 0 else ""
            if not name or name[0] not in _NAME_START or not set(name) <= _NAME_REST:
                raise PatternError(f"invalid placeholder in {source!r}: use ${{claim_name}}")
            literals.append(rest[:start])
            claims.append(name)
            rest = rest[end + 1 :]
        literals.append(rest)
        return cls(source, tuple(literals), tuple(claims))

    def render(
        self, claims: Mapping[str, Any], *, escape: bool = False, fold: bool = False
    ) -> str | None:
        """Substitute claim values; None when a claim is absent or of another type.

        With `fold`, values are ASCII-lower-cased first: a regex entry compared with
        lower-cased names must see `Octo-Org` as `octo-org`, or a deny would miss it.
        """
        if not self.claims:
            return self.source
        out = [self.literals[0]]
        for name, literal in zip(self.claims, self.literals[1:], strict=True):
            value = template_value(claims.get(name))
            if value is None:
                return None
            if fold:
                value = ascii_lower(value)
            out.append(re2.escape(value) if escape else value)
            out.append(literal)
        return "".join(out)


_PATTERNS: weakref.WeakValueDictionary[tuple[str, bool], Pattern] = weakref.WeakValueDictionary()


@dataclass(frozen=True, slots=True, weakref_slot=True)
class NamePattern:
    """A grant entry naming things (secrets, scopes, repositories), possibly templated.

    Without placeholders it compiles once at load; with them, the rendered
    expression is compiled through a bounded cache, and substituted values are
    RE2-escaped inside `match:` entries so they match literally.
    """

    template: Template
    is_regex: bool
    fold: bool
    static: Pattern | None

    @classmethod
    def compile(cls, source: str, *, fold: bool) -> NamePattern:
        """Parse a grant entry; entries repeated across policies share one object."""
        key = (source, fold)
        found = _NAME_PATTERNS.get(key)
        if found is None:
            found = _NAME_PATTERNS[key] = cls._compile(source, fold=fold)
        return found

    @classmethod
    def _compile(cls, source: str, *, fold: bool) -> NamePattern:
        template = Template.parse(source)
        is_regex = source.startswith(REGEX_PREFIX)
        if template.claims:
            # Prove that every rendering compiles: escaped values are literals.
            probe = template.render(dict.fromkeys(template.claims, "x"))
            if probe is not None:
                Pattern.build(probe, is_regex=is_regex, fold=fold)
            return cls(template, is_regex, fold, None)
        return cls(template, is_regex, fold, Pattern.build(source, is_regex=is_regex, fold=fold))

    @property
    def source(self) -> str:
        return self.template.source

    def bind(self, claims: Mapping[str, Any]) -> Pattern | None:
        """The pattern for these claims, or None when a placeholder has no value."""
        if self.static is not None:
            return self.static
        rendered = self.template.render(claims, escape=self.is_regex, fold=self.fold)
        return None if rendered is None else _built(rendered, self.is_regex, self.fold)


_NAME_PATTERNS: weakref.WeakValueDictionary[tuple[str, bool], NamePattern] = (
    weakref.WeakValueDictionary()
)


@functools.lru_cache(maxsize=4096)
def _built(source: str, is_regex: bool, fold: bool) -> Pattern:
    return Pattern.build(source, is_regex=is_regex, fold=fold)
