"""Secrets the client knows, kept out of log lines and error messages even without Airflow's masker.

Airflow's masker only covers processes and loggers it runs; the client is also used on its own, and
``urllib3``/``requests`` log every request line at DEBUG (``"PUT /_upload/<signature> HTTP/1.1"
200``). So the client registers each secret it holds (the API secret, the Basic header, every access
token, every piece of a signed upload URL that grants access) here, and a logging filter on the
HTTP libraries' loggers and the client's own rewrites any record that contains one.

Register with Airflow's masker too (the hook does): this module cannot reach ``print`` output or
handlers of other loggers.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from requests.utils import requote_uri, unquote_unreserved

__all__ = [
    "REDACTED",
    "RedactingFilter",
    "install_log_redaction",
    "proxy_credential_pieces",
    "redact",
    "register",
    "signed_url_pieces",
]

REDACTED = "***"
# shorter pieces of a URL would redact ordinary words (a content type, "json") in every line
_MIN_PIECE = 8
# a registered secret is hidden from this length on (as Airflow's masker does)
_MIN_SECRET = 5
# loggers whose records can carry a URL or header: the HTTP stack's and the client's own
_LOGGERS = (
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.response",
    "urllib3.poolmanager",
    "urllib3.util.retry",
    "requests",
    "airflow_provider_m3ter",
    "airflow_provider_m3ter.client",
)
# query parameters that carry or sign access (S3/GCS/Azure presigned URLs and their kin)
_SIGNING_PARAMS = re.compile(
    r"(?i)^(x-amz-|x-goog-|sig$|signature|se$|sp$|sv$|skoid|sktid|token|access_token|key$|policy|credential)"
)

_UUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_lock = threading.Lock()
_pieces: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register(*values: str | None) -> None:
    """Remember secret strings so :func:`redact` and the log filter hide them from now on.

    :param values: secrets; ``None``, empty and very short values are ignored.
    """
    global _pattern
    new = {v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET} - _pieces
    if not new:
        return
    with _lock:
        _pieces.update(new)
        # longest first, so a whole URL is replaced before its parts
        ordered = sorted(_pieces, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(p) for p in ordered))


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``.

    :param text: any text (a log message, an error message, a response excerpt).
    """
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(REDACTED, text)


def proxy_credential_pieces(proxy_url: str | None) -> list[str]:
    """The parts of a proxy URL that are credentials, to register as secrets.

    ``http://user:pass@proxy:3128`` (from ``HTTPS_PROXY``/``HTTP_PROXY``): the password, the
    ``user:pass`` pair and its Base64 form (the ``Proxy-Authorization`` header a proxy's error page
    may echo), each as written and percent-decoded. A proxy URL without a password gives nothing.

    :param proxy_url: a proxy URL, or ``None``.
    """
    if not proxy_url or "@" not in proxy_url:
        return []
    userinfo = urlsplit(proxy_url if "://" in proxy_url else f"http://{proxy_url}").netloc.rpartition("@")[0]
    user, _, password = userinfo.partition(":")
    if not password:
        return []
    out: list[str] = []
    for u, p in ((user, password), (unquote(user), unquote(password))):
        for piece in (p, f"{u}:{p}", base64.b64encode(f"{u}:{p}".encode()).decode("ascii")):
            if piece not in out:
                out.append(piece)
    return out


def signed_url_pieces(url: str, headers: Mapping[str, str] | None = None) -> list[str]:
    """Every part of a signed URL (and its headers) that grants access, to register as secrets.

    The whole URL; its path, and each path segment long enough to be a token (the emulator's
    ``/_upload/<token>``, a presigned object key); each query value of a signing parameter
    (``X-Amz-Signature``, ``X-Amz-Credential``, ``X-Amz-Security-Token``, ``sig`` ...) and any other
    long one; each header value that could sign (content types are left alone). Both the
    percent-encoded form (as sent and as urllib3 logs it) and the decoded one are returned.

    :param url: the signed URL.
    :param headers: the headers m3ter told the client to send with it.
    """
    parts = urlsplit(url)
    pieces = [url, parts.path, f"{parts.path}?{parts.query}" if parts.query else ""]
    # long segments may be tokens; a UUID (an org or job id in an object key) grants nothing
    pieces += [s for s in parts.path.split("/") if len(s) >= 16 and not _UUID.fullmatch(unquote(s))]
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if _SIGNING_PARAMS.match(name) or len(value) >= 16:
            pieces.append(value)
            # a credential scope (X-Amz-Credential=AKIA.../20240501/region/s3/aws4_request):
            # its key id shows up on its own in the storage's error bodies
            pieces += [part for part in value.split("/") if len(part) >= 16]
    for raw in re.split(r"[&;]", parts.query):
        _, _, value = raw.partition("=")
        if len(value) >= 16:
            pieces.append(value)
    for name, value in (headers or {}).items():
        if name.lower() not in ("content-type", "content-length") and len(value) >= _MIN_PIECE:
            pieces.append(value)
    out: list[str] = []
    for piece in pieces:
        # as given, decoded, and as requests sends (and urllib3 logs) it: unreserved escapes
        # such as %7E decoded, the rest kept
        for form in (piece, unquote(piece), requote_uri(piece), unquote_unreserved(piece)):
            if len(form) >= _MIN_PIECE and form not in out:
                out.append(form)
    return out


class RedactingFilter(logging.Filter):
    """Rewrites a record whose message contains a registered secret; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logging module's to report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text and record.exc_info[1] is not None:
            # the formatted traceback could hold a URL: format it now, redacted
            text = logging.Formatter().formatException(record.exc_info)
            if redact(text) != text:
                record.exc_text = redact(text)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()


def install_log_redaction(extra_loggers: Iterable[str] = ()) -> None:
    """Attach the redacting filter to the HTTP libraries' and the client's loggers (idempotent).

    A filter on a logger sees only records created on that logger, so each module logger of
    ``urllib3`` is named. Cheap when nothing is registered.

    :param extra_loggers: more logger names to cover.
    """
    for name in (*_LOGGERS, *extra_loggers):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
