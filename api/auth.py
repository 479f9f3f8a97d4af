"""Optional API keys (``Authorization: Bearer <key>``), as OpenAI clients send them.

Contract:
- No keys configured (``THINKGATE_API_KEYS`` and ``THINKGATE_ADMIN_API_KEYS`` empty): every
  caller is the same anonymous owner with every right — a local, single-user server.
- Keys configured: a request without a valid key gets 401 ``invalid_api_key`` in OpenAI's error
  shape. Admin keys are valid keys too. When admin keys are configured, document writes and
  deletes need one (403 ``admin_key_required`` otherwise).
- A caller's `owner` is a digest of its key (the key itself is never stored): threads belong to it.
- Keys are compared in constant time (`hmac.compare_digest`).
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from api.protocol import ErrorResponse

ANONYMOUS = "anonymous"


class APIError(Exception):
    """Raised by route dependencies; the app's handler answers with `error`."""

    def __init__(self, error: ErrorResponse):
        super().__init__(error.error.message)
        self.error = error


@dataclass(frozen=True)
class Caller:
    """Who is calling: `owner` names the key (a digest), `admin` may write documents."""

    owner: str
    admin: bool


def parse_keys(value: str | None) -> frozenset[str]:
    """Keys from a comma-separated setting (blanks dropped).

    >>> sorted(parse_keys(" a, b,,"))
    ['a', 'b']
    """
    return frozenset(k.strip() for k in (value or "").split(",") if k.strip())


def _owner(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


class KeyAuth:
    """Checks bearer keys.

    Args:
        keys: keys allowed to chat and search.
        admin_keys: keys that may also write and delete documents (empty: any valid key may).
    """

    def __init__(self, keys: frozenset[str] = frozenset(), admin_keys: frozenset[str] = frozenset()):
        self.keys, self.admin_keys = frozenset(keys), frozenset(admin_keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys or self.admin_keys)

    @staticmethod
    def _member(key: str, keys: frozenset[str]) -> bool:
        hit = False
        for k in keys:  # no early exit: the time taken does not depend on which key matched
            hit |= hmac.compare_digest(k.encode(), key.encode())
        return hit

    def check(self, authorization: str | None, *, admin: bool = False) -> Caller:
        """The caller of a request with this ``Authorization`` header.

        Raises:
            APIError: 401 when keys are configured and the header holds none of them; 403 when
                `admin` is asked, admin keys are configured and the key is not one.
        """
        if not self.enabled:
            return Caller(ANONYMOUS, True)
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise APIError(ErrorResponse.make(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", 401,
                type="invalid_request_error", code="invalid_api_key"))
        is_admin = self._member(key, self.admin_keys)
        if not is_admin and not self._member(key, self.keys):
            raise APIError(ErrorResponse.make("Incorrect API key provided.", 401, type="invalid_request_error",
                                              code="invalid_api_key"))
        may_write = is_admin or not self.admin_keys
        if admin and not may_write:
            raise APIError(ErrorResponse.make("this operation needs an admin API key", 403,
                                              code="admin_key_required"))
        return Caller(_owner(key), may_write)
