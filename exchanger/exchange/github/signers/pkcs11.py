"""PKCS#11: the App key on a token (an HSM); only signatures leave it.

`python-pkcs11` (the `pkcs11` extra) is imported and the module loaded on first
use. The signer opens the token by label, logs in with the PIN, finds the RSA
private key by `CKA_LABEL` and signs with `CKM_SHA256_RSA_PKCS`; the public key
is the `PUBLIC_KEY` object of the same label (or, when the token keeps none, the
private key's modulus and public exponent).

PKCS#11 calls block, so they run in a worker thread; every call in the process
holds one lock, because python-pkcs11 initialises a module with
`C_Initialize(NULL)`, which promises the module that no two threads call it at
once (and a session is not safe for concurrent use anyway). The session stays
open and logged in between signatures; a failure on a session that was already
open closes it and tries once more on a new one (an HSM that restarted).

A token's login belongs to the process, not to a session: a second `C_Login`
answers `CKR_USER_ALREADY_LOGGED_IN`, and closing a logged-in session logs out
every other one. So the signers of one token in a process (the old and the new
one around a SIGHUP reload, say) share one session, and the last to close it
closes it; while it is open a new signer's PIN is not asked for again.

Every failure — the module missing, no such token, a refused PIN, no such key, a
token that does not answer within `DEADLINE` — is `unavailable` (503 with
`Retry-After`) and one log line naming the cause in words, never the PIN. A PIN
the token refused is never tried again by the same signer: HSMs lock their user
PIN after a few wrong attempts, and retrying on every request would lock it. Fix
the PIN and reload (a new PIN makes a new signer) or restart. Without
python-pkcs11 installed the public-key check is a ConfigError (start-up and
`check --online` stop on it), as it is for the KMS signer without boto3.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import rsa

from exchanger.config.model import Pkcs11Key
from exchanger.errors import ConfigError
from exchanger.exchange.github.signers import unavailable

log = logging.getLogger("exchanger.github")

_T = TypeVar("_T")

#: Held by every PKCS#11 call in this process (see the module's docstring).
_LOCK = threading.Lock()
#: Seconds a call may take, waiting for the lock included; a hung token fails requests
#: after this long (its worker thread returns when the module does).
DEADLINE = 10.0
#: The deployment's fault, not the token's: start-up and `check --online` stop on it.
NOT_INSTALLED = (
    "github.app.pkcs11: needs python-pkcs11, which is not installed "
    "(pip install 'exchanger[pkcs11]')"
)

#: Why a login failed, by python-pkcs11's exception name: a PIN the token will not take.
_PIN_REFUSED = {
    "PinIncorrect": "the token refused the PIN (incorrect)",
    "PinInvalid": "the token refused the PIN (characters it does not accept)",
    "PinLenRange": "the token refused the PIN (too short or too long)",
    "PinLocked": "the token's user PIN is locked (too many wrong attempts)",
    "PinExpired": "the token's user PIN has expired",
    "UserPinNotInitialized": "the token has no user PIN yet (initialise it)",
}

#: Other failures, in words.
_CAUSES = {
    "TokenNotPresent": "the token is not present",
    "TokenNotRecognised": "the module does not recognise the token",
    "DeviceRemoved": "the token was removed",
    "DeviceError": "the token reported a device error",
    "DeviceMemory": "the token is out of memory",
    "SessionCount": "the token has no free session",
    "SessionClosed": "the session was closed",
    "SessionHandleInvalid": "the session is no longer valid",
    "UserNotLoggedIn": "the session is no longer logged in",
    "KeyHandleInvalid": "the key handle is no longer valid",
    "ObjectHandleInvalid": "the key handle is no longer valid",
    "MechanismInvalid": "the token cannot sign with CKM_SHA256_RSA_PKCS",
    "KeyFunctionNotPermitted": "the key may not sign (CKA_SIGN is false)",
    "KeyTypeInconsistent": "the key is not an RSA key",
    "FunctionFailed": "the token failed",
    "GeneralError": "the token failed",
}


class _Failure(Exception):
    """A PKCS#11 failure, in words; never the PIN."""

    def __init__(
        self, cause: str, *, pin_refused: bool = False, not_installed: bool = False
    ) -> None:
        super().__init__(cause)
        self.cause = cause
        self.pin_refused = pin_refused
        self.not_installed = not_installed


