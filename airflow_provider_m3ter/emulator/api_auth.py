"""``POST /oauth/token``: OAuth 2.0 client credentials with HTTP Basic authentication."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import Response

from airflow_provider_m3ter.emulator.errors import ApiError, bad_request
from airflow_provider_m3ter.emulator.web import json_response, state_of

router = APIRouter()


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    key, sep, secret = decoded.partition(":")
    return (key, secret) if sep else None


@router.post("/oauth/token")
async def generate_token(request: Request) -> Response:
    """Issue a bearer token for valid credentials and ``grant_type=client_credentials``.

    :param request: the token request (form-encoded or JSON body).
    """
    state = state_of(request)
    options = state.options
    credentials = _basic_credentials(request.headers.get("authorization"))
    if credentials is None:
        raise ApiError(401, "Unauthorized: HTTP Basic credentials (accessKeyId:apiSecret) are required")
    key_ok = hmac.compare_digest(credentials[0].encode(), options.access_key_id.encode())
    secret_ok = hmac.compare_digest(credentials[1].encode(), options.api_secret.encode())
    if not (key_ok and secret_ok):
        raise ApiError(401, "Unauthorized: bad credentials")
    raw = (await request.body()).decode("utf-8", errors="replace")
    grant: object = None
    if "json" in request.headers.get("content-type", ""):
        try:
            body = json.loads(raw or "{}")
        except ValueError:
            raise bad_request("Request body is not valid JSON") from None
        grant = body.get("grant_type") if isinstance(body, dict) else None
    else:
        grants = parse_qs(raw).get("grant_type") or []
        grant = grants[0] if grants else None
    if grant != "client_credentials":
        raise bad_request("grant_type: must be client_credentials")
    token = state.issue_token()
    return json_response({"access_token": token, "token_type": "Bearer", "expires_in": options.token_ttl})
