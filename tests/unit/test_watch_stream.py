"""Reading a watch stream line by line (``vhost_operator.kube.watching``)."""

from __future__ import annotations

from collections.abc import Iterator

from vhost_operator.kube.watching import _lines


class Chunks:
    """A streamed response that hands out the given chunks."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = chunks

    def stream(self, amt: int | None = None, decode_content: bool = False) -> Iterator[bytes]:
        yield from self._chunks


def test_lines_split_across_chunks_come_out_whole() -> None:
    response = Chunks(b'{"a":', b'1}\n{"b":2}\n{"c"', b":3}\n")
    assert list(_lines(response)) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_empty_lines_are_skipped_and_an_unfinished_line_is_not_yielded() -> None:
    response = Chunks(b"\n\n{}\n", b'{"half"')
    assert list(_lines(response)) == [b"{}"]