@dataclass(eq=False)
class _Shared:
    """The one session of a (module, token) in this process, and the signers using it."""

    users: int = 0
    session: Any = None  # pkcs11.Session, logged in as the user
    keys: dict[tuple[str, str], Any] = field(default_factory=dict)  # (class, label) -> object


#: (module's real path, token label) -> its shared session. Guarded by `_LOCK`.
_SHARED: dict[tuple[str, str], _Shared] = {}


class Pkcs11Signer:
    kind = "pkcs11"

    def __init__(self, key: Pkcs11Key) -> None:
        self._key = key
        # python-pkcs11 loads each path string once: two spellings of one file (Debian's
        # /usr/lib/softhsm symlink) would initialise the module twice, which it refuses.
        self._module = os.path.realpath(key.module)
        self._lock = asyncio.Lock()  # one call at a time from this signer's event loop
        self._shared: _Shared | None = None  # attached on first use, released by close()
        self._refused: str | None = None  # why the token refused this signer's PIN

    def __repr__(self) -> str:
        key = self._key
        return f"Pkcs11Signer(token_label={key.token_label!r}, key_label={key.key_label!r})"

    async def sign(self, message: bytes) -> bytes:
        try:
            return await self._run("sign with", lambda shared: self._sign(shared, message))
        except _Failure:  # python-pkcs11 is not installed (logged)
            raise unavailable(self.kind) from None

    async def public_key(self) -> rsa.RSAPublicKey:
        """The key's public half; a ConfigError when python-pkcs11 is not installed."""
        try:
            return await self._run("read the public half of", self._public_key)
        except _Failure as failure:
            raise ConfigError([failure.cause]) from None

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._release)

    # ------------------------------------------------------------------ the event loop side

    async def _run(self, doing: str, operation: Callable[[_Shared], _T]) -> _T:
        """`operation` in a worker thread. A failure is logged and raised as `unavailable`,
        except python-pkcs11 missing: the config's fault, logged and raised as `_Failure`."""
        async with self._lock:
            try:
                return await asyncio.wait_for(asyncio.to_thread(self._call, operation), DEADLINE)
            except TimeoutError:
                failure = _Failure(f"the token did not answer within {DEADLINE:g} s")
            except _Failure as exc:
                failure = exc
        if failure.not_installed:
            log.error("%s", failure.cause)
            raise failure
        key = self._key
        log.error(
            "github.app.pkcs11: cannot %s the App key %r on token %r (module %s): %s",
            doing,
            key.key_label,
            key.token_label,
            key.module,
            failure.cause,
        )
        raise unavailable(self.kind) from None

    # ------------------------------------------------------------------ the worker thread side

    def _call(self, operation: Callable[[_Shared], _T]) -> _T:
        """Run `operation` on the open session, opening (or reopening once) as needed."""
        if self._refused is not None:
            raise _Failure(
                f"{self._refused} earlier; the PIN is not tried again (a wrong PIN, tried "
                "repeatedly, locks the token): fix it and reload, or restart"
            )
        try:
            import pkcs11
        except ImportError:
            raise _Failure(NOT_INSTALLED, not_installed=True) from None
        if not _LOCK.acquire(timeout=DEADLINE):
            raise _Failure(f"the token is busy: an earlier call has not returned in {DEADLINE:g} s")
        try:
            shared = self._attach()
            reopen = shared.session is not None  # a session that may have gone stale
            while True:
                try:
                    if shared.session is None:
                        self._open(shared)
                    return operation(shared)
                except _Failure as failure:
                    if failure.pin_refused:
                        self._refused = failure.cause
                    raise
                except pkcs11.PKCS11Error as exc:
                    _reset(shared)
                    if not reopen:
                        raise _Failure(_cause(exc)) from None
                    reopen = False  # once, on a new session
        finally:
            _LOCK.release()

    def _attach(self) -> _Shared:
        if self._shared is None:
            shared = _SHARED.setdefault((self._module, self._key.token_label), _Shared())
            shared.users += 1
            self._shared = shared
        return self._shared

    def _release(self) -> None:
        """Detach from the shared session; the last signer to leave closes it."""
        if not _LOCK.acquire(timeout=DEADLINE):
            log.warning("github.app.pkcs11: the token is busy; its session is left open")
            return
        try:
            shared, self._shared = self._shared, None
            if shared is None:
                return
            shared.users -= 1
            if shared.users <= 0:
                name = (self._module, self._key.token_label)
                if _SHARED.get(name) is shared:
                    del _SHARED[name]
                _reset(shared)
        finally:
            _LOCK.release()

    def _open(self, shared: _Shared) -> None:
        """Load the module, find the token, open a session and log in."""
        import pkcs11

        key = self._key
        try:
            library = pkcs11.lib(self._module)
        except pkcs11.PKCS11Error as exc:
            raise _Failure(f"cannot load the PKCS#11 module: {exc}") from None
        try:
            token = library.get_token(token_label=key.token_label)
        except pkcs11.NoSuchToken:
            raise _Failure(
                "no token has this label (not initialised, or not visible to the module)"
            ) from None
        except pkcs11.MultipleTokensReturned:
            raise _Failure("several tokens have this label; token labels must be unique") from None
        try:
            # A refused login leaves the session python-pkcs11 opened for it unclosed (it
            # keeps no handle to close): one more reason never to retry a refused PIN.
            shared.session = token.open(user_pin=key.pin.value)
        except pkcs11.PKCS11Error as exc:
            name = type(exc).__name__
            if name in _PIN_REFUSED:
                raise _Failure(_PIN_REFUSED[name], pin_refused=True) from None
            raise _Failure(f"cannot log in: {_cause(exc)}") from None
        shared.keys.clear()

    def _object(self, shared: _Shared, object_class: str) -> Any:
        """The RSA key object of `object_class` (PRIVATE_KEY, PUBLIC_KEY) with the key label."""
        import pkcs11

        label = self._key.key_label
        cached = shared.keys.get((object_class, label))
        if cached is not None:
            return cached
        kind = "private" if object_class == "PRIVATE_KEY" else "public"
        try:
            found = shared.session.get_key(
                object_class=pkcs11.ObjectClass[object_class],
                key_type=pkcs11.KeyType.RSA,
                label=label,
            )
        except pkcs11.NoSuchKey:
            raise _Failure(f"the token has no RSA {kind} key with this label") from None
        except pkcs11.MultipleObjectsReturned:
            raise _Failure(
                f"the token has several RSA {kind} keys with this label; labels must be unique"
            ) from None
        shared.keys[(object_class, label)] = found
        return found

    def _sign(self, shared: _Shared, message: bytes) -> bytes:
        import pkcs11

        private = self._object(shared, "PRIVATE_KEY")
        return bytes(private.sign(message, mechanism=pkcs11.Mechanism.SHA256_RSA_PKCS))

    def _public_key(self, shared: _Shared) -> rsa.RSAPublicKey:
        """The PUBLIC_KEY object's modulus and exponent; it must be the private key's half."""
        import pkcs11

        modulus, exponent = pkcs11.Attribute.MODULUS, pkcs11.Attribute.PUBLIC_EXPONENT
        private = self._object(shared, "PRIVATE_KEY")
        try:
            public = self._object(shared, "PUBLIC_KEY")
        except _Failure:
            public = private  # a token may keep only the private object; it states both
        try:
            n, e = _integer(public[modulus]), _integer(public[exponent])
            private_n = n if public is private else _integer(private[modulus])
        except pkcs11.PKCS11Error:
            raise _Failure(
                "neither a public key object nor the private key states the public key"
            ) from None
        if n != private_n:
            raise ConfigError(
                [
                    f"github.app.pkcs11: the public key labelled {self._key.key_label!r} on "
                    f"token {self._key.token_label!r} is not the private key's half"
                ]
            )
        return rsa.RSAPublicNumbers(e, n).public_key()


def _reset(shared: _Shared) -> None:
    """Close the session (if any); the next call opens a new one."""
    session, shared.session = shared.session, None
    shared.keys.clear()
    if session is None:
        return
    try:
        session.close()
    except Exception as exc:  # a session that is already gone cannot be closed
        log.debug("github.app.pkcs11: closing the session failed: %s", type(exc).__name__)


def _cause(exc: Exception) -> str:
    name = type(exc).__name__
    return _CAUSES.get(name, f"the token answered {name}")


def _integer(value: Any) -> int:
    return int.from_bytes(bytes(value), "big")
