"""The HTTP/1.1 protocol ``flowwarden serve`` speaks: uvicorn's, on the httptools
parser, with a bound on the head of a request.

httptools parses in C and costs the server about a third less CPU a request than
h11, uvicorn's other parser; but where h11 refuses a head (request line and headers)
past 16 KiB, httptools keeps a header or a URL however long it grows, so one client
could fill the server's memory with a single header. :class:`HttpProtocol` refuses a
head over :data:`MAX_HEAD` bytes with uvicorn's own 400, as h11 refuses one over its
bound.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_HEAD", "HttpProtocol"]

MAX_HEAD = 64 * 1024
"""The most bytes of a request's head read before the request is refused."""


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request whose head grows past
    :data:`MAX_HEAD` bytes.

    Counted are the reads that end with a head still incomplete, from the one after
    the read in which it began: never more than the head itself, so no head under the
    bound is refused, and what a connection's head holds stays under the bound and one
    read. A read costs one comparison more.
    """

    _head: int | None = None  # bytes of the current head counted; None: not in one

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head = -1  # begun in this read, which is not counted

    def on_headers_complete(self) -> None:
        self._head = None
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        head = self._head
        if head is None or self.transport.is_closing():
            return
        self._head = head = 0 if head < 0 else head + len(data)
        if head > MAX_HEAD:
            message = "Request head too large."
            self.logger.warning(message)
            self.send_400_response(message)
