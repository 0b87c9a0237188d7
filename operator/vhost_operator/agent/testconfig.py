"""nginx's main config narrowed to a few sites, for testing a batch (pure).

``nginx -t`` parses everything the main config includes, so testing a batch of a few changed
sites costs as much as loading every site (0.5 to 0.8 s of CPU at 10,000 sites, before every
reload).
While nginx runs what is on disk, the unchanged sites were loaded by nginx already: what a batch
adds is only its own sites, which a copy of the main config can test alone. That copy includes,
instead of the whole sites directory, the agent's http-level definitions and the batch's sites.

The copy lives elsewhere than the main config (which is usually read-only), and nginx resolves a
relative path against the directory of the config it was given: the copy makes the paths of its
``include`` directives absolute. Any other relative path (a ``ssl_dhparam``, say) would resolve
elsewhere and make the copy fail where the main config does not; that is why a failed narrowed
test is never a verdict on its own (the agent tests the whole config then, see
``agent.BatchTestingWorkspace``).
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath

_SEPARATORS = " \t\r\n"
_TERMINATORS = ";{}"


class CannotNarrow(Exception):
    """The main config cannot be narrowed (the message says why): test it whole."""


@dataclasses.dataclass(frozen=True)
class _Word:
    text: str
    """The word as nginx reads it: quotes removed, escaped quotes and backslashes resolved."""
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class _Statement:
    words: tuple[_Word, ...]
    terminator: str
    """``;``, ``{`` or ``}``; empty at the end of the text."""
    end: int
    """Just after the terminator."""


def narrowed_config(
    main: str,
    main_path: PurePosixPath,
    sites: PurePosixPath,
    includes: Sequence[PurePosixPath],
) -> str:
    """``main`` (the text of ``main_path``) with its one ``include`` of ``sites`` (the glob of the
    sites directory) replaced by one ``include`` per path of ``includes``, in that order, and
    every relative ``include`` made absolute. Raises :class:`CannotNarrow` unless the main config
    itself includes ``sites`` exactly once."""
    base = main_path.parent
    replacements: list[tuple[int, int, str]] = []
    found = 0
    for statement in _statements(main):
        words = statement.words
        if not (len(words) == 2 and words[0].text == "include" and statement.terminator == ";"):
            continue
        argument = words[1]
        resolved = posixpath.normpath(posixpath.join(base, argument.text))
        if resolved == str(sites):
            found += 1
            lines = " ".join(f"include {_quoted(str(path))};" for path in includes)
            replacements.append((words[0].start, statement.end, lines))
        elif not argument.text.startswith("/"):
            replacements.append((argument.start, argument.end, _quoted(resolved)))
    if found != 1:
        raise CannotNarrow(
            f"{main_path} includes {sites} {found} times, not once: only a main config that "
            "includes it itself, exactly once, can be narrowed to a batch's sites"
        )
    text = main
    for start, end, replacement in sorted(replacements, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _quoted(path: str) -> str:
    escaped = path.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _statements(text: str) -> Iterator[_Statement]:
    """The statements of an nginx config, as nginx's own reader splits them (words separated by
    whitespace, ended by ``;``, ``{`` or ``}``; ``#`` comments; quotes and backslash escapes)."""
    words: list[_Word] = []
    position = 0
    while True:
        position = _skip_blanks_and_comments(text, position)
        if position >= len(text):
            if words:
                yield _Statement(tuple(words), "", len(text))
            return
        if text[position] in _TERMINATORS:
            yield _Statement(tuple(words), text[position], position + 1)
            words = []
            position += 1
            continue
        word = _read_word(text, position)
        words.append(word)
        position = word.end


def _skip_blanks_and_comments(text: str, position: int) -> int:
    while position < len(text):
        if text[position] in _SEPARATORS:
            position += 1
        elif text[position] == "#":
            newline = text.find("\n", position)
            position = len(text) if newline < 0 else newline + 1
        else:
            break
    return position


def _read_word(text: str, start: int) -> _Word:
    """One word from ``start``: unquoted, it ends at whitespace, ``;`` or a ``{`` that does not
    open a ``${variable}``; quoted, at its closing quote."""
    quote = text[start] if text[start] in "\"'" else ""
    position = start + len(quote)
    characters: list[str] = []
    while position < len(text):
        character = text[position]
        if character == "\\" and position + 1 < len(text):
            following = text[position + 1]
            # As nginx reads it: a quote or backslash unescaped, anything else kept as written.
            characters.append(following if following in "\"'\\" else character + following)
            position += 2
            continue
        if quote and character == quote:
            position += 1
            break
        if not quote and (
            character in _SEPARATORS
            or character == ";"
            or (character == "{" and characters[-1:] != ["$"])
        ):
            break
        characters.append(character)
        position += 1
    return _Word("".join(characters), start, position)
